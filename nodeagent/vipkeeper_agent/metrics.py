"""Prometheus metrics and health endpoints of the node agent: ``serve()`` and its collector.

Metrics are computed at scrape time from the status snapshot (see ``metrics_families``); the
one state kept between scrapes is the takeover histogram's. The HTTP server is a small asyncio
one on the agent's own loop, because the snapshot must be taken there; it is bounded in every
way a scraper or a stray client could stretch it (connections, request size, slow peers), so
that it cannot hold up the VRRP adverts that share the loop. ``/healthz`` answers from that same
loop, which is what makes it a liveness probe: a wedged loop stops answering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from vipkeeper_agent.metrics_families import (
    INSTANCE_LABEL,
    STATES,
    Snapshot,
    families,
    real_server_label,
)

__all__ = [
    "INSTANCE_LABEL",
    "STATES",
    "TAKEOVER_BUCKETS",
    "AgentCollector",
    "MetricsServer",
    "TakeoverHistogram",
    "families",
    "parse_address",
    "real_server_label",
    "serve",
]

log = logging.getLogger("vipkeeper.metrics")

#: Takeover is Master_Down_Interval (3 adverts + skew) after a crash, Skew_Time after a clean
#: resignation: sub-second with 10 cs adverts, about 3-4 s with keepalived's default of 1 s.
TAKEOVER_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 10.0, 30.0)

#: A request line and headers of a scraper or kubelet probe fit many times over.
MAX_REQUEST_HEAD: Final = 8192
#: For the request to arrive, and separately for the response to be taken.
IO_TIMEOUT: Final = 5.0
#: Prometheus, a kubelet and someone with curl; beyond this new connections get a 503.
MAX_CONNECTIONS: Final = 16


# --- the collector --------------------------------------------------------------------------


@dataclass
class _Buckets:
    counts: list[int]
    total: float = 0.0


@dataclass
class TakeoverHistogram:
    """Cumulative takeover durations per instance, fed from the snapshot's ``recentTransitions``.

    Each transition is observed once: the highest sequence number seen per instance is kept. A
    sequence that goes backwards means the runner was recreated (instance removed and re-added),
    so its list is read from the start again. Takeovers that left the runner's bounded list
    between two scrapes are not observed; ``vipkeeper_vrrp_transitions_total`` still counts them.
    """

    buckets: tuple[float, ...] = TAKEOVER_BUCKETS
    _seen: dict[str, int] = field(default_factory=dict)
    _data: dict[str, _Buckets] = field(default_factory=dict)

    def update(self, snapshot: Snapshot) -> None:
        for inst in snapshot.get("instances") or ():
            records: list[Mapping[str, object]] | None = inst.get("recentTransitions")
            if records is None:
                continue
            name = str(inst["name"])
            newest = max((_seq(r) for r in records), default=0)
            seen = self._seen.get(name, 0)
            if newest < seen:
                seen = 0
            for record in records:
                takeover = record.get("takeoverSeconds")
                if _seq(record) > seen and record.get("to") == "MASTER" and takeover is not None:
                    self._observe(name, float(str(takeover)))
            self._seen[name] = max(seen, newest)

    def _observe(self, instance: str, value: float) -> None:
        data = self._data.setdefault(instance, _Buckets([0] * (len(self.buckets) + 1)))
        index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        data.counts[index] += 1
        data.total += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "vipkeeper_vrrp_takeover_seconds",
            "Takeovers from a failed or resigning master: seconds from its last advert to the "
            "VIPs in place here.",
            labels=[INSTANCE_LABEL],
        )
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for instance, data in sorted(self._data.items()):
            running = 0
            cumulative = []
            for bound, count in zip(bounds, data.counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            family.add_metric([instance], cumulative, data.total)
        return family


def _seq(record: Mapping[str, object]) -> int:
    return int(str(record["seq"]))


class AgentCollector(Collector):
    """Reads the snapshot on every scrape. Register it with a ``CollectorRegistry``."""

    def __init__(
        self, snapshot_fn: Callable[[], Snapshot], buckets: tuple[float, ...] = TAKEOVER_BUCKETS
    ) -> None:
        self._snapshot_fn = snapshot_fn
        self._takeover = TakeoverHistogram(buckets)

    def describe(self) -> Iterable[Metric]:
        # Registering must not take a snapshot: the agent may not have started yet.
        return ()

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot_fn()
        yield from families(snapshot)
        self._takeover.update(snapshot)
        yield self._takeover.family()


# --- the HTTP server ------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every address) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host needs brackets: [{host}]:{port_text}")
    return host or "", int(port_text)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes


_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"


def _text(status: int, text: str) -> Response:
    return Response(status, _TEXT, text.encode() + b"\n")


class MetricsServer:
    """``/metrics``, ``/healthz``, ``/readyz``; one request per connection."""

    def __init__(
        self,
        snapshot_fn: Callable[[], Snapshot],
        ready_fn: Callable[[], bool],
        *,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = IO_TIMEOUT,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(snapshot_fn))
        self._ready_fn = ready_fn
        self._max_connections = max_connections
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._port = 0
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._handle, host or None, port, limit=MAX_REQUEST_HEAD
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def respond(self, method: str, target: str, accept: str) -> Response:
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/readyz"):
            return _text(404, "not found")
        if method not in ("GET", "HEAD"):
            return _text(405, "method not allowed")
        if path == "/healthz":
            return _text(200, "ok")
        if path == "/readyz":
            try:
                ready = bool(self._ready_fn())
            except Exception:
                log.exception("event=ready_check_failed")
                ready = False
            return _text(200, "ready") if ready else _text(503, "not ready")
        encoder, content_type = choose_encoder(accept)
        try:
            return Response(200, content_type, encoder(self.registry))
        except Exception:
            log.exception("event=metrics_failed")
            return _text(500, "collecting metrics failed")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if len(self._handlers) > self._max_connections:
                await self._send(writer, "GET", _text(503, "too many connections"))
                return
            method, response = await self._read_and_respond(reader)
            await self._send(writer, method, response)
        except (OSError, TimeoutError):
            pass  # The peer went away or stalled: nothing to tell it.
        except asyncio.CancelledError:
            # Only close() cancels a handler. Python 3.11's start_server calls exception() on
            # the finished handler task, which raises (and logs an error) if it ended cancelled.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self._timeout)

    async def _read_and_respond(self, reader: asyncio.StreamReader) -> tuple[str, Response]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout)
        except TimeoutError:
            return "GET", _text(408, "request timeout")
        except asyncio.LimitOverrunError:
            return "GET", _text(431, "request head too large")
        except asyncio.IncompleteReadError as exc:
            raise ConnectionResetError("closed before the request was complete") from exc
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "GET", _text(400, "bad request")
        method, target, _version = parts
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        return method, self.respond(method, target, accept)

    async def _send(self, writer: asyncio.StreamWriter, method: str, response: Response) -> None:
        head = (
            f"HTTP/1.1 {response.status} {_REASONS[response.status]}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else response.body))
        await asyncio.wait_for(writer.drain(), self._timeout)


async def serve(
    host: str,
    port: int,
    snapshot_fn: Callable[[], Snapshot],
    ready_fn: Callable[[], bool],
) -> MetricsServer:
    """Listen on ``host:port`` (``""``: every address; port 0: any) until ``close()``."""
    server = MetricsServer(snapshot_fn, ready_fn)
    await server.start(host, port)
    log.info("event=metrics_listening host=%s port=%d", host or "*", server.port)
    return server
