"""Metrics from status snapshots (exact families and samples), the takeover histogram across
scrapes, and the HTTP endpoints on a real loopback socket."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric

from vipkeeper_agent.metrics import (
    AgentCollector,
    TakeoverHistogram,
    families,
)
from vipkeeper_agent.status.snapshot import _add_transition_history
from vipkeeper_agent.vrrp import fsm

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: list[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}


def norm(want: Samples) -> Samples:
    return {(name, tuple(sorted(labels))): value for (name, labels), value in want.items()}


def kinds(metrics: list[Metric]) -> dict[str, str]:
    return {m.name: m.type for m in metrics}


def states(instance: str, current: str) -> Samples:
    return {
        ("vipkeeper_vrrp_state", (("vrrp_instance", instance), ("state", s))): float(s == current)
        for s in ("INIT", "BACKUP", "MASTER", "FAULT")
    }


INSTANCE: dict[str, Any] = {
    "name": "web",
    "state": "MASTER",
    "priority": 90,
    "configuredPriority": 100,
    "counters": {
        "advertsSent": 7,
        "advertsReceived": 3,
        "sendErrors": 1,
        "addressErrors": 0,
        "dropped": {"auth": 2, "ttl": 1},
        "transitions": {"BACKUP": 2, "MASTER": 1},
    },
}
WEB = (("vrrp_instance", "web"),)

VS: dict[str, Any] = {
    "name": "api",
    "active": True,
    "inKernel": True,
    "quorum": {"up": False, "healthyWeight": 1, "min": 2, "hysteresis": 0},
    "stats": {"conns": 5, "inPkts": 10, "outPkts": 9, "inBytes": 1000, "outBytes": 900},
    "realServers": [
        {
            "address": "fd00::1",
            "port": 80,
            "healthy": True,
            "weight": 3,
            "kernelWeight": 3,
            "stats": {
                "activeConns": 2,
                "inactiveConns": 1,
                "conns": 4,
                "inPkts": 8,
                "outPkts": 7,
                "inBytes": 800,
                "outBytes": 700,
            },
        },
        {"address": "10.0.0.2", "port": 80, "healthy": False, "weight": 1, "kernelWeight": None},
    ],
}
API = ("virtual_server", "api")
RS6 = (("real_server", "[fd00::1]:80"), API)
RS4 = (("real_server", "10.0.0.2:80"), API)

CASES: list[tuple[str, dict[str, Any], dict[str, str], Samples]] = [
    ("empty", {}, {}, {}),
    (
        "placed instance",
        {"instances": [INSTANCE]},
        {
            "vipkeeper_vrrp_state": "gauge",
            "vipkeeper_vrrp_priority": "gauge",
            "vipkeeper_vrrp_configured_priority": "gauge",
            "vipkeeper_vrrp_transitions": "counter",
            "vipkeeper_vrrp_adverts_sent": "counter",
            "vipkeeper_vrrp_adverts_received": "counter",
            "vipkeeper_vrrp_send_errors": "counter",
            "vipkeeper_vrrp_address_errors": "counter",
            "vipkeeper_vrrp_adverts_dropped": "counter",
        },
        {
            **states("web", "MASTER"),
            ("vipkeeper_vrrp_priority", WEB): 90,
            ("vipkeeper_vrrp_configured_priority", WEB): 100,
            ("vipkeeper_vrrp_transitions_total", (("vrrp_instance", "web"), ("to", "BACKUP"))): 2,
            ("vipkeeper_vrrp_transitions_total", (("vrrp_instance", "web"), ("to", "MASTER"))): 1,
            ("vipkeeper_vrrp_adverts_sent_total", WEB): 7,
            ("vipkeeper_vrrp_adverts_received_total", WEB): 3,
            ("vipkeeper_vrrp_send_errors_total", WEB): 1,
            ("vipkeeper_vrrp_address_errors_total", WEB): 0,
            (
                "vipkeeper_vrrp_adverts_dropped_total",
                (("vrrp_instance", "web"), ("reason", "auth")),
            ): 2,
            (
                "vipkeeper_vrrp_adverts_dropped_total",
                (("vrrp_instance", "web"), ("reason", "ttl")),
            ): 1,
        },
    ),
    (
        "unplaced instance: state only",
        {"instances": [{"name": "db", "state": "FAULT", "reason": "no interface eth9"}]},
        {"vipkeeper_vrrp_state": "gauge"},
        states("db", "FAULT"),
    ),
    (
        "checks, node-wide drops, config, maintenance",
        {
            "checks": {
                "http": {"health": "OK", "pending": False, "runs": 4, "lastLatencyMs": 12.5},
                "tcp": {"health": "FAILED", "pending": True, "runs": 0, "lastLatencyMs": 0.0},
            },
            "dropped": {"other_vrid": 9},
            "config": {"path": "/x", "reloads": 2, "lastReloadError": "bad yaml"},
            "maintenance": {"active": False},
        },
        {
            "vipkeeper_check_up": "gauge",
            "vipkeeper_check_pending": "gauge",
            "vipkeeper_check_runs": "counter",
            "vipkeeper_check_latency_seconds": "gauge",
            "vipkeeper_vrrp_packets_dropped": "counter",
            "vipkeeper_config_reloads": "counter",
            "vipkeeper_config_last_reload_failed": "gauge",
            "vipkeeper_maintenance": "gauge",
        },
        {
            ("vipkeeper_check_up", (("check", "http"),)): 1,
            ("vipkeeper_check_up", (("check", "tcp"),)): 0,
            ("vipkeeper_check_pending", (("check", "http"),)): 0,
            ("vipkeeper_check_pending", (("check", "tcp"),)): 1,
            ("vipkeeper_check_runs_total", (("check", "http"),)): 4,
            ("vipkeeper_check_runs_total", (("check", "tcp"),)): 0,
            ("vipkeeper_check_latency_seconds", (("check", "http"),)): 0.0125,
            ("vipkeeper_check_latency_seconds", (("check", "tcp"),)): 0.0,
            ("vipkeeper_vrrp_packets_dropped_total", (("reason", "other_vrid"),)): 9,
            ("vipkeeper_config_reloads_total", ()): 2,
            ("vipkeeper_config_last_reload_failed", ()): 1,
            ("vipkeeper_maintenance", ()): 0,
        },
    ),
    ("ipvs absent", {"ipvs": None}, {}, {}),
    (
        "ipvs",
        {"ipvs": {"virtualServers": [VS], "problems": [], "errors": ["EEXIST"]}},
        {
            "vipkeeper_ipvs_virtual_server_active": "gauge",
            "vipkeeper_ipvs_virtual_server_in_kernel": "gauge",
            "vipkeeper_ipvs_quorum_up": "gauge",
            "vipkeeper_ipvs_virtual_server_connections": "counter",
            "vipkeeper_ipvs_virtual_server_packets": "counter",
            "vipkeeper_ipvs_virtual_server_bytes": "counter",
            "vipkeeper_ipvs_real_server_up": "gauge",
            "vipkeeper_ipvs_real_server_weight": "gauge",
            "vipkeeper_ipvs_real_server_kernel_weight": "gauge",
            "vipkeeper_ipvs_real_server_connections": "counter",
            "vipkeeper_ipvs_real_server_packets": "counter",
            "vipkeeper_ipvs_real_server_bytes": "counter",
            "vipkeeper_ipvs_real_server_active_connections": "gauge",
            "vipkeeper_ipvs_real_server_inactive_connections": "gauge",
            "vipkeeper_ipvs_problems": "gauge",
            "vipkeeper_ipvs_apply_errors": "gauge",
        },
        {
            ("vipkeeper_ipvs_virtual_server_active", (API,)): 1,
            ("vipkeeper_ipvs_virtual_server_in_kernel", (API,)): 1,
            ("vipkeeper_ipvs_quorum_up", (API,)): 0,
            ("vipkeeper_ipvs_virtual_server_connections_total", (API,)): 5,
            ("vipkeeper_ipvs_virtual_server_packets_total", (("direction", "in"), API)): 10,
            ("vipkeeper_ipvs_virtual_server_packets_total", (("direction", "out"), API)): 9,
            ("vipkeeper_ipvs_virtual_server_bytes_total", (("direction", "in"), API)): 1000,
            ("vipkeeper_ipvs_virtual_server_bytes_total", (("direction", "out"), API)): 900,
            ("vipkeeper_ipvs_real_server_up", RS6): 1,
            ("vipkeeper_ipvs_real_server_up", RS4): 0,
            ("vipkeeper_ipvs_real_server_weight", RS6): 3,
            ("vipkeeper_ipvs_real_server_weight", RS4): 1,
            ("vipkeeper_ipvs_real_server_kernel_weight", RS6): 3,
            ("vipkeeper_ipvs_real_server_connections_total", RS6): 4,
            ("vipkeeper_ipvs_real_server_packets_total", (("direction", "in"), *RS6)): 8,
            ("vipkeeper_ipvs_real_server_packets_total", (("direction", "out"), *RS6)): 7,
            ("vipkeeper_ipvs_real_server_bytes_total", (("direction", "in"), *RS6)): 800,
            ("vipkeeper_ipvs_real_server_bytes_total", (("direction", "out"), *RS6)): 700,
            ("vipkeeper_ipvs_real_server_active_connections", RS6): 2,
            ("vipkeeper_ipvs_real_server_inactive_connections", RS6): 1,
            ("vipkeeper_ipvs_problems", ()): 0,
            ("vipkeeper_ipvs_apply_errors", ()): 1,
        },
    ),
]


@pytest.mark.parametrize(
    ("snapshot", "want_kinds", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_families(snapshot: dict[str, Any], want_kinds: dict[str, str], want: Samples) -> None:
    got = families(snapshot)
    assert kinds(got) == want_kinds
    assert samples(got) == norm(want)


def transition(seq: int, to: str, takeover: float | None) -> dict[str, Any]:
    return {
        "seq": seq,
        "from": "BACKUP",
        "to": to,
        "reason": "r",
        "at": 0.0,
        "takeoverSeconds": takeover,
    }


def snap(*records: dict[str, Any]) -> dict[str, Any]:
    return {"instances": [{"name": "web", "state": "MASTER", "recentTransitions": list(records)}]}


def hist(h: TakeoverHistogram) -> dict[str, float]:
    """le -> cumulative count, plus _count and _sum, for instance web."""
    out = {}
    for s in h.family().samples:
        key = s.labels.get("le", s.name.rsplit("_", 1)[1])
        out[key] = s.value
    return out


# Each case: snapshots scraped in order -> the histogram after the last one.
HISTOGRAM_CASES: list[tuple[str, list[dict[str, Any]], dict[str, float]]] = [
    ("no history field", [{"instances": [{"name": "web", "state": "MASTER"}]}], {}),
    (
        "startup without a master seen is no takeover",
        [snap(transition(1, "BACKUP", None), transition(2, "MASTER", None))],
        {},
    ),
    (
        "one takeover, scraped twice, counted once",
        [snap(transition(1, "MASTER", 3.2)), snap(transition(1, "MASTER", 3.2))],
        {"0.05": 0, "3.0": 0, "3.5": 1, "30.0": 1, "+Inf": 1, "count": 1, "sum": 3.2},
    ),
    (
        "only new sequence numbers",
        [
            snap(transition(1, "MASTER", 0.2)),
            snap(
                transition(1, "MASTER", 0.2),
                transition(2, "BACKUP", None),
                transition(3, "MASTER", 40.0),
            ),
        ],
        {"0.05": 0, "0.25": 1, "30.0": 1, "+Inf": 2, "count": 2, "sum": 40.2},
    ),
    (
        "sequence went back: runner recreated",
        [snap(transition(5, "MASTER", 1.0)), snap(transition(1, "MASTER", 1.0))],
        {"0.5": 0, "1.0": 2, "+Inf": 2, "count": 2, "sum": 2.0},
    ),
]


@pytest.mark.parametrize(
    ("scrapes", "want"), [c[1:] for c in HISTOGRAM_CASES], ids=[c[0] for c in HISTOGRAM_CASES]
)
def test_takeover_histogram(scrapes: list[dict[str, Any]], want: dict[str, float]) -> None:
    h = TakeoverHistogram()
    for s in scrapes:
        h.update(s)
    got = hist(h)
    assert {k: got[k] for k in want} == want
    assert bool(got) == bool(want)


def test_collector_yields_histogram_last_and_reads_snapshot_per_scrape() -> None:
    calls = []

    def snapshot() -> dict[str, Any]:
        calls.append(1)
        return snap(transition(1, "MASTER", 0.3))

    collector = AgentCollector(snapshot)
    assert list(collector.describe()) == []
    assert calls == []
    metrics = list(collector.collect())
    assert [m.name for m in metrics][-1] == "vipkeeper_vrrp_takeover_seconds"
    list(collector.collect())
    assert len(calls) == 2
    assert (
        samples(metrics)[("vipkeeper_vrrp_takeover_seconds_count", (("vrrp_instance", "web"),))]
        == 1
    )


def test_snapshot_lists_transitions_once_the_runner_records_them() -> None:
    t = fsm.Transition(fsm.State.BACKUP, fsm.State.MASTER, "master down", 10.0)
    bare = SimpleNamespace(counters=SimpleNamespace(), wall=lambda at: at + 1000)
    doc: dict[str, Any] = {"counters": {}}
    _add_transition_history(doc, bare)  # type: ignore[arg-type]
    assert doc == {"counters": {}}
    runner = SimpleNamespace(
        counters=SimpleNamespace(transitions={"MASTER": 1, "BACKUP": 1}),
        transition_log=[SimpleNamespace(seq=2, transition=t, takeover=0.25)],
        wall=lambda at: at + 1000,
    )
    _add_transition_history(doc, runner)  # type: ignore[arg-type]
    assert doc == {
        "counters": {"transitions": {"BACKUP": 1, "MASTER": 1}},
        "recentTransitions": [
            {
                "seq": 2,
                "from": "BACKUP",
                "to": "MASTER",
                "reason": "master down",
                "at": 1010.0,
                "takeoverSeconds": 0.25,
            }
        ],
    }
