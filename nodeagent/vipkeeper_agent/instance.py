"""Drives one VRRP instance: feeds the pure state machine, arms its timer, executes its actions.

The runner owns no sockets or netlink handles; it calls an ``Effects`` object for that, so the
whole driver can be exercised in tests with a fake.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vipkeeper_agent.tracking import Assessment
from vipkeeper_agent.vrrp import fsm
from vipkeeper_agent.vrrp.packet import Advertisement, DropReason
from vipkeeper_agent.vrrp.receive import Expectation
from vipkeeper_api.models import VrrpInstance

log = logging.getLogger("vipkeeper.instance")

#: How many transitions a runner keeps for status and metrics (the takeover histogram).
TRANSITION_LOG = 32
#: How early the master-down timer wakes the loop, to be on time despite epoll's rounding.
TAKEOVER_WAKE_EARLY = 0.0015

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class Effects(Protocol):
    """What a runner needs from the outside world (implemented by the supervisor)."""

    def send_advertisement(self, runner: InstanceRunner, advert: Advertisement) -> None: ...

    async def add_addresses(
        self, runner: InstanceRunner, addresses: Sequence[IPInterface]
    ) -> None: ...

    async def remove_addresses(
        self, runner: InstanceRunner, addresses: Sequence[IPInterface]
    ) -> None: ...

    def announce(self, runner: InstanceRunner, addresses: Sequence[IPInterface]) -> None: ...

    def stop_announce(self, runner: InstanceRunner) -> None: ...

    def transitioned(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        """Queued with the other actions: runs after the VIPs were added or removed."""

    def state_changed(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        """Called synchronously on every transition, for sync groups to follow at once."""

    def group_ready(self, runner: InstanceRunner, now: float) -> bool:
        """Whether the runner's sync group lets it take over now (True outside a group)."""


def router_config(spec: VrrpInstance, primary: IPAddress) -> fsm.RouterConfig:
    return fsm.RouterConfig(
        vrid=spec.vrid,
        version=spec.version,
        priority=spec.priority,
        interval_cs=spec.advert_interval_cs,
        addresses=spec.addresses,
        primary_address=primary,
        preempt=spec.preempt,
        preempt_delay=spec.preempt_delay,
    )


def expectation(spec: VrrpInstance) -> Expectation:
    auth_data = spec.auth.password.encode() if spec.auth else b""
    return Expectation(
        version=spec.version,
        vrid=spec.vrid,
        interval_cs=spec.advert_interval_cs,
        addresses=frozenset(a.ip for a in spec.addresses),
        auth_type=1 if spec.auth else 0,
        auth_data=auth_data,
        peers=frozenset(spec.unicast_peers),
    )


@dataclass
class Counters:
    adverts_sent: int = 0
    adverts_received: int = 0
    send_errors: int = 0
    address_errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    #: By the state entered: counts flaps that happen between two looks at the state.
    transitions: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: DropReason | str) -> None:
        self.dropped[str(reason)] += 1


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """A transition whose actions are done (for MASTER: the VIPs are in place)."""

    #: 1, 2, ... per runner: lets a reader (the metrics) take each transition once.
    seq: int
    transition: fsm.Transition
    #: BACKUP -> MASTER after hearing a master in that BACKUP spell: seconds from the last
    #: advert heard to the VIPs in place, the outage as this node saw it. None otherwise (e.g.
    #: at startup with no master seen).
    takeover: float | None


