"""The kernel's view of IPVS: services, their destinations (real servers) and counters.

Pure data, no I/O. Both sides of a diff are a :data:`Table`: what the kernel holds (read by
:mod:`vipkeeper_agent.ipvs.kernel`) and what the configuration wants (built by
:func:`vipkeeper_agent.ipvs.plan.desired`). The fields are exactly what the kernel stores and
reports back, in the form it reports them, so that a table read back after applying a plan
compares equal to the plan's target.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from vipkeeper_api.ipvs import Protocol, SchedulerFlag

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: IP_VS_SVC_F_* (include/uapi/linux/ip_vs.h).
FLAG_PERSISTENT = 0x0001
#: Set by the kernel on every service it has hashed; never ours to send or compare.
FLAG_HASHED = 0x0002
FLAG_ONEPACKET = 0x0004
FLAG_SCHED1 = 0x0008
FLAG_SCHED2 = 0x0010
FLAG_SCHED3 = 0x0020

#: ipvsadm's --sched-flags: the hashing schedulers read SCHED1 as "fallback" and SCHED2 as
#: "port" (ipvsadm prints 0x18 on an sh service as "sh-fallback,sh-port").
SCHEDULER_FLAG_BITS: Mapping[SchedulerFlag, int] = {
    SchedulerFlag.SH_FALLBACK: FLAG_SCHED1,
    SchedulerFlag.SH_PORT: FLAG_SCHED2,
    SchedulerFlag.MH_FALLBACK: FLAG_SCHED1,
    SchedulerFlag.MH_PORT: FLAG_SCHED2,
}

#: IP protocol numbers of the protocols IPVS balances.
PROTOCOL_NUMBERS: Mapping[Protocol, int] = {Protocol.TCP: 6, Protocol.UDP: 17, Protocol.SCTP: 132}


class ForwardingMethod(StrEnum):
    """IP_VS_CONN_F_* forwarding codes. ``nat``/``dr``/``tunnel`` are what a VirtualServer asks
    for; ``local`` and ``bypass`` exist only so that any entry in the kernel can be read."""

    NAT = "nat"
    LOCAL = "local"
    TUNNEL = "tunnel"
    DR = "dr"
    BYPASS = "bypass"

    @property
    def code(self) -> int:
        return _FORWARDING_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> ForwardingMethod:
        for method, value in _FORWARDING_CODES.items():
            if value == code:
                return method
        raise ValueError(f"unknown IPVS forwarding method {code}")

    @property
    def ipvsadm(self) -> str:
        """The word ``ipvsadm -Ln`` prints."""
        return _IPVSADM_NAMES[self]


_FORWARDING_CODES = {
    ForwardingMethod.NAT: 0,
    ForwardingMethod.LOCAL: 1,
    ForwardingMethod.TUNNEL: 2,
    ForwardingMethod.DR: 3,
    ForwardingMethod.BYPASS: 4,
}
_IPVSADM_NAMES = {
    ForwardingMethod.NAT: "Masq",
    ForwardingMethod.LOCAL: "Local",
    ForwardingMethod.TUNNEL: "Tunnel",
    ForwardingMethod.DR: "Route",
    ForwardingMethod.BYPASS: "Bypass",
}


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What identifies a service in the kernel: family + protocol + address + port, or family +
    firewall mark. Unused fields are ``None``/0 so that equal services have equal keys."""

    family: int
    protocol: Protocol | None = None
    address: IPAddress | None = None
    port: int = 0
    fwmark: int = 0

    def __post_init__(self) -> None:
        if self.family not in (4, 6):
            raise ValueError(f"family must be 4 or 6, not {self.family}")
        if self.fwmark:
            if self.protocol is not None or self.address is not None or self.port:
                raise ValueError("a firewall-mark service has no protocol, address or port")
        elif self.protocol is None or self.address is None:
            raise ValueError("a service needs a protocol and an address, or a firewall mark")
        elif self.address.version != self.family:
            raise ValueError(f"address {self.address} is not IPv{self.family}")

    @classmethod
    def of(cls, protocol: Protocol, address: IPAddress | str, port: int) -> ServiceKey:
        addr = ipaddress.ip_address(address)
        return cls(family=addr.version, protocol=protocol, address=addr, port=port)

    @classmethod
    def firewall_mark(cls, family: int, fwmark: int) -> ServiceKey:
        return cls(family=family, fwmark=fwmark)

    @property
    def sort_key(self) -> tuple[int, int, str, int, int, int]:
        """A total order (addresses of both families do not compare with ``<``)."""
        return (
            self.family,
            1 if self.fwmark else 0,
            "" if self.protocol is None else self.protocol.value,
            0 if self.address is None else int(self.address),
            self.port,
            self.fwmark,
        )

    def __str__(self) -> str:
        if self.fwmark:
            return f"FWM {self.fwmark} IPv{self.family}"
        assert self.protocol is not None and self.address is not None
        return f"{self.protocol.value} {hostport(self.address, self.port)}"


