"""Conformance, election: the state machine of RFC 3768 §6.4 and RFC 5798 §6.4 on a live agent.

One vipkeeper-agent runs on n1 (the middle node for the tie-break); its peers are scapy-built
adverts (``vrrp_inject``) sent from other nodes' namespaces. Everything is observed from outside:
the agent's status, who holds the VIP, and the adverts the agent puts on the wire.

Timer bounds come from the agent's own formulas (``agents.skew``/``agents.mdi``), and each one
is chosen so that the wrong behaviour could not meet it: e.g. a takeover after a resignation must
come before the Master_Down of the last regular advert, not merely "soon". docs/conformance.md
is the checklist.
"""

from __future__ import annotations

import ipaddress
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from vrrp_inject import (
    V2_IPV4,
    V3_IPV4,
    V3_IPV6,
    VARIANTS,
    Injector,
    Variant,
    make_master,
    peer_advert,
    start_agent,
    vrrp_source,
)

from vipkeeper_lab.agents import VipkeeperHandle
from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

Peers = Callable[[str], Injector]
#: The slow interval of the timer tests: it keeps Skew_Time and Master_Down seconds apart.
SLOW = Decimal(1)
#: How long something that must not happen is watched for, at least.
QUIET = 0.6


@pytest.fixture
def peers(lab: Lab) -> Iterator[Peers]:
    """An injector per node, started on first use, all stopped at teardown."""
    running: dict[str, Injector] = {}

    def peer(node: str) -> Injector:
        if node not in running:
            running[node] = Injector(lab.node(node).ns)
        return running[node]

    yield peer
    for injector in running.values():
        injector.close()


def steady(variant: Variant) -> float:
    """How often an injected master that must hold the agent BACKUP sends: twice per advertised
    interval, so that a stall of the injector on a loaded machine is not taken for its death."""
    return float(variant.interval) / 2


def source(lab: Lab, node: str, variant: Variant) -> str:
    return vrrp_source(lab.node(node).ns, variant.family)


def vip_on(agents: Agents, variant: Variant) -> list[str]:
    return agents.lab.who_has(variant.vip)


def hold_state(
    agents: Agents, handle: VipkeeperHandle, state: str, holders: list[str], variant: Variant
) -> Callable[[float], None]:
    def hold(duration: float) -> None:
        agents.hold(
            f"{handle.node} {state}, VIP on {holders}",
            lambda: agents.info(handle)["state"] == state and vip_on(agents, variant) == holders,
            duration,
            describe=lambda: f"{agents.info(handle)['state']}, VIP on {vip_on(agents, variant)}",
        )

    return hold


# --- item 7: priority 0 -----------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_priority_zero_makes_backup_take_over_after_skew_time(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 3768/5798 §6.4.2: a BACKUP receiving priority 0 sets Master_Down_Timer to Skew_Time."""
    variant = replace(variant, interval=SLOW)
    master = peer_advert(lab.node("n2").ns, variant, 200)
    peers("n2").stream("master", master, every=float(SLOW))
    handle = start_agent(agents, variant, 100)
    agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=master.source)

    resigned = peers("n2").stop("master", resign=True)
    skew = agents.skew(100, SLOW, variant.version)
    # The last regular advert went out at most one interval before the resignation: without
    # the resignation the agent could not take over before this.
    master_down = resigned - float(SLOW) + agents.mdi(100, SLOW, variant.version)
    agents.wait_state(handle, "MASTER", timeout=master_down - time.monotonic())
    took = time.monotonic() - resigned
    assert took >= skew - 0.05, f"MASTER {took:.3f} s after the resignation, before Skew_Time"
    agents.wait_holders(variant.vip, ["n1"], timeout=5)


