"""Folding the nodes' reports of IPVS services into VirtualServer status, conditions and Events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vipkeeper_api.resources import NodeAssignmentStatus, VirtualServerSpec
from vipkeeper_operator.planning.status import EventRecord, format_time
from vipkeeper_operator.planning.status_vs import VirtualServerStatus, fold_virtual_server
from vipkeeper_operator.world import VirtualServer

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
V4, V6 = "ns-web", "ns-web-v6"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    return format_time(t(seconds))


def make_vs(placement: str = "holder") -> VirtualServer:
    spec = VirtualServerSpec.model_validate(
        {"virtualIPRef": {"name": "web"}, "port": 80, "placement": placement}
    )
    return VirtualServer(namespace="ns", name="web", uid="u2", generation=5, spec=spec)


def rs(address: str, healthy: bool = True, weight: int = 1, since: float = 0) -> dict[str, Any]:
    return {
        "address": address,
        "port": 8080,
        "healthy": healthy,
        "weight": weight,
        "since": ts(since),
    }


def vs_reports(**nodes: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, NodeAssignmentStatus]:
    return {
        node.replace("_", "-"): NodeAssignmentStatus.model_validate(
            {
                "virtualServers": [
                    {
                        "name": name,
                        "active": bool(servers) or name == V4,
                        "realServers": list(servers),
                    }
                    for name, servers in per_name.items()
                ]
            }
        )
        for node, per_name in nodes.items()
    }


MIXED = vs_reports(
    node_a={V4: [rs("10.0.0.2", False, 0, 7), rs("10.0.0.1")]},
    node_b={V4: [rs("10.0.0.1", False, 0), rs("10.0.0.2")]},
)


@pytest.mark.parametrize(
    ("label", "placement", "reps", "holder", "counts", "ready", "degraded"),
    [
        (
            "holder-only",
            "holder",
            MIXED,
            "node-a",
            (1, 1, 2),
            "RealServersHealthy",
            "RealServersUnhealthy",
        ),
        (
            "all-nodes-merge",
            "all",
            MIXED,
            None,
            (0, 0, 2),
            "NoHealthyRealServers",
            "RealServersUnhealthy",
        ),
        ("no-holder", "holder", MIXED, None, (0, 0, 0), "NoHolder", "NoHolder"),
        ("awaiting", "holder", MIXED, "node-c", (0, 0, 0), "AwaitingReports", "AwaitingReports"),
        (
            "not-programmed",
            "holder",
            vs_reports(node_a={V6: []}),
            "node-a",
            (0, 0, 0),
            "NotProgrammed",
            "NotProgrammed",
        ),
        (
            "all-healthy",
            "holder",
            vs_reports(node_a={V4: [rs("10.0.0.1")]}),
            "node-a",
            (1, 1, 1),
            "RealServersHealthy",
            "AllHealthy",
        ),
        (
            "dual-family-services",
            "holder",
            vs_reports(node_a={V6: [rs("2001:db8::1", weight=0)], V4: [rs("10.0.0.1")]}),
            "node-a",
            (1, 2, 2),
            "RealServersHealthy",
            "AllHealthy",
        ),
    ],
)
def test_fold_virtual_server(
    label: str,
    placement: str,
    reps: Mapping[str, NodeAssignmentStatus],
    holder: str | None,
    counts: tuple[int, int, int],
    ready: str,
    degraded: str,
) -> None:
    status, _ = fold_virtual_server(
        make_vs(placement),
        reps,
        holder=holder,
        problems=(),
        previous=VirtualServerStatus(),
        now=t(10),
    )
    assert (status.active, status.healthy, status.total) == counts
    assert [c.reason for c in status.conditions] == [ready, degraded]
    assert [c.observed_generation for c in status.conditions] == [5, 5]
    again, events = fold_virtual_server(
        make_vs(placement), reps, holder=holder, problems=(), previous=status, now=t(11)
    )
    assert (again, events) == (status, [])


def test_real_servers_are_sorted_and_merged_conservatively() -> None:
    status, _ = fold_virtual_server(
        make_vs("all"), MIXED, holder=None, problems=(), previous=VirtualServerStatus(), now=t(10)
    )
    assert [(s.address, s.port, s.healthy, s.weight, s.since) for s in status.real_servers] == [
        ("10.0.0.1", 8080, False, 0, ts(0)),
        ("10.0.0.2", 8080, False, 0, ts(7)),
    ]
    dual = vs_reports(node_a={V6: [rs("2001:db8::1")], V4: [rs("10.0.0.9"), rs("10.0.0.10")]})
    status, _ = fold_virtual_server(
        make_vs(), dual, holder="node-a", problems=(), previous=VirtualServerStatus(), now=t(10)
    )
    assert [s.address for s in status.real_servers] == ["10.0.0.9", "10.0.0.10", "2001:db8::1"]


def test_real_server_changes_become_events_once() -> None:
    healthy = vs_reports(node_a={V4: [rs("10.0.0.1"), rs("10.0.0.2")]})
    first, events = fold_virtual_server(
        make_vs(), healthy, holder="node-a", problems=(), previous=VirtualServerStatus(), now=t(10)
    )
    assert events == []
    failed = vs_reports(node_a={V4: [rs("10.0.0.1", False, 0, 20), rs("10.0.0.2", False, 0, 21)]})
    second, events = fold_virtual_server(
        make_vs(), failed, holder="node-a", problems=(), previous=first, now=t(22)
    )
    assert [(e.type, e.reason) for e in events] == [
        ("Warning", "RealServerDown"),
        ("Warning", "RealServerDown"),
        ("Warning", "NoHealthyRealServers"),
        ("Warning", "Degraded"),
    ]
    assert events[0].message == "10.0.0.1:8080 failed its check"
    _, events = fold_virtual_server(
        make_vs(), failed, holder="node-a", problems=(), previous=second, now=t(23)
    )
    assert events == []
    _, events = fold_virtual_server(
        make_vs(), healthy, holder="node-a", problems=(), previous=second, now=t(30)
    )
    assert [e.reason for e in events] == ["RealServerUp", "RealServerUp"]


def test_many_real_server_changes_make_one_event() -> None:
    addresses = [f"10.0.1.{i}" for i in range(1, 9)]
    up = vs_reports(node_a={V4: [rs(a) for a in addresses]})
    down = vs_reports(node_a={V4: [rs(a, False, 0) for a in addresses]})
    first, _ = fold_virtual_server(
        make_vs(), up, holder="node-a", problems=(), previous=VirtualServerStatus(), now=t(10)
    )
    _, events = fold_virtual_server(
        make_vs(), down, holder="node-a", problems=(), previous=first, now=t(20)
    )
    assert events[0] == EventRecord("Warning", "RealServersChanged", "8 real servers down, 0 up")


def test_virtual_server_problems_degrade_it() -> None:
    reps = vs_reports(node_a={V4: [rs("10.0.0.1")]})
    status, events = fold_virtual_server(
        make_vs(),
        reps,
        holder="node-a",
        problems=[("ServiceNotFound", "Service ns/web does not exist")],
        previous=VirtualServerStatus(),
        now=t(10),
    )
    assert (status.conditions[1].status, status.conditions[1].reason) == ("True", "ServiceNotFound")
    assert [e.reason for e in events] == ["Degraded"]
    assert status.model_dump(mode="json", by_alias=True)["realServers"][0]["address"] == "10.0.0.1"
