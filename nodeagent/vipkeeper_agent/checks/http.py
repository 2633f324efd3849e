"""A minimal HTTP/1.1 client for http and https checks: one GET, one new connection, close.

Hand-written on ``asyncio.Protocol`` instead of streams or a client library: a check needs the
status line and, only when a digest is configured, a bounded body, and an agent may run
thousands of checks a second on one core. Whatever the server sends, the probe ends in a
``ProbeResult``; malformed responses are failures with a reason, never exceptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from typing import Final

from vipkeeper_agent.checks.result import ProbeResult, describe_os_error
from vipkeeper_api.checks import HttpCheck

#: Status line and headers larger than this are refused (no check endpoint needs more).
MAX_HEAD: Final = 32 * 1024
_HEAD_END: Final = b"\r\n\r\n"
_CRLF: Final = b"\r\n"
# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _UNTIL_CLOSE = range(6)

_tls_contexts: dict[bool, ssl.SSLContext] = {}


class MalformedResponseError(Exception):
    """The server's bytes are not an HTTP/1.x response; the message says why."""


def _make_tls_context(verify: bool) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def tls_context(verify: bool) -> ssl.SSLContext:
    """The process's shared client context (building one loads the CA store: tens of ms, so it
    happens once, in a thread, never on the event loop)."""
    context = _tls_contexts.get(verify)
    if context is None:
        context = await asyncio.to_thread(_make_tls_context, verify)
        context = _tls_contexts.setdefault(verify, context)
    return context


def host_header(check: HttpCheck) -> str:
    if check.host is not None:
        return check.host
    address = str(check.address)
    if check.address.version == 6:
        address = f"[{address}]"
    if check.effective_port == (443 if check.kind == "https" else 80):
        return address
    return f"{address}:{check.effective_port}"


def server_name(check: HttpCheck) -> str:
    """The TLS server name: ``host`` without a port, else the address (for which Python sends no
    SNI but still matches the certificate's IP addresses)."""
    host = check.host
    if host is None:
        return str(check.address)
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def build_request(check: HttpCheck) -> bytes:
    return (
        f"GET {check.path} HTTP/1.1\r\n"
        f"Host: {host_header(check)}\r\n"
        "User-Agent: vipkeeper-check\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")


def parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """(status, Content-Length or None, chunked) of a response head without its final CRLFCRLF.

    Raises MalformedResponseError.
    """
    lines = head.split(_CRLF)
    status_line = lines[0]
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if (
        not version.startswith(b"HTTP/1.")
        or len(code) != 3
        or not code.isdigit()
        or rest[3:4] not in (b"", b" ")
    ):
        raise MalformedResponseError(f"malformed status line {bytes(status_line[:80])!r}")
    status = int(code)
    if status < 100:
        raise MalformedResponseError(f"malformed status code {status}")
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise MalformedResponseError(f"malformed header line {bytes(line[:80])!r}")
        lowered = name.lower()
        if lowered == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and int(value) != length):
                raise MalformedResponseError(f"bad Content-Length {bytes(value[:40])!r}")
            length = int(value)
        elif lowered == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
    return status, length, chunked


