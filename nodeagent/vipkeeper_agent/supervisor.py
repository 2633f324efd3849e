"""The agent: owns the adapters and the instance runners, reloads configuration, shuts down in order.

Construct, then ``await run()``. Shutdown order: priority-0 adverts -> VIPs dropped -> IPVS services
released -> sockets closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from vipkeeper_agent.balancer import Balancer, View
from vipkeeper_agent.checks.hysteresis import CheckState, Health
from vipkeeper_agent.checks.scheduler import CheckScheduler
from vipkeeper_agent.instance import InstanceRunner
from vipkeeper_agent.io.announcer import Announcer
from vipkeeper_agent.io.netlink import AddressManager, LinkWatcher
from vipkeeper_agent.io.transport import ReceivedDatagram, VrrpSocket
from vipkeeper_agent.ipvs.plan import active_here
from vipkeeper_agent.kube.pacing import EventLimiter
from vipkeeper_agent.metrics import MetricsServer, serve
from vipkeeper_agent.notify import Notifier
from vipkeeper_agent.reload import plan_reload
from vipkeeper_agent.scripts import ScriptPolicy, verify
from vipkeeper_agent.status.server import StatusServer
from vipkeeper_agent.status.snapshot import agent_status
from vipkeeper_agent.topology import (
    AF_INET,
    AF_INET6,
    InterfaceInfo,
    choose_interface,
    primary_address,
)
from vipkeeper_agent.tracking import Assessment, Observations, assess, share_group
from vipkeeper_agent.vrrp import fsm, sync
from vipkeeper_agent.vrrp.packet import Advertisement, DecodeError, DropReason, decode, encode
from vipkeeper_agent.vrrp.receive import MISCONFIGURATION, check
from vipkeeper_api import Check, ConfigError, NodeAssignmentSpec, VrrpInstance, load_spec
from vipkeeper_api.ipvs import Placement

log = logging.getLogger("vipkeeper.agent")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

DEFAULT_SCRIPT_DIR = Path("/etc/vipkeeper/scripts")

#: How often the config file is polled for changes (SIGHUP reloads at once).
FILE_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class AgentOptions:
    config_path: Path
    status_socket: Path
    scripts: ScriptPolicy = field(default_factory=lambda: ScriptPolicy(DEFAULT_SCRIPT_DIR))
    #: keepalived's `touch /etc/keepalived/down` idiom: while the file exists, hand over and stay BACKUP.
    maintenance_file: Path | None = None
    notify_timeout: float = 10.0
    #: Remove the IPVS services we own on stop (keepalived's default; its --dont-release-ipvs
    #: keeps them, and so does False here, so that a restart changes nothing).
    release_ipvs: bool = True
    #: Serve /metrics, /healthz and /readyz here (docs/metrics.md); None: off.
    metrics_address: tuple[str, int] | None = None


class Agent:
    def __init__(self, options: AgentOptions, spec: NodeAssignmentSpec) -> None:
        self.options = options
        self.spec = spec
        self.runners: dict[str, InstanceRunner] = {}
        #: Instances we could not place (no such interface, no source address), with the reason.
        self.unresolved: dict[str, str] = {}
        self.global_dropped: Counter[str] = Counter()
        #: One misconfiguration log line per instance and reason a minute: a peer sending wrong
        #: adverts 10 times a second must not flood the log.
        self._drop_log = EventLimiter(burst=1, every=60.0, total_burst=20, total_every=1.0)
        self._sockets: dict[tuple[str, int], VrrpSocket] = {}
        self._interfaces: dict[str, InterfaceInfo] = {}
        self._by_vrid: dict[tuple[str, int], dict[int, list[InstanceRunner]]] = {}
        self._own_sources: dict[tuple[str, int], set[IPAddress]] = {}
        self._addresses: AddressManager | None = None
        self._links: LinkWatcher | None = None
        self._announcer: Announcer | None = None
        self._status: StatusServer | None = None
        self._metrics: MetricsServer | None = None
        #: What /readyz answers; Kubernetes mode adds "the NodeAssignment is applied".
        self.ready: Callable[[], bool] = lambda: self.started
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._config_stamp = _stamp(options.config_path)
        self._loaded_at = 0.0
        self._reloads = 0
        self._reload_error: str | None = None
        self._link_up: dict[str, bool] = {}
        #: Check name -> healthy, for checks that have reported at least once.
        self._check_health: dict[str, bool] = {}
        self._checks: CheckScheduler | None = None
        self._notifier: Notifier | None = None
        self._maintenance_file_on = False
        self._balancer: Balancer | None = None
        #: Real-server checks of the virtual servers, scheduled with the instances' checks.
        self._rs_checks: tuple[Check, ...] = _real_server_checks(spec)
        self._rs_check_names = frozenset(c.name for c in self._rs_checks)
        #: Virtual server -> the VRRP instance that carries it (placement: holder).
        self._carrier = _carriers(spec)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._addresses = await AddressManager.open()
        try:
            for ifname, addr in await self._addresses.remove_stale():
                log.info("event=stale_vip_removed interface=%s address=%s", ifname, addr)
            self._announcer = Announcer()
            self._links = await LinkWatcher.open(self._on_link)
            self._status = StatusServer(self.options.status_socket, self.status)
            await self._status.start()
            if self.options.metrics_address is not None:
                host, port = self.options.metrics_address
                self._metrics = await serve(host, port, self.status, self.ready)
            await self._refresh_interfaces()
            self._notifier = Notifier(self.options.scripts, timeout=self.options.notify_timeout)
            self._maintenance_file_on = self._maintenance_file_present()
            self._checks = CheckScheduler(
                self.spec.checks + self._rs_checks, self._on_check, self.options.scripts
            )
            self._checks.start()
            for inst in self.spec.instances:
                self._start_instance(inst)
            self._balancer = Balancer(self._ipvs_view, self._notifier)
            self._balancer.configure(self.spec.virtual_servers)
            self._balancer.start()
            self._loaded_at = loop.time()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_stop_signal)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("SIGHUP")))
            poller = loop.create_task(self._poll_config())
            # The configuration and imports are long-lived: keep the collector from rescanning
            # them, so a full collection cannot land on the takeover path.
            gc.collect()
            gc.freeze()
            log.info("event=started instances=%d", len(self.runners))
            await self._stopping.wait()
            poller.cancel()
        finally:
            await self._shutdown()

    @property
    def started(self) -> bool:
        """Its instances are running (run() has set everything up)."""
        return self._loaded_at > 0

    def stop(self) -> None:
        self._stopping.set()

    def _on_stop_signal(self) -> None:
        # Resign right here, in the signal's own callback: the backups' Skew_Time starts when the
        # priority-0 advert arrives, so it must not wait for the shutdown task to be scheduled.
        for runner in self.runners.values():
            runner.handle(fsm.Shutdown("signal"))
        self._stopping.set()

    async def _shutdown(self) -> None:
        log.info("event=stopping")
        if self.runners:
            try:
                # Bounded: SIGTERM must end the agent within a second even if netlink hangs.
                await asyncio.wait_for(
                    asyncio.gather(
                        *(r.stop() for r in self.runners.values()), return_exceptions=True
                    ),
                    timeout=0.8,
                )
            except TimeoutError:
                log.error("event=shutdown_timeout detail='some VIPs may not have been removed'")
        self.runners.clear()
        self._reindex()
        if self._balancer is not None:
            try:
                await asyncio.wait_for(
                    self._balancer.close(release=self.options.release_ipvs), timeout=2.0
                )
            except TimeoutError:
                log.error("event=shutdown_timeout detail='IPVS services may not have been removed'")
        if self._checks is not None:
            await self._checks.stop()
        if self._notifier is not None:
            # The STOP notifications were queued by the resignations above.
            await self._notifier.close(timeout=min(self.options.notify_timeout, 2.0))
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        if self._announcer is not None:
            self._announcer.close()
        if self._links is not None:
            await self._links.close()
        if self._metrics is not None:
            await self._metrics.close()
        if self._status is not None:
            await self._status.close()
        if self._addresses is not None:
            await self._addresses.close()
        log.info("event=stopped")

    # --- instances ----------------------------------------------------------------------------

    def _resolve(self, inst: VrrpInstance) -> tuple[InterfaceInfo, IPAddress] | str:
        if inst.interface is not None:
            iface = self._interfaces.get(inst.interface)
            if iface is None:
                return f"interface {inst.interface} does not exist on this node"
        else:
            found = choose_interface(inst.addresses[0], list(self._interfaces.values()))
            if found is None:
                return (
                    f"no interface has a subnet containing {inst.addresses[0].ip}; "
                    "set 'interface' explicitly"
                )
            iface = found
        vips = {a.ip for a in inst.addresses}
        primary = inst.unicast_source or primary_address(iface, _af(inst.family), exclude=vips)
        if primary is None:
            kind = "IPv4 address" if inst.family == 4 else "IPv6 link-local address"
            return f"interface {iface.name} has no {kind} to send adverts from"
        return iface, primary

    def _start_instance(self, inst: VrrpInstance) -> None:
        resolved = self._resolve(inst)
        if isinstance(resolved, str):
            self.unresolved[inst.name] = resolved
            log.error("event=instance_unresolved instance=%s reason=%r", inst.name, resolved)
            return
        self.unresolved.pop(inst.name, None)
        iface, primary = resolved
        sock = self._socket(iface, inst.family)
        if not inst.unicast_peers:
            sock.join(inst.group)
        runner = InstanceRunner(
            inst, iface.name, iface.index, primary, self, asyncio.get_running_loop()
        )
        self.runners[inst.name] = runner
        self._reindex()
        runner.start(self._assess_all()[inst.name], self.maintenance)
        self._reassess()  # A new group member may bring its faults to the others.
        log.info(
            "event=instance_started instance=%s vrid=%d version=%d interface=%s source=%s mode=%s",
            inst.name,
            inst.vrid,
            inst.version,
            iface.name,
            primary,
            "unicast" if inst.unicast_peers else f"multicast:{inst.group}",
        )

    async def _stop_instance(self, name: str, reason: str) -> None:
        self.unresolved.pop(name, None)
        runner = self.runners.pop(name, None)
        if runner is None:
            return
        self._reindex()
        await runner.stop(reason)
        if not runner.spec.unicast_peers:
            sock = self._sockets.get((runner.ifname, runner.spec.family))
            if sock is not None:
                sock.leave(runner.spec.group)

    def _socket(self, iface: InterfaceInfo, family: int) -> VrrpSocket:
        key = (iface.name, family)
        sock = self._sockets.get(key)
        if sock is None:
            sock = VrrpSocket.open(
                iface.name, iface.index, _af(family), partial(self._on_datagram, key)
            )
            self._sockets[key] = sock
        return sock

    async def _refresh_interfaces(self) -> None:
        assert self._addresses is not None
        self._interfaces = {i.name: i for i in await self._addresses.interfaces()}
        self._link_up = {name: i.up for name, i in self._interfaces.items()}

    # --- checks, tracked links, maintenance ---------------------------------------------------

    @property
    def maintenance(self) -> bool:
        return self.spec.maintenance or self._maintenance_file_on

    def _assess(self, inst: VrrpInstance, ifname: str) -> Assessment:
        """One instance on its own, before its sync group shares faults."""
        seen = Observations(checks=self._check_health, links=self._link_up)
        weights = {c.name: c.weight for c in self.spec.checks}
        initial = {c.name: not c.init_fail for c in self.spec.checks}
        return assess(inst, ifname, weights, initial, seen)

    def _assess_all(self) -> dict[str, Assessment]:
        own = {name: self._assess(r.spec, r.ifname) for name, r in self.runners.items()}
        groups: dict[str, list[tuple[str, int, Assessment]]] = {}
        for name, runner in self.runners.items():
            if runner.spec.sync_group is not None:
                member = (name, runner.spec.priority, own[name])
                groups.setdefault(runner.spec.sync_group, []).append(member)
        for members in groups.values():
            own.update(share_group(members))
        return own

    def _reassess(self) -> None:
        """Feed every runner the current verdict of its checks, tracked links and group."""
        for name, assessment in self._assess_all().items():
            runner = self.runners.get(name)
            if runner is not None:
                runner.apply(assessment)  # Idempotent: acts only where the state machine differs.

    def _on_check(self, name: str, state: CheckState) -> None:
        self._check_health[name] = state.health == Health.OK
        self._reassess()
        if self._balancer is not None and name in self._rs_check_names:
            self._balancer.request()

    def _ipvs_view(self) -> View:
        # A real server whose check has not reported yet counts as its check's initFail says
        # (keepalived's `alpha`): healthy by default, failed until proven with initFail: true.
        health = {c.name: not c.init_fail for c in self._rs_checks}
        health.update(self._check_health)
        masters = {n for n, r in self.runners.items() if r.router.state == fsm.State.MASTER}
        undecided = {n for n, r in self.runners.items() if _undecided(r.router)}
        return View(
            health,
            active_here(self.spec.virtual_servers, self._carrier, masters),
            {
                vs.name
                for vs in self.spec.virtual_servers
                if vs.placement == Placement.HOLDER and self._carrier.get(vs.name) in undecided
            },
        )

    def _maintenance_file_present(self) -> bool:
        path = self.options.maintenance_file
        return path is not None and path.exists()

    def _apply_maintenance(self, source: str) -> None:
        on = self.maintenance
        log.info("event=maintenance on=%s source=%s", on, source)
        for runner in list(self.runners.values()):
            runner.handle(fsm.Maintenance(on))

    # --- receive path -------------------------------------------------------------------------

    def _reindex(self) -> None:
        """Rebuild the receive-path lookup tables; called whenever the set of runners changes."""
        by_vrid: dict[tuple[str, int], dict[int, list[InstanceRunner]]] = {}
        own: dict[tuple[str, int], set[IPAddress]] = {}
        for runner in self.runners.values():
            key = (runner.ifname, runner.spec.family)
            by_vrid.setdefault(key, {}).setdefault(runner.spec.vrid, []).append(runner)
            own.setdefault(key, set()).add(runner.primary)
        self._by_vrid, self._own_sources = by_vrid, own

    def _on_datagram(self, key: tuple[str, int], dgram: ReceivedDatagram) -> None:
        if dgram.source in self._own_sources.get(key, ()):
            return  # Our own advert looped back (another instance on this socket sent it).
        vrid = dgram.payload[1] if len(dgram.payload) > 1 else -1
        mine = self._by_vrid.get(key, {}).get(vrid, [])
        try:
            advert = decode(dgram.payload, dgram.source, dgram.destination)
        except DecodeError as exc:
            self._drop(mine, exc.reason, dgram, exc.detail)
            return
        if not mine:
            self.global_dropped[str(DropReason.OTHER_VRID)] += 1
            return
        for runner in mine:
            reason = check(advert, dgram.ttl, dgram.source, runner.expect)
            if reason is None:
                runner.on_advertisement(advert, dgram.source)
            else:
                self._drop([runner], reason, dgram, "", advert)

    def _drop(
        self,
        runners: Sequence[InstanceRunner],
        reason: DropReason,
        dgram: ReceivedDatagram,
        detail: str,
        advert: Advertisement | None = None,
    ) -> None:
        if runners:
            for runner in runners:
                runner.counters.drop(reason)
        else:
            self.global_dropped[str(reason)] += 1
        if reason in MISCONFIGURATION:
            named: Sequence[InstanceRunner | None] = runners or [None]
            for target in named:
                name = "-" if target is None else target.name
                allowed, held = self._drop_log.allow(f"{name}/{reason}", time.monotonic())
                if allowed:
                    # Described only when it is logged: the drop itself is on the receive path.
                    if advert is not None and target is not None:
                        detail = _received(advert, target)
                    log.warning(
                        "event=advert_dropped reason=%s instance=%s source=%s detail=%r "
                        "suppressed_since_last=%d",
                        reason,
                        name,
                        dgram.source,
                        detail,
                        held,
                    )
        elif reason != DropReason.OTHER_VRID:
            log.debug(
                "event=advert_dropped reason=%s source=%s detail=%r", reason, dgram.source, detail
            )

    def _on_link(self, ifname: str, up: bool) -> None:
        known = self._interfaces.get(ifname)
        if known is not None and known.up == up:
            return
        log.info("event=link_changed interface=%s up=%s", ifname, up)
        if known is None and up and self.unresolved:
            # An interface appeared: instances that could not be placed may fit now.
            asyncio.get_running_loop().create_task(self._retry_unresolved())
        if known is not None:
            self._interfaces[ifname] = _with_up(known, up)
        self._link_up[ifname] = up
        self._reassess()

    async def _retry_unresolved(self) -> None:
        async with self._reload_lock:
            await self._refresh_interfaces()
            for inst in self.spec.instances:
                if inst.name in self.unresolved and inst.name not in self.runners:
                    self._start_instance(inst)

    # --- Effects (called by runners) ----------------------------------------------------------

    def send_advertisement(self, runner: InstanceRunner, advert: Advertisement) -> None:
        sock = self._sockets[(runner.ifname, runner.spec.family)]
        spec = runner.spec
        targets: Sequence[IPAddress] = spec.unicast_peers or (spec.group,)
        for target in targets:
            sock.send(encode(advert, runner.primary, target), target, runner.primary)

    async def add_addresses(self, runner: InstanceRunner, addresses: Sequence[IPInterface]) -> None:
        assert self._addresses is not None
        await self._addresses.add(runner.ifname, addresses, index=runner.ifindex)

    async def remove_addresses(
        self, runner: InstanceRunner, addresses: Sequence[IPInterface]
    ) -> None:
        assert self._addresses is not None
        await self._addresses.remove(runner.ifname, addresses)

    def announce(self, runner: InstanceRunner, addresses: Sequence[IPInterface]) -> None:
        assert self._announcer is not None
        iface = self._interfaces[runner.ifname]
        garp = runner.spec.garp
        self._announcer.start(
            runner.name,
            iface.name,
            iface.index,
            iface.mac,
            addresses,
            count=garp.count,
            interval=garp.interval,
            repeat_delay=garp.repeat_delay,
            refresh=garp.refresh,
        )

    def stop_announce(self, runner: InstanceRunner) -> None:
        assert self._announcer is not None
        self._announcer.stop(runner.name)

    def transitioned(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        log.info(
            "event=transition instance=%s vrid=%d from=%s to=%s reason=%r priority=%d master=%s",
            runner.name,
            runner.spec.vrid,
            transition.from_state,
            transition.to_state,
            transition.reason,
            runner.router.priority,
            runner.router.master_address,
        )
        if self._notifier is not None:
            # keepalived calls leaving the instance (shutdown, removal) "STOP".
            state = "STOP" if transition.to_state == fsm.State.INIT else str(transition.to_state)
            self._notifier.notify(runner.name, runner.spec.notify, state, runner.router.priority)
        if self._balancer is not None and fsm.State.MASTER in (
            transition.from_state,
            transition.to_state,
        ):
            self._balancer.request()  # placement: holder follows MASTER

    def _siblings(self, runner: InstanceRunner) -> list[InstanceRunner]:
        group = runner.spec.sync_group
        if group is None:
            return []
        return [r for r in self.runners.values() if r is not runner and r.spec.sync_group == group]

    def state_changed(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        siblings = {r.name: r for r in self._siblings(runner)}
        others = [(name, r.router) for name, r in siblings.items()]
        for name, event in sync.followers(runner.name, transition, others):
            siblings[name].handle(event)

    def group_ready(self, runner: InstanceRunner, now: float) -> bool:
        return sync.may_take_over([r.router for r in self._siblings(runner)], now)

    # --- configuration ------------------------------------------------------------------------

    async def _poll_config(self) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            stamp = _stamp(self.options.config_path)
            if stamp != self._config_stamp:
                await self.reload("file changed")
            present = self._maintenance_file_present()
            if present != self._maintenance_file_on:
                self._maintenance_file_on = present
                self._apply_maintenance(f"file {self.options.maintenance_file}")

    async def reload(self, trigger: str) -> bool:
        async with self._reload_lock:
            path = self.options.config_path
            self._config_stamp = _stamp(path)
            try:
                new = load_spec(path.read_bytes(), str(path))
            except (OSError, ConfigError) as exc:
                self._reload_error = str(exc)
                log.error("event=reload_rejected trigger=%r keeping=running error=%s", trigger, exc)
                return False
            problems = verify(self.options.scripts, new.scripts())
            if problems:
                self._reload_error = f"{path}: scripts refused: " + "; ".join(problems)
                log.error(
                    "event=reload_rejected trigger=%r keeping=running error=%r",
                    trigger,
                    self._reload_error,
                )
                return False
            self._reload_error = None
            was_maintenance = self.maintenance
            old_checks = {c.name: c for c in self.spec.checks + self._rs_checks}
            rs_checks = _real_server_checks(new)
            new_checks = new.checks + rs_checks
            unchanged = {c.name for c in new_checks if old_checks.get(c.name) == c}
            self._check_health = {n: ok for n, ok in self._check_health.items() if n in unchanged}
            self._rs_checks, self._carrier = rs_checks, _carriers(new)
            self._rs_check_names = frozenset(c.name for c in rs_checks)
            if self._checks is not None:
                self._checks.update(new_checks)
            old_by_name = {i.name: i for i in self.spec.instances}
            new_by_name = {i.name: i for i in new.instances}
            plan = plan_reload(old_by_name, new_by_name)
            log.info(
                "event=reload trigger=%r keep=%s reconfigure=%s replace=%s start=%s stop=%s",
                trigger,
                list(plan.keep),
                list(plan.reconfigure),
                list(plan.replace),
                list(plan.start),
                list(plan.stop),
            )
            self.spec = new
            self._reloads += 1
            for name in plan.stop + plan.replace:
                await self._stop_instance(name, "removed by reload")
            await self._refresh_interfaces()
            for name in plan.reconfigure:
                runner = self.runners.get(name)
                if runner is None:
                    self._start_instance(new_by_name[name])
                else:
                    spec = new_by_name[name]
                    runner.reconfigure(spec, self._assess(spec, runner.ifname))
            for name in plan.replace + plan.start:
                self._start_instance(new_by_name[name])
            # Instances that could not be placed before may fit now (e.g. interface appeared).
            for name in list(self.unresolved):
                if name in new_by_name and name not in self.runners:
                    self._start_instance(new_by_name[name])
            self._reassess()
            if self.maintenance != was_maintenance:
                self._apply_maintenance("config")
            if self._balancer is not None:
                self._balancer.configure(new.virtual_servers)
            return True

    # --- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        config = {
            "path": str(self.options.config_path),
            "reloads": self._reloads,
            "lastReloadError": self._reload_error,
        }
        checks = {} if self._checks is None else self._checks.states()
        wall_offset = time.time() - asyncio.get_running_loop().time()
        return agent_status(
            self.runners.values(),
            self.unresolved,
            self.global_dropped,
            config,
            checks=checks,
            wall_offset=wall_offset,
            maintenance={
                "active": self.maintenance,
                "config": self.spec.maintenance,
                "file": None
                if self.options.maintenance_file is None
                else str(self.options.maintenance_file),
                "filePresent": self._maintenance_file_on,
            },
            notify={} if self._notifier is None else self._notifier.stats,
            ipvs=None if self._balancer is None else self._balancer.status(checks, wall_offset),
        )


def _real_server_checks(spec: NodeAssignmentSpec) -> tuple[Check, ...]:
    return tuple(c for vs in spec.virtual_servers for _, c in vs.real_server_checks())


def _undecided(router: fsm.Router) -> bool:
    """Started (or back from FAULT) and still waiting to learn whether it is MASTER: no master
    heard yet and Master_Down still running."""
    if router.state == fsm.State.INIT:
        return True
    return (
        router.state == fsm.State.BACKUP
        and router.master_address is None
        and router.master_down_deadline is not None
        and not router.maintenance
    )


def _carriers(spec: NodeAssignmentSpec) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    index = spec.instance_index()
    for vs in spec.virtual_servers:
        inst = spec.instance_for(vs, index)
        out[vs.name] = None if inst is None else inst.name
    return out


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _af(family: int) -> int:
    # The schema speaks IP versions (4, 6); sockets and the topology helpers speak AF_* numbers.
    return AF_INET if family == 4 else AF_INET6


def _with_up(iface: InterfaceInfo, up: bool) -> InterfaceInfo:
    return replace(iface, up=up)


async def run_agent(options: AgentOptions, spec: NodeAssignmentSpec) -> None:
    agent = Agent(options, spec)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run()


def _received(advert: Advertisement, runner: InstanceRunner) -> str:
    """What the peer sent against what we expect: the fix for a misconfiguration is in the diff."""
    expect = runner.expect
    theirs = ",".join(str(a) for a in advert.addresses)
    ours = ",".join(sorted(str(a) for a in expect.addresses))
    return (
        f"version {advert.version}/{expect.version} "
        f"interval_cs {advert.interval_cs}/{expect.interval_cs} "
        f"addresses {theirs}/{ours} (theirs/ours)"
    )
