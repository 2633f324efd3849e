"""The operator's metrics: the summary a pass leaves, the families read from it and the
controller's counters, a real pass feeding them, and the HTTP endpoint every replica serves."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from vipkeeper_operator import handlers
from vipkeeper_operator.cli import parser
from vipkeeper_operator.controller import Controller, Counters
from vipkeeper_operator.metrics import OperatorMetrics, Summary, families, serve, summarize
from vipkeeper_operator.planning.vrid import Problem
from vipkeeper_operator.planning.writes import EventWrite, Write
from vipkeeper_operator.store import Store

Raw = dict[str, Any]


def node(name: str, ip: str) -> Raw:
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": ip}],
        },
    }


def vip(name: str, address: str = "192.0.2.10/24", *, deleting: bool = False) -> Raw:
    meta: Raw = {"namespace": "web", "name": name, "uid": f"u-{name}", "generation": 1}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-04T00:00:00Z"
    return {"kind": "VirtualIP", "metadata": meta, "spec": {"addresses": [address]}}


def bad_vs(name: str) -> Raw:
    return {"kind": "VirtualServer", "metadata": {"namespace": "web", "name": name}, "spec": {}}


def status(holder: str | None = None, **conditions: str) -> Raw:
    doc: Raw = {"conditions": [{"type": t, "status": s} for t, s in conditions.items()]}
    if holder is not None:
        doc["holder"] = holder
    return doc


def store_of(*objects: tuple[str, Raw]) -> Store:
    store = Store()
    for plural, obj in objects:
        store.observe(plural, obj)
    return store


# --- the summary of a pass ------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryCase:
    name: str
    objects: tuple[tuple[str, Raw], ...] = ()
    statuses: Mapping[str, Raw] = field(default_factory=dict)
    problems: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)
    expected: Summary = field(default_factory=Summary)


CONFLICT = Problem("VRIDConflict", "vrid 7 is already used")
SUMMARY_CASES = [
    SummaryCase("nothing known"),
    SummaryCase(
        "conditions counted per VirtualIP, VirtualServer statuses ignored",
        objects=(("virtualips", vip("a")), ("virtualips", vip("b", "192.0.2.11/24"))),
        statuses={
            "virtualips/web/a": status("n1", Ready="True", SplitBrain="False"),
            "virtualips/web/b": status(None, Ready="False", SplitBrain="False"),
            "virtualservers/web/s": status(None, Ready="False"),
        },
        expected=Summary(
            conditions={("Ready", "True"): 1, ("Ready", "False"): 1, ("SplitBrain", "False"): 2},
            without_holder=1,
        ),
    ),
    SummaryCase(
        "a VirtualIP without a status yet has no holder",
        objects=(("virtualips", vip("a")),),
        expected=Summary(without_holder=1),
    ),
    SummaryCase(
        "a VirtualIP being deleted is not missing a holder",
        objects=(("virtualips", vip("a", deleting=True)),),
        statuses={"virtualips/web/a": status(None, Ready="False")},
        expected=Summary(conditions={("Ready", "False"): 1}),
    ),
    SummaryCase(
        "refused specs by kind",
        objects=(
            ("virtualips", vip("a", "192.0.2.999/24")),
            ("virtualservers", bad_vs("s1")),
            ("virtualservers", bad_vs("s2")),
        ),
        expected=Summary(rejected={"VirtualIP": 1, "VirtualServer": 2}),
    ),
    SummaryCase(
        "VRID conflicts: both VirtualIPs, not other problems or kinds",
        problems={
            "VirtualIP/web/a": (CONFLICT,),
            "VirtualIP/web/b": (Problem("AddressConflict", "x"), CONFLICT),
            "VirtualIP/web/c": (Problem("VRIDExhausted", "none free"),),
            "VirtualServer/web/s": (CONFLICT,),
        },
        expected=Summary(vrid_conflicts=2),
    ),
    SummaryCase(
        "nodes known",
        objects=(("nodes", node("n1", "10.0.0.1")), ("nodes", node("n2", "10.0.0.2"))),
        expected=Summary(nodes=2),
    ),
]


@pytest.mark.parametrize("case", SUMMARY_CASES, ids=lambda c: c.name)
def test_summary(case: SummaryCase) -> None:
    store = store_of(*case.objects)
    got = summarize(
        virtual_ips=store.virtual_ips,
        statuses=case.statuses,
        rejected=store.rejected,
        problems=case.problems,
        nodes=len(store.nodes),
    )
    assert got == case.expected


# --- the families ---------------------------------------------------------------------------


def samples(metrics: Iterable[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for metric in metrics:
        for s in metric.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def one(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@dataclass(frozen=True)
class FamilyCase:
    name: str
    counters: Counters
    summary: Summary | None
    expected: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]
    absent: tuple[str, ...] = ()


FAMILY_CASES = [
    FamilyCase(
        "a replica that ran no pass: counters at 0, no gauges",
        Counters(),
        None,
        {
            one("vipkeeper_operator_reconcile_passes_total"): 0,
            one("vipkeeper_operator_reconcile_errors_total"): 0,
            one("vipkeeper_operator_events_total"): 0,
        },
        absent=("vipkeeper_virtualips", "vipkeeper_operator_nodes"),
    ),
    FamilyCase(
        "writes and deletions apart",
        Counters(passes=4, errors=1, assignment_writes=5, assignment_deletes=2, status_writes=3),
        None,
        {
            one("vipkeeper_operator_reconcile_passes_total"): 4,
            one("vipkeeper_operator_reconcile_errors_total"): 1,
            one("vipkeeper_operator_nodeassignments_written_total"): 3,
            one("vipkeeper_operator_nodeassignments_deleted_total"): 2,
            one("vipkeeper_operator_status_writes_total"): 3,
        },
    ),
    FamilyCase(
        "an empty cluster reads 0, Ready and both kinds included",
        Counters(passes=1),
        Summary(),
        {
            one("vipkeeper_virtualips", condition="Ready", status="True"): 0,
            one("vipkeeper_virtualips", condition="Ready", status="False"): 0,
            one("vipkeeper_virtualips", condition="Ready", status="Unknown"): 0,
            one("vipkeeper_virtualips_without_holder"): 0,
            one("vipkeeper_operator_rejected_objects", kind="VirtualIP"): 0,
            one("vipkeeper_operator_rejected_objects", kind="VirtualServer"): 0,
            one("vipkeeper_operator_vrid_conflicts"): 0,
            one("vipkeeper_operator_nodes"): 0,
        },
    ),
    FamilyCase(
        "every condition type seen gets all three statuses",
        Counters(passes=1),
        Summary(
            conditions={("Ready", "True"): 2, ("SplitBrain", "True"): 1},
            without_holder=1,
            rejected={"VirtualServer": 1},
            vrid_conflicts=2,
            nodes=3,
        ),
        {
            one("vipkeeper_virtualips", condition="Ready", status="True"): 2,
            one("vipkeeper_virtualips", condition="SplitBrain", status="True"): 1,
            one("vipkeeper_virtualips", condition="SplitBrain", status="False"): 0,
            one("vipkeeper_virtualips_without_holder"): 1,
            one("vipkeeper_operator_rejected_objects", kind="VirtualServer"): 1,
            one("vipkeeper_operator_vrid_conflicts"): 2,
            one("vipkeeper_operator_nodes"): 3,
        },
    ),
]


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_families(case: FamilyCase) -> None:
    metrics = list(families(case.counters, case.summary))
    got = samples(metrics)
    assert {k: got.get(k) for k in case.expected} == case.expected
    assert not {m.name for m in metrics} & set(case.absent)


# --- fed by real passes ---------------------------------------------------------------------


class FakeWriter:
    def __init__(self) -> None:
        self.writes: list[Write] = []

    async def write(self, write: Write) -> None:
        self.writes.append(write)

    async def replace_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        pass

    async def post_event(self, event: EventWrite, now: datetime) -> None:
        pass

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_passes_feed_the_counters_histogram_and_summary() -> None:
    store = store_of(("nodes", node("n1", "10.0.0.1")), ("virtualips", vip("a")))
    controller = Controller(store, FakeWriter())
    metrics = OperatorMetrics(controller)
    assert value(metrics, "vipkeeper_operator_nodes") is None  # no pass yet

    asyncio.run(controller.reconcile())
    assert value(metrics, "vipkeeper_operator_reconcile_passes_total") == 1
    assert value(metrics, "vipkeeper_operator_reconcile_duration_seconds_count") == 1
    assert value(metrics, "vipkeeper_operator_nodeassignments_written_total") == 1
    assert value(metrics, "vipkeeper_operator_status_writes_total") == 1
    assert value(metrics, "vipkeeper_operator_nodes") == 1
    # No agent has reported: nobody holds it, and its status says why.
    assert value(metrics, "vipkeeper_virtualips_without_holder") == 1
    ready = {
        s: value(metrics, "vipkeeper_virtualips", condition="Ready", status=s)
        for s in ("True", "False", "Unknown")
    }
    assert sum(v or 0 for v in ready.values()) == 1 and ready["True"] == 0

    store.forget("nodes", node("n1", "10.0.0.1"))
    asyncio.run(controller.reconcile())
    assert value(metrics, "vipkeeper_operator_nodeassignments_deleted_total") == 1
    assert value(metrics, "vipkeeper_operator_nodeassignments_written_total") == 1
    assert value(metrics, "vipkeeper_operator_reconcile_duration_seconds_count") == 2
    assert value(metrics, "vipkeeper_operator_nodes") == 0


@pytest.mark.parametrize(
    ("objects", "age", "reported"),
    [
        ((("virtualips", vip("a")),), 59.0, True),
        # Passes stopped although VirtualIPs exist: this replica went passive.
        ((("virtualips", vip("a")),), 61.0, False),
        # Nothing makes the active replica pass in a cluster without VirtualIPs.
        ((("nodes", node("n1", "10.0.0.1")),), 3600.0, True),
    ],
)
def test_a_demoted_replica_drops_its_summary(
    objects: tuple[tuple[str, Raw], ...], age: float, reported: bool
) -> None:
    now = [1000.0]
    controller = Controller(store_of(*objects), FakeWriter())
    metrics = OperatorMetrics(controller, clock=lambda: now[0])
    asyncio.run(controller.reconcile())
    now[0] += age
    assert (value(metrics, "vipkeeper_operator_nodes") is not None) is reported
    assert value(metrics, "vipkeeper_operator_reconcile_passes_total") == 1


# --- the endpoint and its flag --------------------------------------------------------------


def test_every_replica_serves_metrics_over_http() -> None:
    controller = Controller(Store(), FakeWriter())
    served = serve("127.0.0.1", 0, controller)
    try:
        controller.counters.passes = 3
        url = f"http://127.0.0.1:{served.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        assert "vipkeeper_operator_reconcile_passes_total 3.0" in text
        assert "vipkeeper_operator_reconcile_duration_seconds" in {
            f.name for f in text_string_to_metric_families(text)
        }
        # A passive replica: no label of its own, and nothing it does not know.
        assert "vipkeeper_virtualips{" not in text
        request = urllib.request.Request(
            url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read().decode().endswith("# EOF\n")
    finally:
        asyncio.run(served.close())
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=2)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ("", 9651)),
        (["--metrics-address", "off"], None),
        (["--metrics-address", "127.0.0.1:9000"], ("127.0.0.1", 9000)),
        (["--metrics-address", "[::]:9651"], ("::", 9651)),
    ],
)
def test_metrics_address_flag(argv: list[str], expected: tuple[str, int] | None) -> None:
    assert parser().parse_args(argv).metrics_address == expected


@pytest.mark.parametrize("bad", ["9651", "host:", ":0", "::1:9651"])
def test_a_bad_metrics_address_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["--metrics-address", bad])
    assert "--metrics-address" in capsys.readouterr().err


def start_and_stop(
    monkeypatch: pytest.MonkeyPatch, address: tuple[str, int]
) -> tuple[kopf.Memo, str]:
    """handlers.py's startup and cleanup, without kopf: the memo, and what /metrics said between."""
    monkeypatch.setattr(handlers, "load_config", lambda: None)
    monkeypatch.setattr(handlers, "Kube", FakeWriter)
    monkeypatch.setitem(handlers.SETTINGS, "metrics", address)
    # kopf's decorators type the handlers as kopf calls them (every kwarg); these take **_.
    startup: Any = handlers.startup
    cleanup: Any = handlers.cleanup

    async def lifetime() -> tuple[kopf.Memo, str]:
        memo = kopf.Memo()
        await startup(settings=kopf.OperatorSettings(), memo=memo)
        try:
            if "metrics" not in memo:
                return memo, ""
            url = f"http://127.0.0.1:{memo.metrics.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return memo, str(response.read().decode())
        finally:
            await cleanup(memo=memo)

    return asyncio.run(lifetime())


def test_the_startup_handler_serves_and_cleanup_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    memo, text = start_and_stop(monkeypatch, ("127.0.0.1", 0))
    assert "vipkeeper_operator_reconcile_passes_total" in text and memo.task.done()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{memo.metrics.port}/metrics", timeout=2)


def test_a_taken_port_costs_the_metrics_not_the_operator(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        memo, _ = start_and_stop(monkeypatch, taken.getsockname())
    assert "metrics" not in memo and memo.task.done()
    assert "event=metrics_failed" in caplog.text
