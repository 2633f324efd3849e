"""The NodeAssignment spec: one typed, frozen model shared by the operator, the agent and standalone mode.

Keys are camelCase (the Kubernetes convention) and unknown keys are rejected, so a typo such as
``advertIntervall`` fails loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from enum import StrEnum
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from vipkeeper_api.base import IPAddress, IPInterface, Seconds, dns_label, parse_address
from vipkeeper_api.base import Model as _Model
from vipkeeper_api.checks import MAX_WEIGHT, SCRIPT_NAME_RE, Check, ExecCheck
from vipkeeper_api.ipvs import Placement, VirtualServer

MULTICAST_GROUP_V4 = ipaddress.IPv4Address("224.0.0.18")
MULTICAST_GROUP_V6 = ipaddress.IPv6Address("ff02::12")

#: RFC 5798 §5.2.7: 12-bit field in centiseconds.
V3_MIN_INTERVAL = Decimal("0.01")
V3_MAX_INTERVAL = Decimal("40.95")
#: RFC 3768 §5.3.7: 8-bit field in seconds.
V2_MAX_INTERVAL = 255
PASS_AUTH_MAX_BYTES = 8
OWNER_PRIORITY = 255
#: Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _parse_interface(value: object) -> IPInterface:
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return value
    if not isinstance(value, str):
        raise ValueError(
            "must be an IP address such as 192.0.2.10 or 192.0.2.10/24 or 2001:db8::10"
        )
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address; write e.g. 192.0.2.10, 192.0.2.10/24 or 2001:db8::10/64"
        ) from None
    ip = iface.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
        raise ValueError(
            f"{value!r} is a multicast, unspecified or loopback address; a VIP must be unicast"
        )
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        raise ValueError(
            f"{value!r} is an IPv6 link-local address; a VIP must be global or unique-local"
        )
    return iface


_parse_address = parse_address


class AuthType(StrEnum):
    PASS = "pass"


class Auth(_Model):
    """VRRPv2 simple password authentication (RFC 2338 type 1; no security, only a guard against
    mixing up routers on one segment)."""

    type: AuthType = AuthType.PASS
    password: str = Field(min_length=1)

    @field_validator("password")
    @classmethod
    def _at_most_8_bytes(cls, value: str) -> str:
        size = len(value.encode())
        if size > PASS_AUTH_MAX_BYTES:
            raise ValueError(
                f"is {size} bytes long; PASS authentication carries at most "
                f"{PASS_AUTH_MAX_BYTES} bytes (longer passwords are truncated by other routers)"
            )
        return value


class Garp(_Model):
    """Gratuitous ARP / unsolicited NA on becoming MASTER (keepalived's garp_master_* settings)."""

    #: Messages per burst (keepalived garp_master_repeat, default 5).
    count: int = Field(default=5, ge=1, le=100)
    #: Spacing between messages of one burst, in seconds (keepalived garp_interval).
    interval: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Second burst this many seconds after takeover; 0 disables (keepalived garp_master_delay, default 5).
    repeat_delay: float = Field(default=5.0, ge=0.0, le=3600.0)
    #: Periodic refresh while MASTER, in seconds; 0 disables (keepalived garp_master_refresh).
    refresh: float = Field(default=0.0, ge=0.0, le=86400.0)


def _expand_shorthand(value: object, key: str) -> object:
    if isinstance(value, list | tuple):
        return tuple({key: v} if isinstance(v, str) else v for v in value)
    return value


class TrackCheck(_Model):
    """An instance follows a check (keepalived track_script)."""

    check: str
    #: Overrides the check's own weight for this instance.
    weight: int | None = Field(default=None, ge=-MAX_WEIGHT, le=MAX_WEIGHT)


class TrackInterface(_Model):
    """An instance follows another link (keepalived track_interface)."""

    interface: str
    #: 0 (default): link down puts the instance in FAULT; < 0 subtracts while down; > 0 adds while up.
    weight: int = Field(default=0, ge=-MAX_WEIGHT, le=MAX_WEIGHT)

    @field_validator("interface")
    @classmethod
    def _ifname(cls, value: str) -> str:
        if not IFNAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a Linux interface name (1-15 characters, no spaces or '/')"
            )
        return value


