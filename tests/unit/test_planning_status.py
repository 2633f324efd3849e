"""Folding the nodes' reports of VRRP instances into VirtualIP status, conditions and Events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from vipkeeper_api.resources import (
    NodeAssignmentStatus,
    VirtualIPSpec,
    VirtualIPStatus,
)
from vipkeeper_operator.planning.status import format_time, parse_time
from vipkeeper_operator.planning.status_vip import fold_virtual_ip
from vipkeeper_operator.world import VirtualIP

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NODES = ("node-a", "node-b", "node-c")
V4, V6 = "ns-web", "ns-web-v6"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ts(seconds: float) -> str:
    return format_time(t(seconds))


def make_vip(*addresses: str) -> VirtualIP:
    spec = VirtualIPSpec.model_validate(
        {"addresses": list(addresses or ["192.0.2.10/24"]), "vrrp": {"advertInterval": 1}}
    )
    return VirtualIP(namespace="ns", name="web", uid="u1", generation=3, spec=spec)


DUAL = make_vip("192.0.2.10/24", "2001:db8::10/64")


def inst(
    name: str,
    state: str,
    priority: int = 100,
    since: float | None = 0.0,
    checks: Mapping[str, Any] | None = None,
    **last: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "state": state, "priority": priority}
    doc["checks"] = dict(checks or {})
    if since is not None:
        doc["since"] = ts(since)
    if last:
        doc["lastTransition"] = last
    return doc


def reports(**nodes: list[dict[str, Any]]) -> dict[str, NodeAssignmentStatus]:
    return {
        node.replace("_", "-"): NodeAssignmentStatus.model_validate({"instances": instances})
        for node, instances in nodes.items()
    }


@dataclass(frozen=True)
class VipCase:
    id: str
    reports: Mapping[str, NodeAssignmentStatus]
    now: float
    holder: str | None
    state: str
    #: type -> (status, reason)
    conditions: Mapping[str, tuple[str, str]]
    events: Sequence[str]
    vip: VirtualIP = field(default_factory=make_vip)
    candidates: Sequence[str] = NODES
    problems: Sequence[tuple[str, str]] = ()


OK = {"SplitBrain": ("False", "NoSplitBrain"), "VRIDConflict": ("False", "NoConflict")}
HELD = {"Ready": ("True", "HolderElected"), "Degraded": ("False", "Redundant"), **OK}
STANDBYS = {"node_b": [inst(V4, "BACKUP", 100)], "node_c": [inst(V4, "BACKUP", 50)]}

VIP_CASES = [
    VipCase(
        "single-master",
        reports(node_a=[inst(V4, "MASTER", 150)], **STANDBYS),
        10,
        "node-a",
        "MASTER on node-a",
        HELD,
        ["HolderChanged"],
    ),
    VipCase(
        "two-masters-shorter-than-2-intervals",
        reports(node_a=[inst(V4, "MASTER", 150)], node_b=[inst(V4, "MASTER", 200, 8.5)]),
        10,
        "node-a",
        "MASTER on node-a",
        {**HELD, "Degraded": ("False", "Redundant")},
        ["HolderChanged"],
    ),
    VipCase(
        "split-brain-longer-than-2-intervals",
        reports(node_a=[inst(V4, "MASTER", 150, 1)], node_b=[inst(V4, "MASTER", 100, 5)]),
        10,
        "node-a",
        "SplitBrain",
        {"Ready": ("False", "SplitBrain"), "SplitBrain": ("True", "MultipleMasters")},
        ["HolderChanged", "SplitBrain"],
    ),
    VipCase(
        "no-holder",
        reports(node_a=[inst(V4, "BACKUP", 150)], **STANDBYS),
        10,
        None,
        "NoHolder",
        {"Ready": ("False", "NoHolder"), "Degraded": ("False", "Redundant"), **OK},
        ["NoHolder"],
    ),
    VipCase(
        "electing-within-master-down",
        reports(node_a=[inst(V4, "BACKUP", 150, 8)], **STANDBYS),
        10,
        None,
        "Electing",
        {"Ready": ("False", "Electing")},
        [],
    ),
    VipCase(
        "no-standby",
        reports(
            node_a=[inst(V4, "MASTER", 150)],
            node_b=[inst(V4, "FAULT", 0, checks={"dns": {"health": "failed"}})],
        ),
        10,
        "node-a",
        "MASTER on node-a",
        {"Ready": ("True", "HolderElected"), "Degraded": ("True", "NoStandby")},
        ["HolderChanged", "Degraded"],
    ),
    VipCase(
        "backup-at-priority-0-is-not-healthy",
        reports(node_a=[inst(V4, "BACKUP", 0)], node_b=[inst(V4, "FAULT", 0)]),
        10,
        None,
        "NoHolder",
        {"Ready": ("False", "NoHolder"), "Degraded": ("True", "NoHealthyNode")},
        ["NoHolder", "Degraded"],
    ),
    VipCase(
        "vrid-conflict-from-problems",
        reports(node_a=[inst(V4, "MASTER", 150)], **STANDBYS),
        10,
        "node-a",
        "MASTER on node-a",
        {**HELD, "VRIDConflict": ("True", "VRIDConflict")},
        ["HolderChanged", "VRIDConflict"],
        problems=[("VRIDConflict", "VRID 7 is also used by ns/other on the same segment")],
    ),
    VipCase(
        "other-problem-degrades",
        reports(node_a=[inst(V4, "MASTER", 150)], **STANDBYS),
        10,
        "node-a",
        "MASTER on node-a",
        {**HELD, "Degraded": ("True", "SecretNotFound")},
        ["HolderChanged", "Degraded"],
        problems=[("SecretNotFound", "Secret ns/vrrp-auth does not exist")],
    ),
    VipCase(
        "awaiting-reports",
        {},
        10,
        None,
        "Pending",
        {"Ready": ("Unknown", "AwaitingReports"), "Degraded": ("Unknown", "AwaitingReports")},
        [],
    ),
    VipCase(
        "reports-of-non-candidates-ignored",
        reports(node_x=[inst(V4, "MASTER", 150)], node_b=[inst(V4, "MASTER", 100, 5)]),
        10,
        "node-b",
        "MASTER on node-b",
        {"Ready": ("True", "HolderElected"), **OK},
        ["HolderChanged", "Degraded"],
    ),
    VipCase(
        "no-candidates",
        reports(node_a=[inst(V4, "MASTER", 150)]),
        10,
        None,
        "NoCandidates",
        {"Ready": ("False", "NoCandidates"), "Degraded": ("True", "NoCandidates")},
        ["Degraded"],
        candidates=(),
    ),
    VipCase(
        "dual-stack-holder-is-master-of-both",
        reports(
            node_a=[inst(V4, "MASTER", 150, 2), inst(V6, "MASTER", 150, 3)],
            node_b=[inst(V4, "MASTER", 100, 9.5), inst(V6, "BACKUP", 100)],
        ),
        10,
        "node-a",
        "MASTER on node-a",
        {"Ready": ("True", "HolderElected"), "Degraded": ("False", "Redundant"), **OK},
        ["HolderChanged"],
        vip=DUAL,
    ),
    VipCase(
        "dual-stack-families-on-different-nodes",
        reports(
            node_a=[inst(V4, "MASTER", 150, 2), inst(V6, "BACKUP", 150)],
            node_b=[inst(V4, "BACKUP", 100), inst(V6, "MASTER", 100, 2)],
        ),
        10,
        None,
        "Partial",
        {"Ready": ("False", "FamiliesSplit"), "Degraded": ("False", "Redundant")},
        [],
        vip=DUAL,
    ),
]


def fold(
    case: VipCase, previous: VirtualIPStatus | None = None, now: float | None = None
) -> tuple[VirtualIPStatus, list[Any]]:
    return fold_virtual_ip(
        case.vip,
        case.reports,
        vrid=7,
        problems=case.problems,
        candidates=case.candidates,
        now=t(case.now if now is None else now),
        previous=previous,
    )


@pytest.mark.parametrize("case", VIP_CASES, ids=lambda c: c.id)
def test_fold_virtual_ip(case: VipCase) -> None:
    status, events = fold(case)
    assert (status.holder, status.state, status.vrid) == (case.holder, case.state, 7)
    got = {c.type: (c.status, c.reason) for c in status.conditions}
    assert {k: got[k] for k in case.conditions} == dict(case.conditions)
    assert [c.type for c in status.conditions] == [
        "Ready",
        "Degraded",
        "SplitBrain",
        "VRIDConflict",
    ]
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert status.observed_generation == 3
    assert [e.reason for e in events] == list(case.events)
    assert [n.node for n in status.nodes] == sorted(case.candidates)


@pytest.mark.parametrize("case", VIP_CASES, ids=lambda c: c.id)
def test_refold_is_idempotent(case: VipCase) -> None:
    first, _ = fold(case)
    again, events = fold(case, previous=first)
    assert events == []
    assert again == first
    later, events = fold(case, previous=first, now=case.now + 0.5)
    assert events == []
    assert [c.last_transition_time for c in later.conditions] == [
        c.last_transition_time for c in first.conditions
    ]


def test_dual_stack_node_states_combine_families() -> None:
    status, _ = fold(VIP_CASES[12])
    a, b, c = status.nodes
    assert (a.state, a.priority, a.since) == ("MASTER", 150, ts(3))
    assert (b.state, b.reason) == ("BACKUP", "MASTER for IPv4, BACKUP for IPv6")
    assert (c.state, c.priority, c.reason) == ("UNKNOWN", 0, "NoReport")


def test_fault_reason_names_the_failing_check() -> None:
    status, _ = fold(VIP_CASES[5])
    assert status.nodes[1].reason == "CheckFailed: dns"


FIRST = VipCase(
    "a", reports(node_a=[inst(V4, "MASTER", 150)], **STANDBYS), 10, "node-a", "", {}, []
)


def test_failover_records_from_to_reason_and_gap() -> None:
    first, _ = fold(FIRST)
    moved = reports(
        node_a=[inst(V4, "FAULT", 0, 20.0)],
        node_b=[inst(V4, "MASTER", 100, 20.8, reason="master_down_timer", at=ts(20.8))],
        node_c=[inst(V4, "BACKUP", 50)],
    )
    status, events = fold_virtual_ip(
        FIRST.vip, moved, vrid=7, problems=(), candidates=NODES, now=t(21), previous=first
    )
    assert status.holder == "node-b"
    lt = status.last_transition
    assert lt is not None
    assert (lt.from_node, lt.to_node, lt.reason, lt.at) == (
        "node-a",
        "node-b",
        "master_down_timer",
        ts(20.8),
    )
    assert lt.duration_ms == pytest.approx(800)
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Normal", "HolderChanged", "node-a → node-b: master_down_timer, took 800 ms")
    ]


def test_failover_seen_in_two_folds_keeps_the_old_holder_and_measures_the_outage() -> None:
    first, _ = fold(FIRST)
    lost = reports(node_a=[inst(V4, "FAULT", 0, 20, reason="interface down")], **STANDBYS)
    middle, events = fold_virtual_ip(
        FIRST.vip, lost, vrid=7, problems=(), candidates=NODES, now=t(20.5), previous=first
    )
    assert middle.holder is None and middle.state == "Electing" and events == []
    lt = middle.last_transition
    assert lt is not None and (lt.from_node, lt.to_node, lt.reason) == (
        "node-a",
        None,
        "interface down",
    )
    taken = reports(node_a=[inst(V4, "FAULT", 0, 20)], node_b=[inst(V4, "MASTER", 100, 23)])
    final, events = fold_virtual_ip(
        FIRST.vip, taken, vrid=7, problems=(), candidates=NODES, now=t(24), previous=middle
    )
    lt = final.last_transition
    assert lt is not None
    assert (lt.from_node, lt.to_node, lt.duration_ms) == ("node-a", "node-b", 3000)
    assert events[0].message == "node-a → node-b: Elected, took 3000 ms"


def test_duration_reported_by_the_agent_wins() -> None:
    first, _ = fold(FIRST)
    moved = reports(node_b=[inst(V4, "MASTER", 100, 30, reason="preempt", durationMs=12.5)])
    status, _ = fold_virtual_ip(
        FIRST.vip, moved, vrid=7, problems=(), candidates=NODES, now=t(31), previous=first
    )
    assert status.last_transition is not None
    assert status.last_transition.duration_ms == 12.5


def test_condition_time_moves_only_when_status_changes() -> None:
    case = VIP_CASES[5]  # Degraded True (NoStandby)
    first, _ = fold(case)
    worse = reports(node_a=[inst(V4, "MASTER", 150)], node_b=[inst(V4, "FAULT", 0, 40)])
    same, events = fold_virtual_ip(
        case.vip, worse, vrid=7, problems=(), candidates=("node-a",), now=t(50), previous=first
    )
    degraded = same.conditions[1]
    assert degraded.status == "True" and events == []
    assert degraded.last_transition_time == first.conditions[1].last_transition_time == ts(10)
    healed = reports(node_a=[inst(V4, "MASTER", 150)], **STANDBYS)
    fixed, _ = fold_virtual_ip(
        case.vip, healed, vrid=7, problems=(), candidates=NODES, now=t(60), previous=same
    )
    assert (fixed.conditions[1].status, fixed.conditions[1].last_transition_time) == (
        "False",
        ts(60),
    )


def test_missing_since_is_first_seen_and_kept() -> None:
    rep = reports(node_a=[inst(V4, "MASTER", 150, since=None)])
    first, _ = fold_virtual_ip(
        FIRST.vip, rep, vrid=7, problems=(), candidates=["node-a"], now=t(10), previous=None
    )
    later, _ = fold_virtual_ip(
        FIRST.vip, rep, vrid=7, problems=(), candidates=["node-a"], now=t(99), previous=first
    )
    assert first.nodes[0].since == later.nodes[0].since == ts(10)


def test_stale_reports_are_ignored() -> None:
    rep = {
        "node-a": NodeAssignmentStatus.model_validate(
            {"updated": ts(0), "instances": [inst(V4, "MASTER", 150)]}
        )
    }
    status, _ = fold_virtual_ip(
        FIRST.vip,
        rep,
        vrid=7,
        problems=(),
        candidates=["node-a"],
        now=t(120),
        stale_after=timedelta(seconds=60),
    )
    assert status.holder is None and status.nodes[0].reason == "ReportStale"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T12:00:00Z", T0),
        ("2026-01-01T13:00:00+01:00", T0),
        ("2026-01-01T12:00:00", T0),
        (T0.timestamp(), T0),
        (str(T0.timestamp()), T0),
        ("soon", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_time(value: object, expected: datetime | None) -> None:
    assert parse_time(value) == expected


def test_format_time_keeps_milliseconds_where_there_are_any() -> None:
    assert (format_time(T0), format_time(t(0.25))) == (
        "2026-01-01T12:00:00Z",
        "2026-01-01T12:00:00.250Z",
    )


def test_holder_leaving_the_candidates_is_lost_as_node_gone() -> None:
    first, _ = fold(FIRST)
    status, events = fold_virtual_ip(
        FIRST.vip,
        FIRST.reports,
        vrid=7,
        problems=(),
        candidates=["node-b"],
        now=t(30),
        previous=first,
    )
    lt = status.last_transition
    assert lt is not None and (lt.from_node, lt.to_node, lt.reason, lt.at) == (
        "node-a",
        None,
        "NodeGone",
        ts(30),
    )
    assert status.holder is None and [e.reason for e in events] == ["NoHolder", "Degraded"]


def _report(updated: float, state: str, since: float) -> NodeAssignmentStatus:
    return NodeAssignmentStatus.model_validate(
        {
            "updated": ts(updated),
            "instances": [{"name": V4, "state": state, "priority": 100, "since": ts(since)}],
        }
    )


def _conditions(status: VirtualIPStatus) -> dict[str, str]:
    return {c.type: c.status for c in status.conditions}


def test_a_master_claim_older_than_another_takeover_is_not_believed() -> None:
    vip = make_vip()
    # node-a's agent was SIGKILLed at ~10 s: its last report (10 s) still says MASTER; node-b
    # took over at 14 s. node-a is overtaken, not a second master.
    dead = {
        "node-a": _report(10, "MASTER", 0),
        "node-b": _report(15, "MASTER", 14),
        "node-c": _report(15, "BACKUP", 1),
    }
    status, _ = fold_virtual_ip(vip, dead, vrid=7, problems=(), candidates=NODES, now=t(20))
    assert status.holder == "node-b" and _conditions(status)["SplitBrain"] == "False"
    by_node = {n.node: n for n in status.nodes}
    assert by_node["node-a"].reason == "ReportOvertaken"
    # node-a is alive after all and says MASTER again (its report is newer than b's takeover):
    # both claims count, and after more than 2 advert intervals that is a split brain.
    alive = {**dead, "node-a": _report(19, "MASTER", 0)}
    status, events = fold_virtual_ip(
        vip, alive, vrid=7, problems=(), candidates=NODES, now=t(20), previous=status
    )
    assert _conditions(status)["SplitBrain"] == "True"
    assert any(e.reason == "SplitBrain" for e in events)
