"""plan(): the whole pass end to end, on a small cluster (3 nodes) and at scale (printed)."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest
from test_planning_builders import node, service, slice_, vip, vs, world

from vipkeeper_api.models import NodeAssignmentSpec, VrrpInstance
from vipkeeper_operator.planning.eligibility import Eligibility
from vipkeeper_operator.planning.render import Plan, plan
from vipkeeper_operator.planning.writes import spec_document
from vipkeeper_operator.world import World

LB = {"role": "lb"}


def cluster(**extra: Any) -> World:
    nodes = [
        node("a", "10.0.0.1", "fd00::1", labels=LB),
        node("b", "10.0.0.2", "fd00::2", labels=LB),
        node("c", "10.0.0.3", "fd00::3", labels=LB, cordoned=True),
        *extra.pop("nodes", ()),
    ]
    vips = [
        vip(
            "web",
            "192.0.2.10/24",
            "2001:db8::10/64",
            nodeSelector=LB,
            priorities={"preferred": ["b"]},
            vrrp={"mode": "unicast", "advertInterval": 0.5},
            checks=[{"name": "nginx", "kind": "tcp", "address": "127.0.0.1", "port": 80}],
            trackInterfaces=["eth0"],
            garp={"count": 3},
        ),
        vip(
            "ingress",
            "192.0.2.20/24",
            serviceRef={"name": "ingress"},
            vrrp={"version": 2, "authSecretRef": {"name": "vrrp"}},
            status_vrid=42,
        ),
        vip("gone", "192.0.2.30/24", status_vrid=3, deleting=True),
        *extra.pop("vips", ()),
    ]
    servers = [
        vs("web-http", "web", realServers=[{"address": "10.1.0.2"}, {"address": "10.1.0.1"}]),
        vs(
            "ingress-https", "ingress", port=443, serviceRef={"name": "ingress"}, targetPort="https"
        ),
        *extra.pop("servers", ()),
    ]
    return world(
        nodes,
        vips,
        servers,
        [service("ingress", ("https", 443, 8443))],
        [
            slice_(
                "ingress-1",
                "ingress",
                ("10.2.0.1", "a"),
                ("10.2.0.3", "c"),
                ports=[("https", 8443)],
            )
        ],
        secrets=extra.pop("secrets", {"default/vrrp": {"password": "s3cret"}}),
    )


def instances(p: Plan, node_name: str) -> dict[str, VrrpInstance]:
    return {i.name: i for i in p.assignments[node_name].instances}


def test_every_node_gets_a_valid_assignment() -> None:
    p = plan(cluster(nodes=[node("d", ready=False), node("e", deleting=True)]))
    assert sorted(p.assignments) == ["a", "b", "c", "d"]
    assert p.assignments["d"] == NodeAssignmentSpec()  # not Ready: resigns everything
    for spec in p.assignments.values():
        assert NodeAssignmentSpec.model_validate(spec_document(spec)) == spec


def test_priorities_and_demotion() -> None:
    p = plan(cluster())
    got = {c.node: (c.priority, c.eligibility) for c in p.candidates["default/web"]}
    assert got == {
        "b": (150, Eligibility.ELIGIBLE),
        "a": (100, Eligibility.ELIGIBLE),
        "c": (1, Eligibility.DEMOTED),
    }
    assert {n: instances(p, n)["default-web"].priority for n in "abc"} == {
        "a": 100,
        "b": 150,
        "c": 1,
    }
    assert "before its pods are evicted" in p.candidates["default/web"][2].reason


def test_instance_per_family_with_everything_copied() -> None:
    p = plan(cluster())
    v4, v6 = instances(p, "a")["default-web"], instances(p, "a")["default-web-v6"]
    assert [str(x) for x in v4.addresses] == ["192.0.2.10/24"]
    assert [str(x) for x in v6.addresses] == ["2001:db8::10/64"]
    assert v4.vrid == v6.vrid == p.vrids["default/web"]
    assert str(v4.advert_interval) == "0.5" and v4.garp.count == 3
    assert [t.interface for t in v4.track_interfaces] == ["eth0"]
    assert [t.check for t in v4.track_checks] == ["default-web-nginx"]
    assert [c.name for c in p.assignments["a"].checks] == ["default-web-nginx"]


def test_unicast_peers_are_the_other_candidates_of_that_family() -> None:
    p = plan(cluster())
    a4, a6 = instances(p, "a")["default-web"], instances(p, "a")["default-web-v6"]
    assert [str(x) for x in a4.unicast_peers] == ["10.0.0.2", "10.0.0.3"]
    assert str(a4.unicast_source) == "10.0.0.1"
    assert [str(x) for x in a6.unicast_peers] == ["fd00::2", "fd00::3"]
    assert instances(p, "a")["default-ingress"].unicast_peers == ()  # multicast


def test_service_ref_limits_nodes_and_auth_comes_from_the_secret() -> None:
    p = plan(cluster())
    assert [c.node for c in p.candidates["default/ingress"]] == ["a", "c"]
    assert "default-ingress" not in instances(p, "b")
    inst = instances(p, "a")["default-ingress"]
    assert inst.auth is not None and inst.auth.password == "s3cret"
    assert inst.vrid == 42 == p.vrids["default/ingress"]  # recorded earlier: kept


def test_virtual_servers_follow_their_vip() -> None:
    p = plan(cluster())
    by_node = {n: {s.name: s for s in p.assignments[n].virtual_servers} for n in "abc"}
    assert set(by_node["b"]) == {"default-web-http"}
    assert set(by_node["a"]) == {"default-web-http", "default-ingress-https"}
    https = by_node["a"]["default-ingress-https"]
    assert [(str(r.address), r.port) for r in https.real_servers] == [
        ("10.2.0.1", 8443),
        ("10.2.0.3", 8443),
    ]
    web = by_node["b"]["default-web-http"]
    assert [str(r.address) for r in web.real_servers] == ["10.1.0.1", "10.1.0.2"]
    assert web.vrrp_instance == "default-web"


def test_deleting_vip_is_rendered_nowhere_but_keeps_its_vrid() -> None:
    p = plan(cluster(vips=[vip("new", "192.0.2.40/24", status_vrid=3)]))
    assert all("default-gone" not in instances(p, n) for n in "abc")
    assert "default/gone" not in p.candidates
    assert p.vrids["default/gone"] == 3 and p.vrids["default/new"] != 3


@pytest.mark.parametrize(
    ("extra", "key", "reason", "text"),
    [
        (
            {"vips": [vip("x1", "192.0.2.51/24", vrid=7), vip("x2", "192.0.2.52/24", vrid=7)]},
            "VirtualIP/default/x2",
            "VRIDConflict",
            "VirtualIP default/x1, which keeps it; VirtualIP default/x2 is not rendered",
        ),
        (
            {"secrets": {}},
            "VirtualIP/default/ingress",
            "SecretMissing",
            "Secret default/vrrp does not exist",
        ),
        (
            {"secrets": {"default/vrrp": {"password": "far-too-long"}}},
            "VirtualIP/default/ingress",
            "SecretInvalid",
            "at most 8 bytes",
        ),
        (
            {"vips": [vip("x", "192.0.2.60/24", nodeSelector={"role": "none"})]},
            "VirtualIP/default/x",
            "NoEligibleNodes",
            "a, b, c: the node's labels do not match nodeSelector (role=none)",
        ),
        (
            {"vips": [vip("x", "192.0.2.10/32")]},
            "VirtualIP/default/x",
            "AddressConflict",
            "also in VirtualIP default/web",
        ),
        (
            {"servers": [vs("orphan", "nope")]},
            "VirtualServer/default/orphan",
            "VirtualIPMissing",
            "default/nope",
        ),
        (
            {"servers": [vs("zdup", "web")]},
            "VirtualServer/default/zdup",
            "ServiceConflict",
            "default/web-http",
        ),
        (
            {"servers": [vs("y", "gone")]},
            "VirtualServer/default/y",
            "VirtualIPMissing",
            "being deleted",
        ),
    ],
)
def test_problems(extra: dict[str, Any], key: str, reason: str, text: str) -> None:
    p = plan(cluster(**extra))
    found = {pr.reason: pr.message for pr in p.problems.get(key, ())}
    assert reason in found, p.problems
    assert text in found[reason]
    name = key.rsplit("/", 1)[1]
    for n in "abc":  # unsafe: rendered nowhere
        assert f"default-{name}" not in instances(p, n)
        assert f"default-{name}" not in {s.name for s in p.assignments[n].virtual_servers}


def test_unrendered_vip_takes_its_holder_placed_services_along() -> None:
    p = plan(cluster(secrets={}))
    assert "VirtualIPNotRendered" in [
        x.reason for x in p.problems["VirtualServer/default/ingress-https"]
    ]
    assert "default/ingress" not in p.candidates


def test_placement_all_lands_on_every_ready_node() -> None:
    extra = {
        "servers": [vs("dr", "web", port=8080, placement="all", address="192.0.2.10")],
        "nodes": [node("d", ready=False)],
    }
    p = plan(cluster(**extra))
    assert [
        n
        for n, s in p.assignments.items()
        if any(v.name == "default-dr" for v in s.virtual_servers)
    ] == ["a", "b", "c"]


def test_a_clean_cluster_has_no_problems_and_plans_are_deterministic() -> None:
    w = cluster()
    first = plan(w)
    assert first.problems == {}
    shuffled = World(
        nodes=dict(reversed(list(w.nodes.items()))),
        virtual_ips=dict(reversed(list(w.virtual_ips.items()))),
        virtual_servers=dict(reversed(list(w.virtual_servers.items()))),
        services=w.services,
        endpoint_slices=w.endpoint_slices,
        secrets=w.secrets,
    )
    again = plan(shuffled)
    assert {n: spec_document(s) for n, s in again.assignments.items()} == {
        n: spec_document(s) for n, s in first.assignments.items()
    }
    assert again.vrids == first.vrids and again.candidates == first.candidates


def big_world(vips: int, nodes: int, zones: int) -> World:
    return world(
        [
            node(
                f"node-{i:02}",
                str(ipaddress.ip_address("10.0.0.1") + i),
                labels={"zone": f"z{i % zones}"},
            )
            for i in range(nodes)
        ],
        [
            vip(
                f"vip-{i:04}",
                str(ipaddress.ip_address("172.16.0.1") + i),
                interface=f"eth{i % 5}",
                nodeSelector={"zone": f"z{i % zones}"},
                vrrp={"mode": "unicast"},
            )
            for i in range(vips)
        ],
        [
            vs(f"vs-{i:04}", f"vip-{i:04}", realServers=[{"address": "10.9.0.1"}])
            for i in range(vips)
        ],
    )


@pytest.mark.parametrize("zones", [1, 5])
def test_scale_1000_vips_over_50_nodes(zones: int) -> None:
    w = big_world(1000, 50, zones)
    start = time.perf_counter()
    p = plan(w)
    took = time.perf_counter() - start
    per_node = sum(len(s.instances) for s in p.assignments.values()) / len(p.assignments)
    print(f"plan(): 1000 VIPs + 1000 VSs x 50 nodes, {per_node:.0f} instances/node: {took:.2f} s")
    assert p.problems == {} and len(p.vrids) == 1000
