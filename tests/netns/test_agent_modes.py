"""Protocol modes: unicast peers, IPv6 VIPs, VRRP version 2 with PASS authentication."""

from __future__ import annotations

import ipaddress
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VIP6 = "2001:db8::100/64"
N1, N2, N3 = "192.0.2.11", "192.0.2.12", "192.0.2.13"

#: A rogue VRRP v3 router: sends adverts for VRID 51 with priority 254 and the real VIP, as
#: unicast to the given targets, from a raw socket (so nothing is configured on its node). Built
#: by hand, independently of the agent's codec. Ends by itself after its duration argument (seconds).
ROGUE = textwrap.dedent(
    """
    import ipaddress, socket, struct, sys, time
    vrid, priority, interval_cs = 51, 254, 10
    vip = ipaddress.IPv4Address(sys.argv[1])
    source = ipaddress.IPv4Address(sys.argv[2])
    duration = float(sys.argv[3])
    targets = [ipaddress.IPv4Address(t) for t in sys.argv[4:]]

    def checksum(data):
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
    sock.bind((str(source), 0))
    end = time.monotonic() + duration
    sent = 0

    def advert(target):
        # Version 3, type 1; VRID; priority; 1 address; Max Adver Int; checksum; the address.
        header = struct.pack("!BBBBH", 0x31, vrid, priority, 1, interval_cs)
        unsummed = header + bytes(2) + vip.packed
        pseudo = source.packed + target.packed + struct.pack("!xBH", 112, len(unsummed))
        return header + struct.pack("!H", checksum(pseudo + unsummed)) + vip.packed

    while time.monotonic() < end:
        for target in targets:
            sock.sendto(advert(target), (str(target), 0))
            sent += 1
        print("sent", sent, flush=True)
        time.sleep(0.05)
    """
)


@pytest.mark.timeout(60)
def test_unicast_peers_elect_fail_over_and_drop_strangers(
    lab: Lab, agents: Agents, web: None
) -> None:
    n1 = agents.start("n1", agents.instance(150, unicastPeers=[N2]))
    n2 = agents.start("n2", agents.instance(100, unicastPeers=[N1]))
    assert lab.wait_master([n1, n2], vip=VIP, expect="n1", timeout=10) is n1
    agents.wait_state(n2, "BACKUP", timeout=5, masterAddress=N1)
    assert agents.wait_http(VIP, "n1") == "n1"

    # n3 is no peer of either: its adverts, though of a higher priority and for the same VIP,
    # must be dropped as unknown_peer and change nothing.
    rogue = lab.spawn(
        "n3",
        [sys.executable, "-c", ROGUE, VIP.partition("/")[0], N3, "20", N1, N2],
        name="n3-rogue",
    )
    for handle in (n1, n2):
        agents.wait_dropped(handle, "unknown_peer", 10, timeout=5)
    assert "sent" in rogue.log_text()
    agents.hold(
        "n1 master and sole holder despite the stranger",
        lambda: (
            agents.states([n1, n2]) == {"n1": "MASTER", "n2": "BACKUP"}
            and lab.who_has(VIP) == ["n1"]
        ),
        duration=1.0,
        describe=lambda: f"{agents.states([n1, n2])}, VIP on {lab.who_has(VIP)}",
    )
    assert agents.info(n2)["masterAddress"] == N1
    rogue.stop()
    assert lab.http_get(VIP.partition("/")[0]) == "n1"

    fault_at = lab.crash(n1)
    assert lab.wait_master([n1, n2], vip=VIP, exclude=["n1"], timeout=10) is n2
    took = agents.info(n2)["lastTransition"]["at"] - fault_at
    assert took <= agents.mdi(100) + agents.MARGIN, took
    assert agents.wait_http(VIP, "n2") == "n2"


def link_local(lab: Lab, node: str) -> str:
    found = [
        a.ip
        for a in lab.addresses(node)
        if isinstance(a, ipaddress.IPv6Interface) and a.is_link_local
    ]
    assert found, f"{node} has no IPv6 link-local address: {lab.addresses(node)}"
    return str(found[0])


@pytest.mark.timeout(60)
def test_ipv6_vip_election_and_failover(lab: Lab, agents: Agents, web: None) -> None:
    handles = [
        agents.start(node, agents.instance(prio, addresses=[VIP6]))
        for node, prio in (("n1", 150), ("n2", 100), ("n3", 50))
    ]
    n1, n2, n3 = handles
    assert lab.wait_master(handles, vip=VIP6, expect="n1", timeout=10) is n1
    # IPv6 adverts come from the link-local address (RFC 5798 §5.1.2.1).
    n1_ll = link_local(lab, "n1")
    assert agents.info(n1)["primaryAddress"] == n1_ll
    agents.wait_state(n2, "BACKUP", timeout=5, masterAddress=n1_ll)
    agents.wait_state(n3, "BACKUP", timeout=5, masterAddress=n1_ll)
    assert lab.who_has(VIP6) == ["n1"]
    assert agents.wait_http(VIP6, "n1") == "n1"

    fault_at = lab.crash(n1)
    assert lab.wait_master(handles, vip=VIP6, exclude=["n1"], timeout=10) is n2
    took = agents.info(n2)["lastTransition"]["at"] - fault_at
    assert took <= agents.mdi(100) + agents.MARGIN, took
    agents.wait_state(n3, "BACKUP", timeout=5, masterAddress=link_local(lab, "n2"))
    # The unsolicited NA moves the client's neighbour entry to n2.
    assert agents.wait_http(VIP6, "n2") == "n2"


@pytest.mark.timeout(60)
def test_v2_pass_auth_mismatch_is_dropped_and_splits_the_brain(
    lab: Lab, agents: Agents, web: None
) -> None:
    def v2(priority: int, password: str) -> dict[str, object]:
        return agents.instance(priority, version=2, interval="1", auth={"password": password})

    n1 = agents.start("n1", v2(150, "labpass"))
    n2 = agents.start("n2", v2(100, "labpass"))
    n3 = agents.start("n3", v2(50, "wrong"))
    # Version 2 adverts are whole seconds: Master_Down_Interval is 3.4-3.8 s here.
    agents.wait_state(n1, "MASTER", timeout=10)
    agents.wait_state(n2, "BACKUP", timeout=5, masterAddress=N1)
    assert agents.info(n2)["counters"]["advertsReceived"] > 0

    # n3 drops every advert of n1 (wrong password), so it never hears a master...
    agents.wait_dropped(n3, "auth", 1, timeout=5)
    item = agents.wait_state(n3, "MASTER", timeout=10)
    assert item["lastTransition"]["reason"] == "no master seen"
    assert item["counters"]["advertsReceived"] == 0
    # ... and the others drop n3's adverts in turn: the counter is the diagnostic.
    for handle in (n1, n2):
        agents.wait_dropped(handle, "auth", 2, timeout=5)
    # The correctly configured pair is unaffected: n1 master, n2 its backup.
    assert agents.states([n1, n2, n3]) == {"n1": "MASTER", "n2": "BACKUP", "n3": "MASTER"}
    assert agents.info(n2)["masterAddress"] == N1
    assert sorted(lab.who_has(VIP)) == ["n1", "n3"]
