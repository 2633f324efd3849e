"""Table-driven tests of the check hysteresis (rise/fall, init_fail, first result), fake clock,
and of the delays it implies (retry_interval, warmup)."""

from __future__ import annotations

import pytest

from vipkeeper_agent.checks.hysteresis import (
    CheckState,
    Health,
    changed,
    initial,
    next_delay,
    observe,
)
from vipkeeper_agent.checks.scheduler import MAX_START_SPREAD, first_delay

OK, FAILED = Health.OK, Health.FAILED


def run(
    results: str, *, rise: int, fall: int, init_fail: bool = False
) -> tuple[list[Health], list[CheckState]]:
    """Feed results ('+' success, '-' failure) one second apart; the health after each."""
    state = initial(init_fail, 0.0)
    healths, states = [], []
    for second, symbol in enumerate(results, start=1):
        state = observe(state, symbol == "+", symbol, 0.001, rise, fall, float(second))
        healths.append(state.health)
        states.append(state)
    return healths, states


def spell(healths: list[Health]) -> str:
    return "".join("O" if h is OK else "F" for h in healths)


@pytest.mark.parametrize(
    ("results", "rise", "fall", "init_fail", "expected"),
    [
        # The first result decides at once, whatever rise and fall say.
        ("-", 1, 3, False, "F"),
        ("+", 3, 1, True, "O"),
        ("+", 3, 3, False, "O"),
        ("-", 3, 3, True, "F"),
        # rise = fall = 1: every result is the health.
        ("+-+-", 1, 1, False, "OFOF"),
        # fall = 3: the third consecutive failure turns it FAILED.
        ("+---", 1, 3, False, "OOOF"),
        ("+-----", 1, 3, False, "OOOFFF"),
        # Flapping that never reaches fall changes nothing.
        ("+--+--+--+", 1, 3, False, "OOOOOOOOOO"),
        ("+-+-+-+-", 1, 2, False, "OOOOOOOO"),
        # rise = 2: two consecutive successes to come back.
        ("+-+-++", 2, 1, False, "OFFFFO"),
        ("-+-+-+", 2, 1, False, "FFFFFF"),
        ("-++", 2, 1, False, "FFO"),
        # rise and fall together.
        ("+---+++", 3, 3, False, "OOOFFFO"),
        ("+---++-+++", 3, 3, False, "OOOFFFFFFO"),
        # init_fail only sets the guess before the first result.
        ("-+", 2, 1, True, "FF"),
        ("-++", 2, 1, True, "FFO"),
    ],
)
def test_rise_fall_sequences(
    results: str, rise: int, fall: int, init_fail: bool, expected: str
) -> None:
    healths, _ = run(results, rise=rise, fall=fall, init_fail=init_fail)
    assert spell(healths) == expected


@pytest.mark.parametrize("init_fail", [False, True])
def test_initial_is_a_pending_guess(init_fail: bool) -> None:
    state = initial(init_fail, 42.0)
    assert state.health is (FAILED if init_fail else OK)
    assert state.pending
    assert state.runs == state.consecutive_ok == state.consecutive_failed == 0
    assert state.since == 42.0


def test_counters_details_and_latency() -> None:
    _, states = run("++-", rise=1, fall=5)
    assert [(s.consecutive_ok, s.consecutive_failed) for s in states] == [(1, 0), (2, 0), (0, 1)]
    assert [s.runs for s in states] == [1, 2, 3]
    assert [s.pending for s in states] == [False, False, False]
    assert states[-1].last_detail == "-"
    assert states[-1].last_latency == 0.001


