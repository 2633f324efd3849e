"""The health-check probes and scheduler against real sockets, inside a fresh network namespace.

Each network test gets its own namespace (``vkchk-*``, loopback up, plus a veth whose peer is
down as a black hole) and runs its asyncio body in a thread that entered it with setns(2), so
every address it uses, servers included, lives in that namespace. The namespace is deleted in
the fixture's teardown, pass or fail. Exec checks need no network: they run in the host
namespace, against scripts in a root-owned temporary directory.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from nshelpers import STEP_TIMEOUT, ip, require_root
from pydantic import TypeAdapter

from vipkeeper_agent.checks import scheduler as scheduler_module
from vipkeeper_agent.checks.hysteresis import CheckState, Health
from vipkeeper_agent.checks.icmp import Pinger
from vipkeeper_agent.checks.probes import ProbeResult, make_probe, run_probe
from vipkeeper_agent.checks.scheduler import CheckScheduler
from vipkeeper_agent.scripts import ScriptPolicy
from vipkeeper_api.checks import Check, ExecCheck, HttpCheck, PingCheck, TcpCheck

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
HTTP_PORT, HTTPS_PORT, CLOSED_PORT = 8080, 8443, 8081
#: On a veth whose peer is down: routed, never answered.
BLACK_HOLE_V4, BLACK_HOLE_V6 = "192.0.2.1", "2001:db8::1"
#: No route at all.
NO_ROUTE_V4 = "198.51.100.1"
BODY = b"hello"
BIG = 5000

_libc = ctypes.CDLL(None, use_errno=True)
_checks = TypeAdapter(Check)


@pytest.fixture
def netns() -> Iterator[str]:
    require_root("creates network namespaces, opens raw ICMP sockets")
    name = f"vkchk-{uuid.uuid4().hex[:8]}"
    created = False
    try:
        ip("netns", "add", name)
        created = True
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "add", "vkhole", "type", "veth", "peer", "name", "vkpeer")
        ip("-n", name, "addr", "add", "192.0.2.254/24", "dev", "vkhole")
        ip("-n", name, "addr", "add", "2001:db8::254/64", "dev", "vkhole", "nodad")
        ip("-n", name, "link", "set", "vkhole", "up")
        yield name
    finally:
        if created:
            subprocess.run(
                ["ip", "netns", "del", name], check=False, capture_output=True, timeout=STEP_TIMEOUT
            )


def in_netns(name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``asyncio.run(main())`` in a thread inside namespace ``name``; its result or error.

    A thread, not the test's own: setns(2) moves only the calling thread, so pytest's thread
    never leaves the host namespace, whatever the body does.
    """
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({name}): {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"in-{name}", daemon=True)
    thread.start()
    thread.join(STEP_TIMEOUT)
    if thread.is_alive():
        raise AssertionError(f"the test body in {name} did not finish within {STEP_TIMEOUT}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


# --- servers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made for this test run."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    command = (
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
        " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
    )
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=STEP_TIMEOUT,
    )
    return cert, key


def _response(status: int, body: bytes = b"", *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra, "", ""]
    return "\r\n".join(head).encode() + body


