"""The product operator end to end against the API emulator: VirtualIPs, Nodes, EndpointSlices and
the agents' reports in; NodeAssignments, VirtualIP status and Events out.

Lifecycle (finalizer, bad specs) and admission are in test_operator_lifecycle.py; the harness is
in tests/support/operator_env.py. Every wait is bounded (support.operator_env.WAIT).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest

from support.kapi import KubeAPI
from support.operator_env import (
    addresses,
    events,
    instance,
    instance_report,
    quiet,
    report,
    run_operator,
    spec_of,
    spec_writes,
    three_nodes,
    vip_status,
    virtual_ip,
    virtual_server,
    wait_for,
)
from vipkeeper_operator import handlers
from vipkeeper_operator.controller import Controller
from vipkeeper_operator.store import Store

pytestmark = [pytest.mark.operator, pytest.mark.timeout(60)]

NODES = ("n1", "n2", "n3")


def _priorities(kapi: KubeAPI) -> dict[str, int | None]:
    return {n: (i.priority if (i := instance(kapi, n)) is not None else None) for n in NODES}


def test_assignments_follow_the_virtual_ip_and_are_not_rewritten(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    kapi.create(virtual_ip("web", "192.0.2.10/24", priorities={"preferred": ["n2", "n1"]}))
    with run_operator(kapi, tmp_path, monkeypatch) as controller:
        wanted = {"n1": 100, "n2": 150, "n3": 75}  # preferred[1], preferred[0], the spread
        wait_for(lambda: _priorities(kapi) == wanted, what=f"priorities {wanted}")
        vrids = {i.vrid for n in NODES if (i := instance(kapi, n)) is not None}
        [vrid] = vrids
        assert 1 <= vrid <= 255
        wait_for(lambda: vip_status(kapi).get("vrid") == vrid, what="status.vrid")
        assert addresses(kapi, "n1") == ["192.0.2.10/24"]
        # Which VirtualIP each instance is, for the agent's Events.
        na = kapi.get("NodeAssignment", "n1")
        assert na is not None
        owners = json.loads(na["metadata"]["annotations"]["vipkeeper.io/instance-owners"])
        vip = kapi.get("VirtualIP", "web", "default")
        assert vip is not None
        assert owners == {
            "default-web": {"namespace": "default", "name": "web", "uid": vip["metadata"]["uid"]}
        }

        # An edit of the preferred order and the addresses reaches every node.
        kapi.patch(
            "VirtualIP",
            "web",
            {
                "spec": {
                    "addresses": ["192.0.2.10/24", "192.0.2.11/24"],
                    "priorities": {"preferred": ["n3"]},
                }
            },
        )
        wait_for(lambda: _priorities(kapi)["n3"] == 150, what="n3 preferred")
        for n in NODES:
            edited = wait_for(lambda n=n: instance(kapi, n), what=f"{n} instance")
            wait_for(
                lambda n=n: addresses(kapi, n) == ["192.0.2.10/24", "192.0.2.11/24"],
                what=f"{n} addresses",
            )
            assert edited.vrid == vrid  # an allocated VRID is stable across edits
        quiet(controller)

        # A full re-list (history lost, watches cut: kopf gets 410 and lists everything
        # again) writes nothing: the store sees nothing new, so not even a pass runs.
        writes = spec_writes(kapi)
        statuses = controller.counters.status_writes
        assert controller.counters.assignment_writes == writes
        listed = {p: _lists(kapi, p) for p in ("nodes", "virtualips", "nodeassignments")}
        # A Secret (not watched) makes the history newer than anything kopf saw, so that every
        # watch gets 410 Gone after the compaction.
        kapi.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}})
        kapi.compact()
        kapi.close_watches()
        for plural, before in listed.items():
            wait_for(lambda p=plural, b=before: _lists(kapi, p) > b, what=f"{plural} re-listed")
        quiet(controller)
        assert spec_writes(kapi) == writes
        assert controller.counters.assignment_writes == writes
        assert controller.counters.status_writes == statuses


def test_cordoned_node_is_demoted(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    kapi.create(virtual_ip("web", "192.0.2.10/24", priorities={"preferred": ["n1", "n2"]}))
    with run_operator(kapi, tmp_path, monkeypatch):
        wait_for(lambda: _priorities(kapi)["n1"] == 150, what="n1 preferred")
        kapi.patch("Node", "n1", {"spec": {"unschedulable": True}}, namespace="")
        # Demoted, not dropped: n1 still runs the instance, below every other node.
        wait_for(lambda: _priorities(kapi)["n1"] == 1, what="n1 demoted to priority 1")
        assert _priorities(kapi) == {"n1": 1, "n2": 100, "n3": 75}
        kapi.patch("Node", "n1", {"spec": {"unschedulable": None}}, namespace="")
        wait_for(lambda: _priorities(kapi)["n1"] == 150, what="n1 preferred again (uncordoned)")


def test_reports_fold_into_holder_and_holder_changed_event(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    vip = kapi.create(virtual_ip("web", "192.0.2.10/24", priorities={"preferred": ["n1", "n2"]}))
    with run_operator(kapi, tmp_path, monkeypatch):
        wait_for(lambda: all(instance(kapi, n) for n in NODES), what="assignments")
        report(kapi, "n1", instance_report("MASTER", 150, 10))
        report(kapi, "n2", instance_report("BACKUP", 100, 10))
        report(kapi, "n3", instance_report("BACKUP", 99, 10))
        nodes = [("n1", "MASTER", 150), ("n2", "BACKUP", 100), ("n3", "BACKUP", 99)]

        seen: list[object] = []

        def folded() -> dict[str, object] | None:
            status = vip_status(kapi)
            seen[:] = [(n["node"], n["state"], n["priority"]) for n in status.get("nodes", ())]
            return status if seen == nodes else None

        status = wait_for(folded, what=lambda: f"every node's report folded: {nodes}, seen {seen}")
        assert status["holder"] == "n1"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"], ready["message"]) == (
            "True",
            "HolderElected",
            "n1 holds the VIP",
        )
        assert status["state"] == "MASTER on n1"

        # n2 takes over (n1 was stopped, say): the holder follows and an Event says so.
        report(kapi, "n1", instance_report("BACKUP", 150, 0))
        report(kapi, "n2", instance_report("MASTER", 100, 0))
        wait_for(lambda: vip_status(kapi).get("holder") == "n2", what="holder n2")
        [changed] = wait_for(
            lambda: [e for e in events(kapi, "HolderChanged") if "n1 → n2" in e["message"]],
            what="HolderChanged n1 → n2",
        )
        assert changed["type"] == "Normal"
        assert changed["message"].startswith("n1 → n2: Preempted")
        involved = changed["involvedObject"]
        assert (involved["kind"], involved["namespace"], involved["uid"]) == (
            "VirtualIP",
            "default",
            vip["metadata"]["uid"],
        )
        assert vip_status(kapi)["lastTransition"]["from"] == "n1"


def test_virtual_servers_static_and_from_endpoint_slices(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    kapi.patch("Node", "n3", {"metadata": {"labels": {"role": "other"}}}, namespace="")
    for n in ("n1", "n2"):
        kapi.patch("Node", n, {"metadata": {"labels": {"role": "edge"}}}, namespace="")
    kapi.create(virtual_ip("web", "192.0.2.10/24", nodeSelector={"role": "edge"}))
    static = [{"address": "203.0.113.11"}, {"address": "203.0.113.12", "weight": 3}]
    kapi.create(virtual_server("http", "web", 80, realServers=static, scheduler="rr"))
    kapi.create(_service("backend", "https", 443, 8443))
    kapi.create(_slice("backend-a", "https", 8443, [("203.0.113.21", "n1", True)]))
    kapi.create(virtual_server("api", "web", 443, serviceRef={"name": "backend"}))
    with run_operator(kapi, tmp_path, monkeypatch):

        def servers(node: str) -> dict[str, list[tuple[str, int | None, int]]]:
            spec = spec_of(kapi, node)
            return {
                str(vs.name): [(str(r.address), r.port, r.weight) for r in vs.real_servers]
                for vs in (spec.virtual_servers if spec else ())
            }

        wanted = {
            "default-http": [("203.0.113.11", None, 1), ("203.0.113.12", None, 3)],
            "default-api": [("203.0.113.21", 8443, 1)],
        }
        for n in ("n1", "n2"):  # the nodes that may hold the VIP, and only those
            wait_for(lambda n=n: servers(n) == wanted, what=f"{n} virtual servers")
        spec = spec_of(kapi, "n1")
        assert spec is not None
        http = next(vs for vs in spec.virtual_servers if vs.name == "default-http")
        assert (str(http.address), http.port, http.scheduler, http.vrrp_instance) == (
            "192.0.2.10",
            80,
            "rr",
            "default-web",
        )
        assert spec_of(kapi, "n3") is not None and servers("n3") == {}

        # The endpoints change: a new pod on n2, the old one no longer ready.
        kapi.patch(
            "EndpointSlice",
            "backend-a",
            {
                "endpoints": [
                    _endpoint("203.0.113.21", "n1", False),
                    _endpoint("203.0.113.22", "n2", True),
                ]
            },
        )
        wanted["default-api"] = [("203.0.113.22", 8443, 1)]
        for n in ("n1", "n2"):
            wait_for(lambda n=n: servers(n) == wanted, what=f"{n} follows the endpoints")
        # A second slice of the same Service adds its endpoints.
        kapi.create(_slice("backend-b", "https", 8443, [("203.0.113.23", "n1", True)]))
        wanted["default-api"] = [("203.0.113.22", 8443, 1), ("203.0.113.23", 8443, 1)]
        wait_for(lambda: servers("n1") == wanted, what="the second slice's endpoint")
        kapi.delete("EndpointSlice", "backend-a")
        wanted["default-api"] = [("203.0.113.23", 8443, 1)]
        wait_for(lambda: servers("n2") == wanted, what="the deleted slice's endpoint gone")


def test_deleted_node_loses_its_assignment(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    kapi.create(virtual_ip("web", "192.0.2.10/24"))
    with run_operator(kapi, tmp_path, monkeypatch):
        wait_for(lambda: all(instance(kapi, n) for n in NODES), what="assignments")
        # No finalizer on assignments: deleting one never waits for the operator.
        na = kapi.get("NodeAssignment", "n3", namespace="")
        assert na is not None and not na["metadata"].get("finalizers")
        kapi.delete("Node", "n3", namespace="")
        wait_for(
            lambda: kapi.get("NodeAssignment", "n3", namespace="") is None, what="n3's deleted"
        )
        assert instance(kapi, "n1") is not None and instance(kapi, "n2") is not None
        names = sorted(na["metadata"]["name"] for na in kapi.list("NodeAssignment"))
        assert names == ["n1", "n2"]


def _lists(kapi: KubeAPI, plural: str) -> int:
    return sum(
        r.action == kmock.action.LIST and r.resource is not None and r.resource.plural == plural
        for r in kapi.requests()
    )


# --- objects --------------------------------------------------------------------------------


def _service(name: str, port_name: str, port: int, target: int) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "ports": [{"name": port_name, "port": port, "targetPort": target, "protocol": "TCP"}]
        },
    }


def _endpoint(address: str, node: str, ready: bool) -> dict[str, object]:
    return {"addresses": [address], "nodeName": node, "conditions": {"ready": ready}}


def _slice(
    name: str, port_name: str, port: int, endpoints: list[tuple[str, str, bool]]
) -> dict[str, object]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "backend"},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": [_endpoint(*e) for e in endpoints],
    }


@pytest.mark.parametrize(
    ("last_pass_ago", "wakes"),
    [(None, True), (1.0, False), (handlers.RESYNC / 2 + 0.1, True)],
    ids=["no-pass-yet", "recent-pass", "stale-pass"],
)
@pytest.mark.asyncio
async def test_resync_timer_wakes_the_controller_only_without_a_recent_pass(
    last_pass_ago: float | None, wakes: bool
) -> None:
    """Every VirtualIP has its own resync timer: together they must not make a pass each."""
    controller = Controller(Store(), writer=None)  # type: ignore[arg-type]  # never writes here
    if last_pass_ago is not None:
        controller.counters.finished.append(time.monotonic() - last_pass_ago)
    resync: Any = handlers.resync  # kopf types it as a timer callback with every kwarg
    await resync(memo=kopf.Memo(controller=controller))
    assert controller._wake.is_set() is wakes