# --- item 8: higher priority; preempt ---------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("preempt", [True, False], ids=["preempt", "nopreempt"])
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_master_steps_down_for_higher_priority(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant, preempt: bool
) -> None:
    """RFC 3768/5798 §6.4.3: a MASTER hearing a higher priority goes BACKUP, removes the VIP
    and stops advertising, whatever its preempt setting (preempt is a BACKUP's rule)."""
    peer = peers("n2")
    higher = peer_advert(lab.node("n2").ns, variant, 200)
    handle = start_agent(agents, variant, 100, preempt=preempt)
    make_master(agents, handle, variant, peer, higher)
    own = agents.info(handle)["primaryAddress"]

    peer.capture_start(own)
    # Long enough to capture at least one advert of the MASTER: the capture's control.
    time.sleep(1.2 * float(variant.interval))
    peer.stream("higher", higher, every=steady(variant))
    agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=higher.source)
    stepped_down = time.time()
    agents.wait_holders(variant.vip, [], timeout=5)
    hold_state(agents, handle, "BACKUP", [], variant)(max(QUIET, 1.5 * float(variant.interval)))
    adverts = peer.capture_stop()

    assert any(a["time"] < stepped_down for a in adverts), "no advert of the MASTER captured"
    # An advert already in flight when the status was read may land a moment later.
    late = [a for a in adverts if a["time"] > stepped_down + 0.1]
    assert late == [], f"the agent advertised after stepping down: {late}"


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", [V3_IPV4, V3_IPV6], ids=str)
def test_backup_with_preempt_takes_over_from_a_lower_master(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 3768/5798 §6.4.2: with Preempt_Mode a BACKUP discards a lower-priority advert, so its
    Master_Down_Timer runs out and it takes over; as MASTER it then ignores the lower one."""
    lower = peer_advert(lab.node("n2").ns, variant, 50)
    peers("n2").stream("lower", lower, every=float(variant.interval))
    handle = start_agent(agents, variant, 100)
    bound = agents.mdi(100, variant.interval, variant.version) + 5.0
    agents.wait_state(handle, "MASTER", timeout=bound)
    agents.wait_holders(variant.vip, ["n1"], timeout=5)
    received = agents.info(handle)["counters"]["advertsReceived"]
    hold_state(agents, handle, "MASTER", ["n1"], variant)(QUIET)
    assert agents.info(handle)["counters"]["advertsReceived"] > received


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", [V3_IPV4, V3_IPV6], ids=str)
def test_backup_without_preempt_stays_behind_a_lower_master(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 3768/5798 §6.4.2: without Preempt_Mode a BACKUP accepts any advert (priority > 0)
    and re-arms Master_Down: it stays BACKUP while the lower master keeps advertising."""
    lower = peer_advert(lab.node("n2").ns, variant, 50)
    peers("n2").stream("lower", lower, every=steady(variant))
    handle = start_agent(agents, variant, 100, preempt=False)
    agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=lower.source)
    mdi = agents.mdi(100, variant.interval, variant.version)
    hold_state(agents, handle, "BACKUP", [], variant)(max(QUIET, 3 * mdi))
    # The control: once the lower master falls silent, the agent does take over.
    peers("n2").stop("lower")
    agents.wait_state(handle, "MASTER", timeout=mdi + 5.0)


# --- item 9: equal priority -------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(3)
@pytest.mark.parametrize("side", ["higher", "lower"])
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_equal_priority_tie_break_by_primary_address(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant, side: str
) -> None:
    """RFC 3768/5798 §6.4.3: a MASTER hearing its own priority steps down only if the sender's
    primary address (IPv6: link-local) is greater than its own."""
    ranked = sorted(
        ("n1", "n2", "n3"), key=lambda n: int(ipaddress.ip_address(source(lab, n, variant)))
    )
    low, middle, high = ranked
    peer_node = high if side == "higher" else low
    peer = peers(peer_node)
    equal = peer_advert(lab.node(peer_node).ns, variant, 100)
    handle = start_agent(agents, variant, 100, node=middle)
    make_master(agents, handle, variant, peer, equal)

    received = agents.info(handle)["counters"]["advertsReceived"]
    peer.stream("equal", equal, every=float(variant.interval))
    if side == "higher":
        agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=equal.source)
        agents.wait_holders(variant.vip, [], timeout=5)
    else:
        hold = hold_state(agents, handle, "MASTER", [middle], variant)
        hold(max(QUIET, 2.2 * float(variant.interval)))
        # Heard and accepted, not dropped: the tie-break itself kept the agent MASTER.
        assert agents.info(handle)["counters"]["advertsReceived"] >= received + 2
        assert agents.info(handle)["counters"]["dropped"] == {}


# --- item 10: the address owner ---------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_address_owner_is_master_at_once(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 3768/5798 §6.4.1: at Startup the owner (priority 255) sends an advert and goes
    MASTER at once, with no Master_Down wait, even while a lower master advertises."""
    variant = replace(variant, interval=SLOW)
    peer = peers("n2")
    lower = peer_advert(lab.node("n2").ns, variant, 100)
    peer.stream("lower", lower, every=float(SLOW))
    handle = start_agent(agents, variant, 255, addressOwner=True)
    agents.wait_state(handle, "MASTER", timeout=5)
    transitions = [(t["from"], t["to"]) for t in agents.info(handle)["recentTransitions"]]
    assert transitions == [("INIT", "MASTER")], "the owner must not pass through BACKUP"
    agents.wait_holders(variant.vip, ["n1"], timeout=5)

    own = agents.info(handle)["primaryAddress"]
    peer.capture_start(own)
    hold_state(agents, handle, "MASTER", ["n1"], variant)(1.2 * float(SLOW))
    adverts = peer.capture_stop()
    assert adverts, "no advert of the owner captured"
    assert {a["priority"] for a in adverts} == {255}


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_owner_advert_makes_master_step_down(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 3768/5798 §6.4.3: 255 outranks any non-owner MASTER, which steps down at the first
    advert and removes the VIP."""
    peer = peers("n2")
    owner = peer_advert(lab.node("n2").ns, variant, 255)
    handle = start_agent(agents, variant, 100)
    make_master(agents, handle, variant, peer, owner)
    peer.stream("owner", owner, every=float(variant.interval))
    info = agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=owner.source)
    assert "255" in info["lastTransition"]["reason"], info["lastTransition"]
    agents.wait_holders(variant.vip, [], timeout=5)


