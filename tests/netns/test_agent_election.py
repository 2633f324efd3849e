"""Election: who becomes MASTER, who holds the VIP, what the client reaches.

Agents run in network namespaces on one bridge (see conftest.py); every assertion is on what is
visible from outside: the VIP configured in a node's namespace, the node answering the client's
HTTP request to the VIP, and the agents' JSON status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from vipkeeper_lab.agents import VipkeeperHandle
from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

VIP_A = "192.0.2.100/24"
VIP_B = "192.0.2.101/24"
VIP_G1 = "192.0.2.110/24"
VIP_G2 = "192.0.2.111/24"


def ip_of(vip: str) -> str:
    return vip.split("/", 1)[0]


@pytest.mark.timeout(60)
def test_highest_priority_is_master_and_serves_the_vip(lab: Lab, agents: Agents, web: None) -> None:
    n1, n2, n3 = (
        agents.start(node, agents.instance(prio))
        for node, prio in (("n1", 150), ("n2", 100), ("n3", 50))
    )
    # The agents start one after the other, so a lower one may hold the VIP for a moment before
    # the 150 node preempts it; what counts is where the election settles.
    master = lab.wait_master([n1, n2, n3], vip=VIP_A, expect="n1", timeout=10)
    assert master is n1

    status = agents.info(n1)
    assert status["state"] == "MASTER"
    assert status["priority"] == 150
    assert status["masterAddress"] == "192.0.2.11"
    assert status["primaryAddress"] == "192.0.2.11"
    assert status["counters"]["advertsSent"] > 0
    for backup in (n2, n3):
        agents.wait_state(backup, "BACKUP", timeout=5, masterAddress="192.0.2.11")
    assert lab.who_has(VIP_A) == ["n1"]
    assert agents.wait_http(VIP_A, "n1") == "n1"

    # Settled means settled: for many advert intervals nothing moves.
    agents.hold(
        "n1 the only master and the only holder",
        lambda: (
            lab.who_has(VIP_A) == ["n1"]
            and agents.states([n1, n2, n3]) == {"n1": "MASTER", "n2": "BACKUP", "n3": "BACKUP"}
        ),
        duration=1.0,
        describe=lambda: f"{agents.states([n1, n2, n3])}, VIP on {lab.who_has(VIP_A)}",
    )
    for backup in (n2, n3):
        counters = agents.info(backup)["counters"]
        assert counters["advertsReceived"] > 0
        assert counters["dropped"] == {}
    assert lab.http_get(ip_of(VIP_A)) == "n1"


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_crossed_priorities_give_one_master_per_instance(
    lab: Lab, agents: Agents, web: None
) -> None:
    """Two instances, each node preferred for one: both nodes serve (an active-active pair)."""

    def instances(prio_a: int, prio_b: int) -> list[dict[str, object]]:
        return [
            agents.instance(prio_a, name="a", vrid=51, addresses=[VIP_A]),
            agents.instance(prio_b, name="b", vrid=52, addresses=[VIP_B]),
        ]

    n1 = agents.start("n1", *instances(150, 100))
    n2 = agents.start("n2", *instances(100, 150))
    both = [n1, n2]
    assert lab.wait_master(both, instance="a", vip=VIP_A, expect="n1", timeout=10) is n1
    assert lab.wait_master(both, instance="b", vip=VIP_B, expect="n2", timeout=10) is n2
    agents.wait_state(n2, "BACKUP", timeout=5, name="a", masterAddress="192.0.2.11")
    agents.wait_state(n1, "BACKUP", timeout=5, name="b", masterAddress="192.0.2.12")
    assert agents.wait_http(VIP_A, "n1") == "n1"
    assert agents.wait_http(VIP_B, "n2") == "n2"

    lab.crash(n1)
    # The crashed node keeps its (now unreachable) VIP configured: look at the live node.
    assert lab.wait_master(both, instance="a", vip=VIP_A, exclude=["n1"], timeout=10) is n2
    assert agents.info(n2, "b")["state"] == "MASTER"
    assert "n2" in lab.who_has(VIP_A)
    assert "n2" in lab.who_has(VIP_B)
    assert agents.wait_http(VIP_A, "n2") == "n2"
    assert agents.wait_http(VIP_B, "n2") == "n2"


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(4)
def test_two_groups_with_different_vrids_share_a_segment(
    lab: Lab, agents: Agents, web: None
) -> None:
    g1 = [
        agents.start(node, agents.instance(prio, name="g1", vrid=61, addresses=[VIP_G1]))
        for node, prio in (("n1", 150), ("n2", 100))
    ]
    g2 = [
        agents.start(node, agents.instance(prio, name="g2", vrid=62, addresses=[VIP_G2]))
        for node, prio in (("n3", 100), ("n4", 150))
    ]
    assert lab.wait_master(g1, instance="g1", vip=VIP_G1, expect="n1", timeout=10) is g1[0]
    assert lab.wait_master(g2, instance="g2", vip=VIP_G2, expect="n4", timeout=10) is g2[1]
    agents.wait_state(g1[1], "BACKUP", timeout=5, name="g1", masterAddress="192.0.2.11")
    agents.wait_state(g2[0], "BACKUP", timeout=5, name="g2", masterAddress="192.0.2.14")
    assert agents.wait_http(VIP_G1, "n1") == "n1"
    assert agents.wait_http(VIP_G2, "n4") == "n4"

    # Every node hears the other group's master: counted as other_vrid at the agent level,
    # never as a drop of its own instance, never acted upon.
    def other_vrid(handle: VipkeeperHandle) -> int:
        return int(handle.status()["dropped"].get("other_vrid", 0))

    everyone = [*g1, *g2]
    before = {h.node: other_vrid(h) for h in everyone}
    agents.wait_for(
        "other_vrid to grow on every node",
        lambda: all(other_vrid(h) >= before[h.node] + 3 for h in everyone),
        timeout=5,
        describe=lambda: str({h.node: other_vrid(h) for h in everyone}),
    )
    for handle, name in [(g1[0], "g1"), (g1[1], "g1"), (g2[0], "g2"), (g2[1], "g2")]:
        assert agents.info(handle, name)["counters"]["dropped"] == {}, handle.node

    # A failover in one group leaves the other untouched.
    g2_master_since = agents.info(g2[1], "g2")["since"]
    lab.crash(g1[0])
    assert lab.wait_master(g1, instance="g1", vip=VIP_G1, exclude=["n1"], timeout=10) is g1[1]
    assert agents.wait_http(VIP_G1, "n2") == "n2"
    assert agents.info(g2[1], "g2")["since"] == g2_master_since
    assert agents.states(g2, "g2") == {"n3": "BACKUP", "n4": "MASTER"}
    assert lab.who_has(VIP_G2) == ["n4"]
    assert lab.http_get(ip_of(VIP_G2)) == "n4"
