"""Small builders for the planning tests' worlds (imported by the other test_planning_* modules),
plus a check that they build what the parsers would."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from vipkeeper_api.resources import VRID_RANGE, VirtualIPSpec, VirtualIPStatus, VirtualServerSpec
from vipkeeper_operator.world import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Node,
    Service,
    ServicePort,
    VirtualIP,
    VirtualServer,
    World,
)

NS = "default"


def node(
    name: str,
    *ips: str,
    ready: bool = True,
    cordoned: bool = False,
    deleting: bool = False,
    labels: Mapping[str, str] | None = None,
) -> Node:
    return Node(
        name=name,
        labels=dict(labels or {}),
        ready=ready,
        unschedulable=cordoned,
        internal_ips=tuple(ipaddress.ip_address(ip) for ip in ips),
        deleting=deleting,
    )


def vip(
    name: str,
    *addresses: str,
    ns: str = NS,
    status_vrid: int | None = None,
    deleting: bool = False,
    **spec: Any,
) -> VirtualIP:
    document = {"addresses": list(addresses or ("192.0.2.10/24",)), **spec}
    return VirtualIP(
        namespace=ns,
        name=name,
        uid=f"uid-{name}",
        generation=1,
        spec=VirtualIPSpec.model_validate(document),
        status=VirtualIPStatus(vrid=status_vrid),
        deleting=deleting,
    )


def vs(name: str, vip_name: str, port: int = 80, ns: str = NS, **spec: Any) -> VirtualServer:
    document = {"virtualIPRef": {"name": vip_name}, "port": port, **spec}
    return VirtualServer(
        namespace=ns,
        name=name,
        uid=f"uid-{name}",
        generation=1,
        spec=VirtualServerSpec.model_validate(document),
    )


def service(name: str, *ports: tuple[str | None, int, int | str | None], ns: str = NS) -> Service:
    """``ports``: (name, port, targetPort)."""
    return Service(ns, name, tuple(ServicePort(n, p, t) for n, p, t in ports))


def slice_(
    name: str,
    service_name: str,
    *endpoints: tuple[str, str | None] | tuple[str, str | None, bool, bool],
    ports: Iterable[tuple[str | None, int]] = (("http", 8080),),
    ns: str = NS,
    address_type: str = "IPv4",
    protocol: str = "TCP",
) -> EndpointSlice:
    """``endpoints``: (address, node[, ready, terminating])."""
    eps = []
    for item in endpoints:
        address, where, *conds = item
        ready = bool(conds[0]) if conds else True
        terminating = bool(conds[1]) if len(conds) > 1 else False
        eps.append(Endpoint(ipaddress.ip_address(address), where, ready, terminating))
    return EndpointSlice(
        namespace=ns,
        name=name,
        service=service_name,
        address_type=address_type,
        ports=tuple(EndpointPort(n, p, protocol) for n, p in ports),
        endpoints=tuple(eps),
    )


def world(
    nodes: Iterable[Node] = (),
    vips: Iterable[VirtualIP] = (),
    servers: Iterable[VirtualServer] = (),
    services: Iterable[Service] = (),
    slices: Iterable[EndpointSlice] = (),
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    vrid_range: tuple[int, int] = VRID_RANGE,
) -> World:
    return World(
        nodes={n.name: n for n in nodes},
        virtual_ips={v.key: v for v in vips},
        virtual_servers={s.key: s for s in servers},
        services={f"{s.namespace}/{s.name}": s for s in services},
        endpoint_slices={f"{s.namespace}/{s.name}": s for s in slices},
        secrets=dict(secrets or {}),
        vrid_range=vrid_range,
    )


def test_builders_make_what_the_planning_reads() -> None:
    w = world(
        [node("a", "10.0.0.1", labels={"role": "lb"})],
        [vip("web", "192.0.2.10/24", vrid=7)],
        [vs("web-http", "web")],
        [service("ingress", ("http", 80, "http"))],
        [slice_("ingress-abc", "ingress", ("10.1.0.1", "a"), ("10.1.0.2", "a", False, False))],
    )
    assert w.virtual_ips["default/web"].spec.vrid == 7
    assert w.nodes["a"].internal_ips == (ipaddress.ip_address("10.0.0.1"),)
    ready = [e.ready for e in w.endpoint_slices["default/ingress-abc"].endpoints]
    assert ready == [True, False]
