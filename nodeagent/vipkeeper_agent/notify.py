"""Notify hooks: the scripts an instance runs on entering MASTER, BACKUP, FAULT or STOP, and a
virtual server's quorum ``up``/``down`` scripts.

Called keepalived-style, ``<script> INSTANCE <instance> <STATE> <priority>`` (a virtual server:
``<script> VS <name> UP|DOWN <healthy weight>``), through the script allowlist
(``vipkeeper_agent.scripts``). The VRRP path only enqueues; a worker task per subject runs the
queue one notification at a time, so a hook sees a subject's transitions in the order they
happened, while a slow hook of one subject never delays another's.
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
    kind: str
    name: str
    state: str
    value: int
    scripts: tuple[str, ...]

    @property
    def value_name(self) -> str:
        return "priority" if self.kind == "INSTANCE" else "weight"


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
        self.notify_scripts("INSTANCE", instance, state, priority, hooks.scripts_for(state))

    def notify_scripts(
        self, kind: str, name: str, state: str, value: int, scripts: tuple[str, ...]
    ) -> None:
        """Queue ``scripts``, to be called ``<script> KIND NAME STATE VALUE``; returns at once."""
        if not scripts:
            return
        note = _Notification(kind, name, state, value, scripts)
        if self._closed:
            self._drop(note, "closed")
            return
        subject = f"{kind}:{name}"
        queue = self._queues.setdefault(subject, deque())
        queue.append(note)
        # A flapping subject keeps its latest transitions: the oldest pending are the stale ones.
        while len(queue) > self._queue_limit:
            self._drop(queue.popleft(), "queue_full")
        if subject not in self._workers:
            loop = asyncio.get_running_loop()
            self._workers[subject] = loop.create_task(
                self._drain(subject, queue), name=f"notify-{subject}"
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
        for queue in self._queues.values():
            while queue:
                self._drop(queue.popleft(), "shutdown")
        self._queues.clear()

    def _drop(self, note: _Notification, reason: str) -> None:
        self._stats["dropped"] += 1
        log.warning(
            "event=notify_dropped %s=%s state=%s %s=%d scripts=%s reason=%s",
            note.kind.lower(),
            note.name,
            note.state,
            note.value_name,
            note.value,
            ",".join(note.scripts),
            reason,
        )

    async def _drain(self, subject: str, queue: deque[_Notification]) -> None:
        try:
            while queue:
                note = queue.popleft()
                for script in note.scripts:
                    await self._run(note, script)
        finally:
            # No await between the empty check above and this: notify() either saw this worker
            # and queued for it, or sees it gone and starts a new one.
            del self._workers[subject]
            if not queue:
                del self._queues[subject]

    async def _run(self, note: _Notification, script: str) -> None:
        args = (note.kind, note.name, note.state, str(note.value))
        try:
            result = await run_script(self._policy, script, args, self._timeout)
        except Exception:  # run_script reports failures in its result; this is a bug
            self._stats["runs"] += 1
            self._stats["failures"] += 1
            log.exception(
                "event=notify_failed %s=%s state=%s script=%s",
                note.kind.lower(),
                note.name,
                note.state,
                script,
            )
            return
        self._stats["runs"] += 1
        duration_ms = result.duration * 1000
        if result.exit_code == 0 and result.error is None:
            log.info(
                "event=notify %s=%s state=%s script=%s exit=%s duration_ms=%.1f",
                note.kind.lower(),
                note.name,
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
            "event=notify_failed %s=%s state=%s script=%s exit=%s timed_out=%s "
            "duration_ms=%.1f error=%s output=%r",
            note.kind.lower(),
            note.name,
            note.state,
            script,
            result.exit_code,
            result.timed_out,
            duration_ms,
            result.error,
            result.output,
        )
