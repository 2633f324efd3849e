"""Fold the nodes' reports of a VirtualServer's IPVS services into its status, conditions and Events.

With placement ``holder`` only the VIP holder's report counts (the others have no rules); with
``all`` every node runs the service and checks the real servers itself, so a real server counts as
healthy only where every node finds it so: a client may land on any of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Literal

from vipkeeper_api.ipvs import Placement
from vipkeeper_api.resources import (
    Condition,
    NodeAssignmentStatus,
    RealServerReport,
    RealServerState,
    VirtualServerStatus,
    instance_name,
)
from vipkeeper_operator.planning.status_common import (
    EventRecord,
    became_true,
    find_condition,
    format_time,
    listing,
    make_condition,
    parse_time,
)
from vipkeeper_operator.world import VirtualServer

#: Past this many real servers changing in one fold, one summary Event instead of one each.
MAX_REAL_SERVER_EVENTS = 5


def report_names(vs: VirtualServer) -> frozenset[str]:
    """The names a VirtualServer's IPVS services may have in a NodeAssignment: one per family,
    named like the VRRP instances. The render must name them so (or pass ``names``)."""
    return frozenset(instance_name(vs.namespace, vs.name, f) for f in (4, 6))


def fold_virtual_server(
    vs: VirtualServer,
    reports: Mapping[str, NodeAssignmentStatus],
    *,
    holder: str | None,
    problems: Sequence[tuple[str, str]],
    previous: VirtualServerStatus,
    now: datetime,
    candidates: Sequence[str] | None = None,
    names: Collection[str] | None = None,
) -> tuple[VirtualServerStatus, list[EventRecord]]:
    """The VirtualServer's new status, and the Events its change from ``previous`` calls for.

    ``holder``: the VirtualIP's holder (from :func:`fold_virtual_ip`); ``candidates``: the nodes
    that run it with placement all (default: every node that reports it); ``problems``: the
    planning's (reason, message) for this VirtualServer, which make it Degraded.
    """
    wanted = report_names(vs) if names is None else frozenset(names)
    everywhere = vs.spec.placement == Placement.ALL
    if everywhere:
        nodes = sorted(reports if candidates is None else set(candidates) & set(reports))
    else:
        nodes = [holder] if holder is not None and holder in reports else []
    found = [(node, r) for node in nodes for r in reports[node].virtual_servers if r.name in wanted]
    merged: dict[tuple[str, int], list[RealServerReport]] = {}
    for _, r in found:
        for rs in r.real_servers:
            merged.setdefault((str(rs.address), rs.port), []).append(rs)
    servers = tuple(
        _merge(address, port, merged[address, port], previous, now)
        for address, port in sorted(merged, key=_order)
    )
    healthy = [s for s in servers if s.healthy]
    active = [s for s in healthy if s.weight > 0]

    gen = vs.generation

    def cond(
        type_: str, status: Literal["True", "False", "Unknown"], why: str, msg: str
    ) -> Condition:
        return make_condition(
            type_, status, why, msg, previous=previous.conditions, generation=gen, now=now
        )

    counted = f"{len(healthy)} of {len(servers)} real servers healthy"
    if not everywhere and holder is None:
        ready = cond("Ready", "False", "NoHolder", "the VirtualIP has no holder")
    elif not found:
        ready = cond("Ready", "Unknown", "AwaitingReports", "no node has reported the service yet")
    elif not any(r.active for _, r in found):
        ready = cond("Ready", "False", "NotProgrammed", "the IPVS service is not in place")
    elif not servers:
        ready = cond("Ready", "False", "NoRealServers", "the service has no real servers")
    elif not healthy:
        ready = cond("Ready", "False", "NoHealthyRealServers", counted)
    else:
        ready = cond("Ready", "True", "RealServersHealthy", counted)

    sick = [_hostport(s) for s in servers if not s.healthy]
    if problems:
        degraded = cond("Degraded", "True", problems[0][0], "; ".join(m for _, m in problems))
    elif not servers:
        degraded = cond("Degraded", "Unknown", ready.reason, ready.message)
    elif sick:
        degraded = cond("Degraded", "True", "RealServersUnhealthy", f"unhealthy: {listing(sick)}")
    else:
        degraded = cond("Degraded", "False", "AllHealthy", counted)

    events = _real_server_events(previous.real_servers, servers)
    before = find_condition(previous.conditions, "Ready")
    if before is not None and before.status == "True" and ready.status != "True":
        events.append(EventRecord("Warning", ready.reason, ready.message))
    if became_true(previous.conditions, degraded):
        events.append(EventRecord("Warning", "Degraded", degraded.message))

    status = VirtualServerStatus(
        holder=None if everywhere else holder,
        realServers=servers,
        active=len(active),
        healthy=len(healthy),
        total=len(servers),
        conditions=(ready, degraded),
        observedGeneration=gen,
    )
    return status, events


def _order(key: tuple[str, int]) -> tuple[int, int, int]:
    address = ipaddress.ip_address(key[0])
    return address.version, int(address), key[1]


def _hostport(server: RealServerState) -> str:
    host = f"[{server.address}]" if ":" in server.address else server.address
    return f"{host}:{server.port}"


def _merge(
    address: str,
    port: int,
    seen: Sequence[RealServerReport],
    previous: VirtualServerStatus,
    now: datetime,
) -> RealServerState:
    healthy = all(r.healthy for r in seen)
    # Each node's own "since" for this verdict; the merged one holds from the latest of them.
    times = [t for r in seen if r.healthy == healthy for t in [parse_time(r.since)] if t]
    if times:
        since = format_time(max(times))
    else:
        earlier = next(
            (s for s in previous.real_servers if (s.address, s.port) == (address, port)), None
        )
        if earlier is not None and earlier.healthy == healthy and earlier.since is not None:
            since = earlier.since
        else:
            since = format_time(now)
    return RealServerState(
        address=address,
        port=port,
        healthy=healthy,
        weight=min(r.weight for r in seen),
        since=since,
    )


def _real_server_events(
    before: Sequence[RealServerState], after: Sequence[RealServerState]
) -> list[EventRecord]:
    was = {(s.address, s.port): s.healthy for s in before}
    down = [_hostport(s) for s in after if was.get((s.address, s.port)) is True and not s.healthy]
    up = [_hostport(s) for s in after if was.get((s.address, s.port)) is False and s.healthy]
    if len(down) + len(up) > MAX_REAL_SERVER_EVENTS:
        message = f"{len(down)} real servers down, {len(up)} up"
        return [EventRecord("Warning" if down else "Normal", "RealServersChanged", message)]
    return [EventRecord("Warning", "RealServerDown", f"{rs} failed its check") for rs in down] + [
        EventRecord("Normal", "RealServerUp", f"{rs} passes its check again") for rs in up
    ]


__all__ = [
    "MAX_REAL_SERVER_EVENTS",
    "RealServerState",
    "VirtualServerStatus",
    "fold_virtual_server",
    "report_names",
]