@dataclass(frozen=True, slots=True)
class Service:
    key: ServiceKey
    scheduler: str = "wlc"
    #: IP_VS_SVC_F_* bits, without FLAG_HASHED.
    flags: int = 0
    #: Persistence timeout in seconds; 0 = not persistent.
    timeout: int = 0
    #: Persistence granularity as a prefix length: clients in one network of this length share
    #: a real server. The full length (32 / 128) when not persistent; the kernel always has one.
    netmask: int = 32

    @property
    def persistent(self) -> bool:
        return bool(self.flags & FLAG_PERSISTENT)

    def scheduler_flag_names(self) -> list[str]:
        """The flags as ipvsadm names them, e.g. ``["sh-fallback", "sh-port"]``."""
        names = []
        for flag, bit in SCHEDULER_FLAG_BITS.items():
            if flag.value.startswith(self.scheduler + "-") and self.flags & bit:
                names.append(flag.value)
        return names


DestKey = tuple[IPAddress, int]


@dataclass(frozen=True, slots=True)
class Destination:
    """A real server as the kernel holds it (ipvsadm's "RemoteAddress:Port")."""

    address: IPAddress
    port: int
    weight: int = 1
    forwarding: ForwardingMethod = ForwardingMethod.NAT
    upper_threshold: int = 0
    lower_threshold: int = 0

    @property
    def key(self) -> DestKey:
        return (self.address, self.port)

    def __str__(self) -> str:
        return hostport(self.address, self.port)


@dataclass(frozen=True, slots=True)
class VirtualService:
    """One entry of a :data:`Table`: a service and its destinations by (address, port)."""

    service: Service
    destinations: Mapping[DestKey, Destination] = field(default_factory=dict)


#: The whole IPVS table (or the part of it a plan wants), by service key.
Table = Mapping[ServiceKey, VirtualService]


def make_table(*entries: tuple[Service, list[Destination]]) -> dict[ServiceKey, VirtualService]:
    """A table from (service, destinations) pairs; handy for tests and fixtures."""
    return {
        service.key: VirtualService(service, {d.key: d for d in dests})
        for service, dests in entries
    }


@dataclass(frozen=True, slots=True)
class Counters:
    """Traffic counters since the entry was created (IPVS_STATS_ATTR_*, ipvsadm --stats)."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    #: Rates over the kernel's estimator window (ipvsadm --rate).
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True, slots=True)
class DestinationStats:
    counters: Counters
    active_conns: int = 0
    inactive_conns: int = 0
    persistent_conns: int = 0


@dataclass(frozen=True, slots=True)
class ServiceStats:
    counters: Counters
    destinations: Mapping[DestKey, DestinationStats] = field(default_factory=dict)


Stats = Mapping[ServiceKey, ServiceStats]


def hostport(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
