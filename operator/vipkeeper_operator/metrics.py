"""Prometheus metrics of the operator: :func:`serve` and the collector behind it.

Two sources: the controller's :class:`~vipkeeper_operator.controller.Counters` (plain ints the
loop bumps), and a :class:`Summary` of the store and the statuses, taken on the loop at the end of
every pass (:meth:`OperatorMetrics.observe`). The HTTP server is prometheus_client's, in a thread
of its own: a scrape then never waits for the loop, and a slow or hostile client cannot hold up a
pass. That thread only reads those ints and the immutable summary, never the store, which kopf's
handlers change under it.

Every replica serves its own, without a label of its own (Prometheus' ``instance``/``pod`` tell
them apart): a passive replica runs no passes, so its counters stay at 0 and it has no summary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from vipkeeper_agent.metrics import parse_address
from vipkeeper_operator.controller import Controller, Counters
from vipkeeper_operator.parse import Rejected
from vipkeeper_operator.planning.reconcile import Decision
from vipkeeper_operator.planning.vrid import Problem
from vipkeeper_operator.world import VirtualIP

__all__ = [
    "DEFAULT_ADDRESS",
    "PASS_BUCKETS",
    "MetricsServer",
    "OperatorMetrics",
    "Summary",
    "families",
    "metrics_address",
    "serve",
    "summarize",
]

log = logging.getLogger("vipkeeper.metrics")

DEFAULT_ADDRESS: Final = ":9651"
#: A pass over a few objects takes milliseconds; thousands of them, or a slow API server, seconds.
PASS_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Condition statuses always reported for a condition type seen, so that a series reads 0 instead
#: of vanishing when the last object leaves it (an alert on ``> 0`` then resolves).
CONDITION_STATUSES: Final = ("True", "False", "Unknown")
#: Reported even before any VirtualIP has it.
ALWAYS_CONDITIONS: Final = ("Ready",)
REJECTABLE_KINDS: Final = ("VirtualIP", "VirtualServer")
#: The active replica passes at least every RESYNC (10 s) while VirtualIPs exist. A summary with
#: VirtualIPs in it that is older than this is a replica's that went passive (kopf paused it):
#: it is dropped rather than contradict the active replica's for ever.
STALE_SUMMARY: Final = 60.0


# --- what a pass leaves behind (pure) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    #: (condition type, status) -> VirtualIPs whose status has it
    conditions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: VirtualIPs not being deleted whose status names no holder
    without_holder: int = 0
    #: kind -> objects whose spec is refused
    rejected: Mapping[str, int] = field(default_factory=dict)
    #: VirtualIPs that set the same explicit VRID as another on a segment (both sides count)
    vrid_conflicts: int = 0
    nodes: int = 0


def summarize(
    *,
    virtual_ips: Mapping[str, VirtualIP],
    statuses: Mapping[str, Mapping[str, Any]],
    rejected: Mapping[str, Rejected],
    problems: Mapping[str, Iterable[Problem]],
    nodes: int,
) -> Summary:
    """``statuses``: "plural/ns/name" -> status document, as the controller knows it after a pass
    (what it wrote, else what the API showed); ``problems``: the plan's, "Kind/ns/name" keyed."""
    conditions: Counter[tuple[str, str]] = Counter()
    without_holder = 0
    for key, status in statuses.items():
        plural, _, name = key.partition("/")
        if plural != "virtualips":
            continue
        for condition in status.get("conditions") or ():
            if isinstance(condition, Mapping) and condition.get("type"):
                conditions[str(condition["type"]), str(condition.get("status", "Unknown"))] += 1
        vip = virtual_ips.get(name)
        if vip is not None and not vip.deleting and not status.get("holder"):
            without_holder += 1
    # A VirtualIP the operator has written nothing for yet has no holder either.
    without_holder += sum(
        1 for k, v in virtual_ips.items() if not v.deleting and f"virtualips/{k}" not in statuses
    )
    return Summary(
        conditions=dict(conditions),
        without_holder=without_holder,
        rejected=dict(Counter(r.kind for r in rejected.values())),
        vrid_conflicts=sum(
            1
            for owner, found in problems.items()
            if owner.startswith("VirtualIP/") and any(p.reason == "VRIDConflict" for p in found)
        ),
        nodes=nodes,
    )


