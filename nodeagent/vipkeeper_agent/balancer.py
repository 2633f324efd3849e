"""Keeps the kernel's IPVS table in line with the virtual servers: the adapter around the pure plan.

One worker task does every sync, so syncs never overlap and a burst of triggers (checks flapping,
a transition, a reload) collapses into one or two. A sync: judge quorums (hysteresis kept here),
queue quorum hooks, build the desired table, read what the kernel has of the services we own,
diff, apply. Kernel calls run in a thread: a large table must not hold up the adverts. Every
``resync_interval`` the worker syncs anyway, which repairs changes made behind our back and
refreshes the counters the status shows.

The kernel is optional: without IPVS, the balancer reports why (with the fix) in the status and
logs, retries on the next sync, and the VRRP side runs on untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from vipkeeper_agent.checks.hysteresis import CheckState
from vipkeeper_agent.ipvs import plan
from vipkeeper_agent.ipvs.kernel import IpvsError, IpvsKernel, IpvsUnavailable
from vipkeeper_agent.ipvs.prereq import KernelFacts, problems, read_facts
from vipkeeper_agent.ipvs.status import ipvs_status, render_text
from vipkeeper_agent.ipvs.table import ServiceKey, ServiceStats, Table, VirtualService
from vipkeeper_agent.notify import Notifier
from vipkeeper_api.ipvs import VirtualServer

log = logging.getLogger("vipkeeper.ipvs")

#: Seconds between unprompted syncs (drift repair, fresh counters for the status).
RESYNC_SECONDS = 10.0
#: Errors kept for the status, newest last.
ERRORS_KEPT = 20


class Kernel(Protocol):
    def open(self) -> None: ...

    def snapshot(
        self, keys: Collection[ServiceKey] | None = None
    ) -> tuple[dict[ServiceKey, VirtualService], dict[ServiceKey, ServiceStats]]: ...

    def apply(self, ops: Sequence[plan.Op]) -> list[plan.OpResult]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class View:
    """What the agent knows that the table depends on."""

    #: Real-server check name -> healthy (checks that have reported).
    health: Mapping[str, bool]
    #: Names of the virtual servers this node carries now (placement).
    active: Collection[str]
    #: Virtual servers whose carrier has not decided yet whether it is MASTER (just started,
    #: no master heard): their services are left as the kernel has them, so that an agent
    #: restarted with ``--dont-release-ipvs`` on the holder does not delete and re-add them.
    undecided: Collection[str] = ()


@dataclass
class _Last:
    table: Table = field(default_factory=dict)
    stats: Mapping[ServiceKey, ServiceStats] = field(default_factory=dict)
    assessments: Mapping[str, plan.Assessment] = field(default_factory=dict)
    syncs: int = 0
    changes: int = 0


class Balancer:
    def __init__(
        self,
        view: Callable[[], View],
        notifier: Notifier | None,
        *,
        kernel: Callable[[], Kernel] = IpvsKernel,
        facts: Callable[[], KernelFacts] = read_facts,
        resync_interval: float = RESYNC_SECONDS,
    ) -> None:
        self._view = view
        self._notifier = notifier
        self._kernel_factory = kernel
        self._read_facts = facts
        self._resync_interval = resync_interval
        self._kernel: Kernel | None = None
        self._virtual_servers: tuple[VirtualServer, ...] = ()
        #: Services of earlier configurations still to be removed from the kernel.
        self._left_behind: set[ServiceKey] = set()
        self._quorum: dict[str, bool] = {}
        self._facts: KernelFacts | None = None
        self._problems: list[str] = []
        self._unavailable: str | None = None
        self._errors: list[str] = []
        self._last = _Last()
        #: The desired table the kernel was last brought to (None: unknown, read everything): a
        #: triggered sync reads and fixes only the services whose desired state differs from it.
        self._applied: Table | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def configure(self, virtual_servers: Sequence[VirtualServer]) -> None:
        """Take a (new) configuration; services that left it are removed on the next sync."""
        self._left_behind |= plan.owned_keys(self._virtual_servers)
        self._virtual_servers = tuple(virtual_servers)
        names = {vs.name for vs in virtual_servers}
        self._quorum = {name: up for name, up in self._quorum.items() if name in names}
        self._facts = self._read_facts() if virtual_servers else None
        self._problems = [] if self._facts is None else problems(virtual_servers, self._facts)
        for problem in self._problems:
            log.error("event=ipvs_prerequisite problem=%r", problem)
        self.request()

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="ipvs")

    def request(self) -> None:
        """Sync soon (after the one running, if any)."""
        self._wake.set()

    async def close(self, *, release: bool = True) -> None:
        """Stop syncing; with ``release``, remove every service we own from the kernel
        (keepalived does the same on stop, unless ``--dont-release-ipvs``)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if release and self._kernel is not None:
            self._left_behind |= plan.owned_keys(self._virtual_servers)
            self._virtual_servers = ()
            with contextlib.suppress(IpvsError, OSError):
                await self.sync()
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

    # --- syncing ------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            full = False
            try:
                await asyncio.wait_for(self._wake.wait(), self._resync_interval)
            except TimeoutError:
                full = True  # the periodic drift repair reads everything we own
            self._wake.clear()
            try:
                await self.sync(full=full)
            except (IpvsError, OSError) as exc:
                self._error(f"sync failed: {exc}")
            except Exception:  # a bug: log it, keep the worker (and the agent) alive
                log.exception("event=ipvs_sync_crashed")

    def _open(self) -> Kernel | None:
        if self._kernel is None:
            try:
                kernel = self._kernel_factory()
                kernel.open()  # raises IpvsUnavailable on a kernel without IPVS
            except (IpvsUnavailable, IpvsError) as exc:
                if self._unavailable is None:
                    log.error("event=ipvs_unavailable detail=%r", str(exc))
                self._unavailable = str(exc)
                return None
            self._kernel, self._unavailable = kernel, None
        return self._kernel

    async def sync(self, *, full: bool = True) -> None:
        """One sync now (the worker calls this; so do tests).

        ``full``: read every service we own from the kernel and repair any drift. Otherwise
        (a check result, a transition) only the services whose desired state differs from what
        the last sync left are read and fixed: one weight change on a 10,000-destination table
        costs one service's read, not the whole table's."""
        virtual_servers = self._virtual_servers
        owned = plan.owned_keys(virtual_servers) | self._left_behind
        if not owned:
            return
        kernel = self._open()
        if kernel is None:
            self._applied = None
            return
        view = self._view()
        owned -= {plan.service_key(vs) for vs in virtual_servers if vs.name in view.undecided}
        assessments = plan.assess(virtual_servers, view.health, self._quorum)
        self._quorum_changes(assessments)
        self._quorum = {name: a.quorum_up for name, a in assessments.items()}
        want = plan.desired(virtual_servers, view.health, view.active, self._quorum)
        scope = owned
        if not full and self._applied is not None:
            applied = self._applied
            scope = {k for k in owned if want.get(k) != applied.get(k)}
            if not scope:
                self._last = replace(
                    self._last, assessments=assessments, syncs=self._last.syncs + 1
                )
                return
        previously, self._applied = self._applied, None  # until this sync's outcome is known
        current, stats = await asyncio.to_thread(kernel.snapshot, scope)
        ops = plan.diff(current, {k: v for k, v in want.items() if k in scope}, scope)
        succeeded = True
        if ops:
            results = await asyncio.to_thread(kernel.apply, ops)
            for result in results:
                self._report(result)
            self._last.changes += sum(1 for r in results if r.ok)
            succeeded = all(r.ok for r in results)
            if succeeded:
                current = plan.simulate(current, ops)
            else:  # the kernel knows best what a partial failure left behind
                current, stats = await asyncio.to_thread(kernel.snapshot, scope)
        # What is gone from the kernel need not be remembered any more.
        self._left_behind = {k for k in self._left_behind if k in current or k not in scope}
        table = {k: v for k, v in self._last.table.items() if k in owned and k not in scope}
        table.update((k, v) for k, v in current.items() if k in scope)
        kept_stats = {k: v for k, v in self._last.stats.items() if k in table and k not in scope}
        kept_stats.update((k, v) for k, v in stats.items() if k in scope)
        self._last = _Last(
            table=table,
            stats=kept_stats,
            assessments=assessments,
            syncs=self._last.syncs + 1,
            changes=self._last.changes,
        )
        if succeeded and (scope == owned or previously is not None):
            applied = {} if previously is None or scope == owned else dict(previously)
            for key in scope:
                applied.pop(key, None)
                if key in want:
                    applied[key] = want[key]
            self._applied = applied

    def _report(self, result: plan.OpResult) -> None:
        if result.ok:
            log.info("event=ipvs_changed op=%r", result.op.describe())
        else:
            self._error(f"{result.op.describe()}: {result.error}")

    def _error(self, message: str) -> None:
        log.error("event=ipvs_error detail=%r", message)
        self._errors = [*self._errors, message][-ERRORS_KEPT:]

    def _quorum_changes(self, assessments: Mapping[str, plan.Assessment]) -> None:
        """Log quorum changes and queue the up/down hooks (not on a first judgement: keepalived
        runs them on changes, and a restart is not one)."""
        by_name = {vs.name: vs for vs in self._virtual_servers}
        for name, assessment in assessments.items():
            before = self._quorum.get(name)
            if before is None or before == assessment.quorum_up:
                continue
            state = "UP" if assessment.quorum_up else "DOWN"
            log.info(
                "event=quorum_changed virtual_server=%s state=%s healthy_weight=%d sorry_server=%s",
                name,
                state,
                assessment.healthy_weight,
                assessment.sorry_server_active,
            )
            quorum = by_name[name].quorum
            script = (
                None if quorum is None else (quorum.up if assessment.quorum_up else quorum.down)
            )
            if self._notifier is not None and script is not None:
                self._notifier.notify_scripts(
                    "VS", name, state, assessment.healthy_weight, (script,)
                )

    # --- status -------------------------------------------------------------------------------

    def status(self, checks: Mapping[str, CheckState], wall_offset: float) -> dict[str, Any]:
        last = self._last
        out = ipvs_status(
            self._virtual_servers,
            last.table,
            stats=last.stats,
            checks=checks,
            assessments=last.assessments,
            active=self._view().active,  # placement now, whether or not a sync got through
            wall_offset=wall_offset,
            problems=[*self._problems, *([self._unavailable] if self._unavailable else [])],
            errors=self._errors,
        )
        out["kernel"] = None if self._facts is None else self._facts.as_dict()
        out["syncs"] = last.syncs
        out["changes"] = last.changes
        out["text"] = render_text(last.table, last.stats)
        return out
