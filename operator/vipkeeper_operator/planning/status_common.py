"""What the status folds share: Events to emit, timestamps, and Kubernetes-style conditions.

The folds themselves are :mod:`.status_vip` (VirtualIP) and :mod:`.status_vs` (VirtualServer).
They take the status written last time as ``previous`` and emit Events only for what changed
against it, so folding the same input twice emits nothing the second time: the operator may
re-run a pass (restart, retry, a peer taking over) without repeating Events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from vipkeeper_api.resources import Condition

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A Kubernetes Event to record on the object that was folded."""

    type: Literal["Normal", "Warning"]
    #: CamelCase, as kubectl shows in REASON.
    reason: str
    message: str


def parse_time(value: object) -> datetime | None:
    """A timestamp from a node's report: RFC 3339 (``...Z`` or with an offset; naive is taken as
    UTC) or seconds since the epoch. None for anything else: a report from an agent of another
    version must not stop the fold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return parse_time(float(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(moment: datetime, *, seconds_only: bool = False) -> str:
    """RFC 3339 in UTC. Milliseconds are kept where there are any, because failover times are
    read off these; ``seconds_only`` for metav1.Time fields, which the API stores in seconds."""
    moment = moment.astimezone(UTC)
    if seconds_only or not moment.microsecond:
        text = moment.replace(microsecond=0).isoformat()
    else:
        text = moment.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def millis(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds() * 1000, 3)


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def make_condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    previous: Sequence[Condition],
    generation: int | None,
    now: datetime,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status does (metav1.Condition):
    a changed reason or message alone keeps the time at which the status last flipped."""
    before = find_condition(previous, type_)
    if before is not None and before.status == status:
        since = before.last_transition_time
    else:
        since = format_time(now, seconds_only=True)
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=since,
        observedGeneration=generation,
    )


def became_true(previous: Sequence[Condition], current: Condition) -> bool:
    before = find_condition(previous, current.type)
    return current.status == "True" and (before is None or before.status != "True")


def family_name(family: int) -> str:
    return "IPv6" if family == 6 else "IPv4"


def listing(items: Sequence[str], limit: int = 5) -> str:
    """A short human list for messages: a VirtualServer may have thousands of real servers."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


__all__ = [
    "ConditionStatus",
    "EventRecord",
    "became_true",
    "family_name",
    "find_condition",
    "format_time",
    "listing",
    "make_condition",
    "millis",
    "parse_time",
]