class InstanceRunner:
    """One VRRP instance bound to a resolved interface and source address."""

    def __init__(
        self,
        spec: VrrpInstance,
        ifname: str,
        ifindex: int,
        primary: IPAddress,
        effects: Effects,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.spec = spec
        self.ifname = ifname
        self.ifindex = ifindex
        self.primary = primary
        self.effects = effects
        self.loop = loop
        self.expect = expectation(spec)
        self.counters = Counters()
        self.transition_log: deque[TransitionRecord] = deque(maxlen=TRANSITION_LOG)
        self._transition_seq = 0
        #: Loop time of the last advert that held this backup back, for the takeover duration.
        self._last_advert_at: float | None = None
        #: Transitions whose Notify has not run yet: (transition, seq, advert heard or None).
        self._unlogged: deque[tuple[fsm.Transition, int, float | None]] = deque()
        self.router = fsm.new_router(router_config(spec, primary), loop.time())
        #: The latest verdict of checks and tracked links (see tracking.assess).
        self.assessment = Assessment(spec.priority)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pending: asyncio.Queue[list[fsm.Action]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        # Wall time of loop time 0, so that status can show real timestamps for monotonic ones.
        self._wall_offset = time.time() - loop.time()

    @property
    def name(self) -> str:
        return self.spec.name

    def wall(self, loop_time: float) -> float:
        return loop_time + self._wall_offset

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, assessment: Assessment, maintenance: bool) -> None:
        self._worker = self.loop.create_task(self._execute_forever(), name=f"vrrp-{self.name}")
        self.assessment = assessment
        self.router = fsm.replace_priority(self.router, assessment.priority, maintenance)
        if assessment.faults:
            self.handle(fsm.Startup(link_up=False, reason="; ".join(assessment.faults)))
        else:
            self.handle(fsm.Startup())

    async def stop(self, reason: str = "shutdown") -> None:
        """Resign (priority 0 if master), drop VIPs, and wait until that is done."""
        self.handle(fsm.Shutdown(reason))
        self._cancel_timer()
        await self._pending.join()
        if self._worker is not None:
            self._worker.cancel()

    def reconfigure(self, spec: VrrpInstance, assessment: Assessment) -> None:
        self.spec = spec
        self.expect = expectation(spec)
        self.assessment = assessment
        # Faults are left to the supervisor's next apply(): it knows the sync group's as well.
        self.handle(fsm.Reconfigure(router_config(spec, self.primary), assessment.priority))

    def apply(self, assessment: Assessment) -> None:
        """Bring the state machine in line with the checks' and links' latest verdict."""
        self.assessment = assessment
        state = self.router.state
        if assessment.faults and state not in (fsm.State.FAULT, fsm.State.INIT):
            self.handle(fsm.Fault("; ".join(assessment.faults), resign=assessment.link_up))
        if assessment.priority != self.router.priority:
            self.handle(fsm.PriorityChanged(assessment.priority))
        if not assessment.faults and self.router.state == fsm.State.FAULT:
            self.handle(fsm.FaultCleared("recovered"))

    # --- events -------------------------------------------------------------------------------

    def handle(self, event: fsm.Event, now: float | None = None) -> None:
        now = self.loop.time() if now is None else now
        before = self.router.last_transition
        self.router, actions = fsm.step(self.router, event, now)
        # Adverts go out here, synchronously, so nothing queued behind netlink can delay them.
        queued: list[fsm.Action] = []
        for action in actions:
            if isinstance(action, fsm.SendAdvertisement) and not queued:
                self._send(action)
            else:
                queued.append(action)
        if queued:
            self._pending.put_nowait(queued)
        self._rearm()
        transition = self.router.last_transition
        if transition is not before and transition is not None:
            self._count(transition, before)
            # After this runner's own state is settled: a sync group sibling may call back in.
            self.effects.state_changed(self, transition)

    def _count(self, transition: fsm.Transition, before: fsm.Transition | None) -> None:
        self.counters.transitions[str(transition.to_state)] += 1
        self._transition_seq += 1
        heard = self._last_advert_at
        # An advert from before this BACKUP spell (say, before an hour in FAULT) dates no outage.
        if not (
            transition.from_state == fsm.State.BACKUP
            and transition.to_state == fsm.State.MASTER
            and heard is not None
            and (before is None or heard >= before.at)
        ):
            heard = None
        self._unlogged.append((transition, self._transition_seq, heard))

    def _log(self, transition: fsm.Transition) -> None:
        """At the transition's Notify, i.e. once the VIPs were added or removed."""
        while self._unlogged:
            pending, seq, heard = self._unlogged.popleft()
            # Older entries are transitions whose actions failed before their Notify.
            if pending is transition:
                takeover = None if heard is None else self.loop.time() - heard
                self.transition_log.append(TransitionRecord(seq, transition, takeover))
                return

    def on_advertisement(self, advert: Advertisement, source: IPAddress) -> None:
        self.counters.adverts_received += 1
        now = self.loop.time()
        deadline = self.router.master_down_deadline
        self.handle(fsm.AdvertReceived(source, advert.priority, advert.interval_cs), now)
        # Master_Down re-armed: a master we defer to (or one resigning) spoke, so a takeover
        # after this is an outage. A lower master we are about to preempt does not count.
        if self.router.state == fsm.State.BACKUP and self.router.master_down_deadline != deadline:
            self._last_advert_at = now

    # --- timer --------------------------------------------------------------------------------

    def _rearm(self) -> None:
        deadline = fsm.next_deadline(self.router)
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None:
            self._timer_at = deadline
            # The event loop wakes up to a millisecond late (epoll rounds its timeout up). On the
            # takeover path that millisecond is the whole difference to keepalived's timerfd, so
            # the master-down timer wakes early and sleeps the rest precisely (see _fire).
            early = TAKEOVER_WAKE_EARLY if self.router.state == fsm.State.BACKUP else 0.0
            self._timer = self.loop.call_at(deadline - early, self._fire, deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _fire(self, deadline: float) -> None:
        self._timer = None
        self._timer_at = None
        remaining = deadline - self.loop.time()
        if 0 < remaining <= TAKEOVER_WAKE_EARLY:
            time.sleep(remaining)  # At most ~1 ms, and only when a backup's timer expires.
        # The deadline, not a hair before it, is what the FSM must see.
        now = max(self.loop.time(), deadline)
        ready = self.router.state != fsm.State.BACKUP or self.effects.group_ready(self, now)
        self.handle(fsm.TimerExpired(group_ready=ready), now)

    # --- actions ------------------------------------------------------------------------------

    def _send(self, action: fsm.SendAdvertisement) -> None:
        spec = self.spec
        advert = Advertisement(
            version=spec.version,
            vrid=spec.vrid,
            priority=action.priority,
            interval_cs=action.interval_cs,
            addresses=tuple(a.ip for a in spec.addresses),
            auth_type=self.expect.auth_type,
            auth_data=self.expect.auth_data,
        )
        try:
            self.effects.send_advertisement(self, advert)
            self.counters.adverts_sent += 1
        except OSError as exc:
            self.counters.send_errors += 1
            log.warning("event=send_failed instance=%s error=%r", self.name, exc)

    async def _execute_forever(self) -> None:
        while True:
            actions = await self._pending.get()
            try:
                await self._execute(actions)
            except Exception:
                log.exception("event=action_failed instance=%s", self.name)
            finally:
                self._pending.task_done()

    async def _execute(self, actions: list[fsm.Action]) -> None:
        for action in actions:
            match action:
                case fsm.SendAdvertisement():
                    self._send(action)
                case fsm.AddAddresses(addresses=addresses):
                    try:
                        await self.effects.add_addresses(self, addresses)
                    except OSError as exc:
                        self.counters.address_errors += 1
                        log.error("event=add_failed instance=%s error=%r", self.name, exc)
                case fsm.RemoveAddresses(addresses=addresses):
                    try:
                        await self.effects.remove_addresses(self, addresses)
                    except OSError as exc:
                        self.counters.address_errors += 1
                        log.error("event=remove_failed instance=%s error=%r", self.name, exc)
                case fsm.Announce(addresses=addresses):
                    self.effects.announce(self, addresses)
                case fsm.StopAnnounce():
                    self.effects.stop_announce(self)
                case fsm.Notify(transition=transition):
                    self._log(transition)
                    self.effects.transitioned(self, transition)