@pytest.mark.parametrize(
    ("results", "rise", "fall", "init_fail", "expected_since"),
    [
        # The first result confirms the guess: health never changed, since stays at creation.
        ("+++", 1, 1, False, [0.0, 0.0, 0.0]),
        # The first result contradicts the guess: since is the time of that result.
        ("+++", 1, 1, True, [1.0, 1.0, 1.0]),
        # Counting towards fall does not move since; the change does.
        ("+--+", 1, 2, False, [0.0, 0.0, 3.0, 4.0]),
        ("+-+-", 1, 2, False, [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_since_moves_only_on_change(
    results: str, rise: int, fall: int, init_fail: bool, expected_since: list[float]
) -> None:
    _, states = run(results, rise=rise, fall=fall, init_fail=init_fail)
    assert [s.since for s in states] == expected_since


def test_changed_reports_first_result_and_health_changes_only() -> None:
    state = initial(False, 0.0)
    first = observe(state, True, "ok", 0.0, 1, 2, 1.0)
    assert changed(state, first)  # pending -> known, same health
    second = observe(first, False, "down", 0.0, 1, 2, 2.0)
    assert not changed(first, second)  # one failure of fall=2
    third = observe(second, False, "down", 0.0, 1, 2, 3.0)
    assert changed(second, third)
    assert third.health is FAILED


def test_states_are_immutable_values() -> None:
    state = initial(False, 0.0)
    after = observe(state, False, "x", 0.0, 1, 1, 1.0)
    assert state.pending and state.runs == 0
    assert after is not state
    with pytest.raises(AttributeError):
        after.health = OK  # type: ignore[misc]


# --- delays: retry_interval (keepalived delay_before_retry) and warmup --------------------------

INTERVAL, RETRY = 2.0, 0.1


@pytest.mark.parametrize(
    ("results", "rise", "fall", "expected"),
    [
        # OK and passing: the normal interval.
        ("+", 1, 3, "I"),
        ("++", 1, 3, "II"),
        # Failures accumulating towards fall=3 retry fast; the fall-th turns FAILED, and a
        # FAILED check is back on the normal interval (keepalived: delay_loop once down).
        ("+---", 1, 3, "IRRI"),
        ("+-----", 1, 3, "IRRIII"),
        # A success in between resets the count and the delay.
        ("+-+--", 1, 3, "IRIRR"),
        # fall=1: the first failure is already FAILED, nothing to retry.
        ("+-", 1, 1, "II"),
        # The first result decides at once: a first failure is FAILED, no retries.
        ("-", 1, 3, "I"),
        ("--", 1, 3, "II"),
        # Successes counting towards rise while FAILED: the normal interval.
        ("+--++", 3, 2, "IRIII"),
        ("+--+++-", 3, 2, "IRIIIIR"),
    ],
)
def test_next_delay_retries_only_while_failures_accumulate(
    results: str, rise: int, fall: int, expected: str
) -> None:
    _, states = run(results, rise=rise, fall=fall)
    delays = [next_delay(state, INTERVAL, RETRY) for state in states]
    assert "".join("R" if d == RETRY else "I" for d in delays) == expected
    assert set(delays) <= {INTERVAL, RETRY}


@pytest.mark.parametrize("results", ["+", "+-", "+--", "+---", "-", "+-+"])
def test_next_delay_without_retry_interval_is_always_the_interval(results: str) -> None:
    _, states = run(results, rise=1, fall=3)
    assert [next_delay(state, INTERVAL, None) for state in states] == [INTERVAL] * len(states)


def test_next_delay_uses_retry_interval_even_when_it_is_longer() -> None:
    _, states = run("+-", rise=1, fall=3)
    assert next_delay(states[-1], 0.5, 5.0) == 5.0


@pytest.mark.parametrize(
    ("interval", "warmup", "bound"),
    [
        # No warmup: spread over one interval, at most MAX_START_SPREAD.
        (2.0, None, MAX_START_SPREAD),
        (0.3, None, 0.3),
        # A warmup replaces that, longer or shorter than the interval.
        (2.0, 0.5, 0.5),
        (0.1, 5.0, 5.0),
        (2.0, 0.0, 0.0),
    ],
)
def test_first_delay_bounds(interval: float, warmup: float | None, bound: float) -> None:
    calls: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return high

    assert first_delay(interval, warmup, uniform) == bound
    assert calls == [(0.0, bound)]
    delays = [first_delay(interval, warmup) for _ in range(200)]
    assert all(0.0 <= d <= bound for d in delays)
    if bound:
        assert len(set(delays)) > 100  # random, not one moment
