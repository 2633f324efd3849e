"""The smtp check against a tiny SMTP-ish server, inside a fresh network namespace.

Reuses test_check_probes's ``netns`` fixture and ``in_netns`` runner: each test body runs in a
thread that entered its own namespace, servers included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from test_check_probes import CLOSED_PORT, Changes, in_netns, netns, probe, until

from vipkeeper_agent.checks.hysteresis import Health
from vipkeeper_agent.checks.probes import ProbeResult
from vipkeeper_agent.checks.scheduler import CheckScheduler
from vipkeeper_agent.checks.smtp import MAX_REPLY, MalformedReplyError, parse_reply_line
from vipkeeper_api.checks import SmtpCheck

__all__ = ["netns"]  # the fixture, imported for pytest

T = TypeVar("T")

SMTP_PORT = 2525


@dataclass
class Smtp:
    """An SMTP-ish server: says ``banner``, reads one line, answers ``helo_answer``, reads QUIT.

    ``banner=None`` never says anything (until the client goes away); an answer without a final
    line end is followed by hanging up.
    """

    banner: bytes | None = b"220 mx.test ESMTP ready\r\n"
    helo_answer: bytes = b"250 mx.test\r\n"
    #: What the clients sent, one list of lines per connection.
    sessions: list[list[bytes]] = field(default_factory=list)
    closed: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, ["127.0.0.1", "::1"], SMTP_PORT)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lines: list[bytes] = []
        self.sessions.append(lines)
        try:
            if self.banner is None:
                await reader.read()  # until the client goes away
                return
            for answer in (self.banner, self.helo_answer):
                writer.write(answer)
                await writer.drain()
                if not answer.endswith(b"\n"):
                    return  # a partial answer (or none), then hang up
                lines.append(await reader.readline())
                if not lines[-1]:
                    return  # the client hung up
            lines.append(await reader.read())  # anything after QUIT, then EOF
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


async def with_smtp(body: Callable[[Smtp], Awaitable[T]], **settings: Any) -> T:
    server = Smtp(**settings)
    await server.start()
    try:
        return await body(server)
    finally:
        server.close()


def smtp(**extra: Any) -> SmtpCheck:
    fields = {"name": "mail", "kind": "smtp", "address": "127.0.0.1", "port": SMTP_PORT, **extra}
    return SmtpCheck.model_validate(fields)


def run_against(check: SmtpCheck, netns_name: str, **settings: Any) -> tuple[ProbeResult, Smtp]:
    async def body(server: Smtp) -> tuple[ProbeResult, Smtp]:
        result = await probe(check)
        # Let the server see the client's end of the conversation.
        await until("the server to finish", lambda: server.closed == len(server.sessions))
        return result, server

    return in_netns(netns_name, lambda: with_smtp(body, **settings))


# --- the reply parser (no network) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        (b"220 mx ESMTP", (220, True, "mx ESMTP")),
        (b"220-mx first line", (220, False, "mx first line")),
        (b"250", (250, True, "")),
        (b"554 5.3.2 \xff busy ", (554, True, "5.3.2 \ufffd busy")),
    ],
)
def test_parse_reply_line(line: bytes, parsed: tuple[int, bool, str]) -> None:
    assert parse_reply_line(line) == parsed


@pytest.mark.parametrize("line", [b"", b"22", b"2x0 hi", b"220_hi", b"SSH-2.0-OpenSSH", b"+OK"])
def test_parse_reply_line_refuses_what_is_not_smtp(line: bytes) -> None:
    with pytest.raises(MalformedReplyError, match="not an SMTP reply"):
        parse_reply_line(line)


# --- the probe -------------------------------------------------------------------------------

LONG_BANNER = (
    b"".join(b"220-" + b"x" * 100 + b"\r\n" for _ in range(MAX_REPLY // 100)) + b"220 \r\n"
)


@pytest.mark.netns
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("settings", "ok", "detail"),
    [
        ({}, True, "HELO answered 250"),
        ({"banner": b"220-mx.test ESMTP\r\n220-more\r\n220 ready\r\n"}, True, "HELO answered 250"),
        ({"banner": b"220 bare line ends\n", "helo_answer": b"250 ok\n"}, True, "answered 250"),
        ({"helo_answer": b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"}, True, "250"),
        ({"banner": b"554 5.3.2 mx.test busy\r\n"}, False, "banner 554 5.3.2 mx.test busy"),
        ({"banner": b"421\r\n"}, False, "banner 421"),
        ({"helo_answer": b"501 5.5.4 bad name\r\n"}, False, "HELO answered 501 5.5.4 bad name"),
        ({"banner": b"SSH-2.0-OpenSSH_9.2\r\n"}, False, "not an SMTP reply: b'SSH-2.0"),
        ({"banner": b"220-a\r\n250 b\r\n"}, False, "reply lines with codes 220 and 250"),
        ({"banner": b"220 mx"}, False, "connection closed inside the banner"),
        ({"banner": b""}, False, "connection closed without the banner"),
        ({"helo_answer": b""}, False, "connection closed without the answer to HELO"),
        ({"banner": b"220 " + b"x" * MAX_REPLY}, False, f"the banner is over {MAX_REPLY} bytes"),
        ({"banner": LONG_BANNER}, False, f"the banner is over {MAX_REPLY} bytes"),
    ],
)
def test_smtp_probe(netns: str, settings: dict[str, Any], ok: bool, detail: str) -> None:
    result, _ = run_against(smtp(), netns, **settings)
    assert result.ok is ok, result
    assert detail in result.detail, result


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_smtp_conversation_is_helo_then_quit(netns: str) -> None:
    result, server = run_against(smtp(heloName="lb1.example"), netns)
    assert result == ProbeResult(True, "HELO answered 250")
    assert server.sessions == [[b"HELO lb1.example\r\n", b"QUIT\r\n", b""]]


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_smtp_failures_send_no_more(netns: str) -> None:
    result, server = run_against(smtp(), netns, banner=b"554 no\r\n")
    assert result == ProbeResult(False, "banner 554 no")
    assert server.sessions == [[b""]]  # no HELO after a refusing banner: the client hung up


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_smtp_ipv6_and_refused(netns: str) -> None:
    async def body(_server: Smtp) -> list[ProbeResult]:
        return [
            await probe(smtp(address="::1")),
            await probe(smtp(port=CLOSED_PORT)),
            await probe(smtp(address="::1", port=CLOSED_PORT)),
        ]

    assert in_netns(netns, lambda: with_smtp(body)) == [
        ProbeResult(True, "HELO answered 250"),
        ProbeResult(False, "connection refused"),
        ProbeResult(False, "connection refused"),
    ]


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_smtp_server_that_never_greets_times_out_and_the_socket_is_closed(netns: str) -> None:
    async def body(server: Smtp) -> tuple[ProbeResult, float]:
        started = time.monotonic()
        result = await probe(smtp(timeout=0.3))
        elapsed = time.monotonic() - started
        # The cancelled probe must have closed its connection: the server sees EOF.
        await until("the server to see the connection closed", lambda: server.closed == 1)
        return result, elapsed

    result, elapsed = in_netns(netns, lambda: with_smtp(body, banner=None))
    assert result == ProbeResult(False, "timeout after 0.3s")
    assert 0.3 <= elapsed < 1.0


@pytest.mark.netns
@pytest.mark.timeout(30)
def test_smtp_in_the_scheduler(netns: str) -> None:
    changes = Changes()

    async def body(server: Smtp) -> None:
        scheduler = CheckScheduler([smtp(interval=0.05)], changes, None)
        scheduler.start()
        try:
            await until("the first result", lambda: len(changes.seen) == 1)
            assert changes.seen == [("mail", Health.OK, False)]
            server.helo_answer = b"421 4.3.2 shutting down\r\n"
            await until("FAILED", lambda: len(changes.seen) == 2)
            state = scheduler.states()["mail"]
            assert state.health is Health.FAILED
            assert state.last_detail == "HELO answered 421 4.3.2 shutting down"
        finally:
            await scheduler.stop()

    in_netns(netns, lambda: with_smtp(body))
