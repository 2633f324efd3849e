"""Cross-object rules the CRD schema cannot express, shared by the validating webhook (which
refuses the object with these messages) and the render (which keeps the object that was there
first and reports the other: the webhook may be absent, or two objects may race through it).

Each message names the field, the value, the other object and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping

from vipkeeper_api.base import IPAddress
from vipkeeper_operator.planning.vrid import Problem, allocate, describe, segments
from vipkeeper_operator.world import VirtualIP, VirtualServer, World


def check_virtual_ip(world: World, vip: VirtualIP) -> list[str]:
    """Why ``vip`` (new or changed) cannot be admitted next to the other VirtualIPs."""
    out: list[str] = []
    others = {k: v for k, v in world.virtual_ips.items() if k != vip.key}
    owners = _address_owners(others)
    for index, address in enumerate(vip.spec.addresses):
        for other in owners.get(address.ip, ()):
            gone = " (being deleted: retry once it is gone)" if others[other].deleting else ""
            out.append(
                f"spec.addresses[{index}]: {address.ip} is already an address of VirtualIP "
                f"{other}{gone}; an address floats in one VirtualIP only, so remove it here "
                "or there"
            )
    vrid = vip.spec.vrid
    if vrid is not None:
        allocation = allocate(others, world.vrid_range)
        holder = allocation.holder(vip.spec, vrid)
        if holder is not None:
            free = allocation.first_free(vip.spec, world.vrid_range)
            where = " and ".join(describe(s) for s in segments(vip.spec))
            fix = f"choose a free one such as {free}, or remove" if free is not None else "remove"
            out.append(
                f"spec.vrid: {vrid} is already used on {where} by VirtualIP {holder}; two "
                f"virtual routers with one VRID on a segment fight: {fix} vrid to have one "
                "allocated"
            )
    return out


def check_virtual_server(world: World, vs: VirtualServer) -> list[str]:
    """Why ``vs`` (new or changed) cannot be admitted."""
    ref = f"{vs.namespace}/{vs.spec.virtual_ip_ref.name}"
    vip = world.virtual_ips.get(ref)
    if vip is None:
        return [
            f"spec.virtualIPRef.name: VirtualIP {ref} does not exist; create it first, or fix "
            "the name (it must be in the VirtualServer's namespace)"
        ]
    out: list[str] = []
    if vip.deleting:
        out.append(f"spec.virtualIPRef.name: VirtualIP {ref} is being deleted; refer to another")
    address = vs.spec.address
    if address is not None and address not in {a.ip for a in vip.spec.addresses}:
        listed = ", ".join(str(a.ip) for a in vip.spec.addresses)
        out.append(
            f"spec.address: {address} is not an address of VirtualIP {ref} ({listed}); use one "
            "of those, or remove address to serve on all of them"
        )
    for key, other in sorted(world.virtual_servers.items()):
        if key != vs.key and not other.deleting and _same_service(vs, other):
            out.append(
                f"spec.port: {vs.spec.protocol.value} port {vs.spec.port} on VirtualIP {ref} is "
                f"already served by VirtualServer {key}; change port or protocol, or merge them"
            )
    return out


# --- used by the render ----------------------------------------------------------------------


def address_conflicts(vips: Mapping[str, VirtualIP]) -> dict[str, Problem]:
    """VirtualIP key -> AddressConflict, for every VirtualIP but the first owner of a shared
    address (one already allocated a VRID first: it is the one running; then by key)."""
    live = {k: v for k, v in vips.items() if not v.deleting}
    out: dict[str, Problem] = {}
    for address, keys in sorted(_address_owners(live).items(), key=lambda i: str(i[0])):
        if len(keys) < 2:
            continue
        first, *rest = sorted(keys, key=lambda k: (live[k].status.vrid is None, k))
        for key in rest:
            out.setdefault(
                key,
                Problem(
                    "AddressConflict",
                    f"address {address} is also in VirtualIP {first}, which keeps it; "
                    f"VirtualIP {key} is not rendered until the address is removed from one",
                ),
            )
    return out


def virtual_server_conflicts(servers: Mapping[str, VirtualServer]) -> dict[str, Problem]:
    """VirtualServer key -> ServiceConflict for all but the first (by key) of VirtualServers that
    would program the same IPVS service."""
    out: dict[str, Problem] = {}
    live = sorted((k, v) for k, v in servers.items() if not v.deleting)
    for index, (key, vs) in enumerate(live):
        first = next((k for k, other in live[:index] if _same_service(vs, other)), None)
        if first is not None:
            out[key] = Problem(
                "ServiceConflict",
                f"{vs.spec.protocol.value} port {vs.spec.port} on VirtualIP "
                f"{vs.spec.virtual_ip_ref.name} is already served by VirtualServer {first}; "
                f"VirtualServer {key} is not rendered until one changes port or protocol",
            )
    return out


def _same_service(a: VirtualServer, b: VirtualServer) -> bool:
    return (
        a.namespace == b.namespace
        and a.spec.virtual_ip_ref.name == b.spec.virtual_ip_ref.name
        and a.spec.protocol == b.spec.protocol
        and a.spec.port == b.spec.port
        and (a.spec.address is None or b.spec.address is None or a.spec.address == b.spec.address)
    )


def _address_owners(vips: Mapping[str, VirtualIP]) -> dict[IPAddress, list[str]]:
    owners: dict[IPAddress, list[str]] = {}
    for key, vip in sorted(vips.items()):
        for address in vip.spec.addresses:
            owners.setdefault(address.ip, []).append(key)
    return owners
