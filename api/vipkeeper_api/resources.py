"""The custom resources users write (VirtualIP, VirtualServer) and the status the nodes report
(NodeAssignment status): typed, frozen models, parsed once at the operator's boundary.

The NodeAssignment *spec* is :class:`vipkeeper_api.models.NodeAssignmentSpec`, the agent's whole
configuration (the standalone YAML); these models are what the operator turns into it. Sub-models
are shared with it wherever the meaning is the same (checks, GARP, tracked interfaces, real servers,
persistence, quorum, sorry server), so a field means one thing everywhere.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from vipkeeper_api.base import IPAddress, IPInterface, Model, Seconds, dns_label, parse_address
from vipkeeper_api.checks import Check
from vipkeeper_api.ipvs import (
    Forwarding,
    Persistence,
    Placement,
    Protocol,
    Quorum,
    RealServer,
    Scheduler,
    SchedulerFlag,
    SorryServer,
    check_template,
    service_problems,
)
from vipkeeper_api.models import (
    IFNAME_RE,
    V2_MAX_INTERVAL,
    V3_MAX_INTERVAL,
    V3_MIN_INTERVAL,
    Garp,
    TrackInterface,
    _expand_shorthand,
    _parse_interface,
)

GROUP = "vipkeeper.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
#: The VRIDs the operator allocates from unless told otherwise (all of them).
VRID_RANGE = (1, 255)
#: Priority of the most preferred node; the next ones step down (keepalived's usual 150/100).
TOP_PRIORITY = 150
MIN_PRIORITY = 1


class Mode(StrEnum):
    MULTICAST = "multicast"
    UNICAST = "unicast"


class SecretKeyRef(Model):
    """A key of a Secret in the resource's namespace."""

    name: str
    key: str = "password"

    _dns = field_validator("name")(dns_label)


class Vrrp(Model):
    """How the nodes that carry the VIP talk VRRP."""

    version: Literal[2, 3] = 3
    advert_interval: Seconds = Decimal("1")
    preempt: bool = True
    preempt_delay: float = Field(default=0.0, ge=0.0, le=3600.0)
    mode: Mode = Mode.MULTICAST
    multicast_group: IPAddress | None = None
    #: VRRPv2 PASS authentication, read from a Secret.
    auth_secret_ref: SecretKeyRef | None = None

    _group = field_validator("multicast_group", mode="before")(
        lambda cls, v: None if v is None else parse_address(v)
    )

    @field_validator("advert_interval", mode="before")
    @classmethod
    def _decimal(cls, value: object) -> object:
        if isinstance(value, float | int) and not isinstance(value, bool):
            return Decimal(str(value))
        return value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        value = self.advert_interval
        if self.version == 2:
            if value != value.to_integral_value() or not 1 <= value <= V2_MAX_INTERVAL:
                raise ValueError(
                    f"advertInterval {value} is not allowed with VRRP version 2: it is whole "
                    f"seconds 1-{V2_MAX_INTERVAL} (RFC 3768); use version: 3 for sub-second adverts"
                )
        elif (value * 100) != (value * 100).to_integral_value() or not (
            V3_MIN_INTERVAL <= value <= V3_MAX_INTERVAL
        ):
            raise ValueError(
                f"advertInterval {value} is not allowed with VRRP version 3: it is "
                f"{V3_MIN_INTERVAL}-{V3_MAX_INTERVAL} seconds in steps of 0.01 (RFC 5798)"
            )
        if self.auth_secret_ref is not None and self.version != 2:
            raise ValueError(
                "authSecretRef (PASS authentication) exists only in VRRP version 2; remove it "
                "or set version: 2"
            )
        if self.multicast_group is not None:
            if self.mode == Mode.UNICAST:
                raise ValueError("multicastGroup applies to mode: multicast only")
            if not self.multicast_group.is_multicast:
                raise ValueError(f"multicastGroup {self.multicast_group} is not multicast")
        return self


class Priorities(Model):
    """Which nodes should hold the VIP. ``preferred``: node names, most preferred first (150,
    then 100 and down in wide steps: 75, 50, 25 for five); ``explicit``: node -> priority,
    overriding. Nodes in neither get the operator's spread (below every preferred node)."""

    preferred: tuple[str, ...] = Field(default=(), max_length=64)
    explicit: dict[str, int] = Field(default_factory=dict, max_length=1024)

    @field_validator("explicit")
    @classmethod
    def _range(cls, value: dict[str, int]) -> dict[str, int]:
        for node, priority in value.items():
            if not 1 <= priority <= 254:
                raise ValueError(
                    f"explicit[{node}] is {priority}; node priorities are 1-254 (255 is the "
                    "address owner's, which a floating VIP never has)"
                )
        return value


