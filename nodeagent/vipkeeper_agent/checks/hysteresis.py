"""The one rise/fall hysteresis of every check kind (and of IPVS real-server checks), and
the delay it implies before the next run (``next_delay``: keepalived's delay_before_retry).

Pure: results and times in, a new state out. keepalived's semantics: a check that is OK turns
FAILED after ``fall`` consecutive failures, a FAILED one turns OK after ``rise`` consecutive
successes; a mixed run (flapping) resets the counter of the other side and changes nothing.

One deliberate exception: the *first* result decides the health at once, whatever rise and fall
say. The health before it is only a guess (``init_fail``), and acting on a guess for
``fall * interval`` seconds is wrong both ways: a node that starts with its service dead would win
an election it must lose, and one that starts FAILED would stay out of service for
``rise * interval`` for no reason. keepalived does the same when its scripts first report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Health(StrEnum):
    OK = "OK"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class CheckState:
    health: Health
    consecutive_ok: int
    consecutive_failed: int
    runs: int
    #: True until the first result arrived: ``health`` is then only the ``init_fail`` guess.
    pending: bool
    #: When ``health`` last changed (or the state was created).
    since: float
    #: What the last run saw, e.g. "HTTP 503", "connection refused", "exit 1", "timeout after 1s".
    last_detail: str
    #: Seconds the last run took.
    last_latency: float


def initial(init_fail: bool, now: float) -> CheckState:
    return CheckState(
        health=Health.FAILED if init_fail else Health.OK,
        consecutive_ok=0,
        consecutive_failed=0,
        runs=0,
        pending=True,
        since=now,
        last_detail="not run yet",
        last_latency=0.0,
    )


def observe(
    state: CheckState,
    ok: bool,
    detail: str,
    latency: float,
    rise: int,
    fall: int,
    now: float,
) -> CheckState:
    """The state after one more result of the check."""
    if ok:
        consecutive_ok, consecutive_failed = state.consecutive_ok + 1, 0
    else:
        consecutive_ok, consecutive_failed = 0, state.consecutive_failed + 1
    health = state.health
    if state.pending:
        health = Health.OK if ok else Health.FAILED
    elif health is Health.OK and consecutive_failed >= fall:
        health = Health.FAILED
    elif health is Health.FAILED and consecutive_ok >= rise:
        health = Health.OK
    return replace(
        state,
        health=health,
        consecutive_ok=consecutive_ok,
        consecutive_failed=consecutive_failed,
        runs=state.runs + 1,
        pending=False,
        since=now if health is not state.health else state.since,
        last_detail=detail,
        last_latency=latency,
    )


def changed(before: CheckState, after: CheckState) -> bool:
    """Whether ``after`` is worth telling the check's users: the health changed, or the first
    result arrived (which turns the guess into a fact even when the health stays the same)."""
    return after.health is not before.health or before.pending != after.pending


def next_delay(state: CheckState, interval: float, retry_interval: float | None) -> float:
    """Seconds from the end of the run that produced ``state`` to the start of the next one.

    keepalived's delay_loop and delay_before_retry: while failures accumulate towards ``fall``
    (the last run failed, the health is still OK) the check retries after ``retry_interval``, so
    that a dead service is declared FAILED in ``fall * retry_interval`` rather than
    ``fall * interval``; otherwise, FAILED ones included, it runs every ``interval``. A health
    that is OK with failures counted is below ``fall`` by construction: ``observe`` turns it
    FAILED on the ``fall``-th, and the first result decides at once.
    """
    if retry_interval is not None and state.health is Health.OK and state.consecutive_failed:
        return retry_interval
    return interval
