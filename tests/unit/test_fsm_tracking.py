"""The state machine's answers to checks, maintenance and sync groups (fake clock, table-driven)."""

from __future__ import annotations

import pytest
from test_fsm import HIGHER_PEER, LOWER_PEER, config, kinds, master, started

from vipkeeper_agent.vrrp.fsm import (
    AdvertReceived,
    Demote,
    Fault,
    FaultCleared,
    Maintenance,
    PriorityChanged,
    Promote,
    Reconfigure,
    Router,
    SendAdvertisement,
    Startup,
    State,
    TimerExpired,
    new_router,
    next_deadline,
    replace_priority,
    step,
)
from vipkeeper_agent.vrrp.timers import master_down_interval


def test_priority_drop_on_master_advertises_at_once() -> None:
    router = master()
    router, actions = step(router, PriorityChanged(80), 1.5)
    assert router.state == State.MASTER
    assert router.priority == 80
    assert actions == [SendAdvertisement(80, 100)]
    assert next_deadline(router) == pytest.approx(2.5)


def test_priority_change_rearms_master_down_in_backup() -> None:
    router = started()
    router, _ = step(router, AdvertReceived(HIGHER_PEER, 150, 100), 1.0)
    router, actions = step(router, PriorityChanged(50), 2.0)
    assert actions == []
    assert next_deadline(router) == pytest.approx(2.0 + master_down_interval(50, 100, 3))


def test_owner_priority_never_moves() -> None:
    router = master(config(priority=255))
    after, actions = step(router, PriorityChanged(100), 1.0)
    assert after.priority == 255
    assert actions == []


@pytest.mark.parametrize(
    ("preempt", "expected"),
    [(True, State.MASTER), (False, State.BACKUP)],
)
def test_lowered_master_is_preempted_only_by_preempting_backup(
    preempt: bool, expected: State
) -> None:
    """The seeds' nginx pair: the master's check fails and its advertised priority falls below ours."""
    backup = started(config(priority=100, preempt=preempt))
    backup, _ = step(backup, AdvertReceived(HIGHER_PEER, 150, 100), 1.0)
    backup, _ = step(backup, AdvertReceived(HIGHER_PEER, 130, 100), 2.0)  # check fails: 150 - 20
    backup, _ = step(backup, AdvertReceived(HIGHER_PEER, 130, 100), 3.0)
    assert backup.state == State.BACKUP
    # The master is now below us: a preempting backup ignores its adverts and Master_Down expires.
    backup, _ = step(backup, AdvertReceived(HIGHER_PEER, 80, 100), 4.0)
    deadline = next_deadline(backup)
    assert deadline is not None
    if preempt:
        assert deadline == pytest.approx(3.0 + master_down_interval(100, 100, 3))
        backup, _ = step(backup, TimerExpired(), deadline)
    else:
        # nopreempt keeps following the lowered master: each advert re-arms Master_Down.
        assert deadline == pytest.approx(4.0 + master_down_interval(100, 100, 3))
    assert backup.state == expected


def test_maintenance_resigns_and_stays_backup() -> None:
    router = master()
    router, actions = step(router, Maintenance(on=True), 1.0)
    assert kinds(actions) == [
        "SendAdvertisement",
        "StopAnnounce",
        "RemoveAddresses",
        "Notify",
    ]
    assert actions[0] == SendAdvertisement(0, 100)
    assert router.state == State.BACKUP
    assert next_deadline(router) is None
    # No master anywhere: still no takeover, however long.
    router, _ = step(router, TimerExpired(), 100.0)
    router, _ = step(router, AdvertReceived(LOWER_PEER, 0, 100), 101.0)
    assert router.state == State.BACKUP
    assert next_deadline(router) is None
    # Maintenance over: normal election.
    router, _ = step(router, Maintenance(on=False), 200.0)
    deadline = next_deadline(router)
    assert deadline == pytest.approx(200.0 + master_down_interval(100, 100, 3))
    router, _ = step(router, TimerExpired(), deadline)
    assert router.state == State.MASTER


