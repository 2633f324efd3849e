"""Conformance, receive side: the checks of RFC 3768 §7.1 and RFC 5798 §7.1 on a live agent.

One vipkeeper-agent runs on n1 and is MASTER at priority 100; n2 is a peer whose adverts scapy
builds (``vrrp_inject``), never the agent's own codec. Each test sends a higher-priority advert
that is wrong in exactly one way and checks, from outside only, that the agent dropped it (the
counter of that reason), stayed MASTER and kept the VIP. Then it sends the same advert with that
one field put right and sees the agent step down: the drop was due to that field and nothing
else, and the test could have failed. docs/conformance.md is the checklist.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from vrrp_inject import (
    V2_IPV4,
    V3_IPV4,
    V3_IPV6,
    VARIANTS,
    VRID,
    Advert,
    Injector,
    Variant,
    make_master,
    peer_advert,
    start_agent,
)

from vipkeeper_lab.agents import VipkeeperHandle
from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = [pytest.mark.netns, pytest.mark.lab_nodes(2)]

#: Copies of each bad advert: one could be lost, several make the counter's growth unambiguous.
COPIES = 3
#: How long a dropped advert must leave the agent alone. An accepted one would make it step down
#: at once, and the exact drop count is checked as well.
QUIET = 0.5


@pytest.fixture
def peer(lab: Lab) -> Iterator[Injector]:
    injector = Injector(lab.node("n2").ns)
    yield injector
    injector.close()


def start_master(
    agents: Agents, variant: Variant, peer: Injector, *, log_level: str = "info", **extra: Any
) -> VipkeeperHandle:
    """The agent under test on n1, MASTER at priority 100 with the VIP."""
    handle = start_agent(agents, variant, 100, log_level=log_level, **extra)
    resign = higher_advert(agents.lab, variant)
    if "auth" in extra:
        resign = resign.with_(auth_type=1, password=extra["auth"]["password"])
    make_master(agents, handle, variant, peer, resign)
    return handle


def higher_advert(lab: Lab, variant: Variant, **fields: Any) -> Advert:
    """A well-formed advert from n2 that outranks the agent; ``fields`` spoil it."""
    priority = fields.pop("priority", 200)
    return peer_advert(lab.node("n2").ns, variant, priority, **fields)


def assert_ignored(
    agents: Agents, handle: VipkeeperHandle, variant: Variant, injector: Injector, *bad: Advert
) -> None:
    """``bad`` changes nothing: the agent stays MASTER with the VIP and accepts no advert."""
    received = agents.info(handle)["counters"]["advertsReceived"]
    for advert in bad:
        injector.send(advert, count=COPIES)
    agents.hold(
        "n1 MASTER and sole VIP holder",
        lambda: (
            agents.info(handle)["state"] == "MASTER" and agents.lab.who_has(variant.vip) == ["n1"]
        ),
        duration=QUIET,
        describe=lambda: (
            f"{agents.info(handle)['state']}, VIP on {agents.lab.who_has(variant.vip)}"
        ),
    )
    assert agents.info(handle)["counters"]["advertsReceived"] == received


def assert_steps_down(
    agents: Agents, handle: VipkeeperHandle, variant: Variant, injector: Injector, good: Advert
) -> None:
    """The control: the advert put right makes the agent defer to n2 at once."""
    injector.send(good)
    agents.wait_state(handle, "BACKUP", timeout=5, masterAddress=good.source)
    agents.wait_holders(variant.vip, [], timeout=5)


# --- item 1: TTL / hop limit ------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_ttl_other_than_255_is_dropped(
    lab: Lab, agents: Agents, peer: Injector, variant: Variant
) -> None:
    """RFC 3768/5798 §7.1: MUST verify that the IP TTL / hop limit is 255."""
    handle = start_master(agents, variant, peer)
    assert_ignored(agents, handle, variant, peer, higher_advert(lab, variant, ttl=254))
    assert agents.dropped(handle, "ttl") == COPIES
    assert_steps_down(agents, handle, variant, peer, higher_advert(lab, variant))


# --- item 2: checksum -------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_bad_checksum_is_dropped(
    lab: Lab, agents: Agents, peer: Injector, variant: Variant
) -> None:
    """RFC 3768/5798 §7.1: MUST verify the VRRP checksum (v3: with the IP pseudo-header)."""
    handle = start_master(agents, variant, peer)
    assert_ignored(agents, handle, variant, peer, higher_advert(lab, variant, bad_checksum=True))
    assert agents.dropped(handle, "checksum") == COPIES
    assert_steps_down(agents, handle, variant, peer, higher_advert(lab, variant))


# --- item 3: VRID -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_other_vrid_is_ignored(lab: Lab, agents: Agents, peer: Injector, variant: Variant) -> None:
    """RFC 3768/5798 §7.1: MUST verify that the VRID is configured on the receiving interface.
    Not ours is not an error: counted agent-wide as other_vrid, never as the instance's drop."""
    handle = start_master(agents, variant, peer)
    before = int(handle.status()["dropped"].get("other_vrid", 0))
    assert_ignored(agents, handle, variant, peer, higher_advert(lab, variant, vrid=VRID + 1))
    assert int(handle.status()["dropped"].get("other_vrid", 0)) == before + COPIES
    assert agents.info(handle)["counters"]["dropped"] == {}
    assert_steps_down(agents, handle, variant, peer, higher_advert(lab, variant))


