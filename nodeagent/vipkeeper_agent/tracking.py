"""What checks and links do to an instance: its effective priority and its fault reasons. Pure.

keepalived's rules, in one place for every kind of tracked object:
- weight > 0 adds while the object is healthy, weight < 0 subtracts while it is not;
- weight 0 puts the instance in FAULT while the object is not healthy;
- the result is clamped to 1-254, and the address owner's 255 never moves.
A sync group shares its faults and its weights: one member in FAULT puts every member in FAULT,
and a check that lowers one member lowers them all, so the group's VIPs move as one (keepalived
refuses weights in sync groups unless told otherwise for exactly this reason).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vipkeeper_api.models import OWNER_PRIORITY, VrrpInstance

MIN_PRIORITY = 1
MAX_PRIORITY = 254


@dataclass(frozen=True, slots=True)
class Assessment:
    priority: int
    #: Why the instance cannot serve; empty when it can.
    faults: tuple[str, ...] = ()
    #: Human-readable contributions, e.g. "check nginx down -20", for status and logs.
    adjustments: tuple[str, ...] = ()
    #: The sum of the weights in effect (before clamping).
    delta: int = 0
    #: The instance's own interface is up (a master in FAULT can still resign on the wire).
    link_up: bool = True


@dataclass(frozen=True, slots=True)
class Observations:
    """What the node currently knows; missing entries count as unknown (see ``assess``)."""

    #: Check name -> healthy. A check without a result yet is absent and counts as its initial state.
    checks: Mapping[str, bool]
    #: Interface name -> link up. An interface that does not exist is absent and counts as down.
    links: Mapping[str, bool]


def _weigh(
    label: str, healthy: bool, weight: int, adjustments: list[str], faults: list[str]
) -> int:
    if weight == 0:
        if not healthy:
            faults.append(f"{label} down")
        return 0
    if weight > 0 and healthy:
        adjustments.append(f"{label} up +{weight}")
        return weight
    if weight < 0 and not healthy:
        adjustments.append(f"{label} down {weight}")
        return weight
    return 0


def assess(
    inst: VrrpInstance,
    interface: str,
    check_weights: Mapping[str, int],
    initial_health: Mapping[str, bool],
    seen: Observations,
) -> Assessment:
    """Effective priority and faults of one instance.

    ``check_weights`` maps a check name to its own weight (a trackChecks entry may override it);
    ``initial_health`` is each check's health before its first result (keepalived's init_fail).
    """
    faults: list[str] = []
    adjustments: list[str] = []
    link_up = seen.links.get(interface, False)
    if not link_up:
        faults.append(f"interface {interface} down")
    delta = 0
    for track in inst.track_checks:
        weight = check_weights[track.check] if track.weight is None else track.weight
        healthy = seen.checks.get(track.check, initial_health.get(track.check, True))
        delta += _weigh(f"check {track.check}", healthy, weight, adjustments, faults)
    for link in inst.track_interfaces:
        healthy = seen.links.get(link.interface, False)
        delta += _weigh(f"interface {link.interface}", healthy, link.weight, adjustments, faults)
    return Assessment(
        _effective(inst.priority, delta), tuple(faults), tuple(adjustments), delta, link_up
    )


def _effective(configured: int, delta: int) -> int:
    if configured == OWNER_PRIORITY:
        return OWNER_PRIORITY
    return min(MAX_PRIORITY, max(MIN_PRIORITY, configured + delta))


def share_group(
    members: Sequence[tuple[str, int, Assessment]],
) -> dict[str, Assessment]:
    """Give every member of one sync group (name, configured priority, own assessment) the
    faults and weights of all, so that the group's VIPs never end up split across nodes."""
    total = sum(a.delta for _, _, a in members)
    out: dict[str, Assessment] = {}
    for name, configured, own in members:
        borrowed_faults = tuple(
            f"sync group member {other}: {fault}"
            for other, _, theirs in members
            if other != name
            for fault in theirs.faults
        )
        borrowed = tuple(
            f"sync group member {other}: {adjustment}"
            for other, _, theirs in members
            if other != name
            for adjustment in theirs.adjustments
        )
        out[name] = Assessment(
            _effective(configured, total),
            own.faults + borrowed_faults,
            own.adjustments + borrowed,
            total,
            own.link_up,
        )
    return out