# --- item 11: version 3 adopts the master's interval ------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", [V3_IPV4, V3_IPV6], ids=str)
def test_v3_backup_adopts_the_masters_interval(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 5798 §6.4.2: a BACKUP sets Master_Adver_Interval to the advert's Max Adver Int and
    recomputes Master_Down_Interval from it."""
    configured = SLOW
    fast = replace(variant, interval=Decimal("0.1"))
    master = peer_advert(lab.node("n2").ns, fast, 200)
    peers("n2").stream("master", master, every=float(fast.interval))
    handle = start_agent(agents, replace(variant, interval=configured), 100)
    agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=master.source)

    silent = peers("n2").stop("master")
    adopted = agents.mdi(100, fast.interval, 3)
    own = agents.mdi(100, configured, 3)
    # With its own interval the agent could not take over before this (the last advert went
    # out at most one fast interval before the master fell silent).
    too_late = silent - float(fast.interval) + own
    agents.wait_state(handle, "MASTER", timeout=too_late - time.monotonic())
    took = time.monotonic() - silent
    assert took < (adopted + own) / 2, f"{took:.3f} s: not the adopted interval's {adopted:.3f}"
    agents.wait_holders(variant.vip, ["n1"], timeout=5)


# --- item 12: resigning and answering a resignation ------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_master_resigns_with_priority_zero_on_shutdown(
    lab: Lab, agents: Agents, peers: Peers, variant: Variant
) -> None:
    """RFC 3768/5798 §6.4.3: a MASTER receiving Shutdown sends an advert with priority 0 (so
    the backups take over after Skew_Time) and leaves MASTER; the agent also drops the VIP."""
    peer = peers("n2")
    handle = start_agent(agents, variant, 100)
    make_master(agents, handle, variant, peer, peer_advert(lab.node("n2").ns, variant, 200))
    own = agents.info(handle)["primaryAddress"]
    peer.capture_start(own)
    time.sleep(2 * float(variant.interval))
    lab.kill(handle, signal.SIGTERM)
    agents.wait_for("the agent to exit", lambda: not handle.alive(), timeout=10)
    adverts = peer.capture_stop()
    priorities = [a["priority"] for a in sorted(adverts, key=lambda a: a["time"])]
    assert priorities[-1:] == [0], priorities
    assert set(priorities[:-1]) == {100}, priorities
    agents.wait_holders(variant.vip, [], timeout=5)


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_master_answers_a_resignation_with_an_advert_at_once(
    lab: Lab, agents: Agents, peers: Peers
) -> None:
    """RFC 3768/5798 §6.4.3: a MASTER hearing priority 0 sends an advert and resets its
    Adver_Timer, so that no backup takes over after Skew_Time. Version 2 (1 s adverts) keeps
    "at once" well apart from the next regular advert."""
    variant = replace(V2_IPV4, interval=SLOW)
    peer = peers("n2")
    resign = peer_advert(lab.node("n2").ns, variant, 0)
    handle = start_agent(agents, variant, 100)
    make_master(agents, handle, variant, peer, resign)
    own = agents.info(handle)["primaryAddress"]
    window = 0.5 * float(SLOW)
    peer.capture_start(own)
    # Right after a regular advert (the agent's own count shows it), the next one is a whole
    # interval away: any advert within half an interval of the resignation answers it.
    sent = agents.info(handle)["counters"]["advertsSent"]
    agents.wait_for(
        "a regular advert",
        lambda: agents.info(handle)["counters"]["advertsSent"] > sent,
        timeout=2 * float(SLOW) + 1.0,
    )
    before = time.time()
    peer.send(resign)
    time.sleep(window)
    adverts = peer.capture_stop()
    answers = [a for a in adverts if before <= a["time"] <= before + window]
    assert answers, f"no advert within {window} s of the resignation at {before}: {adverts}"
    assert {a["priority"] for a in answers} == {100}
    assert agents.info(handle)["state"] == "MASTER"