@dataclass
class Web:
    """An HTTP server whose paths misbehave in the ways the client must survive."""

    requests: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    toggle_status: int = 200
    in_flight: int = 0
    max_in_flight: int = 0
    served: int = 0
    hangs_closed: int = 0
    _servers: list[asyncio.Server] = field(default_factory=list)

    async def start(self, certificate: tuple[Path, Path] | None = None) -> None:
        hosts = ["127.0.0.1", "::1"]
        self._servers.append(await asyncio.start_server(self._handle, hosts, HTTP_PORT))
        if certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
            context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self._servers.append(
                await asyncio.start_server(self._handle, hosts, HTTPS_PORT, ssl=context)
            )

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            await self._respond(head.split(b" ")[1].decode().partition("?")[0], reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _respond(
        self, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def pieces(*parts: bytes) -> None:
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)

        if path == "/ok":
            writer.write(_response(200, BODY))
        elif path.startswith("/status/"):
            writer.write(_response(int(path.rsplit("/", 1)[1]), b"status"))
        elif path == "/chunked":
            await pieces(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel",
                b"\r\n2;ext=1\r\nlo\r\n",
                b"0\r\nX-Trailer: y\r\n\r\n",
            )
        elif path == "/until-close":
            await pieces(b"HTTP/1.1 200 OK\r\n\r\nhe", b"llo")
        elif path == "/hints":
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + _response(200, BODY))
        elif path == "/big":
            writer.write(_response(200, b"x" * BIG))
        elif path == "/big-chunked":
            chunk = b"3e8\r\n" + b"x" * 1000 + b"\r\n"
            await pieces(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *[chunk] * 5, b"0\r\n\r\n"
            )
        elif path == "/big-until-close":
            await pieces(b"HTTP/1.1 200 OK\r\n\r\n", *[b"x" * 1000] * 5)
        elif path == "/bad-chunk":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        elif path == "/garbage":
            writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        elif path == "/bad-header":
            writer.write(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n")
        elif path == "/truncated":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        elif path == "/silent-close":
            pass
        elif path == "/hang":
            await reader.read()  # until the client goes away
            self.hangs_closed += 1
        elif path == "/toggle":
            writer.write(_response(self.toggle_status))
        elif path == "/slow":
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(0.1)
            finally:
                self.in_flight -= 1
            writer.write(_response(200, BODY))
        self.served += 1


def http(path: str = "/ok", **extra: Any) -> HttpCheck:
    fields = {"name": "web", "kind": "http", "address": "127.0.0.1", "port": HTTP_PORT}
    fields.update(path=path, **extra)
    return HttpCheck.model_validate(fields)


def https(path: str = "/ok", **extra: Any) -> HttpCheck:
    return http(path, kind="https", port=HTTPS_PORT, **extra)


async def probe(check: Check, pinger: Pinger | None = None) -> ProbeResult:
    """One run as the scheduler does it: the kind's probe under the check's hard timeout."""
    owned = pinger is None
    pinger = pinger or Pinger()
    try:
        return await run_probe(check, make_probe(check, script_policy=None, pinger=pinger))
    finally:
        if owned:
            pinger.close()


async def with_web(
    body: Callable[[Web], Awaitable[T]], certificate: tuple[Path, Path] | None = None
) -> T:
    web = Web()
    await web.start(certificate)
    try:
        return await body(web)
    finally:
        web.close()


MD5 = hashlib.md5(BODY).hexdigest()
SHA256 = hashlib.sha256(BODY).hexdigest()
BIG_SHA256 = "sha256:" + hashlib.sha256(b"x" * BIG).hexdigest()


# --- http -----------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("check", "ok", "detail"),
    [
        (http("/ok"), True, "HTTP 200"),
        (http("/ok", address="::1"), True, "HTTP 200"),
        (http("/status/503"), False, "HTTP 503"),
        (http("/status/301"), False, "HTTP 301"),
        (http("/status/503", expectStatus=[503]), True, "HTTP 503"),
        (http("/ok", expectStatus=[204, 301]), False, "HTTP 200"),
        (http("/ok", digest=MD5), True, "HTTP 200"),
        (http("/ok", digest=f"md5:{MD5}"), True, "HTTP 200"),
        (http("/ok", digest=f"sha256:{SHA256}"), True, "HTTP 200"),
        (http("/ok", digest="md5:" + "0" * 32), False, "HTTP 200, body does not match"),
        (http("/ok", digest="sha256:" + "0" * 64), False, "does not match the digest"),
        (http("/chunked", digest=f"sha256:{SHA256}"), True, "HTTP 200"),
        (http("/chunked", digest="sha256:" + "0" * 64), False, "does not match"),
        (http("/until-close", digest=MD5), True, "HTTP 200"),
        (http("/hints", digest=MD5), True, "HTTP 200"),
        (http("/big", digest=BIG_SHA256), True, "HTTP 200"),
        (http("/big-chunked", digest=BIG_SHA256), True, "HTTP 200"),
        (http("/big-until-close", digest=BIG_SHA256, maxBody=BIG), True, "HTTP 200"),
        (http("/bad-chunk", digest=MD5), False, "bad chunk size b'zz'"),
        (http("/big", maxBody=100, digest=MD5), False, "body larger than 100 bytes"),
        (http("/big-chunked", maxBody=4000, digest=MD5), False, "body larger than 4000 bytes"),
        (http("/big-until-close", maxBody=4000, digest=MD5), False, "larger than 4000"),
        # Without a digest the status decides and the body is never read.
        (http("/big", maxBody=100), True, "HTTP 200"),
        (http("/garbage"), False, "not an HTTP response: b'SSH-2.0"),
        (http("/bad-header"), False, "malformed header line b'no colon here'"),
        (http("/truncated", digest=MD5), False, "connection closed after 3 of 10 body bytes"),
        (http("/silent-close"), False, "connection closed without a response"),
        (http("/ok", port=CLOSED_PORT), False, "connection refused"),
    ],
    ids=lambda value: (
        value.path + (f"-{value.address}" if value.address.version == 6 else "")
        if isinstance(value, HttpCheck)
        else None
    ),
)
def test_http_probe(netns: str, check: HttpCheck, ok: bool, detail: str) -> None:
    result = in_netns(netns, lambda: with_web(lambda _web: probe(check)))
    assert result.ok is ok, result
    assert detail in result.detail, result


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_http_request_is_a_minimal_get(netns: str) -> None:
    async def body(web: Web) -> list[bytes]:
        assert (await probe(http("/ok?x=1"))).ok
        assert (await probe(http("/ok", host="web.example:8080"))).ok
        assert (await probe(http("/ok", address="::1"))).ok
        return web.requests

    first, named, v6 = in_netns(netns, lambda: with_web(body))
    assert first.startswith(b"GET /ok?x=1 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:8080\r\n" in first
    assert b"\r\nConnection: close\r\n" in first
    assert b"\r\nUser-Agent: vipkeeper-check\r\n" in first
    assert b"\r\nHost: web.example:8080\r\n" in named
    assert b"\r\nHost: [::1]:8080\r\n" in v6


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_http_server_that_never_answers_times_out_and_the_socket_is_closed(netns: str) -> None:
    async def body(web: Web) -> tuple[ProbeResult, float, int]:
        started = time.monotonic()
        result = await probe(http("/hang", timeout=0.3))
        elapsed = time.monotonic() - started
        # The cancelled probe must have closed its connection: the server sees EOF.
        for _ in range(100):
            if web.hangs_closed:
                break
            await asyncio.sleep(0.01)
        return result, elapsed, web.hangs_closed

    result, elapsed, closed = in_netns(netns, lambda: with_web(body))
    assert result == ProbeResult(False, "timeout after 0.3s")
    assert 0.3 <= elapsed < 1.0
    assert closed == 1


# --- https ----------------------------------------------------------------------------------


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_https(netns: str, certificate: tuple[Path, Path]) -> None:
    async def body(web: Web) -> tuple[list[ProbeResult], list[str | None]]:
        results = [
            await probe(https(tlsVerify=False)),
            await probe(https(tlsVerify=False, address="::1")),
            await probe(https(tlsVerify=False, host="localhost", digest=MD5)),
            await probe(https("/status/503", tlsVerify=False)),
            await probe(https()),
            await probe(https(host="localhost")),
        ]
        return results, web.server_names

    results, names = in_netns(netns, lambda: with_web(body, certificate))
    unverified, unverified_v6, named, failing, verified, verified_named = results
    assert unverified == ProbeResult(True, "HTTP 200")
    assert unverified_v6 == ProbeResult(True, "HTTP 200")
    assert named == ProbeResult(True, "HTTP 200")
    assert failing == ProbeResult(False, "HTTP 503")
    for result in (verified, verified_named):
        assert not result.ok
        assert "certificate" in result.detail, result
    # SNI: the host name when one is configured, none for a bare address.
    assert "localhost" in names
    assert names.count(None) >= 2


# --- tcp and ping ---------------------------------------------------------------------------


def tcp(address: str, port: int) -> TcpCheck:
    return TcpCheck.model_validate({"name": "t", "kind": "tcp", "address": address, "port": port})


def ping(address: str, timeout: float = 0.3) -> PingCheck:
    fields = {"name": "p", "kind": "ping", "address": address, "timeout": timeout}
    return PingCheck.model_validate(fields)


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_tcp(netns: str) -> None:
    async def body(_web: Web) -> list[ProbeResult]:
        return [
            await probe(tcp("127.0.0.1", HTTP_PORT)),
            await probe(tcp("::1", HTTP_PORT)),
            await probe(tcp("127.0.0.1", CLOSED_PORT)),
            await probe(tcp("::1", CLOSED_PORT)),
            await probe(tcp(NO_ROUTE_V4, HTTP_PORT)),
        ]

    assert in_netns(netns, lambda: with_web(body)) == [
        ProbeResult(True, "connected"),
        ProbeResult(True, "connected"),
        ProbeResult(False, "connection refused"),
        ProbeResult(False, "connection refused"),
        ProbeResult(False, "network is unreachable"),
    ]


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_ping(netns: str) -> None:
    async def body() -> list[ProbeResult]:
        pinger = Pinger()
        try:
            return [
                await probe(ping(address), pinger)
                for address in ("127.0.0.1", "::1", BLACK_HOLE_V4, BLACK_HOLE_V6, NO_ROUTE_V4)
            ]
        finally:
            pinger.close()

    up4, up6, hole4, hole6, no_route = in_netns(netns, body)
    for result in (up4, up6):
        assert result.ok, result
        assert result.detail.startswith("reply in ") and result.detail.endswith(" ms")
    assert hole4 == hole6 == ProbeResult(False, "no reply within 0.3s")
    assert no_route == ProbeResult(False, "network is unreachable")


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_concurrent_pings_get_their_own_replies(netns: str) -> None:
    """Many probes share one socket per family: each must see its own reply and only that."""
    targets = ["127.0.0.1", "::1", BLACK_HOLE_V4, "127.0.0.2", BLACK_HOLE_V6] * 20

    async def body() -> list[ProbeResult]:
        pinger = Pinger()
        try:
            return await asyncio.gather(*(probe(ping(t, 0.5), pinger) for t in targets))
        finally:
            pinger.close()

    results = in_netns(netns, body)
    for target, result in zip(targets, results, strict=True):
        assert result.ok is (target not in (BLACK_HOLE_V4, BLACK_HOLE_V6)), (target, result)


# --- scheduler ------------------------------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Health, bool]] = []

    def __call__(self, name: str, state: CheckState) -> None:
        self.seen.append((name, state.health, state.pending))


async def until(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_scheduler_rise_and_fall(netns: str) -> None:
    check = http("/toggle", interval=0.05, rise=3, fall=2)
    changes = Changes()

    async def body(web: Web) -> None:
        scheduler = CheckScheduler([check], changes, None)
        scheduler.start()
        try:
            await until("the first result", lambda: len(changes.seen) == 1)
            assert changes.seen == [("web", Health.OK, False)]
            web.toggle_status = 503
            await until("FAILED", lambda: len(changes.seen) == 2)
            state = scheduler.states()["web"]
            assert (state.health, state.consecutive_failed, state.last_detail) == (
                Health.FAILED,
                2,
                "HTTP 503",
            )
            web.toggle_status = 200
            await until("OK again", lambda: len(changes.seen) == 3)
            assert scheduler.states()["web"].consecutive_ok == 3
            assert changes.seen[-1] == ("web", Health.OK, False)
            stats = scheduler.stats()["checks"]["web"]
            assert stats["runs"] >= 6 and stats["failures"] >= 2
        finally:
            await scheduler.stop()

    in_netns(netns, lambda: with_web(body))


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_scheduler_bounds_concurrency(netns: str) -> None:
    checks = [http("/slow", name=f"slow-{i}", interval=0.05, timeout=5) for i in range(10)]

    async def body(web: Web) -> tuple[int, int, int]:
        scheduler = CheckScheduler(checks, lambda _n, _s: None, None, max_concurrency=2)
        scheduler.start()
        running = 0
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                running = max(running, scheduler.stats()["running"])
                await asyncio.sleep(0.005)
        finally:
            await scheduler.stop()
        return web.max_in_flight, web.served, running

    max_in_flight, served, running = in_netns(netns, lambda: with_web(body))
    assert max_in_flight == 2
    assert running == 2
    assert served >= 10  # 1.5 s at 2 x 0.1 s


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_scheduler_update_keeps_unchanged_checks(netns: str) -> None:
    kept = http("/ok", name="kept", interval=0.05)
    changed = http("/ok", name="changed", interval=0.05)
    removed = http("/ok", name="removed", interval=0.05)
    changes = Changes()

    async def body(_web: Web) -> None:
        scheduler = CheckScheduler([kept, changed, removed], changes, None)
        scheduler.start()
        try:
            await until(
                "3 runs of each", lambda: min(s.runs for s in scheduler.states().values()) >= 3
            )
            before = scheduler.states()["kept"].runs
            changes.seen.clear()
            added = http("/status/503", name="added", interval=0.05)
            scheduler.update([kept.model_copy(), changed.model_copy(update={"rise": 2}), added])
            states = scheduler.states()
            assert sorted(states) == ["added", "changed", "kept"]
            assert states["kept"].runs >= before and not states["kept"].pending
            assert states["changed"].pending and states["changed"].runs == 0
            assert states["added"].pending
            await until(
                "first results of the restarted checks",
                lambda: {n for n, _, _ in changes.seen} >= {"changed", "added"},
            )
            assert ("kept", Health.OK, False) not in changes.seen  # no restart, no new "first"
            assert ("added", Health.FAILED, False) in changes.seen
            await until("kept to go on", lambda: scheduler.states()["kept"].runs > before)
        finally:
            await scheduler.stop()
        assert scheduler.states() == {}

    in_netns(netns, lambda: with_web(body))


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_scheduler_stop_is_prompt(netns: str) -> None:
    checks: list[HttpCheck | PingCheck] = [
        http("/hang", name=f"hang-{i}", interval=0.05, timeout=30) for i in range(20)
    ]
    checks.append(
        PingCheck.model_validate(
            {"name": "hole", "kind": "ping", "address": BLACK_HOLE_V4, "timeout": 30}
        )
    )

    async def body(web: Web) -> float:
        scheduler = CheckScheduler(checks, lambda _n, _s: None, None)
        scheduler.start()
        await until("every check in flight", lambda: scheduler.stats()["running"] == len(checks))
        started = time.monotonic()
        await scheduler.stop()
        elapsed = time.monotonic() - started
        await until("the server to see every connection closed", lambda: web.hangs_closed == 20)
        return elapsed

    assert in_netns(netns, lambda: with_web(body)) < 0.5


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_scheduler_retries_at_retry_interval_until_failed(netns: str) -> None:
    """keepalived's delay_before_retry: once a run fails, the next ones come after
    retry_interval until fall is reached; FAILED, the check is back on its interval."""
    check = tcp("127.0.0.1", HTTP_PORT).model_copy(
        update={"interval": 1.0, "retry_interval": 0.1, "fall": 3}
    )
    changes = Changes()

    async def body(web: Web) -> tuple[float, float, int, int]:
        scheduler = CheckScheduler([check], changes, None)
        scheduler.start()
        try:
            await until("the first result", lambda: len(changes.seen) == 1)
            assert changes.seen == [("t", Health.OK, False)]
            web.close()  # the server goes away: connection refused from now on
            gone = time.monotonic()
            state = scheduler.states
            await until("the first failure", lambda: state()["t"].consecutive_failed >= 1)
            first_failure = time.monotonic()
            await until("FAILED", lambda: len(changes.seen) == 2)
            failed = time.monotonic()
            runs = state()["t"].runs
            # FAILED: back to the 1 s interval, no run for a while.
            await asyncio.sleep(0.6)
            runs_after = state()["t"].runs
        finally:
            await scheduler.stop()
        return first_failure - gone, failed - first_failure, runs, runs_after

    to_first_failure, to_failed, runs, runs_after = in_netns(netns, lambda: with_web(body))
    assert changes.seen[-1] == ("t", Health.FAILED, False)
    assert to_first_failure < 1.0 + 0.3  # the normal interval after a success
    assert 0.15 <= to_failed < 0.5, to_failed  # 2 retries 0.1 s apart, not 2 x 1 s
    assert runs == 4  # one success, three failures
    assert runs_after == runs


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_scheduler_warmup_spreads_the_first_runs(netns: str) -> None:
    warm = [tcp("127.0.0.1", HTTP_PORT).model_copy(update={"name": f"warm-{i}"}) for i in range(50)]
    now = [
        tcp("127.0.0.1", HTTP_PORT).model_copy(update={"name": f"now-{i}", "warmup": 0.0})
        for i in range(5)
    ]
    checks = [c.model_copy(update={"warmup": 0.5, "interval": 2.0}) for c in warm] + now

    async def body(_web: Web) -> dict[str, float]:
        first: dict[str, float] = {}

        def on_change(name: str, _state: CheckState) -> None:
            first.setdefault(name, time.monotonic())

        scheduler = CheckScheduler(checks, on_change, None)
        started = time.monotonic()
        scheduler.start()
        try:
            await until("every first result", lambda: len(first) == len(checks))
        finally:
            await scheduler.stop()
        return {name: at - started for name, at in first.items()}

    first = in_netns(netns, lambda: with_web(body))
    warm_times = sorted(at for name, at in first.items() if name.startswith("warm-"))
    now_times = [at for name, at in first.items() if name.startswith("now-")]
    # Within (0, 0.5] plus the run itself, none later (without warmup: over [0, 1) s).
    assert warm_times[-1] < 0.5 + 0.15, warm_times
    # Spread over it, not bunched: random moments land in both halves, early and late.
    assert warm_times[0] < 0.15 and warm_times[-1] > 0.35, warm_times
    assert 10 <= sum(at < 0.25 for at in warm_times) <= 40, warm_times
    # warmup 0: at once.
    assert max(now_times) < 0.15, now_times


# --- exec -----------------------------------------------------------------------------------


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root: scripts must be owned by root to be allowed to run")
    directory = tmp_path / "scripts"
    directory.mkdir(mode=0o755)
    for name, text in {
        "good": "exit 0",
        "bad": "echo\necho 'db down: 3 replicas'\necho more\nexit 3",
        "slow": "sleep 10",
        "killed": "kill -9 $$",
        # Records its pid and a background child's, then waits: stop() must kill both.
        "stuck": f"echo $$ > {tmp_path}/pids\nsleep 30 &\necho $! >> {tmp_path}/pids\nwait",
    }.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{text}\n")
        path.chmod(0o755)
    return directory


def exec_check(script: str, **extra: Any) -> ExecCheck:
    fields = {"name": "x", "kind": "exec", "script": script, "timeout": 0.3, **extra}
    return ExecCheck.model_validate(fields)


def dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.timeout(30)
def test_exec_probe(scripts: Path) -> None:
    policy = ScriptPolicy(scripts, user=None)

    async def run(check: ExecCheck, with_policy: bool = True) -> ProbeResult:
        made = make_probe(check, script_policy=policy if with_policy else None, pinger=Pinger())
        return await run_probe(check, made)

    async def body() -> list[ProbeResult]:
        return [
            await run(exec_check("good")),
            await run(exec_check("bad")),
            await run(exec_check("slow")),
            await run(exec_check("killed")),
            await run(exec_check("missing")),
            await run(exec_check("good"), with_policy=False),
        ]

    good, bad, slow, killed, missing, disabled = asyncio.run(body())
    assert good == ProbeResult(True, "exit 0")
    assert bad == ProbeResult(False, "exit 3: db down: 3 replicas")
    assert slow == ProbeResult(False, "timeout after 0.3s")
    assert killed == ProbeResult(False, "killed by signal 9")
    assert not missing.ok and "missing" in missing.detail
    assert disabled == ProbeResult(
        False, "exec checks are disabled: the agent has no script directory"
    )


@pytest.mark.timeout(30)
def test_scheduler_stop_kills_exec_children(scripts: Path) -> None:
    pids = scripts.parent / "pids"

    async def body() -> float:
        check = exec_check("stuck", timeout=30)
        scheduler = CheckScheduler([check], lambda _n, _s: None, ScriptPolicy(scripts, user=None))
        scheduler.start()
        await until(
            "the script to start",
            lambda: len(pids.read_text().split()) == 2 if pids.exists() else False,
        )
        # Past the spawn: run_script is then waiting on the script, the state a long check is
        # in nearly all its life.
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await scheduler.stop()
        return time.monotonic() - started

    assert asyncio.run(body()) < 1.0
    deadline = time.monotonic() + 5
    alive = [int(p) for p in pids.read_text().split()]
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if not dead(pid)]
        time.sleep(0.01)
    assert alive == []


# --- scheduler robustness (no network needed) -----------------------------------------------


@pytest.mark.timeout(30)
def test_probe_and_callback_exceptions_never_stop_a_check(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"probe": 0, "callback": 0}

    async def exploding() -> ProbeResult:
        calls["probe"] += 1
        if calls["probe"] % 2:
            raise RuntimeError("boom")
        return ProbeResult(True, "fine")

    def factory(*_args: object, **_kwargs: object) -> Callable[[], Awaitable[ProbeResult]]:
        return exploding

    def on_change(_name: str, _state: CheckState) -> None:
        calls["callback"] += 1
        raise ValueError("callback bug")

    monkeypatch.setattr(scheduler_module, "make_probe", factory)
    check = tcp("127.0.0.1", 1).model_copy(update={"interval": 0.05})

    async def body() -> CheckState:
        scheduler = CheckScheduler([check], on_change, None)
        scheduler.start()
        try:
            await until("six runs", lambda: scheduler.states()["t"].runs >= 6)
            return scheduler.states()["t"]
        finally:
            await scheduler.stop()

    state = asyncio.run(body())
    assert calls["callback"] >= 6  # rise = fall = 1: every run flips the health
    assert state.last_detail in ("fine", "RuntimeError('boom')")