def test_owner_in_maintenance_starts_as_backup() -> None:
    router = replace_priority(new_router(config(priority=255), 0.0), 255, maintenance=True)
    router, _ = step(router, Startup(), 0.0)
    assert router.state == State.BACKUP
    assert next_deadline(router) is None


def test_fault_and_recovery_with_reason() -> None:
    router = master()
    router, actions = step(router, Fault("check gw down", resign=True), 1.0)
    assert router.state == State.FAULT
    # The link is up: resign on the wire so the backups need only Skew_Time.
    assert kinds(actions) == ["SendAdvertisement", "StopAnnounce", "RemoveAddresses", "Notify"]
    assert actions[0] == SendAdvertisement(0, 100)
    _, on_link_loss = step(master(), Fault("interface eth0 down"), 1.0)
    assert kinds(on_link_loss) == ["StopAnnounce", "RemoveAddresses", "Notify"]
    assert router.last_transition is not None
    assert router.last_transition.reason == "check gw down"
    # Priority changes while in FAULT are remembered for the election that follows.
    router, _ = step(router, PriorityChanged(90), 2.0)
    router, _ = step(router, FaultCleared("recovered"), 3.0)
    assert router.state == State.BACKUP
    assert router.priority == 90
    assert next_deadline(router) == pytest.approx(3.0 + master_down_interval(90, 100, 3))


def test_group_not_ready_waits_without_a_timer_then_follows() -> None:
    router = started()
    deadline = next_deadline(router)
    assert deadline is not None
    router, actions = step(router, TimerExpired(group_ready=False), deadline)
    assert router.state == State.BACKUP
    assert router.awaiting_group
    assert actions == []
    assert next_deadline(router) is None
    # An advert from a live master ends the wait and re-arms Master_Down.
    waiting = router
    router, _ = step(router, AdvertReceived(HIGHER_PEER, 150, 100), deadline + 0.1)
    assert not router.awaiting_group
    assert next_deadline(router) is not None
    # Or the group becomes ready and the sibling that took over promotes us.
    router, actions = step(waiting, Promote("sync group: b became MASTER"), deadline + 0.1)
    assert router.state == State.MASTER
    assert kinds(actions)[:3] == ["SendAdvertisement", "AddAddresses", "Announce"]


@pytest.mark.parametrize(
    ("router_factory", "event", "expected"),
    [
        (master, Demote("sync group: b became BACKUP"), State.BACKUP),
        (started, Demote("sync group: b became BACKUP"), State.BACKUP),
        (master, Promote("x"), State.MASTER),
    ],
)
def test_group_events_only_act_where_they_mean_something(
    router_factory: object, event: object, expected: State
) -> None:
    router: Router = router_factory()  # type: ignore[operator]
    after, _ = step(router, event, 5.0)  # type: ignore[arg-type]
    assert after.state == expected


def test_reconfigure_keeps_the_checks_priority() -> None:
    router = master()
    router, _ = step(router, PriorityChanged(80), 1.0)
    router, actions = step(router, Reconfigure(config(interval_cs=50), 80), 2.0)
    assert router.priority == 80
    assert SendAdvertisement(80, 50) in actions


def test_master_adverts_keep_their_rate_despite_late_wakeups() -> None:
    router = master()  # became MASTER at its Master_Down deadline; next advert one second later
    deadline = next_deadline(router)
    assert deadline is not None
    for _ in range(5):
        router, actions = step(router, TimerExpired(), deadline + 0.003)  # woken 3 ms late
        assert kinds(actions) == ["SendAdvertisement"]
        assert next_deadline(router) == pytest.approx(deadline + 1.0)
        deadline += 1.0
    # After a stall longer than an interval, the schedule restarts from now (no burst).
    router, _ = step(router, TimerExpired(), deadline + 2.5)
    assert next_deadline(router) == pytest.approx(deadline + 3.5)