class NotifyScripts(_Model):
    """Scripts (names in the agent's script directory) run on transitions, each called
    keepalived-style as ``script INSTANCE <name> <STATE> <priority>``."""

    master: str | None = None
    backup: str | None = None
    fault: str | None = None
    stop: str | None = None
    #: Called on every transition (keepalived's generic ``notify``).
    any: str | None = None

    @field_validator("master", "backup", "fault", "stop", "any")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and (not SCRIPT_NAME_RE.match(value) or value in (".", "..")):
            raise ValueError(
                f"{value!r} is not a script name; give the file name of a script in the agent's "
                "script directory (no '/'), not a path or command line"
            )
        return value

    def scripts_for(self, state: str) -> tuple[str, ...]:
        """The scripts to run on entering ``state`` (MASTER, BACKUP, FAULT or STOP), in order."""
        specific = {
            "MASTER": self.master,
            "BACKUP": self.backup,
            "FAULT": self.fault,
            "STOP": self.stop,
        }.get(state)
        return tuple(s for s in (specific, self.any) if s is not None)


class VrrpInstance(_Model):
    """One virtual router: a VRID on one interface and address family, owning a set of VIPs."""

    name: str
    vrid: int = Field(ge=1, le=255)
    interface: str | None = None
    version: Literal[2, 3] = 3
    priority: int = Field(default=100, ge=1, le=255)
    address_owner: bool = False
    advert_interval: Seconds = Decimal("1")
    preempt: bool = True
    preempt_delay: float = Field(default=0.0, ge=0.0, le=3600.0)
    addresses: tuple[IPInterface, ...] = Field(min_length=1, max_length=64)
    unicast_peers: tuple[IPAddress, ...] = Field(default=(), max_length=64)
    unicast_source: IPAddress | None = None
    multicast_group: IPAddress | None = None
    auth: Auth | None = None
    garp: Garp = Garp()
    track_checks: tuple[TrackCheck, ...] = Field(default=(), max_length=64)
    track_interfaces: tuple[TrackInterface, ...] = Field(default=(), max_length=64)
    #: Instances with the same group name change state together (keepalived vrrp_sync_group).
    sync_group: str | None = None
    notify: NotifyScripts = NotifyScripts()

    _group_name = field_validator("sync_group")(
        lambda cls, v: v if v is None else dns_label(cls, v)
    )

    # `trackChecks: [nginx]` is short for `[{check: nginx}]`, and likewise for interfaces.
    _check_shorthand = field_validator("track_checks", mode="before")(
        lambda cls, v: _expand_shorthand(v, "check")
    )
    _interface_shorthand = field_validator("track_interfaces", mode="before")(
        lambda cls, v: _expand_shorthand(v, "interface")
    )

    @field_validator("addresses", mode="before")
    @classmethod
    def _parse_addresses(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(_parse_interface(v) for v in value)
        return value

    @field_validator("unicast_peers", mode="before")
    @classmethod
    def _parse_peers(cls, value: object) -> object:
        if isinstance(value, list | tuple):
            return tuple(_parse_address(v) for v in value)
        return value

    @field_validator("unicast_source", "multicast_group", mode="before")
    @classmethod
    def _parse_one_address(cls, value: object) -> object:
        return None if value is None else _parse_address(value)

    _dns = field_validator("name")(dns_label)

    @field_validator("interface")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        if value is not None and not IFNAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a Linux interface name (1-15 characters, no spaces or '/')"
            )
        return value

    @field_validator("advert_interval", mode="before")
    @classmethod
    def _decimal(cls, value: object) -> object:
        # Go through str so that YAML's 0.1 (a binary float) becomes exactly Decimal("0.1").
        if isinstance(value, float | int) and not isinstance(value, bool):
            return Decimal(str(value))
        return value

    @property
    def family(self) -> int:
        return self.addresses[0].version

    @property
    def advert_interval_cs(self) -> int:
        return int(self.advert_interval * 100)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        families = {a.version for a in self.addresses}
        if len(families) > 1:
            raise ValueError(
                "addresses mixes IPv4 and IPv6; VRRP runs one instance per address family, "
                "so split them into two instances"
            )
        family = self.family
        if family == 6 and self.version != 3:
            raise ValueError("IPv6 addresses need VRRP version 3 (RFC 5798); set version: 3")
        if len({a.ip for a in self.addresses}) != len(self.addresses):
            raise ValueError("addresses lists the same IP twice")
        self._check_interval()
        if self.priority == OWNER_PRIORITY and not self.address_owner:
            raise ValueError(
                "priority 255 is reserved for the address owner (RFC 5798 §5.2.4); "
                "use 1-254, or set addressOwner: true if this node really owns the address"
            )
        if self.address_owner and self.priority != OWNER_PRIORITY:
            raise ValueError(f"addressOwner: true needs priority 255, got {self.priority}")
        if self.auth is not None and self.version != 2:
            raise ValueError(
                "auth (PASS) exists only in VRRP version 2; RFC 5798 removed authentication "
                "from version 3 — remove auth or set version: 2"
            )
        for field, value in (
            ("unicastPeers", self.unicast_peers),
            ("unicastSource", self.unicast_source),
        ):
            items = value if isinstance(value, tuple) else (() if value is None else (value,))
            for ip in items:
                if ip.version != family:
                    raise ValueError(
                        f"{field} has {ip} (IPv{ip.version}) but addresses are IPv{family}"
                    )
        if self.multicast_group is not None:
            if self.unicast_peers:
                raise ValueError("set either unicastPeers or multicastGroup, not both")
            if self.multicast_group.version != family or not self.multicast_group.is_multicast:
                raise ValueError(
                    f"multicastGroup {self.multicast_group} must be an IPv{family} multicast address"
                )
        return self

    def _check_interval(self) -> None:
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

    @property
    def group(self) -> IPAddress:
        if self.multicast_group is not None:
            return self.multicast_group
        return MULTICAST_GROUP_V4 if self.family == 4 else MULTICAST_GROUP_V6


