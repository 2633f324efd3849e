"""vipkeeper-agent and Debian's keepalived 2.2.7 as the two routers of one virtual router.

n1 runs keepalived, n2 runs our agent, each from the same kind of config dict (the lab renders
keepalived.conf from it). The higher priority side must become MASTER and hold the VIP, the other
must stay BACKUP for good (which it only does if it accepts every advert of the master), the
client must reach the VIP, and after a failure of the master the other side must take over within
its Master_Down_Interval.

The master side is started first and the backup joins the running master: a backup that rejected
the master's adverts would then leave BACKUP one Master_Down_Interval after its start, which the
tests wait for before looking.
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass, replace
from typing import Any

import pytest
from interop_support import (
    HIGH,
    LOW,
    MARGIN,
    V2,
    V3,
    V3_IPV6,
    Flavour,
    advert_source,
    keepalived_states,
    logs,
    our_dropped,
    our_instance,
    vrrp_config,
    wait_http,
    wait_ready,
)

from vipkeeper_lab.agents import AgentHandle, VipkeeperHandle
from vipkeeper_lab.keepalived import KeepalivedHandle, instances_from_config
from vipkeeper_lab.nodes import Lab

pytestmark = pytest.mark.interop

KEEPALIVED_MASTER = "keepalived-master"
VIPKEEPER_MASTER = "vipkeeper-master"
#: keepalived's complaints about adverts it received (2.2.7 wording, logged with -D).
KEEPALIVED_RX_COMPLAINT = re.compile(
    r"invalid|bogus|mismatch|wrong|checksum|discard|ttl|passwd|auth|not present",
    re.IGNORECASE,
)


@dataclass
class Pair:
    """The two daemons of one test, once the master side has settled and the backup joined."""

    flavour: Flavour
    unicast: bool
    keepalived: KeepalivedHandle
    ours: VipkeeperHandle
    master: AgentHandle
    backup: AgentHandle
    #: When the backup side was up (monotonic), for the acceptance window.
    backup_ready: float

    @property
    def keepalived_is_master(self) -> bool:
        return self.master is self.keepalived


def bring_up(
    lab: Lab,
    flavour: Flavour,
    role: str,
    *,
    unicast: bool,
    passwords: tuple[str | None, str | None] = (None, None),
    keepalived_extra: tuple[str, ...] = (),
) -> Pair:
    """Start the master side, wait until it holds the VIP, then start the backup side.

    ``passwords`` is (keepalived's, ours); ``keepalived_extra`` are raw lines added to
    keepalived's vrrp_instance block (options our config schema does not have).
    """
    ka_node, our_node = lab.nodes
    ka_prio, our_prio = (HIGH, LOW) if role == KEEPALIVED_MASTER else (LOW, HIGH)
    ka_config = vrrp_config(
        flavour,
        me=ka_node,
        peer=our_node,
        priority=ka_prio,
        unicast=unicast,
        password=passwords[0],
    )
    our_config = vrrp_config(
        flavour,
        me=our_node,
        peer=ka_node,
        priority=our_prio,
        unicast=unicast,
        password=passwords[1],
    )
    ka_instances = [
        replace(inst, extra=keepalived_extra) for inst in instances_from_config(ka_config)
    ]

    def start_ka() -> AgentHandle:
        return lab.start_keepalived(ka_node, ka_instances)

    def start_ours() -> AgentHandle:
        return lab.start_vipkeeper(our_node, our_config)

    first, second = (start_ka, start_ours) if role == KEEPALIVED_MASTER else (start_ours, start_ka)
    master = first()
    wait_ready(lab, master)
    # Both sides start as BACKUP: the first becomes MASTER after its own Master_Down_Interval.
    lab.wait_master([master], vip=flavour.vip, timeout=flavour.master_down(HIGH) + MARGIN + 5)
    backup = second()
    ready = wait_ready(lab, backup)
    ka = master if isinstance(master, KeepalivedHandle) else backup
    ours = master if isinstance(master, VipkeeperHandle) else backup
    assert isinstance(ka, KeepalivedHandle) and isinstance(ours, VipkeeperHandle)
    return Pair(flavour, unicast, ka, ours, master, backup, ready)


def hold_acceptance_window(pair: Pair) -> None:
    """Sleep until a backup deaf to the master would have taken over (and a bit more)."""
    flavour = pair.flavour
    until = pair.backup_ready + flavour.master_down(LOW) + flavour.interval_s
    time.sleep(max(until - time.monotonic(), 5 * flavour.interval_s))


def keepalived_complaints(ka: KeepalivedHandle) -> list[str]:
    return [
        line
        for line in ka.proc.log_text().splitlines()
        if KEEPALIVED_RX_COMPLAINT.search(line) and "(web)" in line
    ]


def assert_steady(lab: Lab, pair: Pair) -> None:
    """The master holds the VIP, the backup accepts it, both say so, the client gets through."""
    flavour = pair.flavour
    ka, ours = pair.keepalived, pair.ours
    ka_node, our_node = lab.nodes
    hold_acceptance_window(pair)
    before = our_instance(ours)
    time.sleep(1.5 * flavour.interval_s)  # at least one more advert from the master
    now = our_instance(ours)
    why = logs(ka, ours)

    # First what our agent made of keepalived's packets: the most telling failure.
    dropped, agent_dropped = our_dropped(ours)
    assert (dropped, agent_dropped) == ({}, {}), why
    assert lab.who_has(flavour.vip) == [pair.master.node], why
    assert lab.states([ka, ours]) == {
        pair.master.node: "MASTER",
        pair.backup.node: "BACKUP",
    }, why
    if pair.keepalived_is_master:
        assert now["state"] == "BACKUP"
        assert now["masterAddress"] == advert_source(lab, ka_node, flavour, unicast=pair.unicast)
        # Never left BACKUP: every advert of keepalived's was accepted from the first one on.
        assert (now["lastTransition"]["from"], now["lastTransition"]["to"]) == ("INIT", "BACKUP")
        received = now["counters"]["advertsReceived"]
        assert received > before["counters"]["advertsReceived"] > 0, why
        assert keepalived_states(ka) == ["BACKUP", "MASTER"], why
    else:
        assert now["state"] == "MASTER"
        assert (now["lastTransition"]["from"], now["lastTransition"]["to"]) == ("BACKUP", "MASTER")
        assert now["masterAddress"] == now["primaryAddress"]
        assert now["primaryAddress"] == advert_source(lab, our_node, flavour, unicast=pair.unicast)
        assert now["counters"]["advertsSent"] > before["counters"]["advertsSent"]
        assert now["counters"]["sendErrors"] == 0
        # keepalived never doubted our adverts: it never left BACKUP and logged no complaint.
        assert keepalived_states(ka) == ["BACKUP"], why
    assert keepalived_complaints(ka) == [], why
    wait_http(lab, flavour.vip_ip, pair.master.node)


# ----- the matrix --------------------------------------------------------------------------


def _matrix() -> list[Any]:
    cases = []
    for flavour in (V2, V3, V3_IPV6):
        for mode in ("multicast", "unicast"):
            for role in (KEEPALIVED_MASTER, VIPKEEPER_MASTER):
                case_id = f"{flavour.id}-{mode}-{role}"
                marks = [pytest.mark.timeout(90 if flavour.version == 2 else 45)]
                cases.append(pytest.param(flavour, mode, role, id=case_id, marks=marks))
    return cases


@pytest.mark.parametrize(("flavour", "mode", "role"), _matrix())
def test_election_and_crash_failover(lab: Lab, flavour: Flavour, mode: str, role: str) -> None:
    pair = bring_up(lab, flavour, role, unicast=mode == "unicast")
    assert_steady(lab, pair)

    # Power cut of the master: kill -9 (whole process group) and link down at once.
    fault_at = lab.crash(pair.master)
    started = time.monotonic()
    down = flavour.master_down(LOW)
    bound = down + MARGIN
    new = lab.wait_master(
        [pair.backup], vip=flavour.vip, timeout=bound + 5, exclude=[pair.master.node]
    )
    took = time.monotonic() - started
    print(f"{pair.backup.kind} took over {took:.3f} s after the crash (MDI {down:.3f} s)")
    assert new is pair.backup
    assert took <= bound, (
        f"{pair.backup.kind} took {took:.2f} s over, Master_Down_Interval is {down:.2f} s\n"
        + logs(pair.keepalived, pair.ours)
    )
    if pair.keepalived_is_master:
        now = our_instance(pair.ours)
        assert now["masterAddress"] == now["primaryAddress"]
        last = now["lastTransition"]
        assert (last["from"], last["to"], last["reason"]) == ("BACKUP", "MASTER", "master down")
        # Precise (our own clock): the last advert came at most one interval before the fault,
        # so an RFC-conforming backup cannot have declared the master down any earlier.
        assert last["at"] - fault_at >= down - flavour.interval_s - 0.05
        assert last["at"] - fault_at <= bound
    else:
        assert keepalived_states(pair.keepalived) == ["BACKUP", "MASTER"]
    wait_http(lab, flavour.vip_ip, pair.backup.node)


# ----- graceful handover -------------------------------------------------------------------


@pytest.mark.timeout(45)
@pytest.mark.parametrize("role", [KEEPALIVED_MASTER, VIPKEEPER_MASTER])
def test_graceful_handover_on_sigterm(lab: Lab, role: str) -> None:
    """SIGTERM of the master: priority-0 advert, the backup takes over after its Skew_Time only."""
    flavour = V3
    pair = bring_up(lab, flavour, role, unicast=False)
    assert_steady(lab, pair)
    old, new = pair.master, pair.backup
    new_node = lab.node(new.node)
    probes = lab.start_probes(flavour.vip)
    assert probes.wait_http(10, node=old.node) is not None
    time.sleep(0.3)

    stop_at = lab.kill(old, signal.SIGTERM)
    lab.wait_master([new], vip=flavour.vip, timeout=5, exclude=[old.node])
    assert old.proc.wait(3.0) is not None, f"{old.kind} did not exit on SIGTERM"
    assert probes.wait_http(5, node=new.node, after=stop_at) is not None
    time.sleep(0.1)
    probes.stop()
    result = probes.takeover(stop_at, new_mac=new_node.mac)

    # Without the priority-0 advert the backup would wait for its Master_Down_Interval, which
    # cannot end earlier than this after the last regular advert.
    no_resign = flavour.master_down(LOW) - flavour.interval_s
    why = f"{result}\n{logs(pair.keepalived, pair.ours)}"
    print(f"{new.kind} answered ARP for the VIP {result.arp_takeover} s after SIGTERM")
    assert result.arp_takeover is not None, why
    assert result.arp_takeover < no_resign, why
    # The resigning master took the VIP away with it.
    assert lab.who_has(flavour.vip) == [new.node], why
    if new is pair.ours:
        last = our_instance(pair.ours)["lastTransition"]
        assert last["to"] == "MASTER"
        assert last["at"] - stop_at < no_resign, why
    else:
        assert keepalived_states(pair.keepalived)[-1] == "MASTER"


# ----- VRRPv2 PASS authentication ----------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("role", [KEEPALIVED_MASTER, VIPKEEPER_MASTER])
def test_v2_same_password_interoperates(lab: Lab, role: str) -> None:
    pair = bring_up(lab, V2, role, unicast=False, passwords=("labpass", "labpass"))
    assert_steady(lab, pair)


@pytest.mark.timeout(60)
def test_v2_different_passwords_are_dropped(lab: Lab) -> None:
    """Each side drops the other's adverts: our agent counts them as dropped.auth."""
    pair = bring_up(lab, V2, KEEPALIVED_MASTER, unicast=False, passwords=("labpass", "wrong"))
    ours, ka = pair.ours, pair.keepalived
    # Deaf to keepalived, our backup declares the master down after its Master_Down_Interval.
    lab.wait_for(
        "our agent to take over from a master it cannot authenticate",
        lambda: ours.state() == "MASTER",
        V2.master_down(LOW) + MARGIN + 5,
        describe=lambda: str(our_instance(ours)),
    )
    time.sleep(2 * V2.interval_s)
    now = our_instance(ours)
    why = logs(ka, ours)
    assert now["counters"]["advertsReceived"] == 0, why
    dropped, agent_dropped = our_dropped(ours)
    assert set(dropped) == {"auth"}, why
    assert dropped["auth"] >= 3, why
    assert agent_dropped == {}, why
    # And keepalived ignores ours: both are MASTER and both hold the VIP.
    assert ka.state() == "MASTER", why
    assert any("received an invalid passwd" in line for line in keepalived_complaints(ka)), why
    assert sorted(lab.who_has(V2.vip)) == ["n1", "n2"], why