class ObjectRef(Model):
    """A Service (or VirtualIP) in the resource's own namespace."""

    name: str

    _dns = field_validator("name")(dns_label)


class VirtualIPSpec(Model):
    addresses: tuple[IPInterface, ...] = Field(min_length=1, max_length=16)
    #: Default: on each node, the interface whose subnet contains the address.
    interface: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=64)
    priorities: Priorities = Priorities()
    #: Default: allocated per L2 segment and address family, recorded in status.
    vrid: int | None = Field(default=None, ge=1, le=255)
    vrrp: Vrrp = Vrrp()
    #: Tracked by every node that carries the VIP (names unique within the VirtualIP).
    checks: tuple[Check, ...] = Field(default=(), max_length=64)
    track_interfaces: tuple[TrackInterface, ...] = Field(default=(), max_length=64)
    #: Only nodes with a ready endpoint of this Service are eligible (e.g. the ingress controller).
    service_ref: ObjectRef | None = None
    garp: Garp = Garp()

    _interface_shorthand = field_validator("track_interfaces", mode="before")(
        lambda cls, v: _expand_shorthand(v, "interface")
    )

    @field_validator("addresses", mode="before")
    @classmethod
    def _parse_addresses(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(_parse_interface(v) for v in value)
        return value

    @field_validator("interface")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None and not IFNAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a Linux interface name (1-15 characters, no spaces or '/')"
            )
        return value

    @property
    def families(self) -> tuple[int, ...]:
        """The address families, IPv4 first: one VRRP instance each."""
        return tuple(sorted({a.version for a in self.addresses}))

    def addresses_of(self, family: int) -> tuple[IPInterface, ...]:
        return tuple(a for a in self.addresses if a.version == family)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if len({a.ip for a in self.addresses}) != len(self.addresses):
            raise ValueError("addresses lists the same IP twice")
        if 6 in self.families and self.vrrp.version != 3:
            raise ValueError("IPv6 addresses need VRRP version 3 (RFC 5798); set vrrp.version: 3")
        group = self.vrrp.multicast_group
        if group is not None and len(self.families) > 1:
            raise ValueError(
                "vrrp.multicastGroup is one address family, but addresses has both; split the "
                "VirtualIP by family or drop multicastGroup"
            )
        if group is not None and group.version not in self.families:
            raise ValueError(f"vrrp.multicastGroup {group} is not the addresses' family")
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError("checks: names must be unique within the VirtualIP")
        return self


