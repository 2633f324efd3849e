"""The IPVS part of the agent's status: ``ipvsadm -Ln``-like text and a JSON-ready document.

Pure: a table, its counters and the real servers' check states in, text or dicts out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from vipkeeper_agent.checks.hysteresis import CheckState, Health
from vipkeeper_agent.ipvs.plan import (
    Assessment,
    real_server_check_name,
    service_key,
)
from vipkeeper_agent.ipvs.table import (
    Counters,
    DestinationStats,
    Service,
    ServiceKey,
    ServiceStats,
    Stats,
    Table,
    hostport,
)
from vipkeeper_api.ipvs import VirtualServer


def _dest_order(key: tuple[Any, int]) -> tuple[int, int, int]:
    return (key[0].version, int(key[0]), key[1])


def _service_flags(service: Service) -> str:
    text = ""
    names = service.scheduler_flag_names()
    if names:
        text += f" ({','.join(names)})"
    if service.persistent:
        text += f" persistent {service.timeout}"
        if service.key.family == 4 and service.netmask != 32:
            mask = ipaddress.IPv4Network(f"0.0.0.0/{service.netmask}").netmask
            text += f" mask {mask}"
        elif service.key.family == 6 and service.netmask != 128:
            text += f" mask {service.netmask}"
    return text


def render_text(table: Table, stats: Stats | None = None) -> str:
    """The table as ``ipvsadm -Ln`` shows it (services in a stable order, destinations by
    address rather than the kernel's newest-first)."""
    lines = [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for key in sorted(table, key=lambda k: k.sort_key):
        entry = table[key]
        service = entry.service
        if key.fwmark:
            head = f"FWM  {key.fwmark}" + (" IPv6" if key.family == 6 else "")
        else:
            assert key.protocol is not None and key.address is not None
            head = f"{key.protocol.value:<4} {hostport(key.address, key.port)}"
        lines.append(f"{head} {service.scheduler}{_service_flags(service)}")
        service_stats = stats.get(key) if stats is not None else None
        for dkey in sorted(entry.destinations, key=_dest_order):
            dest = entry.destinations[dkey]
            dstats = service_stats.destinations.get(dkey) if service_stats is not None else None
            active = dstats.active_conns if dstats is not None else 0
            inactive = dstats.inactive_conns if dstats is not None else 0
            lines.append(
                f"  -> {dest!s:<28} {dest.forwarding.ipvsadm:<7} {dest.weight:<6} "
                f"{active:<10} {inactive:<10}".rstrip()
            )
    return "\n".join(lines) + "\n"


def counters_json(counters: Counters) -> dict[str, int]:
    return {
        "conns": counters.conns,
        "inPkts": counters.inpkts,
        "outPkts": counters.outpkts,
        "inBytes": counters.inbytes,
        "outBytes": counters.outbytes,
        "cps": counters.cps,
        "inPps": counters.inpps,
        "outPps": counters.outpps,
        "inBps": counters.inbps,
        "outBps": counters.outbps,
    }


def _dest_stats_json(stats: DestinationStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {
        "activeConns": stats.active_conns,
        "inactiveConns": stats.inactive_conns,
        "persistentConns": stats.persistent_conns,
        **counters_json(stats.counters),
    }


def service_json(service: Service) -> dict[str, Any]:
    key = service.key
    return {
        "service": str(key),
        "family": key.family,
        "protocol": None if key.protocol is None else key.protocol.value,
        "address": None if key.address is None else str(key.address),
        "port": key.port or None,
        "fwmark": key.fwmark or None,
        "scheduler": service.scheduler,
        "schedulerFlags": service.scheduler_flag_names(),
        "flags": service.flags,
        "persistence": (
            {"timeout": service.timeout, "prefixLength": service.netmask}
            if service.persistent
            else None
        ),
    }


def table_json(table: Table, stats: Stats | None = None) -> list[dict[str, Any]]:
    """A table as given (the caller chooses whether foreign services are in it), JSON-ready."""
    out = []
    for key in sorted(table, key=lambda k: k.sort_key):
        entry = table[key]
        service_stats = stats.get(key) if stats is not None else None
        dests = []
        for dkey in sorted(entry.destinations, key=_dest_order):
            dest = entry.destinations[dkey]
            dests.append(
                {
                    "address": str(dest.address),
                    "port": dest.port,
                    "weight": dest.weight,
                    "forwarding": dest.forwarding.value,
                    "upperThreshold": dest.upper_threshold,
                    "lowerThreshold": dest.lower_threshold,
                    "stats": _dest_stats_json(
                        service_stats.destinations.get(dkey) if service_stats else None
                    ),
                }
            )
        out.append(
            {
                **service_json(entry.service),
                "stats": counters_json(service_stats.counters) if service_stats else None,
                "destinations": dests,
            }
        )
    return out


def virtual_server_json(
    vs: VirtualServer,
    table: Table,
    *,
    stats: Stats | None = None,
    checks: Mapping[str, CheckState] | None = None,
    assessment: Assessment | None = None,
    active: bool = False,
    wall_offset: float = 0.0,
) -> dict[str, Any]:
    """One virtual server as configured, judged and found in the kernel.

    Per real server: ``healthy`` and ``since`` (wall clock) from its check (a real server
    without a check is healthy, since ``None``), ``weight`` as configured and ``kernelWeight`` as
    the kernel has it (``None`` = not in the table: failed, quorum down, or not active here).
    """
    checks = checks or {}
    key: ServiceKey = service_key(vs)
    entry = table.get(key)
    service_stats: ServiceStats | None = stats.get(key) if stats is not None else None
    real_servers = []
    for rs in vs.real_servers:
        port = vs.real_port(rs)
        state = checks.get(real_server_check_name(vs, rs)) if vs.check is not None else None
        dest = entry.destinations.get((rs.address, port)) if entry is not None else None
        real_servers.append(
            {
                "address": str(rs.address),
                "port": port,
                "healthy": True if state is None else state.health is Health.OK,
                "pending": False if state is None else state.pending,
                "since": None if state is None else state.since + wall_offset,
                "detail": None if state is None else state.last_detail,
                "weight": rs.weight,
                "kernelWeight": None if dest is None else dest.weight,
                "stats": _dest_stats_json(
                    service_stats.destinations.get((rs.address, port)) if service_stats else None
                ),
            }
        )
    sorry = None
    if vs.sorry_server is not None:
        sorry_port = vs.sorry_server.port if vs.sorry_server.port is not None else (vs.port or 0)
        sorry = {
            "address": str(vs.sorry_server.address),
            "port": sorry_port,
            "inKernel": entry is not None
            and (vs.sorry_server.address, sorry_port) in entry.destinations,
        }
    return {
        "name": vs.name,
        "service": str(key),
        "active": active,
        "inKernel": entry is not None,
        "scheduler": vs.scheduler,
        "forwarding": vs.forwarding.value,
        "placement": vs.placement.value,
        "quorum": None
        if assessment is None
        else {
            "up": assessment.quorum_up,
            "healthyWeight": assessment.healthy_weight,
            "min": vs.quorum.min if vs.quorum is not None else 1,
            "hysteresis": vs.quorum.hysteresis if vs.quorum is not None else 0,
        },
        "healthy": None if assessment is None else assessment.healthy,
        "total": len(vs.real_servers),
        "sorryServer": sorry,
        "sorryServerActive": None if assessment is None else assessment.sorry_server_active,
        "stats": counters_json(service_stats.counters) if service_stats else None,
        "realServers": real_servers,
    }


def ipvs_status(
    vs_list: Iterable[VirtualServer],
    table: Table,
    *,
    stats: Stats | None = None,
    checks: Mapping[str, CheckState] | None = None,
    assessments: Mapping[str, Assessment] | None = None,
    active: Collection[str] = (),
    wall_offset: float = 0.0,
    problems: Iterable[str] = (),
    errors: Iterable[str] = (),
) -> dict[str, Any]:
    """The IPVS section of the agent's status: each virtual server, the whole kernel table,
    kernel prerequisites that are missing and the last apply's errors."""
    assessments = assessments or {}
    return {
        "virtualServers": [
            virtual_server_json(
                vs,
                table,
                stats=stats,
                checks=checks,
                assessment=assessments.get(vs.name),
                active=vs.name in active,
                wall_offset=wall_offset,
            )
            for vs in vs_list
        ],
        "table": table_json(table, stats),
        "problems": list(problems),
        "errors": list(errors),
    }
