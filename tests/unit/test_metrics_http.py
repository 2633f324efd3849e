"""The metrics server on a real loopback socket (127.0.0.1, ephemeral port): the endpoints,
bad requests, its bounds (size, time, connections) and close(); and --metrics-address parsing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vipkeeper_agent.metrics import MetricsServer, parse_address, serve

SNAPSHOT: dict[str, Any] = {
    "instances": [{"name": "web", "state": "MASTER", "priority": 100}],
    "ipvs": {
        "virtualServers": [
            {"name": "api", "realServers": [{"address": "10.0.0.2", "port": 80, "healthy": False}]}
        ]
    },
}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        (":9100", ("", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("[::]:80", ("::", 80)),
        ("node.local:1", ("node.local", 1)),
        ("9100", None),
        ("::1:9100", None),
        ("host:0", None),
        ("host:65536", None),
        ("host:x", None),
    ],
)
def test_parse_address(text: str, want: tuple[str, int] | None) -> None:
    if want is None:
        with pytest.raises(ValueError):
            parse_address(text)
    else:
        assert parse_address(text) == want


# --- HTTP on a real loopback socket ------------------------------------------------------------


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str, method: str = "GET", accept: str = "") -> bytes:
    extra = f"Accept: {accept}\r\n" if accept else ""
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def with_server(
    test: Callable[[MetricsServer, dict[str, Any]], Awaitable[None]],
    snapshot_fn: Callable[[], Mapping[str, Any]] = lambda: SNAPSHOT,
    **kwargs: Any,
) -> None:
    state: dict[str, Any] = {"ready": False}

    async def main() -> None:
        if kwargs:
            server = MetricsServer(snapshot_fn, lambda: state["ready"], **kwargs)
            await server.start("127.0.0.1", 0)
        else:
            server = await serve("127.0.0.1", 0, snapshot_fn, lambda: state["ready"])
        try:
            await asyncio.wait_for(test(server, state), 20)
        finally:
            await asyncio.wait_for(server.close(), 5)

    asyncio.run(main())


def test_metrics_endpoint_serves_the_exposition_format() -> None:
    async def test(server: MetricsServer, _: dict[str, Any]) -> None:
        status, headers, body = await request(server.port, get("/metrics"))
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert int(headers["Content-Length"]) == len(body)
        parsed = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert parsed["vipkeeper_vrrp_state"].type == "gauge"
        assert parsed["vipkeeper_vrrp_takeover_seconds"].type == "histogram"
        [up] = parsed["vipkeeper_ipvs_real_server_up"].samples
        assert (up.labels, up.value) == ({"virtual_server": "api", "real_server": "10.0.0.2:80"}, 0)
        status, headers, body = await request(
            server.port, get("/metrics?x=1", accept="application/openmetrics-text; version=1.0.0")
        )
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

    with_server(test)


def test_health_and_readiness() -> None:
    async def test(server: MetricsServer, state: dict[str, Any]) -> None:
        assert (await request(server.port, get("/healthz")))[0] == 200
        assert (await request(server.port, get("/readyz")))[0] == 503
        state["ready"] = True
        assert (await request(server.port, get("/readyz")))[:3:2] == (200, b"ready\n")
        status, headers, body = await request(server.port, get("/healthz", "HEAD"))
        assert (status, headers["Content-Length"], body) == (200, "3", b"")

    with_server(test)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (get("/nope"), 404),
        (get("/metrics", "POST"), 405),
        (b"garbage\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ],
)
def test_bad_requests(raw: bytes, want: int) -> None:
    async def test(server: MetricsServer, _: dict[str, Any]) -> None:
        assert (await request(server.port, raw))[0] == want

    with_server(test)


def test_failing_snapshot_is_a_500_and_the_server_lives_on() -> None:
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("boom")

    async def test(server: MetricsServer, _: dict[str, Any]) -> None:
        assert (await request(server.port, get("/metrics")))[0] == 500
        assert (await request(server.port, get("/healthz")))[0] == 200

    with_server(test, broken)


def test_slow_client_times_out_and_excess_connections_are_refused() -> None:
    async def test(server: MetricsServer, _: dict[str, Any]) -> None:
        # Two idle connections take both slots: the third is refused at once.
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert (await request(server.port, get("/healthz")))[0] == 503
        # The idle ones are answered 408 after the timeout and the slots come back.
        for reader, writer in idle:
            data = await asyncio.wait_for(reader.read(), 5)
            assert data.startswith(b"HTTP/1.1 408 ")
            writer.close()
        assert (await request(server.port, get("/healthz")))[0] == 200

    with_server(test, max_connections=2, timeout=0.3)


def test_close_ends_open_connections() -> None:
    async def main() -> None:
        server = await serve("127.0.0.1", 0, lambda: SNAPSHOT, lambda: True)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        await asyncio.wait_for(server.close(), 2)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)

    asyncio.run(main())
