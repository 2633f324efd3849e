"""A VirtualServer's IPVS services, and their real servers: the static list, or the ready
endpoints of a Service.

Endpoints come from the Service's EndpointSlices (label ``kubernetes.io/service-name``); only
ready, not terminating ones serve (a terminating pod drains, it takes no new connections). The
port is resolved per slice, because during a rollout slices may disagree on a named port's
number. The result is deduplicated (an endpoint can appear in two slices while they are being
rebalanced) and sorted, so the rendered spec does not change when only the slices' order does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from vipkeeper_api.ipvs import MAX_REAL_SERVERS, Placement, RealServer
from vipkeeper_api.ipvs import VirtualServer as IpvsService
from vipkeeper_api.resources import instance_name
from vipkeeper_operator.planning.vrid import Problem
from vipkeeper_operator.world import EndpointSlice, Service, VirtualServer, World

_ADDRESS_TYPE = {4: "IPv4", 6: "IPv6"}


@dataclass(frozen=True, slots=True)
class Resolved:
    real_servers: tuple[RealServer, ...]
    problems: tuple[Problem, ...] = ()


def slices_by_service(world: World) -> dict[str, list[EndpointSlice]]:
    """ "namespace/service" -> its slices (in slice name order); built once per pass."""
    out: dict[str, list[EndpointSlice]] = {}
    for _, eps in sorted(world.endpoint_slices.items()):
        out.setdefault(f"{eps.namespace}/{eps.service}", []).append(eps)
    return out


def target_port(
    wanted: int | str, protocol: str, service: Service | None, eps: EndpointSlice
) -> int | None:
    """The port the endpoints of ``eps`` listen on for ``wanted``: the name of a Service port,
    or a number that is a Service port (then its target) or already an endpoint port. A number
    that is neither is taken as given: the user named the port the pods listen on."""
    ports = [p for p in eps.ports if p.protocol == protocol]
    if isinstance(wanted, str):
        named = [p for p in ports if p.name == wanted]
        return named[0].port if named else None
    listed = [p for p in (service.ports if service else ()) if p.port == wanted]
    if not listed:
        return wanted
    # The slice names its ports after the Service's (an unnamed single port has no name).
    same = [p for p in ports if (p.name or None) == (listed[0].name or None)]
    if same and listed[0].protocol == protocol:
        return same[0].port
    return None


def resolve(
    world: World,
    vs: VirtualServer,
    family: int,
    slices: Mapping[str, list[EndpointSlice]] | None = None,
) -> Resolved:
    """The real servers of ``vs`` in ``family``, with the problems found resolving them."""
    spec = vs.spec
    if spec.service_ref is None:
        return Resolved(
            tuple(_sorted(rs for rs in spec.real_servers if rs.address.version == family))
        )
    key = f"{vs.namespace}/{spec.service_ref.name}"
    index = slices_by_service(world) if slices is None else slices
    service = world.services.get(key)
    wanted: int | str = spec.target_port if spec.target_port is not None else spec.port
    problems: list[Problem] = []
    if service is None:
        problems.append(
            Problem(
                "ServiceMissing",
                f"serviceRef: Service {key} does not exist; create it or fix spec.serviceRef.name",
            )
        )
    seen: dict[tuple[object, int], RealServer] = {}
    unresolved: list[str] = []
    for eps in index.get(key, ()):
        if eps.address_type != _ADDRESS_TYPE[family]:
            continue
        port = target_port(wanted, spec.protocol.value, service, eps)
        if port is None:
            unresolved.append(eps.name)
            continue
        for ep in eps.endpoints:
            if not ep.ready or ep.terminating or ep.address.version != family:
                continue
            rs = RealServer.model_validate(
                {
                    "address": ep.address,
                    "port": None if port == spec.port else port,
                    "weight": spec.endpoint_weight,
                }
            )
            seen.setdefault((ep.address, port), rs)
    if unresolved and not seen:
        problems.append(
            Problem(
                "PortNotFound",
                f"targetPort {wanted!r} ({spec.protocol.value}) is not a port of Service {key} "
                f"(EndpointSlices {', '.join(unresolved)}); set spec.targetPort to the name or "
                "number of one of the Service's ports",
            )
        )
    servers = _sorted(seen.values())
    if len(servers) > MAX_REAL_SERVERS:
        problems.append(
            Problem(
                "TooManyEndpoints",
                f"Service {key} has {len(servers)} ready IPv{family} endpoints; the first "
                f"{MAX_REAL_SERVERS} (by address) are used",
            )
        )
        servers = servers[:MAX_REAL_SERVERS]
    return Resolved(tuple(servers), tuple(problems))


# --- VirtualServers ---------------------------------------------------------------------------


def vip_key(vs: VirtualServer) -> str:
    return f"{vs.namespace}/{vs.spec.virtual_ip_ref.name}"


def services_of(
    world: World,
    vs: VirtualServer,
    rendered: Container[str],
    slices: Mapping[str, list[EndpointSlice]],
) -> tuple[list[IpvsService], list[Problem]]:
    """The IPVS services of ``vs`` and the problems found. One per family, named like the VIP's
    instances (the status fold looks them up so), on ``address`` or else the first address of that
    family (a VirtualIP with several addresses of one family serves on the first only)."""
    ref, spec = vip_key(vs), vs.spec
    vip = world.virtual_ips.get(ref)
    if vip is None or vip.deleting:
        state = "does not exist" if vip is None else "is being deleted"
        return [], [
            Problem(
                "VirtualIPMissing", f"virtualIPRef: VirtualIP {ref} {state}; nothing is programmed"
            )
        ]
    if spec.placement == Placement.HOLDER and ref not in rendered:
        return [], [
            Problem(
                "VirtualIPNotRendered",
                f"VirtualIP {ref} is not rendered on any node (see its status), so neither is this service",
            )
        ]
    mine = {a.ip for a in vip.spec.addresses}
    if spec.address is not None and spec.address not in mine:
        return [], [
            Problem(
                "AddressNotOnVirtualIP",
                f"address {spec.address} is not an address of VirtualIP {ref}",
            )
        ]
    families = (spec.address.version,) if spec.address is not None else vip.spec.families
    static_families = {rs.address.version for rs in spec.real_servers}
    out: list[IpvsService] = []
    problems: list[Problem] = []
    for family in families:
        if spec.real_servers and family not in static_families:
            continue  # a static list for the other family only: no empty service here
        resolved = resolve(world, vs, family, slices)
        problems.extend(resolved.problems)
        document = spec.model_dump(
            include={
                "protocol",
                "scheduler",
                "scheduler_flags",
                "forwarding",
                "persistence",
                "check",
                "inhibit_on_failure",
                "sorry_server",
                "quorum",
                "placement",
                "port",
            },
            by_alias=True,
        )
        document.update(
            name=instance_name(vs.namespace, vs.name, family),
            address=spec.address or vip.spec.addresses_of(family)[0].ip,
            realServers=resolved.real_servers,
        )
        if spec.placement == Placement.HOLDER:
            document["vrrpInstance"] = instance_name(vip.namespace, vip.name, family)
        try:
            out.append(IpvsService.model_validate(document))
        except ValidationError as error:
            problems.append(
                Problem(
                    "InvalidVirtualServer",
                    f"IPv{family} service not rendered: {short_error(error)}",
                )
            )
    if spec.service_ref is not None and out and not any(s.real_servers for s in out):
        problems.append(
            Problem(
                "NoReadyEndpoints",
                f"Service {vs.namespace}/{spec.service_ref.name} has no ready endpoint",
            )
        )
    return out, problems


def short_error(error: ValidationError) -> str:
    """A pydantic error as one line, for a Problem's message."""
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors()[:3]
    )


def _sorted(servers: Iterable[RealServer]) -> list[RealServer]:
    return sorted(servers, key=lambda rs: (_address_key(rs.address), rs.port or 0))


def _address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    return (address.version, int(address))
