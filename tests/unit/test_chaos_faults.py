"""The chaos run's fault schedule: seeded, repeatable, every kind covered, parameters in range."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vipkeeper_agent.vrrp.timers import master_down_interval
from vipkeeper_lab.chaos import faults
from vipkeeper_lab.chaos.faults import (
    CLEARS,
    KINDS,
    Fault,
    LinkFlap,
    Loss,
    PowerCut,
    Reload,
    RestartBackup,
    StopLong,
    StopShort,
    Timing,
)

FAST = Timing(interval_cs=10, version=3, priorities=(150, 100, 50))
SLOW = Timing(interval_cs=100, version=2, priorities=(200, 120, 10))
#: Master_Down_Interval of the runner-up (priority 100), from the agent's formulas.
FAST_DOWN = master_down_interval(100, 10, 3)


def test_same_seed_same_schedule_and_another_seed_another() -> None:
    assert faults.schedule(1, 50, FAST) == faults.schedule(1, 50, FAST)
    assert faults.schedule(1, 50, FAST) != faults.schedule(2, 50, FAST)


def test_a_longer_run_starts_with_the_shorter_one() -> None:
    assert faults.schedule(7, 100, FAST)[:30] == faults.schedule(7, 30, FAST)


@pytest.mark.parametrize("seed", [0, 1, 2, 99])
def test_every_block_of_len_kinds_cycles_holds_every_kind_once(seed: int) -> None:
    plan = faults.schedule(seed, 5 * len(KINDS), FAST)
    for block in range(5):
        kinds = [f.kind for f in plan[block * len(KINDS) : (block + 1) * len(KINDS)]]
        assert sorted(kinds) == sorted(KINDS)


def test_the_order_of_kinds_is_not_fixed() -> None:
    orders = {tuple(f.kind for f in faults.schedule(s, len(KINDS), FAST)) for s in range(10)}
    assert len(orders) > 1


def test_a_subset_of_kinds() -> None:
    plan = faults.schedule(3, 20, FAST, kinds=("loss", "reload"))
    assert {f.kind for f in plan} == {"loss", "reload"}


@pytest.mark.parametrize(
    ("timing", "check"),
    [
        (FAST, lambda f: not isinstance(f, StopLong) or f.duration >= 1.5 * FAST_DOWN - 0.001),
        (FAST, lambda f: not isinstance(f, StopShort) or 0 < f.duration < FAST_DOWN - 0.1),
        (FAST, lambda f: not isinstance(f, PowerCut) or f.down_for > FAST_DOWN),
        (FAST, lambda f: not isinstance(f, LinkFlap) or 0 < f.down_for <= 4 * FAST_DOWN),
        (FAST, lambda f: not isinstance(f, Loss) or (10 <= f.percent <= 40 and f.duration >= 1)),
        (FAST, lambda f: not isinstance(f, Reload) or f.priority not in (150, 100, 50)),
        (FAST, lambda f: not isinstance(f, Reload) or (1 <= f.priority <= 254 and f.rank < 3)),
        (FAST, lambda f: not isinstance(f, RestartBackup) or f.rank in (1, 2)),
        # Durations follow the timers: a 1 s v2 setup stops the master for seconds, not ms.
        (SLOW, lambda f: not isinstance(f, StopLong) or f.duration > 3 * 1.5),
        (SLOW, lambda f: not isinstance(f, StopShort) or f.duration < 3 + 136 / 256 - 1),
    ],
)
def test_parameters_stay_in_range(timing: Timing, check: Callable[[Fault], bool]) -> None:
    for seed in range(20):
        for fault in faults.schedule(seed, 3 * len(KINDS), timing):
            assert check(fault), fault


def test_parameters_are_whole_milliseconds() -> None:
    for fault in faults.schedule(5, 70, FAST):
        for value in faults.to_json(fault).values():
            if isinstance(value, float):
                assert round(value, 3) == value


@pytest.mark.parametrize(
    ("fault", "after", "master", "takeover"),
    [
        (PowerCut(1.0), (150, 100, 50), 0, 100),
        (StopLong(1.0), (150, 100, 50), 0, 100),
        (Loss(30, 2.0), (150, 100, 50), 0, 100),
        (RestartBackup(1), (150, 100, 50), 0, 150),
        (Reload(0, 20), (20, 100, 50), 1, 100),
        (Reload(2, 200), (150, 100, 200), 2, 150),
        (Reload(1, 140), (150, 140, 50), 0, 150),
    ],
)
def test_priorities_expected_master_and_takeover_priority(
    fault: Fault, after: tuple[int, ...], master: int, takeover: int
) -> None:
    base = (150, 100, 50)
    assert faults.priorities_after(fault, base) == after
    assert faults.expected_master(after) == master
    assert faults.takeover_priority(fault, base) == takeover


@pytest.mark.parametrize(
    ("fault", "hold"),
    [
        (PowerCut(1.5), 1.5),
        (StopLong(0.9), 0.9),
        (StopShort(0.1), 0.1),
        (LinkFlap(0.3), 0.3),
        (Loss(30, 2.0), 2.0),
        (Reload(1, 9), 0.0),
        (RestartBackup(2), 0.0),
    ],
)
def test_hold_seconds_and_every_kind_says_when_it_clears(fault: Fault, hold: float) -> None:
    assert faults.hold_seconds(fault) == hold
    assert CLEARS[fault.kind]
    assert faults.describe(fault).startswith(fault.kind + "(")
    assert faults.to_json(fault)["kind"] == fault.kind


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: faults.schedule(1, -1, FAST), "cycles"),
        (lambda: faults.schedule(1, 5, FAST, kinds=("meteor",)), "unknown"),
        (lambda: faults.schedule(1, 5, FAST, kinds=()), "unknown"),
        (lambda: Timing(10, 3, (100, 150)), "descending"),
        (lambda: Timing(10, 3, (100, 100)), "descending"),
        (lambda: Timing(10, 3, (100,)), "descending"),
    ],
)
def test_bad_arguments_are_refused(call: Callable[[], object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        call()
