"""Notify hooks: the scripts an instance runs on entering MASTER, BACKUP, FAULT or STOP.

Called keepalived-style, ``<script> INSTANCE <instance> <STATE> <priority>``, through the script
allowlist (``vipkeeper_agent.scripts``). The VRRP path only enqueues; a worker task per instance
runs the queue one notification at a time, so a hook sees an instance's transitions in the order
they happened, while a slow hook of one instance never delays another's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from vipkeeper_agent.scripts import ScriptPolicy, run_script
from vipkeeper_api.models import NotifyScripts

log = logging.getLogger("vipkeeper.notify")


@dataclass(frozen=True)
class _Notification:
    state: str
    priority: int
    scripts: tuple[str, ...]


class Notifier:
    def __init__(self, policy: ScriptPolicy, timeout: float = 10.0, queue_limit: int = 32) -> None:
        self._policy = policy
        self._timeout = timeout
        self._queue_limit = max(1, queue_limit)
        self._queues: dict[str, deque[_Notification]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        self._stats = {"runs": 0, "failures": 0, "timeouts": 0, "dropped": 0}

    @property
    def stats(self) -> dict[str, int]:
        """Script runs; failures (non-zero exit, timeout or not run at all), of which timeouts;
        and notifications dropped (queue overflow, shutdown) without running."""
        return dict(self._stats)

    def notify(self, instance: str, hooks: NotifyScripts, state: str, priority: int) -> None:
        """Queue the hooks for ``instance`` entering ``state``; returns at once."""
        scripts = hooks.scripts_for(state)
        if not scripts:
            return
        if self._closed:
            self._drop(instance, _Notification(state, priority, scripts), "closed")
            return
        queue = self._queues.setdefault(instance, deque())
        queue.append(_Notification(state, priority, scripts))
        # A flapping instance keeps its latest transitions: the oldest pending are the stale ones.
        while len(queue) > self._queue_limit:
            self._drop(instance, queue.popleft(), "queue_full")
        if instance not in self._workers:
            loop = asyncio.get_running_loop()
            self._workers[instance] = loop.create_task(
                self._drain(instance, queue), name=f"notify-{instance}"
            )

    async def close(self, timeout: float) -> None:
        """Let queued notifications (the STOP ones of a shutdown) run for up to ``timeout``
        seconds, then cancel what is left; running scripts are killed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Loop: a notification may still be queued while we wait, starting a new worker.
        while self._workers and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._workers.values()), timeout=remaining)
        self._closed = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        # A worker cancelled before its first step never ran its own cleanup.
        self._workers.clear()
        for instance, queue in self._queues.items():
            while queue:
                self._drop(instance, queue.popleft(), "shutdown")
        self._queues.clear()

    def _drop(self, instance: str, note: _Notification, reason: str) -> None:
        self._stats["dropped"] += 1
        log.warning(
            "event=notify_dropped instance=%s state=%s priority=%d scripts=%s reason=%s",
            instance,
            note.state,
            note.priority,
            ",".join(note.scripts),
            reason,
        )

    async def _drain(self, instance: str, queue: deque[_Notification]) -> None:
        try:
            while queue:
                note = queue.popleft()
                for script in note.scripts:
                    await self._run(instance, note, script)
        finally:
            # No await between the empty check above and this: notify() either saw this worker
            # and queued for it, or sees it gone and starts a new one.
            del self._workers[instance]
            if not queue:
                del self._queues[instance]

    async def _run(self, instance: str, note: _Notification, script: str) -> None:
        args = ("INSTANCE", instance, note.state, str(note.priority))
        try:
            result = await run_script(self._policy, script, args, self._timeout)
        except Exception:  # run_script reports failures in its result; this is a bug
            self._stats["runs"] += 1
            self._stats["failures"] += 1
            log.exception(
                "event=notify_failed instance=%s state=%s script=%s", instance, note.state, script
            )
            return
        self._stats["runs"] += 1
        duration_ms = result.duration * 1000
        if result.exit_code == 0 and result.error is None:
            log.info(
                "event=notify instance=%s state=%s script=%s exit=%s duration_ms=%.1f",
                instance,
                note.state,
                script,
                result.exit_code,
                duration_ms,
            )
            return
        self._stats["failures"] += 1
        if result.timed_out:
            self._stats["timeouts"] += 1
        log.warning(
            "event=notify_failed instance=%s state=%s script=%s exit=%s timed_out=%s "
            "duration_ms=%.1f error=%s output=%r",
            instance,
            note.state,
            script,
            result.exit_code,
            result.timed_out,
            duration_ms,
            result.error,
            result.output,
        )
