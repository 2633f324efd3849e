"""When to write: status writes coalesced and rate limited with a heartbeat, Events through token
buckets. Pure: monotonic seconds in, decisions out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: At most one status write per this many seconds: a flapping instance must not flood the API.
MIN_INTERVAL = 1.0
#: At least one write per this many seconds, changed or not: `updated` tells a live agent.
HEARTBEAT = 30.0
#: Retry after a failed write: doubling from the first up to the last.
RETRY = (0.5, 30.0)


@dataclass
class Pacer:
    """Decides when the status is due. Only the latest document is ever written: after an outage
    the agent catches up with one write of the current state, not a replay."""

    min_interval: float = MIN_INTERVAL
    heartbeat: float = HEARTBEAT
    retry: tuple[float, float] = RETRY
    written: Any = None
    written_at: float | None = None
    retry_at: float | None = None
    failures: int = 0

    def due_in(self, now: float, doc: Any) -> float:
        """Seconds until ``doc`` (the current content) should be written; <= 0: now."""
        if self.written_at is None:
            at = now
        elif doc != self.written:
            at = self.written_at + self.min_interval
        else:
            at = self.written_at + self.heartbeat
        if self.retry_at is not None:
            at = max(at, self.retry_at)
        return at - now

    def done(self, now: float, doc: Any) -> None:
        self.written, self.written_at = doc, now
        self.retry_at, self.failures = None, 0

    def failed(self, now: float) -> float:
        """Record a failed write; returns the delay before the next attempt."""
        first, cap = self.retry
        delay = min(cap, first * 2.0**self.failures)
        self.failures += 1
        self.retry_at = now + delay
        return delay


@dataclass
class TokenBucket:
    """``burst`` at once, then one per ``every`` seconds."""

    burst: float
    every: float
    tokens: float = field(init=False)
    at: float | None = None

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def take(self, now: float) -> bool:
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) / self.every)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class EventLimiter:
    """Per involved object (an instance) and overall; counts what it held back so the next Event
    that passes can say so."""

    burst: int = 5
    every: float = 10.0
    total_burst: int = 30
    total_every: float = 1.0
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    _total: TokenBucket | None = None
    suppressed: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        """(pass?, how many were held back for ``key`` before this one)."""
        if self._total is None:
            self._total = TokenBucket(self.total_burst, self.total_every)
        bucket = self._buckets.setdefault(key, TokenBucket(self.burst, self.every))
        if bucket.take(now) and self._total.take(now):
            return True, self.suppressed.pop(key, 0)
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False, 0


__all__ = ["HEARTBEAT", "MIN_INTERVAL", "EventLimiter", "Pacer", "TokenBucket"]
