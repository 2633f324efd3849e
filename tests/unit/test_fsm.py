"""Table-driven tests of the VRRP state machine with a fake clock (times are plain floats)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from vipkeeper_agent.vrrp.fsm import (
    AddAddresses,
    AdvertReceived,
    Announce,
    Fault,
    FaultCleared,
    Notify,
    Reconfigure,
    RemoveAddresses,
    Router,
    RouterConfig,
    SendAdvertisement,
    Shutdown,
    Startup,
    State,
    StopAnnounce,
    TimerExpired,
    new_router,
    next_deadline,
    step,
)
from vipkeeper_agent.vrrp.timers import master_down_interval, skew_time

VIP = (ipaddress.ip_interface("192.0.2.100/24"),)
ME = ipaddress.ip_address("192.0.2.11")
LOWER_PEER = ipaddress.ip_address("192.0.2.5")
HIGHER_PEER = ipaddress.ip_address("192.0.2.20")


def config(**kw: object) -> RouterConfig:
    base = RouterConfig(
        vrid=51, version=3, priority=100, interval_cs=100, addresses=VIP, primary_address=ME
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def started(cfg: RouterConfig | None = None, now: float = 0.0) -> Router:
    router, _ = step(new_router(cfg or config(), now), Startup(), now)
    return router


def master(cfg: RouterConfig | None = None) -> Router:
    router = started(cfg)
    deadline = next_deadline(router)
    assert deadline is not None
    router, _ = step(router, TimerExpired(), deadline)
    assert router.state == State.MASTER
    return router


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


# --- timers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "interval_cs", "version", "skew", "down"),
    [
        (100, 100, 2, 156 / 256, 3 + 156 / 256),  # RFC 3768: skew ignores the interval
        (254, 100, 2, 2 / 256, 3 + 2 / 256),
        (100, 100, 3, 1.56 / 2.56, 3 + 1.56 / 2.56),  # RFC 5798: skew scales with the interval
        (200, 10, 3, 56 * 10 / 256 / 100, 0.3 + 56 * 10 / 256 / 100),
        (1, 4095, 3, 255 * 4095 / 256 / 100, 3 * 40.95 + 255 * 4095 / 256 / 100),
    ],
)
def test_timer_formulas(
    priority: int, interval_cs: int, version: int, skew: float, down: float
) -> None:
    assert skew_time(priority, interval_cs, version) == pytest.approx(skew)
    assert master_down_interval(priority, interval_cs, version) == pytest.approx(down)


# --- startup ----------------------------------------------------------------------------------


def test_startup_becomes_backup_and_arms_master_down() -> None:
    router, actions = step(new_router(config(), 10.0), Startup(), 10.0)
    assert router.state == State.BACKUP
    assert next_deadline(router) == pytest.approx(10.0 + master_down_interval(100, 100, 3))
    assert kinds(actions) == ["Notify"]


def test_owner_becomes_master_at_once() -> None:
    router, actions = step(new_router(config(priority=255), 0.0), Startup(), 0.0)
    assert router.state == State.MASTER
    assert kinds(actions) == ["SendAdvertisement", "AddAddresses", "Announce", "Notify"]
    assert actions[0] == SendAdvertisement(255, 100)


def test_startup_with_link_down_is_fault() -> None:
    router, actions = step(new_router(config(), 0.0), Startup(link_up=False), 0.0)
    assert router.state == State.FAULT
    assert next_deadline(router) is None
    assert kinds(actions) == ["Notify"]


def test_master_down_expiry_takes_over_in_rfc_order() -> None:
    router = started()
    deadline = next_deadline(router)
    assert deadline is not None
    early, actions = step(router, TimerExpired(), deadline - 0.001)
    assert early.state == State.BACKUP and actions == []
    router, actions = step(router, TimerExpired(), deadline)
    assert router.state == State.MASTER
    assert actions[:3] == [SendAdvertisement(100, 100), AddAddresses(VIP), Announce(VIP)]
    assert isinstance(actions[3], Notify)
    assert actions[3].transition.reason == "no master seen"
    assert next_deadline(router) == pytest.approx(deadline + 1.0)


def test_master_sends_advert_every_interval() -> None:
    router = master()
    t = next_deadline(router)
    assert t is not None
    for _ in range(3):
        router, actions = step(router, TimerExpired(), t)
        assert actions == [SendAdvertisement(100, 100)]
        nxt = next_deadline(router)
        assert nxt == pytest.approx(t + 1.0)
        t = nxt


# --- backup receiving -------------------------------------------------------------------------

BACKUP_CASES = [
    # (name, our cfg overrides, advert priority, advert interval, expect deadline offset from t=5)
    ("higher priority resets master down", {}, 150, 100, master_down_interval(100, 100, 3)),
    ("equal priority is accepted", {}, 100, 100, master_down_interval(100, 100, 3)),
    ("v3 adopts the master's interval", {}, 150, 10, master_down_interval(100, 10, 3)),
    ("v2 keeps its own interval", {"version": 2}, 150, 100, master_down_interval(100, 100, 2)),
    ("priority 0: take over after skew only", {}, 0, 100, skew_time(100, 100, 3)),
    (
        "nopreempt accepts a lower master",
        {"preempt": False},
        50,
        100,
        master_down_interval(100, 100, 3),
    ),
    (
        "preempt delay holds off preemption",
        {"preempt_delay": 30.0},
        50,
        100,
        master_down_interval(100, 100, 3),
    ),
]


@pytest.mark.parametrize(
    ("name", "overrides", "priority", "interval_cs", "offset"),
    BACKUP_CASES,
    ids=[c[0] for c in BACKUP_CASES],
)
def test_backup_receives(
    name: str, overrides: dict[str, object], priority: int, interval_cs: int, offset: float
) -> None:
    router = started(config(**overrides))
    router, actions = step(router, AdvertReceived(HIGHER_PEER, priority, interval_cs), 5.0)
    assert router.state == State.BACKUP
    assert actions == []
    assert next_deadline(router) == pytest.approx(5.0 + offset)


def test_backup_ignores_lower_priority_master_and_preempts() -> None:
    router = started()
    before = next_deadline(router)
    router, actions = step(router, AdvertReceived(LOWER_PEER, 50, 100), 1.0)
    assert actions == [] and next_deadline(router) == before
    assert before is not None
    router, actions = step(router, TimerExpired(), before)
    assert router.state == State.MASTER


def test_preempt_delay_expires_then_preempts() -> None:
    router = started(config(preempt_delay=10.0))
    t = 0.0
    while t < 10.0:
        t += 1.0
        router, _ = step(router, AdvertReceived(LOWER_PEER, 50, 100), t)
    deadline = next_deadline(router)
    assert deadline is not None
    # After the delay, lower-priority adverts no longer hold us back.
    router, _ = step(router, AdvertReceived(LOWER_PEER, 50, 100), 10.5)
    assert next_deadline(router) == deadline
    router, _ = step(router, TimerExpired(), deadline)
    assert router.state == State.MASTER


def test_resigning_master_is_replaced_after_skew() -> None:
    router = started()
    router, _ = step(router, AdvertReceived(HIGHER_PEER, 150, 100), 1.0)
    router, _ = step(router, AdvertReceived(HIGHER_PEER, 0, 100), 2.0)
    deadline = next_deadline(router)
    assert deadline == pytest.approx(2.0 + skew_time(100, 100, 3))
    router, actions = step(router, TimerExpired(), deadline)
    assert router.state == State.MASTER
    assert kinds(actions)[:3] == ["SendAdvertisement", "AddAddresses", "Announce"]
    assert router.last_transition is not None
    assert router.last_transition.reason == "master down"


# --- master receiving -------------------------------------------------------------------------

MASTER_CASES = [
    ("higher priority: step down", HIGHER_PEER, 150, State.BACKUP),
    ("lower priority: keep mastership", HIGHER_PEER, 50, State.MASTER),
    ("equal priority, higher address wins", HIGHER_PEER, 100, State.BACKUP),
    ("equal priority, lower address loses", LOWER_PEER, 100, State.MASTER),
]


@pytest.mark.parametrize(
    ("name", "source", "priority", "expected"), MASTER_CASES, ids=[c[0] for c in MASTER_CASES]
)
def test_master_receives(
    name: str, source: ipaddress.IPv4Address, priority: int, expected: State
) -> None:
    router, actions = step(master(), AdvertReceived(source, priority, 100), 10.0)
    assert router.state == expected
    if expected == State.BACKUP:
        assert kinds(actions) == ["StopAnnounce", "RemoveAddresses", "Notify"]
        assert router.master_address == source
        assert next_deadline(router) == pytest.approx(10.0 + master_down_interval(100, 100, 3))
    else:
        assert actions == []


def test_master_reasserts_when_another_router_resigns() -> None:
    router, actions = step(master(), AdvertReceived(HIGHER_PEER, 0, 100), 10.0)
    assert router.state == State.MASTER
    assert actions == [SendAdvertisement(100, 100)]
    assert next_deadline(router) == pytest.approx(11.0)


def test_v3_master_stepping_down_adopts_the_new_masters_interval() -> None:
    router, _ = step(master(), AdvertReceived(HIGHER_PEER, 200, 10), 10.0)
    assert router.master_adver_interval_cs == 10
    assert next_deadline(router) == pytest.approx(10.0 + master_down_interval(100, 10, 3))


def test_preempt_false_master_still_yields_to_higher_priority() -> None:
    # Preempt_Mode governs backups only; a master always yields (RFC 5798 §6.4.3).
    router, _ = step(master(config(preempt=False)), AdvertReceived(HIGHER_PEER, 150, 100), 10.0)
    assert router.state == State.BACKUP


# --- shutdown, link, reconfigure --------------------------------------------------------------


def test_master_shutdown_resigns_then_drops_addresses() -> None:
    router, actions = step(master(), Shutdown(), 20.0)
    assert router.state == State.INIT
    assert actions[:3] == [SendAdvertisement(0, 100), StopAnnounce(), RemoveAddresses(VIP)]
    assert next_deadline(router) is None


def test_backup_shutdown_sends_nothing() -> None:
    router, actions = step(started(), Shutdown(), 1.0)
    assert router.state == State.INIT and kinds(actions) == ["Notify"]


def test_link_down_and_up() -> None:
    router, actions = step(master(), Fault(), 5.0)
    assert router.state == State.FAULT
    assert kinds(actions) == ["StopAnnounce", "RemoveAddresses", "Notify"]
    router, actions = step(router, AdvertReceived(HIGHER_PEER, 150, 100), 6.0)
    assert router.state == State.FAULT and actions == []
    router, actions = step(router, FaultCleared(), 7.0)
    assert router.state == State.BACKUP
    assert next_deadline(router) == pytest.approx(7.0 + master_down_interval(100, 100, 3))


def test_reconfigure_master_addresses_and_priority() -> None:
    new_vip = ipaddress.ip_interface("192.0.2.101/24")
    cfg = config(priority=120, addresses=(new_vip,))
    router, actions = step(master(), Reconfigure(cfg), 5.0)
    assert router.state == State.MASTER and router.priority == 120
    assert actions == [
        RemoveAddresses(VIP),
        AddAddresses((new_vip,)),
        Announce((new_vip,)),
        SendAdvertisement(120, 100),
    ]


def test_reconfigure_backup_to_higher_priority_preempts_lower_master() -> None:
    router = started()
    router, _ = step(router, AdvertReceived(LOWER_PEER, 90, 100), 1.0)
    router, actions = step(router, Reconfigure(config(priority=150)), 2.0)
    assert actions == [] and router.priority == 150
    deadline = next_deadline(router)
    router, _ = step(router, AdvertReceived(LOWER_PEER, 90, 100), 2.5)
    assert next_deadline(router) == deadline  # the lower master's adverts no longer count
    assert deadline is not None
    router, _ = step(router, TimerExpired(), deadline)
    assert router.state == State.MASTER


def test_reconfigure_cannot_change_identity() -> None:
    with pytest.raises(ValueError, match="VRID"):
        step(started(), Reconfigure(config(vrid=52)), 1.0)


def test_three_routers_elect_the_highest_priority() -> None:
    """A tiny in-memory segment: every advert reaches every other router at the same instant."""
    addrs = [ipaddress.ip_address(f"192.0.2.{i}") for i in (11, 12, 13)]
    prios = [100, 150, 50]
    routers = [
        started(config(priority=p, primary_address=a)) for p, a in zip(prios, addrs, strict=True)
    ]
    now = 0.0
    for _ in range(50):
        due = [(next_deadline(r), i) for i, r in enumerate(routers)]
        t, i = min((d, i) for d, i in due if d is not None)
        now = t
        routers[i], actions = step(routers[i], TimerExpired(), now)
        for action in actions:
            if isinstance(action, SendAdvertisement):
                for j in range(3):
                    if j != i:
                        event = AdvertReceived(addrs[i], action.priority, action.interval_cs)
                        routers[j], _ = step(routers[j], event, now)
    assert [r.state for r in routers] == [State.BACKUP, State.MASTER, State.BACKUP]
    assert routers[0].master_address == addrs[1]