class _Exchange(asyncio.Protocol):
    """Sends the request, parses the response, resolves ``done`` exactly once.

    The body is hashed as it arrives rather than collected and hashed at the end: a body of up
    to 16 MiB hashed at once would hold the event loop for tens of milliseconds.
    """

    __slots__ = (
        "_body_size",
        "_buffer",
        "_check",
        "_digest",
        "_done",
        "_length",
        "_need",
        "_request",
        "_state",
        "_status",
    )

    def __init__(self, request: bytes, check: HttpCheck, done: asyncio.Future[ProbeResult]):
        self._request = request
        self._check = check
        self._done = done
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._length = 0
        #: Bytes still expected in the current state (body or chunk data).
        self._need = 0
        self._body_size = 0
        self._digest: hashlib._Hash | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._done.done():
            return
        self._buffer += data
        try:
            self._parse()
        except MalformedResponseError as exc:
            self._finish(False, str(exc))

    def eof_received(self) -> bool:
        self._closed("connection closed")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._closed("connection closed")
        elif isinstance(exc, OSError):
            self._closed(describe_os_error(exc))
        else:
            self._closed(f"connection lost: {exc!r}")

    def _finish(self, ok: bool, detail: str) -> None:
        if not self._done.done():
            self._done.set_result(ProbeResult(ok, detail))

    def _closed(self, why: str) -> None:
        if self._done.done():
            return
        state = self._state
        if state == _UNTIL_CLOSE:
            self._verdict()
        elif state == _HEAD and not self._buffer:
            self._finish(False, f"{why} without a response")
        elif state == _HEAD:
            self._finish(False, f"{why} inside the response headers")
        elif state == _LENGTH:
            self._finish(False, f"{why} after {self._body_size} of {self._length} body bytes")
        else:
            self._finish(False, f"{why} inside the chunked body")

    def _take(self, most: int) -> int:
        """Hash up to ``most`` buffered body bytes and drop them; how many it took."""
        buffer = self._buffer
        digest = self._digest
        assert digest is not None  # set by _head_done before any body state
        count = min(most, len(buffer))
        if count == len(buffer):
            digest.update(buffer)
            buffer.clear()
        else:
            digest.update(buffer[:count])
            del buffer[:count]
        self._body_size += count
        return count

    def _parse(self) -> None:
        buffer = self._buffer
        while not self._done.done():
            state = self._state
            if state == _HEAD:
                if not buffer.startswith(b"HTTP/"[: len(buffer)]):
                    raise MalformedResponseError(f"not an HTTP response: {bytes(buffer[:40])!r}")
                end = buffer.find(_HEAD_END)
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise MalformedResponseError(f"response headers over {MAX_HEAD} bytes")
                    return
                status, length, chunked = parse_head(bytes(buffer[:end]))
                del buffer[: end + 4]
                if 100 <= status < 200 and status != 101:
                    continue  # an interim response (103 Early Hints...): the real one follows
                self._head_done(status, length, chunked)
            elif state == _LENGTH:
                self._need -= self._take(self._need)
                if self._need:
                    return
                self._verdict()
            elif state == _CHUNK_SIZE:
                end = buffer.find(_CRLF)
                if end < 0:
                    if len(buffer) > 1024:
                        raise MalformedResponseError("chunk size line too long")
                    return
                size_text = bytes(buffer[:end]).partition(b";")[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise MalformedResponseError(f"bad chunk size {size_text[:20]!r}") from None
                del buffer[: end + 2]
                if size == 0:
                    self._verdict()  # trailers, if any, do not matter
                elif self._body_size + size > self._check.max_body:
                    self._finish(False, f"body larger than {self._check.max_body} bytes")
                else:
                    self._state, self._need = _CHUNK_DATA, size
            elif state == _CHUNK_DATA:
                self._need -= self._take(self._need)
                if self._need:
                    return
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return
                if buffer[:2] != _CRLF:
                    raise MalformedResponseError("chunk not followed by CRLF")
                del buffer[:2]
                self._state = _CHUNK_SIZE
            else:  # _UNTIL_CLOSE
                self._take(len(buffer))
                if self._body_size > self._check.max_body:
                    self._finish(False, f"body larger than {self._check.max_body} bytes")
                return

    def _head_done(self, status: int, length: int | None, chunked: bool) -> None:
        check = self._check
        self._status = status
        if not check.status_ok(status):
            self._finish(False, f"HTTP {status}")
            return
        if check.digest is None:
            # The status alone decides: no need to wait for the body.
            self._finish(True, f"HTTP {status}")
            return
        self._digest = hashlib.new(check.digest.partition(":")[0])
        if status in (101, 204, 304):
            self._verdict()
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is None:
            self._state = _UNTIL_CLOSE
        elif length > check.max_body:
            self._finish(False, f"body larger than {check.max_body} bytes")
        else:
            self._state, self._need, self._length = _LENGTH, length, length

    def _verdict(self) -> None:
        assert self._check.digest is not None and self._digest is not None
        if self._digest.hexdigest() == self._check.digest.partition(":")[2]:
            self._finish(True, f"HTTP {self._status}")
        else:
            self._finish(False, f"HTTP {self._status}, body does not match the digest")


class HttpProbe:
    """One http/https check, prepared once (request bytes, TLS settings), run many times."""

    __slots__ = ("_address", "_check", "_port", "_request", "_server_name")

    def __init__(self, check: HttpCheck) -> None:
        self._check = check
        self._address = str(check.address)
        self._port = check.effective_port
        self._request = build_request(check)
        # Without a host to verify, an unverified connection sends no server name at all.
        self._server_name = server_name(check) if check.tls_verify or check.host is not None else ""

    async def __call__(self) -> ProbeResult:
        check = self._check
        loop = asyncio.get_running_loop()
        context = await tls_context(check.tls_verify) if check.kind == "https" else None
        done: asyncio.Future[ProbeResult] = loop.create_future()
        exchange = _Exchange(self._request, check, done)
        try:
            transport, _ = await loop.create_connection(
                lambda: exchange,
                self._address,
                self._port,
                ssl=context,
                server_hostname=self._server_name if context is not None else None,
            )
        except OSError as exc:
            return ProbeResult(False, describe_os_error(exc))
        try:
            return await done
        finally:
            transport.abort()


async def probe_http(check: HttpCheck) -> ProbeResult:
    return await HttpProbe(check)()