class NodeAssignmentSpec(_Model):
    """Everything one node runs. The standalone YAML file is exactly this."""

    instances: tuple[VrrpInstance, ...] = Field(default=(), max_length=1024)
    virtual_servers: tuple[VirtualServer, ...] = Field(default=(), max_length=1024)
    checks: tuple[Check, ...] = Field(default=(), max_length=4096)
    #: Hand every VIP over (priority 0) and stay BACKUP; the agent's maintenance file does the same.
    maintenance: bool = False

    @property
    def checks_by_name(self) -> dict[str, Check]:
        return {c.name: c for c in self.checks}

    def scripts(self) -> list[tuple[str, str]]:
        """Every script the spec refers to, as (path in the spec, script name)."""
        out: list[tuple[str, str]] = []
        for index, check in enumerate(self.checks):
            if isinstance(check, ExecCheck):
                out.append((f"checks[{index}].script", check.script))
        for index, inst in enumerate(self.instances):
            for hook in ("master", "backup", "fault", "stop", "any"):
                name = getattr(inst.notify, hook)
                if name is not None:
                    out.append((f"instances[{index}].notify.{hook}", name))
        for index, vs in enumerate(self.virtual_servers):
            out += [(f"virtualServers[{index}].{path}", name) for path, name in vs.scripts()]
        return out

    def instance_index(self) -> tuple[dict[str, VrrpInstance], dict[IPAddress, VrrpInstance]]:
        """Instances by name and by VIP (the first that has it): an operator-rendered spec has
        hundreds of each, and a lookup per virtual server must not scan them all."""
        by_name: dict[str, VrrpInstance] = {}
        by_address: dict[IPAddress, VrrpInstance] = {}
        for inst in self.instances:
            by_name.setdefault(inst.name, inst)
            for a in inst.addresses:
                by_address.setdefault(a.ip, inst)
        return by_name, by_address

    def instance_for(
        self,
        vs: VirtualServer,
        index: tuple[dict[str, VrrpInstance], dict[IPAddress, VrrpInstance]] | None = None,
    ) -> VrrpInstance | None:
        """The VRRP instance whose MASTER carries ``vs`` (placement: holder)."""
        by_name, by_address = index if index is not None else self.instance_index()
        if vs.vrrp_instance is not None:
            return by_name.get(vs.vrrp_instance)
        return None if vs.address is None else by_address.get(vs.address)

    @model_validator(mode="after")
    def _virtual_servers(self) -> Self:
        names: dict[str, int] = {}
        keys: dict[tuple[object, ...], int] = {}
        carriers = self.instance_index()
        for index, vs in enumerate(self.virtual_servers):
            where = f"virtualServers[{index}]"
            if vs.name in names:
                raise ValueError(
                    f"{where}.name {vs.name!r} is already used by virtualServers[{names[vs.name]}]"
                )
            names[vs.name] = index
            if vs.key in keys:
                raise ValueError(
                    f"{where} is {vs.describe()}, already virtualServers[{keys[vs.key]}]"
                )
            keys[vs.key] = index
            if vs.placement == Placement.HOLDER and self.instance_for(vs, carriers) is None:
                if vs.vrrp_instance is not None:
                    raise ValueError(
                        f"{where}.vrrpInstance {vs.vrrp_instance!r} is not an instance of this spec"
                    )
                raise ValueError(
                    f"{where}: placement holder needs the VRRP instance that holds "
                    f"{vs.address or 'the service'}; add the address to an instance, set "
                    "vrrpInstance, or use placement: all"
                )
        return self

    @model_validator(mode="after")
    def _references(self) -> Self:
        seen: dict[str, int] = {}
        for index, check in enumerate(self.checks):
            if check.name in seen:
                raise ValueError(
                    f"checks[{index}].name {check.name!r} is already used by checks[{seen[check.name]}]"
                )
            seen[check.name] = index
        for index, inst in enumerate(self.instances):
            for t, track in enumerate(inst.track_checks):
                if track.check not in seen:
                    known = ", ".join(sorted(seen)) or "none"
                    raise ValueError(
                        f"instances[{index}].trackChecks[{t}].check {track.check!r} is not defined "
                        f"under checks (defined: {known}); define it or fix the name"
                    )
        return self

    @model_validator(mode="after")
    def _unique(self) -> Self:
        names: dict[str, int] = {}
        vrids: dict[tuple[str | None, int, int], int] = {}
        owners: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
        for index, inst in enumerate(self.instances):
            if inst.name in names:
                raise ValueError(
                    f"instances[{index}].name {inst.name!r} is already used by instances[{names[inst.name]}]"
                )
            names[inst.name] = index
            key = (inst.interface, inst.family, inst.vrid)
            if key in vrids:
                where = inst.interface or "the auto-detected interface"
                raise ValueError(
                    f"instances[{index}].vrid {inst.vrid} is already used by instances[{vrids[key]}] "
                    f"on {where} for IPv{inst.family}; a VRID must be unique per interface and family"
                )
            vrids[key] = index
            for addr in inst.addresses:
                if addr.ip in owners:
                    raise ValueError(
                        f"instances[{index}].addresses has {addr.ip}, already in instances[{owners[addr.ip]}]"
                    )
                owners[addr.ip] = index
        return self