def families(counters: Counters, summary: Summary | None) -> Iterator[Metric]:
    """Every metric but the pass histogram; the summary's gauges only once a pass has run (a
    passive replica knows nothing to count, and 0 would read as "all is well")."""
    deletes = counters.assignment_deletes
    for name, text, value in (
        ("vipkeeper_operator_reconcile_passes", "Reconcile passes completed.", counters.passes),
        (
            "vipkeeper_operator_reconcile_errors",
            "Reconcile passes that failed (a write was refused; the pass is retried).",
            counters.errors,
        ),
        (
            "vipkeeper_operator_nodeassignments_written",
            "NodeAssignments created or replaced.",
            counters.assignment_writes - deletes,
        ),
        ("vipkeeper_operator_nodeassignments_deleted", "NodeAssignments deleted.", deletes),
        (
            "vipkeeper_operator_status_writes",
            "Status documents written to VirtualIPs and VirtualServers.",
            counters.status_writes,
        ),
        ("vipkeeper_operator_events", "Kubernetes Events posted.", counters.events),
    ):
        yield CounterMetricFamily(name, text, value=value)
    if summary is None:
        return
    conditions = GaugeMetricFamily(
        "vipkeeper_virtualips",
        "VirtualIPs by condition and its status, from the statuses the operator knows.",
        labels=["condition", "status"],
    )
    for kind in sorted({*ALWAYS_CONDITIONS, *(t for t, _ in summary.conditions)}):
        for status in sorted(
            {*CONDITION_STATUSES, *(s for t, s in summary.conditions if t == kind)}
        ):
            conditions.add_metric([kind, status], summary.conditions.get((kind, status), 0))
    yield conditions
    yield GaugeMetricFamily(
        "vipkeeper_virtualips_without_holder",
        "VirtualIPs (not being deleted) that no node holds, by their status.",
        value=summary.without_holder,
    )
    rejected = GaugeMetricFamily(
        "vipkeeper_operator_rejected_objects",
        "Objects whose spec the operator refused (the last good spec keeps running).",
        labels=["kind"],
    )
    for kind in sorted({*REJECTABLE_KINDS, *summary.rejected}):
        rejected.add_metric([kind], summary.rejected.get(kind, 0))
    yield rejected
    yield GaugeMetricFamily(
        "vipkeeper_operator_vrid_conflicts",
        "VirtualIPs that set the same VRID as another on a segment (both count; one is not "
        "rendered).",
        value=summary.vrid_conflicts,
    )
    yield GaugeMetricFamily(
        "vipkeeper_operator_nodes", "Nodes the operator knows.", value=summary.nodes
    )


# --- the collector --------------------------------------------------------------------------


class OperatorMetrics(Collector):
    """Hooks itself into ``controller`` (``on_pass``); serve :attr:`registry`."""

    def __init__(
        self,
        controller: Controller,
        buckets: tuple[float, ...] = PASS_BUCKETS,
        *,
        stale_after: float = STALE_SUMMARY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._controller = controller
        self._stale_after = stale_after
        self._clock = clock
        #: (summary, when taken, whether passes keep coming while it holds: VirtualIPs exist)
        self._summary: tuple[Summary, float, bool] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # prometheus_client's own: it locks, and is written on the loop while a scrape reads it.
        self._duration = Histogram(
            "vipkeeper_operator_reconcile_duration_seconds",
            "Duration of completed reconcile passes, writes included.",
            buckets=buckets,
            registry=self.registry,
        )
        controller.on_pass = self.observe

    def observe(self, decision: Decision, statuses: Mapping[str, Mapping[str, Any]]) -> None:
        """On the loop, after a pass."""
        store = self._controller.store
        self._duration.observe(self._controller.counters.last_pass_seconds)
        # One assignment: a scrape sees the old summary or the new one, never half of each.
        summary = summarize(
            virtual_ips=store.virtual_ips,
            statuses=statuses,
            rejected=store.rejected,
            problems=decision.plan.problems,
            nodes=len(store.nodes),
        )
        self._summary = (summary, self._clock(), bool(store.virtual_ips))

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterator[Metric]:
        taken = self._summary
        summary = None
        if taken is not None:
            summary, when, resynced = taken
            if resynced and self._clock() - when > self._stale_after:
                summary = None
        yield from families(self._controller.counters, summary)


# --- the HTTP server ------------------------------------------------------------------------


def metrics_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (every IPv4 address) or ``off`` (None)."""
    if text.strip().lower() == "off":
        return None
    return parse_address(text)


@dataclass
class MetricsServer:
    metrics: OperatorMetrics
    server: WSGIServer

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.server_address[1])

    async def close(self) -> None:
        # shutdown() waits for the serving thread's next poll (up to 0.5 s): not on the loop.
        await asyncio.to_thread(self.server.shutdown)
        self.server.server_close()


def serve(host: str, port: int, controller: Controller) -> MetricsServer:
    """Serve ``/metrics`` on ``host:port`` (``""``: every IPv4 address; port 0: any free one)."""
    metrics = OperatorMetrics(controller)
    server, _thread = start_http_server(port, addr=host or "0.0.0.0", registry=metrics.registry)
    served = MetricsServer(metrics, server)
    log.info("event=metrics_listening host=%s port=%d", host or "*", served.port)
    return served
