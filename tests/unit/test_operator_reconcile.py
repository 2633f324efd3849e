"""One reconcile pass, decided without I/O: what it writes, that a second pass over the same
input writes nothing, and when a deleted VirtualIP may let go of its finalizer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from test_planning_builders import node, vip, vs, world

from vipkeeper_api.resources import NodeAssignmentStatus
from vipkeeper_operator.parse import Rejected
from vipkeeper_operator.planning.reconcile import decide, resign_pending
from vipkeeper_operator.planning.writes import DeleteAssignment, PutAssignment, spec_document
from vipkeeper_operator.world import World

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
NODES = [node("a", "10.0.0.1"), node("b", "10.0.0.2"), node("c", "10.0.0.3")]


def master_on(name: str, instance: str = "default-web") -> dict[str, NodeAssignmentStatus]:
    out = {}
    for n in ("a", "b", "c"):
        state = "MASTER" if n == name else "BACKUP"
        out[n] = NodeAssignmentStatus.model_validate(
            {
                "updated": "2026-12-04T11:59:50Z",
                "instances": [
                    {
                        "name": instance,
                        "state": state,
                        "priority": 100,
                        "since": "2026-12-04T11:00:00Z",
                    }
                ],
            }
        )
    return out


def settle(w: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply one pass's writes to the state a next pass sees."""
    first = decide(w, assignments={}, rejected={}, statuses={}, now=NOW)
    assignments: dict[str, Any] = {}
    for write in first.writes:
        assert isinstance(write, PutAssignment)
        assignments[write.node] = write.spec
    statuses = {f"{s.plural}/{s.namespace}/{s.name}": s.status for s in first.statuses}
    return assignments, statuses


def test_first_pass_writes_every_node_and_every_status() -> None:
    w = world(NODES, [vip("web")], [vs("web", "web", realServers=[{"address": "10.1.0.1"}])])
    d = decide(w, assignments={}, rejected={}, statuses={}, now=NOW)
    assert [(type(x).__name__, x.node) for x in d.writes] == [
        ("PutAssignment", "a"),
        ("PutAssignment", "b"),
        ("PutAssignment", "c"),
    ]
    assert {(s.plural, s.name) for s in d.statuses} == {
        ("virtualips", "web"),
        ("virtualservers", "web"),
    }
    status = next(s.status for s in d.statuses if s.plural == "virtualips")
    assert status["vrid"] == d.plan.vrids["default/web"]


def test_an_unchanged_world_costs_no_write() -> None:
    w = replace(world(NODES, [vip("web")]), reports=master_on("a"))
    assignments, statuses = settle(w)
    again = decide(w, assignments=assignments, rejected={}, statuses=statuses, now=NOW)
    assert (again.writes, again.statuses, again.events) == ((), (), ())


def test_holder_change_writes_status_and_one_event() -> None:
    w = replace(world(NODES, [vip("web")]), reports=master_on("a"))
    assignments, statuses = settle(w)
    moved = replace(w, reports=master_on("b"))
    d = decide(moved, assignments=assignments, rejected={}, statuses=statuses, now=NOW)
    assert d.writes == ()
    assert [s.status["holder"] for s in d.statuses] == ["b"]
    assert [(e.kind, e.name, e.reason) for e in d.events] == [("VirtualIP", "web", "HolderChanged")]


def test_a_node_that_goes_loses_its_assignment() -> None:
    w = world(NODES, [vip("web")])
    assignments, statuses = settle(w)
    gone = replace(w, nodes={k: v for k, v in w.nodes.items() if k != "c"})
    d = decide(gone, assignments=assignments, rejected={}, statuses=statuses, now=NOW)
    assert d.writes == (DeleteAssignment("c"),)


def test_a_rejected_spec_is_told_once_and_its_last_good_spec_keeps_running() -> None:
    w = world(NODES, [vip("web")])
    assignments, statuses = settle(w)
    refused = {
        "virtualips/default/web": Rejected(
            "default", "web", "VirtualIP", "spec.vrid: 300 > 255", "u1"
        )
    }
    d = decide(w, assignments=assignments, rejected=refused, statuses=statuses, now=NOW)
    assert d.writes == ()  # the nodes keep the last good spec
    (status,) = d.statuses
    ready = next(c for c in status.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False",
        "InvalidSpec",
        "spec.vrid: 300 > 255",
    )
    assert [(e.type, e.reason, e.uid) for e in d.events] == [("Warning", "InvalidSpec", "u1")]
    statuses["virtualips/default/web"] = status.status
    again = decide(w, assignments=assignments, rejected=refused, statuses=statuses, now=NOW)
    assert (again.statuses, again.events) == ((), ())


def test_deleting_a_virtual_ip_waits_for_every_ready_node_to_resign() -> None:
    w = replace(world(NODES, [vip("web")]), reports=master_on("a"))
    assignments, _ = settle(w)
    deleting = replace(
        w, virtual_ips={"default/web": replace(w.virtual_ips["default/web"], deleting=True)}
    )
    # Still in every assignment and reported: everyone must resign.
    assert resign_pending(deleting, assignments, "default/web") == ["a", "b", "c"]
    d = decide(deleting, assignments=assignments, rejected={}, statuses={}, now=NOW)
    resigned = {w_.node: w_.spec for w_ in d.writes if isinstance(w_, PutAssignment)}
    assert all(not spec.get("instances") for spec in resigned.values())
    # Assignments rewritten; a and b report it gone, c still runs it but is NotReady.
    reports = dict(master_on("a"))
    reports["a"] = reports["b"] = NodeAssignmentStatus()
    down = dict(deleting.nodes, c=replace(deleting.nodes["c"], ready=False))
    after = replace(deleting, reports=reports, nodes=down)
    assert resign_pending(after, resigned, "default/web") == []
    assert resign_pending(replace(after, nodes=deleting.nodes), resigned, "default/web") == ["c"]


def test_plan_problems_reach_the_conditions() -> None:
    clash = [vip("one", vrid=7), vip("two", "192.0.2.20/24", vrid=7)]
    d = decide(world(NODES, clash), assignments={}, rejected={}, statuses={}, now=NOW)
    by_name = {s.name: s.status for s in d.statuses}
    flagged = [
        name
        for name, status in by_name.items()
        if any(c["type"] == "VRIDConflict" and c["status"] == "True" for c in status["conditions"])
    ]
    assert flagged, by_name
    assert any(e.reason == "VRIDConflict" for e in d.events)


def test_spec_documents_written_are_what_the_agent_loads() -> None:
    w = world(NODES, [vip("web")])
    d = decide(w, assignments={}, rejected={}, statuses={}, now=NOW)
    for write in d.writes:
        assert isinstance(write, PutAssignment)
        assert write.spec == spec_document(d.plan.assignments[write.node])


def test_a_report_older_than_the_heartbeat_bound_is_not_believed() -> None:
    w = replace(world(NODES, [vip("web")]), reports=master_on("a"))
    assignments, statuses = settle(w)
    later = NOW + timedelta(minutes=5)  # no agent wrote for 5 minutes: they are cut off or dead
    d = decide(w, assignments=assignments, rejected={}, statuses=statuses, now=later)
    (status,) = (s.status for s in d.statuses)
    assert status.get("holder") is None
