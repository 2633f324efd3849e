"""The VRRP state machine of RFC 5798 §6.4 (and RFC 3768 §6.4 for version 2), as a pure function.

``step(router, event, now)`` returns the new router and the ordered actions the driver must carry
out. Timers are deadlines kept in the router; ``next_deadline`` tells the driver when to come back
with ``TimerExpired``. Nothing here reads a clock or touches the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from enum import StrEnum

from vipkeeper_agent.vrrp.timers import advert_interval, master_down_interval, skew_time

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

OWNER_PRIORITY = 255
RESIGN_PRIORITY = 0


class State(StrEnum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"
    FAULT = "FAULT"


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """What the state machine needs of one instance; resolved by the driver from the spec."""

    vrid: int
    version: int
    priority: int
    interval_cs: int
    addresses: tuple[IPInterface, ...]
    #: This node's own address on the segment: the tie-breaker of RFC 5798 §6.4.3.
    primary_address: IPAddress
    preempt: bool = True
    preempt_delay: float = 0.0

    @property
    def owner(self) -> bool:
        return self.priority == OWNER_PRIORITY


@dataclass(frozen=True, slots=True)
class Transition:
    from_state: State
    to_state: State
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class Router:
    config: RouterConfig
    state: State = State.INIT
    #: Effective priority (the configured one until checks adjust it).
    priority: int = 0
    master_adver_interval_cs: int = 0
    master_address: IPAddress | None = None
    adver_deadline: float | None = None
    master_down_deadline: float | None = None
    #: When this router last became BACKUP from INIT or FAULT; preempt_delay counts from here.
    backup_since: float | None = None
    #: Maintenance: hand over and stay BACKUP (Master_Down is never armed).
    maintenance: bool = False
    #: Master_Down expired but the sync group is not ready to follow: wait as BACKUP.
    awaiting_group: bool = False
    since: float = 0.0
    last_transition: Transition | None = None


def replace_priority(router: Router, priority: int, maintenance: bool) -> Router:
    """Set the starting conditions of a router that has not started yet."""
    if router.state != State.INIT:
        raise ValueError("only a router in INIT can be given its starting priority")
    owner = router.config.owner
    return replace(
        router, priority=router.config.priority if owner else priority, maintenance=maintenance
    )


def new_router(config: RouterConfig, now: float) -> Router:
    return Router(
        config=config,
        priority=config.priority,
        master_adver_interval_cs=config.interval_cs,
        since=now,
    )


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Startup:
    link_up: bool = True
    #: Why the instance starts in FAULT when ``link_up`` is False.
    reason: str = "interface down"


@dataclass(frozen=True, slots=True)
class AdvertReceived:
    """An advertisement for our VRID that passed every receive check."""

    source: IPAddress
    priority: int
    interval_cs: int


@dataclass(frozen=True, slots=True)
class TimerExpired:
    #: False while other members of the sync group still hear their master: stay BACKUP rather
    #: than split the group (keepalived prefers backup to thrashing).
    group_ready: bool = True


@dataclass(frozen=True, slots=True)
class Shutdown:
    reason: str = "shutdown"


@dataclass(frozen=True, slots=True)
class Fault:
    """The instance cannot serve: its link, a tracked link or a weight-0 check is down."""

    reason: str = "interface down"
    #: Whether a master can still tell the backups (its own link is up): then it resigns with
    #: a priority-0 advert and they take over after Skew_Time instead of Master_Down.
    resign: bool = False


@dataclass(frozen=True, slots=True)
class FaultCleared:
    reason: str = "interface up"


@dataclass(frozen=True, slots=True)
class PriorityChanged:
    """Checks or tracked links moved the effective priority."""

    priority: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Maintenance:
    on: bool


@dataclass(frozen=True, slots=True)
class Promote:
    """A sync group member became MASTER: follow it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Demote:
    """A sync group member left MASTER for BACKUP: follow it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """New settings for the same VRID, version and family (anything else is a new instance)."""

    config: RouterConfig
    #: The effective priority under the new settings (checks may hold it below the configured one).
    priority: int | None = None


Event = (
    Startup
    | AdvertReceived
    | TimerExpired
    | Shutdown
    | Fault
    | FaultCleared
    | PriorityChanged
    | Maintenance
    | Promote
    | Demote
    | Reconfigure
)


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddAddresses:
    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True, slots=True)
class RemoveAddresses:
    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True, slots=True)
class SendAdvertisement:
    priority: int
    interval_cs: int


@dataclass(frozen=True, slots=True)
class Announce:
    """Start the gratuitous ARP / unsolicited NA schedule for these addresses."""

    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True, slots=True)
class StopAnnounce:
    pass


@dataclass(frozen=True, slots=True)
class Notify:
    transition: Transition


Action = AddAddresses | RemoveAddresses | SendAdvertisement | Announce | StopAnnounce | Notify


@dataclass(slots=True)
class _Result:
    router: Router
    actions: list[Action] = field(default_factory=list)


# --- helpers ----------------------------------------------------------------------------------


def _master_down(router: Router, now: float) -> float | None:
    if router.maintenance:
        return None
    cfg = router.config
    return now + master_down_interval(router.priority, router.master_adver_interval_cs, cfg.version)


def _rearm_master_down(router: Router, now: float) -> Router:
    return replace(router, master_down_deadline=_master_down(router, now), awaiting_group=False)


def _enter(result: _Result, to: State, reason: str, now: float) -> None:
    router = result.router
    transition = Transition(router.state, to, reason, now)
    result.router = replace(router, state=to, since=now, last_transition=transition)
    result.actions.append(Notify(transition))


def _become_master(result: _Result, reason: str, now: float) -> None:
    router = result.router
    cfg = router.config
    # RFC 5798 §6.4.1/§6.4.2 order: advertise first (it claims mastership on the wire and must
    # not wait behind netlink), then the addresses, then announce them once they answer.
    result.actions += [
        SendAdvertisement(router.priority, cfg.interval_cs),
        AddAddresses(cfg.addresses),
        Announce(cfg.addresses),
    ]
    result.router = replace(
        router,
        master_address=cfg.primary_address,
        master_adver_interval_cs=cfg.interval_cs,
        adver_deadline=now + advert_interval(cfg.interval_cs),
        master_down_deadline=None,
        awaiting_group=False,
    )
    _enter(result, State.MASTER, reason, now)


def _become_backup(
    result: _Result, reason: str, now: float, master: IPAddress | None, master_interval_cs: int
) -> None:
    router = result.router
    was = router.state
    if was == State.MASTER:
        result.actions += [StopAnnounce(), RemoveAddresses(router.config.addresses)]
    # RFC 5798 §6.4.3: a v3 backup adopts the master's advertised interval; v2 intervals must match.
    mai = master_interval_cs if router.config.version == 3 else router.config.interval_cs
    router = replace(
        router,
        master_address=master,
        master_adver_interval_cs=mai,
        adver_deadline=None,
        backup_since=now if was in (State.INIT, State.FAULT) else router.backup_since,
    )
    result.router = _rearm_master_down(router, now)
    _enter(result, State.BACKUP, reason, now)


def _resign(result: _Result, reason: str, now: float) -> None:
    """Leave MASTER the clean way: the priority-0 advert lets the backups take over after Skew_Time."""
    router = result.router
    result.actions.append(SendAdvertisement(RESIGN_PRIORITY, router.config.interval_cs))
    _become_backup(result, reason, now, None, router.config.interval_cs)


def _start(result: _Result, reason: str, now: float) -> None:
    router = result.router
    if router.config.owner and not router.maintenance:
        _become_master(result, f"{reason}: address owner (priority 255)", now)
    else:
        _become_backup(result, reason, now, None, router.config.interval_cs)


def _address_key(address: IPAddress) -> int:
    # Both sides are of the instance's family; int() keeps mypy from mixing v4 and v6 orderings.
    return int(address)


def _preempt_held(router: Router, now: float) -> bool:
    delay = router.config.preempt_delay
    return delay > 0 and router.backup_since is not None and now < router.backup_since + delay


# --- per-state handlers -----------------------------------------------------------------------


def _on_advert_backup(result: _Result, event: AdvertReceived, now: float) -> None:
    router = result.router
    if event.priority == RESIGN_PRIORITY:
        # The master is resigning: take over after Skew_Time only (RFC 5798 §6.4.2).
        if not router.maintenance:
            skew = skew_time(
                router.priority, router.master_adver_interval_cs, router.config.version
            )
            result.router = replace(router, master_down_deadline=now + skew, awaiting_group=False)
        return
    if (
        not router.config.preempt
        or event.priority >= router.priority
        or _preempt_held(router, now)
        or router.maintenance
    ):
        mai = event.interval_cs if router.config.version == 3 else router.master_adver_interval_cs
        router = replace(router, master_address=event.source, master_adver_interval_cs=mai)
        result.router = _rearm_master_down(router, now)
    # Otherwise: a lower-priority master and we may preempt; let Master_Down expire.


def _on_advert_master(result: _Result, event: AdvertReceived, now: float) -> None:
    router = result.router
    if event.priority == RESIGN_PRIORITY:
        # Someone else resigned while we are master: reassert at once so backups don't take over.
        result.actions.append(SendAdvertisement(router.priority, router.config.interval_cs))
        result.router = replace(
            router, adver_deadline=now + advert_interval(router.config.interval_cs)
        )
        return
    higher = event.priority > router.priority
    tie_won_by_peer = event.priority == router.priority and _address_key(
        event.source
    ) > _address_key(router.config.primary_address)
    if higher or tie_won_by_peer:
        reason = (
            f"higher priority {event.priority} from {event.source}"
            if higher
            else f"equal priority from higher address {event.source}"
        )
        _become_backup(result, reason, now, event.source, event.interval_cs)


def _on_timer(result: _Result, now: float, group_ready: bool) -> None:
    router = result.router
    if (
        router.state == State.MASTER
        and router.adver_deadline is not None
        and now >= router.adver_deadline
    ):
        result.actions.append(SendAdvertisement(router.priority, router.config.interval_cs))
        interval = advert_interval(router.config.interval_cs)
        # Counted from the deadline, not from the (late) wake-up, so the loop's wake-up delays
        # do not add up into a slower advert rate; after a long stall, start afresh.
        late = now - router.adver_deadline
        base = router.adver_deadline if late < interval else now
        result.router = replace(router, adver_deadline=base + interval)
    elif (
        router.state == State.BACKUP
        and router.master_down_deadline is not None
        and now >= router.master_down_deadline
    ):
        if not group_ready:
            result.router = replace(router, awaiting_group=True)
            return
        reason = "master down" if router.master_address is not None else "no master seen"
        _become_master(result, reason, now)


def _on_reconfigure(result: _Result, new: RouterConfig, priority: int, now: float) -> None:
    router = result.router
    old = router.config
    if (new.vrid, new.version) != (old.vrid, old.version):
        raise ValueError("Reconfigure cannot change the VRID or version; replace the instance")
    router = replace(router, config=new, priority=new.priority if new.owner else priority)
    result.router = router
    if router.state == State.MASTER:
        removed = tuple(a for a in old.addresses if a not in new.addresses)
        added = tuple(a for a in new.addresses if a not in old.addresses)
        if removed:
            result.actions.append(RemoveAddresses(removed))
        if added:
            result.actions += [AddAddresses(added), Announce(added)]
        # Tell the backups about the new priority and interval right away.
        result.actions.append(SendAdvertisement(router.priority, new.interval_cs))
        result.router = replace(
            router,
            master_adver_interval_cs=new.interval_cs,
            adver_deadline=now + advert_interval(new.interval_cs),
        )
    elif router.state == State.BACKUP and new.version == 2:
        result.router = replace(router, master_adver_interval_cs=new.interval_cs)


def _on_priority(result: _Result, priority: int, now: float) -> None:
    router = result.router
    if router.config.owner or priority == router.priority:
        return  # The address owner's 255 never moves (RFC 5798 §5.2.4).
    router = replace(router, priority=priority)
    result.router = router
    if router.state == State.MASTER:
        # Tell the backups now rather than at the next advert: a lowered master is preempted
        # one Master_Down interval after this, not after this plus an advert interval.
        result.actions.append(SendAdvertisement(priority, router.config.interval_cs))
        result.router = replace(
            router, adver_deadline=now + advert_interval(router.config.interval_cs)
        )
    elif router.state == State.BACKUP:
        # Skew_Time depends on priority; keepalived re-arms Master_Down on every change.
        result.router = _rearm_master_down(router, now)


def _on_maintenance(result: _Result, on: bool, now: float) -> None:
    router = result.router
    if router.maintenance == on:
        return
    result.router = replace(router, maintenance=on)
    if on and router.state == State.MASTER:
        _resign(result, "maintenance", now)
    elif router.state == State.BACKUP:
        result.router = _rearm_master_down(result.router, now)


# --- the machine ------------------------------------------------------------------------------


def step(router: Router, event: Event, now: float) -> tuple[Router, list[Action]]:
    """Apply one event at time ``now``; return the new router and the actions, in order."""
    result = _Result(router)
    state = router.state
    match event:
        case Startup(link_up=link_up, reason=why) if state == State.INIT:
            if link_up:
                _start(result, "startup", now)
            else:
                _enter(result, State.FAULT, f"startup: {why}", now)
        case AdvertReceived() if state == State.BACKUP:
            _on_advert_backup(result, event, now)
        case AdvertReceived() if state == State.MASTER:
            _on_advert_master(result, event, now)
        case TimerExpired(group_ready=group_ready):
            _on_timer(result, now, group_ready)
        case Shutdown(reason=reason) if state != State.INIT:
            if state == State.MASTER:
                # The resignation goes first: the backups' Skew_Time starts when it arrives.
                result.actions += [
                    SendAdvertisement(RESIGN_PRIORITY, router.config.interval_cs),
                    StopAnnounce(),
                    RemoveAddresses(router.config.addresses),
                ]
            result.router = replace(router, adver_deadline=None, master_down_deadline=None)
            _enter(result, State.INIT, reason, now)
        case Fault(reason=reason, resign=resign) if state in (
            State.BACKUP,
            State.MASTER,
            State.INIT,
        ):
            if state == State.MASTER:
                if resign:
                    result.actions.append(
                        SendAdvertisement(RESIGN_PRIORITY, router.config.interval_cs)
                    )
                result.actions += [StopAnnounce(), RemoveAddresses(router.config.addresses)]
            result.router = replace(
                router,
                adver_deadline=None,
                master_down_deadline=None,
                master_address=None,
                awaiting_group=False,
            )
            _enter(result, State.FAULT, reason, now)
        case FaultCleared(reason=reason) if state == State.FAULT:
            _start(result, reason, now)
        case PriorityChanged(priority=priority):
            _on_priority(result, priority, now)
        case Maintenance(on=on):
            _on_maintenance(result, on, now)
        case Promote(reason=reason) if state == State.BACKUP and not router.maintenance:
            _become_master(result, reason, now)
        case Demote(reason=reason) if state == State.MASTER:
            _become_backup(result, reason, now, None, router.config.interval_cs)
        case Reconfigure(config=config, priority=priority):
            _on_reconfigure(result, config, config.priority if priority is None else priority, now)
        case _:
            pass  # The event means nothing in this state (e.g. an advert while in FAULT).
    return result.router, result.actions


def next_deadline(router: Router) -> float | None:
    """When the driver must call back with TimerExpired, or None if no timer is armed."""
    if router.state == State.MASTER:
        return router.adver_deadline
    if router.state == State.BACKUP and not router.awaiting_group:
        return router.master_down_deadline
    return None
