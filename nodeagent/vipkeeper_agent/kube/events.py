"""core/v1 Events for this node's VRRP transitions (MASTER, BACKUP, FAULT) and rejected specs.

On the VirtualIP when the NodeAssignment says which one an instance comes from (annotation
``vipkeeper.io/instance-owners``), else on the NodeAssignment (Events of cluster-scoped objects
live in ``default``, as the kubelet's do for Nodes). Rate limited per instance and overall; Events
held back are counted in the next one that passes. Posted from a bounded queue in a worker
thread; during an API outage the queue keeps the newest and retries, and drops what is too old to
matter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from vipkeeper_agent.kube.pacing import EventLimiter
from vipkeeper_api.resources import API_VERSION

log = logging.getLogger("vipkeeper.kube.events")

COMPONENT = "vipkeeper-agent"
QUEUE_MAX = 100
#: An Event that could not be posted for this long is dropped: the status has the current state.
MAX_AGE = 300.0
RETRY = (0.5, 30.0)
#: The API refuses longer messages.
MESSAGE_MAX = 1024

_REASONS = {"MASTER": "BecameMaster", "BACKUP": "BecameBackup", "FAULT": "EnteredFault"}


@dataclass(frozen=True, slots=True)
class Transition:
    instance: str
    vrid: int
    from_state: str
    to_state: str
    reason: str
    at: float  # wall clock
    duration_ms: float | None = None


def transition_event(node: str, t: Transition, suppressed: int = 0) -> tuple[str, str, str] | None:
    """(type, reason, message), or None for transitions that get no Event (INIT: stopping)."""
    reason = _REASONS.get(t.to_state)
    if reason is None:
        return None
    kind = "Warning" if t.to_state == "FAULT" else "Normal"
    took = "" if t.duration_ms is None else f", {t.duration_ms:.0f} ms after the last advert heard"
    held = f" ({suppressed} earlier transitions not reported: rate limit)" if suppressed else ""
    message = (
        f"node {node}: instance {t.instance} (VRID {t.vrid}) {t.from_state} -> {t.to_state}: "
        f"{t.reason}{took}{held}"
    )
    return kind, reason, message


def event_body(
    node: str,
    involved: Mapping[str, str],
    kind: str,
    reason: str,
    message: str,
    at: float,
) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = involved.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": dict(involved),
        "type": kind,
        "reason": reason,
        "message": message[:MESSAGE_MAX],
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventSink:
    """``transition()`` / ``problem()`` from the event loop; ``start()`` the sender task."""

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        identity: Callable[[], tuple[str | None, Mapping[str, Mapping[str, str]]]],
        *,
        limiter: EventLimiter | None = None,
        retry: tuple[float, float] = RETRY,
    ) -> None:
        """``identity()``: the NodeAssignment's uid and its instance -> VirtualIP map."""
        self.node = node
        self._core = client.CoreV1Api(api)
        self._identity = identity
        self._limiter = limiter or EventLimiter()
        self._retry = retry
        self._queue: collections.deque[tuple[float, dict[str, Any]]] = collections.deque(
            maxlen=QUEUE_MAX
        )
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.posted = 0
        self.dropped = 0
        self.suppressed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-sink")

    async def stop(self, flush: float = 1.0) -> None:
        """Give queued Events ``flush`` seconds, then stop."""
        deadline = time.monotonic() + flush
        # While posts fail (the API is away) waiting would only delay the agent's exit.
        while self._queue and not self._failing and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def state(self) -> dict[str, int]:
        return {
            "posted": self.posted,
            "queued": len(self._queue),
            "dropped": self.dropped,
            "suppressed": self.suppressed,
        }

    def _involved(self, instance: str | None) -> dict[str, str]:
        uid, owners = self._identity()
        owner = None if instance is None else owners.get(instance)
        if owner is not None:
            return {"apiVersion": API_VERSION, "kind": "VirtualIP", **owner}
        return {
            "apiVersion": API_VERSION,
            "kind": "NodeAssignment",
            "name": self.node,
            "uid": uid or "",
        }

    def transition(self, t: Transition) -> None:
        allowed, held = self._limiter.allow(t.instance, time.monotonic())
        if not allowed:
            self.suppressed += 1
            return
        made = transition_event(self.node, t, held)
        if made is not None:
            self._enqueue(event_body(self.node, self._involved(t.instance), *made, t.at))

    def problem(self, message: str) -> None:
        allowed, held = self._limiter.allow("", time.monotonic())
        if not allowed:
            self.suppressed += 1
            return
        more = f" ({held} similar not reported: rate limit)" if held else ""
        body = event_body(
            self.node, self._involved(None), "Warning", "SpecRejected", message + more, time.time()
        )
        self._enqueue(body)

    def _enqueue(self, body: dict[str, Any]) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # the deque drops the oldest
        self._queue.append((time.monotonic(), body))
        self._ready.set()

    async def _run(self) -> None:
        first, cap = self._retry
        delay = first
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            queued_at, body = self._queue[0]
            if time.monotonic() - queued_at > MAX_AGE:
                self._queue.popleft()
                self.dropped += 1
                continue
            try:
                namespace = body["metadata"]["namespace"]
                await asyncio.to_thread(
                    self._core.create_namespaced_event, namespace, body, _request_timeout=10
                )
            except Exception as exc:
                if not self._failing:
                    log.warning("event=event_post_failed error=%r", str(exc)[:300])
                self._failing = True
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
                continue
            if self._queue and self._queue[0][1] is body:
                self._queue.popleft()
            self.posted += 1
            self._failing, delay = False, first


__all__ = ["EventSink", "Transition", "event_body", "transition_event"]
