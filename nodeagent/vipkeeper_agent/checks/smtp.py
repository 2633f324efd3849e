"""The smtp check (keepalived's SMTP_CHECK): connect, read a 220 banner, send HELO, read a 250,
send QUIT, close.

On ``asyncio.BufferedProtocol`` with one fixed buffer of ``MAX_REPLY`` bytes: the transport reads
at most the buffer's free space, so a server that talks without end costs 4 KiB, and a reply
longer than that (a multi-line banner included) fails the check. Whatever the server sends, the
probe ends in a ``ProbeResult``; a cancelled probe (the scheduler's timeout) closes its socket.
"""

from __future__ import annotations

import asyncio
from typing import Final

from vipkeeper_agent.checks.result import ProbeResult, describe_os_error
from vipkeeper_api.checks import SmtpCheck

#: The longest reply accepted, all its lines together (RFC 5321 lines are at most 512 bytes).
MAX_REPLY: Final = 4096
#: Reply text quoted in a detail at most.
MAX_TEXT: Final = 100
_QUIT: Final = b"QUIT\r\n"
# What the conversation waits for.
_BANNER, _HELO = range(2)
_WHAT: Final = {_BANNER: "the banner", _HELO: "the answer to HELO"}


class MalformedReplyError(Exception):
    """The server's bytes are not SMTP replies; the message says why."""


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """(code, whether it is the reply's last line, text) of one reply line, without its line end.

    ``220-first`` continues a reply, ``220 last`` or a bare ``220`` ends it (RFC 5321 4.2).
    Raises MalformedReplyError.
    """
    code, separator = line[:3], line[3:4]
    if len(code) != 3 or not code.isdigit() or separator not in (b"", b" ", b"-"):
        raise MalformedReplyError(f"not an SMTP reply: {bytes(line[:40])!r}")
    return int(code), separator != b"-", line[4:].decode("ascii", "replace").strip()


def _said(code: int, text: str) -> str:
    return f"{code} {text[:MAX_TEXT]}".rstrip()


class _Conversation(asyncio.BufferedProtocol):
    """Reads replies line by line from one fixed buffer and resolves ``done`` exactly once."""

    __slots__ = (
        "_buffer",
        "_code",
        "_done",
        "_hello",
        "_reply_size",
        "_size",
        "_step",
        "_text",
        "_transport",
        "_view",
    )

    def __init__(self, hello: bytes, done: asyncio.Future[ProbeResult]) -> None:
        self._hello = hello
        self._done = done
        self._buffer = bytearray(MAX_REPLY)
        self._view = memoryview(self._buffer)
        #: Bytes held in the buffer: the unparsed rest of the current reply.
        self._size = 0
        #: Bytes of the current reply already parsed and dropped (its earlier lines).
        self._reply_size = 0
        #: Code and first line's text of the current reply, once its first line is in.
        self._code: int | None = None
        self._text = ""
        self._step = _BANNER
        self._transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        # Never full while the conversation goes on: a full buffer without a line end fails it,
        # and after the result whatever still comes is dropped.
        if self._done.done():
            self._size = 0
        return self._view[self._size :]

    def buffer_updated(self, nbytes: int) -> None:
        self._size += nbytes
        if self._done.done():
            self._size = 0
            return
        try:
            self._parse()
        except MalformedReplyError as exc:
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
        partial = self._size or self._code is not None
        self._finish(False, f"{why} {'inside' if partial else 'without'} {_WHAT[self._step]}")

    def _parse(self) -> None:
        while not self._done.done():
            end = self._buffer.find(b"\n", 0, self._size)
            if end < 0:
                if self._reply_size + self._size >= MAX_REPLY:
                    raise MalformedReplyError(f"{_WHAT[self._step]} is over {MAX_REPLY} bytes")
                return
            line = bytes(self._view[:end]).rstrip(b"\r")
            consumed = end + 1
            rest = bytes(self._view[consumed : self._size])
            self._view[: len(rest)] = rest
            self._size = len(rest)
            self._reply_size += consumed
            code, last, text = parse_reply_line(line)
            if self._code is None:
                self._code, self._text = code, text
            elif code != self._code:
                raise MalformedReplyError(f"reply lines with codes {self._code} and {code}")
            if last:
                self._reply(self._code, self._text)
                self._code, self._text, self._reply_size = None, "", 0

    def _reply(self, code: int, text: str) -> None:
        transport = self._transport
        assert transport is not None
        if self._step == _BANNER:
            if code != 220:
                self._finish(False, f"banner {_said(code, text)}")
                return
            transport.write(self._hello)
            self._step = _HELO
        elif code != 250:
            self._finish(False, f"HELO answered {_said(code, text)}")
        else:
            transport.write(_QUIT)
            self._finish(True, "HELO answered 250")


class SmtpProbe:
    """One smtp check, prepared once (address, HELO line), run many times."""

    __slots__ = ("_address", "_hello", "_port")

    def __init__(self, check: SmtpCheck) -> None:
        self._address = str(check.address)
        self._port = check.port
        self._hello = f"HELO {check.helo_name}\r\n".encode("ascii")

    async def __call__(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ProbeResult] = loop.create_future()
        conversation = _Conversation(self._hello, done)
        try:
            transport, _ = await loop.create_connection(
                lambda: conversation, self._address, self._port
            )
        except OSError as exc:
            return ProbeResult(False, describe_os_error(exc))
        polite = False
        try:
            result = await done
            polite = result.ok
            return result
        finally:
            # After a good conversation, close() still sends the QUIT written last; otherwise
            # (a failure, or the scheduler's timeout cancelling the probe) drop the connection.
            if polite:
                transport.close()
            else:
                transport.abort()


async def probe_smtp(check: SmtpCheck) -> ProbeResult:
    return await SmtpProbe(check)()
