"""The operator's one reconcile loop: snapshot the store, decide (pure), apply the writes.

kopf's watch handlers only mirror objects into the :class:`~vipkeeper_operator.store.Store` and
call :meth:`Controller.changed`. A burst of watch events (an operator start lists every object; a
rollout changes many EndpointSlices) collapses into one pass after ``debounce`` seconds, and a pass
writes only what differs from what the API has or what this process wrote a moment ago (the watch
echo of its own writes arrives later). Everything the pass decides comes from
:func:`vipkeeper_operator.planning.reconcile.decide`; this module only does the I/O, in order:
assignments, then statuses, then Events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from vipkeeper_operator import parse
from vipkeeper_operator.planning.reconcile import Decision, decide
from vipkeeper_operator.planning.writes import (
    DeleteAssignment,
    EventWrite,
    PutAssignment,
    StatusWrite,
    Write,
)
from vipkeeper_operator.store import Store

log = logging.getLogger("vipkeeper.operator")

T = TypeVar("T")


class Writer(Protocol):
    async def write(self, write: Write) -> None: ...

    async def replace_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None: ...

    async def post_event(self, event: EventWrite, now: datetime) -> None: ...

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...


@dataclass
class Counters:
    passes: int = 0
    errors: int = 0
    assignment_writes: int = 0
    #: Of ``assignment_writes``, the deletions.
    assignment_deletes: int = 0
    status_writes: int = 0
    events: int = 0
    last_pass_seconds: float = 0.0
    #: When each pass finished (monotonic), for "time until rendered" measurements.
    finished: list[float] = field(default_factory=list)


class Controller:
    def __init__(
        self,
        store: Store,
        writer: Writer,
        *,
        debounce: float = 0.05,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.writer = writer
        self.debounce = debounce
        self.clock = clock
        self.counters = Counters()
        self._wake = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        #: "plural/namespace/name" -> the status document this process last wrote.
        self._statuses: dict[str, dict[str, Any]] = {}
        self.secret_ttl = 60.0
        self._secret_read: dict[str, float] = {}
        #: Called on the loop after each pass with its decision and every status as it now stands
        #: (metrics read the store there, where it cannot change under them).
        self.on_pass: Callable[[Decision, Mapping[str, dict[str, Any]]], None] | None = None

    def changed(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            try:
                await self.reconcile()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:
                # The next pass recomputes everything: a failed write is retried by deciding again.
                self.counters.errors += 1
                log.exception("event=reconcile_failed retry_in=%.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                self._wake.set()

    async def reconcile(self) -> Decision:
        started = time.monotonic()
        now = self.clock()
        await self._refresh_secrets()
        decision = decide(
            self.store.snapshot(),
            assignments=self.store.assignments,
            rejected=self.store.rejected,
            statuses=self._current_statuses(),
            now=now,
        )
        await self._all(self._write(w) for w in decision.writes)
        await self._all(self._status(s) for s in decision.statuses)
        await self._all(self._event(e, now) for e in decision.events)
        self.counters.passes += 1
        self.counters.last_pass_seconds = time.monotonic() - started
        self.counters.finished.append(time.monotonic())
        del self.counters.finished[:-100]
        if self.on_pass is not None:
            self.on_pass(decision, self._current_statuses())
        if decision.writes or decision.statuses or decision.events:
            log.info(
                "event=reconciled assignments=%d statuses=%d events=%d seconds=%.3f",
                len(decision.writes),
                len(decision.statuses),
                len(decision.events),
                self.counters.last_pass_seconds,
            )
        return decision

    async def _refresh_secrets(self) -> None:
        """Read the Secrets VirtualIPs refer to: new references at once, the rest every
        ``secret_ttl`` seconds (a rotated password reaches the nodes within that time)."""
        wanted = set()
        for vip in self.store.virtual_ips.values():
            ref = vip.spec.vrrp.auth_secret_ref
            if ref is not None:
                wanted.add(f"{vip.namespace}/{ref.name}")
        now = time.monotonic()
        for key in wanted:
            if key in self.store.secrets and now - self._secret_read.get(key, 0) < self.secret_ttl:
                continue
            namespace, name = key.split("/", 1)
            raw = await self.writer.read_secret(namespace, name)
            self._secret_read[key] = now
            if raw is None:
                self.store.secrets.pop(key, None)
            else:
                self.store.secrets[key] = parse.secret(raw)
        for key in set(self.store.secrets) - wanted:
            del self.store.secrets[key]

    def _current_statuses(self) -> dict[str, dict[str, Any]]:
        """What each object's status is: what we wrote last, else what the API showed."""
        out: dict[str, dict[str, Any]] = {}
        for key, body in self.store.bodies.items():
            status = body.get("status")
            if isinstance(status, dict):
                out[key] = status
        out.update(self._statuses)
        return out

    async def _all(self, calls: Iterable[Awaitable[None]]) -> None:
        async def limited(call: Awaitable[None]) -> None:
            async with self._limit:
                await call

        results = await asyncio.gather(*(limited(c) for c in calls), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _write(self, write: Write) -> None:
        await self.writer.write(write)
        self.counters.assignment_writes += 1
        # Until the watch echoes it, the store must not make the next pass write it again.
        if isinstance(write, PutAssignment):
            self.store.assignments[write.node] = write.spec
        elif isinstance(write, DeleteAssignment):
            self.store.assignments.pop(write.node, None)
            self.counters.assignment_deletes += 1

    async def _status(self, write: StatusWrite) -> None:
        await self.writer.replace_status(write.plural, write.namespace, write.name, write.status)
        self.counters.status_writes += 1
        self._statuses[f"{write.plural}/{write.namespace}/{write.name}"] = write.status

    async def _event(self, event: EventWrite, now: datetime) -> None:
        try:
            await self.writer.post_event(event, now)
            self.counters.events += 1
        except Exception as exc:  # an Event is best effort: it must not fail the pass
            log.warning("event=event_post_failed reason=%s error=%s", event.reason, exc)

    def forget_status(self, plural: str, key: str) -> None:
        self._statuses.pop(f"{plural}/{key}", None)