class VirtualServerSpec(Model):
    """An IPVS service on a VirtualIP's address."""

    virtual_ip_ref: ObjectRef = Field(alias="virtualIPRef")
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = Protocol.TCP
    #: Which of the VirtualIP's addresses (default: every one, a service per family).
    address: IPAddress | None = None
    scheduler: Scheduler = "wlc"
    scheduler_flags: tuple[SchedulerFlag, ...] = ()
    forwarding: Forwarding = Forwarding.NAT
    persistence: Persistence | None = None
    real_servers: tuple[RealServer, ...] = Field(default=(), max_length=10000)
    #: Real servers from this Service's ready endpoints (EndpointSlices), on ``targetPort``.
    service_ref: ObjectRef | None = None
    #: A port number or the name of the Service's port; default: ``port``.
    target_port: int | str | None = None
    #: Weight of real servers taken from the Service.
    endpoint_weight: int = Field(default=1, ge=0, le=65535)
    check: dict[str, Any] | None = None
    inhibit_on_failure: bool = False
    sorry_server: SorryServer | None = None
    quorum: Quorum | None = None
    placement: Placement = Placement.HOLDER

    _addr = field_validator("address", mode="before")(
        lambda cls, v: None if v is None else parse_address(v)
    )

    @field_validator("check")
    @classmethod
    def _check_template(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        # Errors nest under `check` (spec.check.kind), as for ipvs.VirtualServer's template. No
        # address: any family will do, it only picks the placeholder for the real server's.
        address = info.data.get("address")
        return check_template(
            value, 4 if address is None else address.version, info.data.get("port")
        )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.service_ref is not None and self.real_servers:
            raise ValueError("give realServers or serviceRef, not both")
        if self.target_port is not None and self.service_ref is None:
            raise ValueError("targetPort applies with serviceRef only")
        if isinstance(self.target_port, int) and not 1 <= self.target_port <= 65535:
            raise ValueError(f"targetPort {self.target_port} is not a port (1-65535)")
        # No address: a service per family of the VirtualIP, so only what holds for any family.
        family = None if self.address is None else self.address.version
        if (problems := service_problems(self, family)) is not None:
            raise problems
        return self


# --- status -------------------------------------------------------------------------------


class Condition(Model):
    """A Kubernetes condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class NodeState(Model):
    node: str
    state: Literal["INIT", "BACKUP", "MASTER", "FAULT", "UNKNOWN"]
    priority: int = Field(ge=0, le=255)
    since: str | None = None
    reason: str | None = None


class LastTransition(Model):
    # `from`/`to` in the API (DESIGN §3); Python cannot name a field `from`.
    from_node: str | None = Field(default=None, alias="from")
    to_node: str | None = Field(default=None, alias="to")
    reason: str
    at: str
    duration_ms: float | None = None


class VirtualIPStatus(Model):
    holder: str | None = None
    state: str | None = None
    vrid: int | None = None
    nodes: tuple[NodeState, ...] = ()
    last_transition: LastTransition | None = None
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = None


class RealServerState(Model):
    """One real server of a VirtualServer, as its status shows it."""

    address: str
    port: int
    healthy: bool
    weight: int
    since: str | None = None


class VirtualServerStatus(Model):
    """What the operator reports on a VirtualServer (folded from the nodes' reports)."""

    #: The node whose rules the status shows (placement holder); None with placement all.
    holder: str | None = None
    real_servers: tuple[RealServerState, ...] = ()
    #: Healthy real servers with a weight above 0: the ones taking new connections.
    active: int = 0
    healthy: int = 0
    total: int = 0
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = None


class InstanceReport(Model):
    """What a node reports of one VRRP instance in its NodeAssignment's status."""

    name: str
    state: Literal["INIT", "BACKUP", "MASTER", "FAULT"]
    priority: int = Field(ge=0, le=255)
    master: IPAddress | None = None
    since: str | None = None
    last_transition: dict[str, Any] | None = None
    checks: dict[str, Any] = Field(default_factory=dict)

    _addr = field_validator("master", mode="before")(
        lambda cls, v: None if v is None else parse_address(v)
    )


class RealServerReport(Model):
    address: IPAddress
    port: int
    healthy: bool
    weight: int
    since: str | None = None

    _addr = field_validator("address", mode="before")(parse_address)


class VirtualServerReport(Model):
    name: str
    active: bool
    real_servers: tuple[RealServerReport, ...] = ()


class NodeAssignmentStatus(Model):
    """Written by the node only (the agent); read by the operator to fold into VirtualIPs."""

    observed_generation: int | None = None
    updated: str | None = None
    instances: tuple[InstanceReport, ...] = ()
    virtual_servers: tuple[VirtualServerReport, ...] = ()
    #: What keeps the node from running its assignment as written (a refused spec, a reload
    #: error, a missing kernel feature), each with its fix.
    problems: tuple[str, ...] = Field(default=(), max_length=32)


def instance_name(namespace: str, name: str, family: int) -> str:
    """The VRRP instance a VirtualIP becomes on each node: unique across namespaces, a DNS label
    (logs, metrics), and stable (the agent keeps an unchanged instance running across updates)."""
    base = f"{namespace}-{name}"
    suffix = "-v6" if family == 6 else ""
    if len(base) + len(suffix) > 63:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        base = f"{base[: 63 - len(suffix) - 9].rstrip('-')}-{digest}"
    return base + suffix


__all__ = [
    "API_VERSION",
    "GROUP",
    "MIN_PRIORITY",
    "TOP_PRIORITY",
    "VERSION",
    "VRID_RANGE",
    "Condition",
    "InstanceReport",
    "LastTransition",
    "Mode",
    "NodeAssignmentStatus",
    "NodeState",
    "ObjectRef",
    "Priorities",
    "RealServerReport",
    "RealServerState",
    "SecretKeyRef",
    "VirtualIPSpec",
    "VirtualIPStatus",
    "VirtualServerReport",
    "VirtualServerSpec",
    "VirtualServerStatus",
    "Vrrp",
    "instance_name",
]
