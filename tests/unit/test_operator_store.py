"""The operator's mirror: objects parsed on arrival, a bad edit keeps the last good spec."""

from __future__ import annotations

from typing import Any

from vipkeeper_operator.store import Store


def vip(address: str, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "vipkeeper.io/v1alpha1",
        "kind": "VirtualIP",
        "metadata": {"namespace": "web", "name": "vip", "generation": generation},
        "spec": {"addresses": [address]},
    }


def test_a_bad_edit_keeps_the_last_good_spec_and_is_reported() -> None:
    store = Store()
    store.observe("virtualips", vip("192.0.2.10/24"))
    store.observe("virtualips", vip("192.0.2.999/24", generation=2))
    world = store.snapshot()
    assert str(world.virtual_ips["web/vip"].spec.addresses[0]) == "192.0.2.10/24"
    assert "192.0.2.999" in store.rejected["virtualips/web/vip"].message
    store.observe("virtualips", vip("192.0.2.11/24", generation=3))
    assert "virtualips/web/vip" not in store.rejected
    assert store.snapshot().virtual_ips["web/vip"].generation == 3


def test_assignments_and_reports_follow_their_objects() -> None:
    store = Store()
    obj = {
        "metadata": {"name": "n1"},
        "spec": {"instances": []},
        "status": {"instances": [{"name": "web-vip", "state": "BACKUP", "priority": 100}]},
    }
    store.observe("nodeassignments", obj)
    assert store.assignments == {"n1": {"instances": []}}
    assert store.snapshot().reports["n1"].instances[0].state == "BACKUP"
    store.forget("nodeassignments", obj)
    assert store.assignments == {} and store.snapshot().reports == {}


def test_snapshots_do_not_change_under_later_events() -> None:
    store = Store()
    store.observe("nodes", {"metadata": {"name": "n1"}})
    before = store.snapshot()
    store.observe("nodes", {"metadata": {"name": "n2"}})
    assert set(before.nodes) == {"n1"} and set(store.snapshot().nodes) == {"n1", "n2"}


def test_only_changes_the_planning_can_see_wake_the_controller() -> None:
    from vipkeeper_operator.store import Store  # noqa: PLC0415

    store = Store()
    vip = {
        "apiVersion": "vipkeeper.io/v1alpha1",
        "kind": "VirtualIP",
        "metadata": {"namespace": "ns", "name": "web", "uid": "u", "generation": 1},
        "spec": {"addresses": ["192.0.2.10/24"]},
    }
    assert store.observe("virtualips", vip)
    # The echo of the operator's own status write: nothing new for the planning.
    assert not store.observe("virtualips", {**vip, "status": {"vrid": 7, "holder": "n1"}})
    edited = {**vip, "metadata": {**vip["metadata"], "generation": 2}}
    assert store.observe("virtualips", {**edited, "spec": {"addresses": ["192.0.2.11/24"]}})
    na = {"kind": "NodeAssignment", "metadata": {"name": "n1"}, "spec": {"instances": []}}
    report = {"updated": "2026-12-04T00:00:00Z", "instances": []}
    assert store.observe("nodeassignments", {**na, "status": report})
    # An agent's heartbeat only moves `updated`.
    beat = {**report, "updated": "2026-12-04T00:00:30Z"}
    assert not store.observe("nodeassignments", {**na, "status": beat})
    node = {"kind": "Node", "metadata": {"name": "n1"}, "status": {"conditions": []}}
    assert store.observe("nodes", node)
    assert not store.observe("nodes", {**node, "metadata": {"name": "n1", "resourceVersion": "9"}})