# --- item 4: authentication (version 2 only) --------------------------------------------------

PASSWORD = "s3cret"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"auth_type": 1, "password": "wrong"}, id="other-password"),
        pytest.param({"auth_type": 0, "password": ""}, id="no-auth"),
    ],
)
def test_v2_auth_mismatch_is_dropped(
    lab: Lab, agents: Agents, peer: Injector, auth: dict[str, Any]
) -> None:
    """RFC 3768 §7.1: MUST verify that the Auth Type matches the locally configured one and
    perform that authentication (type 1: the password); a mismatch is discarded."""
    handle = start_master(agents, V2_IPV4, peer, auth={"type": "pass", "password": PASSWORD})
    assert_ignored(agents, handle, V2_IPV4, peer, higher_advert(lab, V2_IPV4, **auth))
    assert agents.dropped(handle, "auth") == COPIES
    good = higher_advert(lab, V2_IPV4, auth_type=1, password=PASSWORD)
    assert_steps_down(agents, handle, V2_IPV4, peer, good)


# --- item 5: advert interval ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_v2_interval_mismatch_is_dropped_and_logged(
    lab: Lab, agents: Agents, peer: Injector
) -> None:
    """RFC 3768 §7.1: MUST verify that the Adver Interval matches the local one; on mismatch
    MUST discard, SHOULD log. The agent logs a warning at the default level, once a minute per
    instance and reason however many arrive, with both sides' values."""
    handle = start_master(agents, V2_IPV4, peer)
    assert_ignored(agents, handle, V2_IPV4, peer, higher_advert(lab, V2_IPV4, interval_cs=200))
    assert agents.dropped(handle, "interval_mismatch") == COPIES
    logged = _drop_lines(agents.log(handle), "interval_mismatch")
    assert len(logged) == 1, logged
    assert "level=warning" in logged[0] and "interval_cs 200/100" in logged[0]
    assert_steps_down(agents, handle, V2_IPV4, peer, higher_advert(lab, V2_IPV4))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", [V3_IPV4, V3_IPV6], ids=str)
def test_v3_interval_difference_is_accepted(
    lab: Lab, agents: Agents, peer: Injector, variant: Variant
) -> None:
    """RFC 5798 §7.1 has no interval check: a backup adopts the master's interval (§6.4.2, item
    11). A master outranked by a peer advertising another interval steps down all the same."""
    handle = start_master(agents, variant, peer)
    other = higher_advert(lab, variant, interval_cs=variant.interval_cs * 3)
    assert_steps_down(agents, handle, variant, peer, other)
    assert agents.info(handle)["counters"]["dropped"] == {}


# --- item 6: address list ---------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_address_list_mismatch_is_dropped_and_counted(
    lab: Lab, agents: Agents, peer: Injector, variant: Variant
) -> None:
    """RFC 3768/5798 §7.1: MAY verify the address list; on mismatch SHOULD log; a packet not
    from the address owner (priority != 255) MUST then be dropped, the owner's processed.

    The agent drops every mismatch, the owner's too (as keepalived does: a VIP list differing
    under one VRID is a misconfiguration that would split the brain): a documented deviation,
    see docs/conformance.md. It counts ``address_mismatch`` and logs a warning (rate limited)."""
    handle = start_master(agents, variant, peer)
    cases = [
        (200, (variant.other_ip,)),
        (200, (variant.vip_ip, variant.other_ip)),
        (255, (variant.other_ip,)),
    ]
    bad = [higher_advert(lab, variant, priority=p, addresses=a) for p, a in cases]
    assert_ignored(agents, handle, variant, peer, *bad)
    assert agents.dropped(handle, "address_mismatch") == len(cases) * COPIES
    logged = _drop_lines(agents.log(handle), "address_mismatch")
    assert len(logged) == 1, logged
    assert "level=warning" in logged[0] and str(variant.other_ip) in logged[0]
    assert_steps_down(agents, handle, variant, peer, higher_advert(lab, variant))


def _drop_lines(log: str, reason: str) -> list[str]:
    return [line for line in log.splitlines() if f"event=advert_dropped reason={reason}" in line]
