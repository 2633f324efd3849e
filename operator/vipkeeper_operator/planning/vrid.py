"""VRID allocation: unique per L2 segment and address family, stable, and the same in every replica.

Two VRRP routers with one VRID on one segment take each other's adverts for their own and fight
(or drop them as misconfigured): a clash is reported and the VirtualIP that loses it is not
rendered, never silently shared. IPv4 and IPv6 VRIDs are separate spaces (RFC 5798 §5.2.3), so a
dual-stack VirtualIP uses its VRID once in each family.

The segment is the VirtualIP's ``interface``; without one, every such VirtualIP of a family shares
one segment, "the auto-detected interface". The address's subnet is deliberately not the key: the
operator cannot know which subnets share a VLAN (several often do), and the agent checks VRIDs per
(interface, family) with all auto-detected instances counted as one interface, so two auto
VirtualIPs with one VRID on a node would make its whole assignment invalid.

Order, so that restarts and replicas agree: explicit VRIDs first (one already recorded in status
before the others, then by key), deleting VirtualIPs keep theirs until they are gone, then each
VirtualIP's recorded ``status.vrid`` if still free, then allocation in key order: the lowest VRID
unused in the family on any segment (so an auto VIP and one on a named interface that turn out to
be the same link still differ), else the lowest free on its own segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vipkeeper_api.resources import VirtualIPSpec
from vipkeeper_operator.world import VirtualIP

#: The segment of VirtualIPs without ``interface``.
AUTO = ""
#: (address family, interface name or AUTO)
Segment = tuple[int, str]
Slot = tuple[Segment, int]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with an object that its status must show (``reason`` is CamelCase)."""

    reason: str
    message: str


def segments(spec: VirtualIPSpec) -> tuple[Segment, ...]:
    """The segments a VirtualIP's instances live on: one per address family."""
    return tuple((family, spec.interface or AUTO) for family in spec.families)


def describe(segment: Segment) -> str:
    family, interface = segment
    where = f"interface {interface}" if interface else "the auto-detected interface"
    return f"{where} (IPv{family})"


@dataclass(frozen=True, slots=True)
class Allocation:
    #: VirtualIP key -> its VRID. A VirtualIP missing here must not be rendered (see problems).
    vrids: Mapping[str, int]
    #: VirtualIP key -> its VRID problems.
    problems: Mapping[str, tuple[Problem, ...]]
    #: (segment, VRID) -> the VirtualIP key that holds it.
    users: Mapping[Slot, str]

    def holder(self, spec: VirtualIPSpec, vrid: int, *, besides: str = "") -> str | None:
        """Who holds ``vrid`` on any of ``spec``'s segments (other than ``besides``)."""
        for segment in segments(spec):
            user = self.users.get((segment, vrid))
            if user is not None and user != besides:
                return user
        return None

    def first_free(self, spec: VirtualIPSpec, vrid_range: tuple[int, int]) -> int | None:
        for vrid in range(vrid_range[0], vrid_range[1] + 1):
            if self.holder(spec, vrid) is None:
                return vrid
        return None


def allocate(vips: Mapping[str, VirtualIP], vrid_range: tuple[int, int]) -> Allocation:
    """Every VirtualIP's VRID (or its problem) for one planning pass."""
    lo, hi = vrid_range
    users: dict[Slot, str] = {}
    by_family: dict[int, set[int]] = {4: set(), 6: set()}
    vrids: dict[str, int] = {}
    problems: dict[str, list[Problem]] = {}
    segs = {key: segments(vip.spec) for key, vip in vips.items()}

    def taken(key: str, vrid: int) -> str | None:
        return next((u for s in segs[key] if (u := users.get((s, vrid))) is not None), None)

    def claim(key: str, vrid: int) -> None:
        vrids[key] = vrid
        for segment in segs[key]:
            users[segment, vrid] = key
            by_family[segment[0]].add(vrid)

    live = sorted(k for k, v in vips.items() if not v.deleting)
    explicit = sorted(
        (k for k in live if vips[k].spec.vrid is not None),
        key=lambda k: (vips[k].status.vrid != vips[k].spec.vrid, k),
    )
    for key in explicit:
        vrid = vips[key].spec.vrid
        assert vrid is not None
        other = taken(key, vrid)
        if other is None:
            claim(key, vrid)
            continue
        where = describe(next(s for s in segs[key] if users.get((s, vrid)) == other))
        problems.setdefault(key, []).append(
            Problem(
                "VRIDConflict",
                f"vrid {vrid} on {where} is already used by VirtualIP {other}, which keeps it; "
                f"VirtualIP {key} is not rendered on any node until one of them changes its vrid"
                f"{_free_hint(key, segs, users, vrid_range)}",
            )
        )
        problems.setdefault(other, []).append(
            Problem(
                "VRIDConflict",
                f"VirtualIP {key} also sets vrid {vrid} on {where}; {other} keeps it and {key} "
                "is not rendered until one of them changes its vrid",
            )
        )
    for key in sorted(k for k, v in vips.items() if v.deleting):
        # Its nodes resign it in this pass; nobody else takes the VRID before it is gone.
        vrid = vips[key].spec.vrid or vips[key].status.vrid
        if vrid is not None and taken(key, vrid) is None:
            claim(key, vrid)
    pending: list[str] = []
    for key in live:
        if vips[key].spec.vrid is not None:
            continue
        recorded = vips[key].status.vrid
        if recorded is not None and lo <= recorded <= hi and taken(key, recorded) is None:
            claim(key, recorded)
        else:
            pending.append(key)
    for key in pending:
        families = {s[0] for s in segs[key]}
        free = [v for v in range(lo, hi + 1) if taken(key, v) is None]
        fresh = [v for v in free if not any(v in by_family[f] for f in families)]
        if fresh or free:
            claim(key, (fresh or free)[0])
            continue
        holders = sorted({users[s, v] for s in segs[key] for v in range(lo, hi + 1)})
        where = " and ".join(describe(s) for s in segs[key])
        problems.setdefault(key, []).append(
            Problem(
                "VRIDExhausted",
                f"no VRID is free in the operator's range {lo}-{hi} on {where}: all are used "
                f"by other VirtualIPs ({_some(holders)}); VirtualIP {key} is not rendered. "
                "Widen the range, set interface to put it on another segment, or give it an "
                "explicit vrid outside the range",
            )
        )
    return Allocation(vrids, {k: tuple(v) for k, v in problems.items()}, users)


def _free_hint(
    key: str,
    segs: Mapping[str, tuple[Segment, ...]],
    users: Mapping[Slot, str],
    rng: tuple[int, int],
) -> str:
    for vrid in range(rng[0], rng[1] + 1):
        if all((s, vrid) not in users for s in segs[key]):
            return f" ({vrid} is free there, or remove vrid to have one allocated)"
    return " (remove vrid to have one allocated)"


def _some(keys: Iterable[str], limit: int = 3) -> str:
    items = list(keys)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
