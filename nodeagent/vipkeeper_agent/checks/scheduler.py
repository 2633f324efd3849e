"""Runs the health checks: one task per check, bounded concurrency, hard timeouts.

Nothing here blocks the event loop (every probe is asynchronous), no probe outlives its timeout,
and no failure of a probe or of ``on_change`` stops a check's loop: the VRRP adverts that share
the loop must never be delayed by a check.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from vipkeeper_agent.checks.hysteresis import CheckState, changed, initial, next_delay, observe
from vipkeeper_agent.checks.icmp import Pinger
from vipkeeper_agent.checks.probes import Probe, ProbeResult, make_probe, run_probe
from vipkeeper_agent.scripts import ScriptPolicy
from vipkeeper_api.checks import Check

log = logging.getLogger("vipkeeper.checks")

#: Without a ``warmup``, the first runs are spread over at most this long (and at most one
#: interval), so that 200 checks do not fire together.
MAX_START_SPREAD: Final = 1.0
#: How long stop() waits for cancelled checks to unwind (an exec check reaps its child).
STOP_TIMEOUT: Final = 5.0


def first_delay(
    interval: float,
    warmup: float | None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds from a check's start to its first run: a random moment within ``warmup``
    (keepalived's warmup), or without one within ``min(interval, MAX_START_SPREAD)``."""
    spread = min(interval, MAX_START_SPREAD) if warmup is None else warmup
    return uniform(0.0, spread)


@dataclass(slots=True)
class _Runner:
    check: Check
    probe: Probe
    state: CheckState
    task: asyncio.Task[None] | None = None
    failures: int = 0


class CheckScheduler:
    def __init__(
        self,
        checks: Sequence[Check],
        on_change: Callable[[str, CheckState], None],
        script_policy: ScriptPolicy | None,
        max_concurrency: int = 64,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._on_change = on_change
        self._script_policy = script_policy
        self._max_concurrency = max_concurrency
        # time.monotonic is the default event loop's clock too.
        self._clock = clock or time.monotonic
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._pinger = Pinger()
        self._runners: dict[str, _Runner] = {}
        # Cancelled tasks of changed or removed checks, until they have unwound.
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False
        self._running = 0
        self._queued = 0
        self.update(checks)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every check's loop; call inside the running event loop."""
        if self._started:
            return
        self._started = True
        for runner in self._runners.values():
            self._launch(runner)

    def update(self, checks: Sequence[Check]) -> None:
        """Reload: unchanged checks keep their state and schedule, changed and new ones start
        afresh, removed ones are cancelled."""
        wanted = {check.name: check for check in checks}
        if len(wanted) != len(checks):
            raise ValueError("check names must be unique")
        for name in list(self._runners):
            if wanted.get(name) != self._runners[name].check:
                self._retire(self._runners.pop(name))
        for name, check in wanted.items():
            if name in self._runners:
                continue
            runner = _Runner(
                check=check,
                probe=make_probe(check, script_policy=self._script_policy, pinger=self._pinger),
                state=initial(check.init_fail, self._clock()),
            )
            self._runners[name] = runner
            if self._started:
                self._launch(runner)

    async def stop(self) -> None:
        """Cancel every check and wait (boundedly) for them to unwind."""
        self._started = False
        for name in list(self._runners):
            self._retire(self._runners.pop(name))
        tasks = set(self._retired)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                log.warning("event=check_stop_slow task=%s", task.get_name())
        self._pinger.close()

    # --- observation ----------------------------------------------------------------------

    def states(self) -> dict[str, CheckState]:
        return {name: runner.state for name, runner in self._runners.items()}

    def stats(self) -> dict[str, Any]:
        return {
            "running": self._running,
            "queued": self._queued,
            "max_concurrency": self._max_concurrency,
            "checks": {
                name: {
                    "runs": runner.state.runs,
                    "failures": runner.failures,
                    "last_latency_ms": round(runner.state.last_latency * 1000, 3),
                }
                for name, runner in self._runners.items()
            },
        }

    # --- the loops ------------------------------------------------------------------------

    def _launch(self, runner: _Runner) -> None:
        runner.task = asyncio.get_running_loop().create_task(
            self._loop(runner), name=f"check-{runner.check.name}"
        )

    def _retire(self, runner: _Runner) -> None:
        task = runner.task
        runner.task = None
        if task is not None and not task.done():
            task.cancel()
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def _loop(self, runner: _Runner) -> None:
        check = runner.check
        await asyncio.sleep(first_delay(check.interval, check.warmup))
        while True:
            result, latency = await self._run_once(runner)
            before = runner.state
            runner.state = observe(
                before,
                result.ok,
                result.detail,
                latency,
                check.rise,
                check.fall,
                self._clock(),
            )
            if not result.ok:
                runner.failures += 1
            if changed(before, runner.state):
                self._notify(check.name, before, runner.state)
            await asyncio.sleep(next_delay(runner.state, check.interval, check.retry_interval))

    async def _run_once(self, runner: _Runner) -> tuple[ProbeResult, float]:
        check = runner.check
        self._queued += 1
        try:
            await self._semaphore.acquire()
        finally:
            self._queued -= 1
        self._running += 1
        started = self._clock()
        try:
            result = await run_probe(check, runner.probe)
        finally:
            self._running -= 1
            self._semaphore.release()
        return result, self._clock() - started

    def _notify(self, name: str, before: CheckState, after: CheckState) -> None:
        log.info(
            "event=check_changed check=%s health=%s previous=%s detail=%r",
            name,
            after.health,
            "pending" if before.pending else before.health,
            after.last_detail,
        )
        try:
            self._on_change(name, after)
        except Exception:
            log.exception("event=check_callback_failed check=%s", name)
