"""What the operator knows of the cluster, as plain frozen data: the input of the pure planning.

The kopf/kubernetes adapters turn API objects into these (parsing specs with the shared models at
that boundary); the planning functions take them and return data. Nothing here talks to the API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from vipkeeper_api.resources import (
    VRID_RANGE,
    NodeAssignmentStatus,
    VirtualIPSpec,
    VirtualIPStatus,
    VirtualServerSpec,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The Ready condition is True.
    ready: bool = True
    #: spec.unschedulable (cordoned, which `kubectl drain` does first).
    unschedulable: bool = False
    #: status.addresses of type InternalIP, in the API's order.
    internal_ips: tuple[IPAddress, ...] = ()
    #: metadata.deletionTimestamp is set.
    deleting: bool = False


@dataclass(frozen=True, slots=True)
class VirtualIP:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: VirtualIPSpec
    #: What the operator recorded in status earlier (VRID allocation is stable across restarts).
    status: VirtualIPStatus = field(default_factory=VirtualIPStatus)
    #: metadata.deletionTimestamp is set: every node must resign it before it disappears.
    deleting: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class VirtualServer:
    namespace: str
    name: str
    uid: str
    generation: int
    spec: VirtualServerSpec
    deleting: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str | None
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: IPAddress
    #: endpoints[].nodeName
    node: str | None
    #: conditions.ready (None in the API means ready).
    ready: bool = True
    #: conditions.terminating
    terminating: bool = False


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """One discovery.k8s.io/v1 EndpointSlice, owned by Service ``service`` (its
    ``kubernetes.io/service-name`` label)."""

    namespace: str
    name: str
    service: str
    address_type: str  # IPv4 | IPv6 | FQDN
    ports: tuple[EndpointPort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str | None
    port: int
    #: targetPort as given: a number, or the name of a container port.
    target_port: int | str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    ports: tuple[ServicePort, ...] = ()


@dataclass(frozen=True, slots=True)
class World:
    """Everything the planning reads, keyed as the API keys it."""

    nodes: Mapping[str, Node] = field(default_factory=dict)
    #: "namespace/name" -> VirtualIP
    virtual_ips: Mapping[str, VirtualIP] = field(default_factory=dict)
    #: "namespace/name" -> VirtualServer
    virtual_servers: Mapping[str, VirtualServer] = field(default_factory=dict)
    #: "namespace/name" -> Service
    services: Mapping[str, Service] = field(default_factory=dict)
    #: "namespace/name" (of the slice) -> EndpointSlice
    endpoint_slices: Mapping[str, EndpointSlice] = field(default_factory=dict)
    #: "namespace/name" -> {key: decoded value}; only Secrets VirtualIPs refer to.
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: node name -> the status its agent wrote on its NodeAssignment.
    reports: Mapping[str, NodeAssignmentStatus] = field(default_factory=dict)
    #: VRIDs the operator may allocate (inclusive); explicit VRIDs may lie outside.
    vrid_range: tuple[int, int] = VRID_RANGE
