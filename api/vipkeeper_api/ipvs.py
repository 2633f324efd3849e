"""IPVS virtual servers: a virtual service on a VIP (or a firewall mark), its real servers, how
they are checked, and what happens when they fail (keepalived's ``virtual_server`` block).
"""

from __future__ import annotations

import ipaddress
import typing
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from vipkeeper_api.base import IPAddress, Model, dns_label, parse_address
from vipkeeper_api.checks import SCRIPT_NAME_RE, Check, ExecCheck

#: Every scheduler the Linux kernel offers (ip_vs_*.ko).
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "mh",
    "fo",
    "ovf",
    "twos",
)
Scheduler = Literal[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"
]
MAX_REAL_SERVERS = 10000
_CHECK = TypeAdapter(Check)
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class Forwarding(StrEnum):
    NAT = "nat"
    DR = "dr"
    TUNNEL = "tunnel"


class SchedulerFlag(StrEnum):
    """ipvsadm's --sched-flags for the hashing schedulers."""

    SH_FALLBACK = "sh-fallback"
    SH_PORT = "sh-port"
    MH_FALLBACK = "mh-fallback"
    MH_PORT = "mh-port"


class Placement(StrEnum):
    #: Rules only on the node that holds the VIP (follows VRRP transitions).
    HOLDER = "holder"
    #: Rules on every node (e.g. DR with the VIP reached by other means).
    ALL = "all"


def _script_name(value: str | None) -> str | None:
    if value is not None and (not SCRIPT_NAME_RE.match(value) or value in (".", "..")):
        raise ValueError(
            f"{value!r} is not a script name; give the file name of a script in the agent's "
            "script directory (no '/'), not a path or command line"
        )
    return value


class RealServer(Model):
    address: IPAddress
    #: Default: the virtual server's port. Without one, a firewall-mark service's real server
    #: gets the port the client asked for (ipvsadm's port 0).
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=65535)
    #: Connection thresholds (ipvsadm -x / -y): above ``upperThreshold`` active + inactive
    #: connections the real server gets no new ones, until they fall below ``lowerThreshold``
    #: (0: three quarters of the upper one). 0 means no upper limit.
    upper_threshold: int = Field(default=0, ge=0, le=2**31 - 1)
    lower_threshold: int = Field(default=0, ge=0, le=2**31 - 1)

    _addr = field_validator("address", mode="before")(parse_address)

    @field_validator("lower_threshold")
    @classmethod
    def _thresholds_in_order(cls, value: int, info: ValidationInfo) -> int:
        upper = info.data.get("upper_threshold")
        if upper is not None and value > upper:
            zero = ", even though 0 means no limit" if upper == 0 else ""
            raise ValueError(
                f"must not exceed upperThreshold {upper}: the kernel refuses that (ERANGE){zero}; "
                "a lower threshold only applies to a server over its upper one, so set "
                f"upperThreshold to {value} or more, or lower lowerThreshold"
            )
        return value


class SorryServer(Model):
    """Takes the traffic while no real server is healthy (keepalived sorry_server)."""

    address: IPAddress
    port: int | None = Field(default=None, ge=1, le=65535)

    _addr = field_validator("address", mode="before")(parse_address)


class Persistence(Model):
    """Clients stick to one real server (ipvsadm -p / -M)."""

    timeout: int = Field(default=300, ge=1, le=31536000)
    #: Clients in the same network of this prefix length share a real server; default: the full
    #: address (32 for IPv4, 128 for IPv6).
    prefix_length: int | None = Field(default=None, ge=0, le=128)


class Quorum(Model):
    """The service is up while the healthy real servers' weights add up to ``min``; it goes down
    below ``min - hysteresis`` and up again at ``min + hysteresis`` (keepalived quorum)."""

    min: int = Field(default=1, ge=1, le=2**31 - 1)
    hysteresis: int = Field(default=0, ge=0, le=2**31 - 1)
    up: str | None = None
    down: str | None = None

    _scripts = field_validator("up", "down")(lambda cls, v: _script_name(v))


class VirtualServer(Model):
    """An IPVS virtual service and its real servers."""

    name: str
    address: IPAddress | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Protocol = Protocol.TCP
    #: A firewall-mark service instead of address/port (ipvsadm -f).
    fwmark: int | None = Field(default=None, ge=1, le=2**32 - 1)
    #: Address family of a firewall-mark service (4 or 6); otherwise that of ``address``.
    fwmark_family: Literal[4, 6] = 4
    scheduler: Scheduler = "wlc"
    scheduler_flags: tuple[SchedulerFlag, ...] = ()
    forwarding: Forwarding = Forwarding.NAT
    persistence: Persistence | None = None
    real_servers: tuple[RealServer, ...] = Field(default=(), max_length=MAX_REAL_SERVERS)
    #: A check (any kind, without ``name``) run against every real server; ``address`` and
    #: ``port`` default to the real server's (set them to check another IP/port).
    check: dict[str, Any] | None = None
    #: A failed real server stays with weight 0 instead of being removed (keepalived
    #: inhibit_on_failure): its established connections keep going.
    inhibit_on_failure: bool = False
    sorry_server: SorryServer | None = None
    quorum: Quorum | None = None
    placement: Placement = Placement.HOLDER
    #: The VRRP instance whose MASTER carries this service (placement: holder); default: the
    #: instance that has ``address`` among its VIPs.
    vrrp_instance: str | None = None

    _dns = field_validator("name")(dns_label)
    _addr = field_validator("address", mode="before")(
        lambda cls, v: None if v is None else parse_address(v)
    )

    @field_validator("check")
    @classmethod
    def _check_template(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        """The template must be a valid check once aimed at a real server. Its errors keep
        their place: pydantic-core nests a ValidationError raised here under ``check`` (e.g.
        ``virtualServers[0].check.path``, or ``check.kind`` for an unknown kind), so they read
        like the errors of a top-level check."""
        address = info.data.get("address")
        family = address.version if address is not None else info.data.get("fwmark_family", 4)
        return check_template(value, family, info.data.get("port"))

    @property
    def family(self) -> int:
        return self.address.version if self.address is not None else self.fwmark_family

    def real_port(self, rs: RealServer) -> int:
        """The port a real server listens on (0 for a firewall-mark service without one)."""
        return rs.port if rs.port is not None else (self.port or 0)

    @property
    def key(self) -> tuple[object, ...]:
        """What identifies the service in the kernel's table."""
        if self.fwmark is not None:
            return ("fwmark", self.fwmark_family, self.fwmark)
        return (self.protocol.value, self.address, self.port)

    def describe(self) -> str:
        if self.fwmark is not None:
            return f"fwmark {self.fwmark} (IPv{self.fwmark_family})"
        host = f"[{self.address}]" if self.family == 6 else str(self.address)
        return f"{self.protocol.value} {host}:{self.port}"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.fwmark is None and (self.address is None or self.port is None):
            raise ValueError("give address and port, or fwmark for a firewall-mark service")
        if self.fwmark is not None and (self.address is not None or self.port is not None):
            raise ValueError(
                "a firewall-mark service has no address or port; remove them or remove fwmark"
            )
        if wrong_flags := scheduler_flag_errors(self.scheduler, self.scheduler_flags):
            raise ValueError(wrong_flags[0][1])
        family = self.family
        seen: set[tuple[object, int]] = set()
        for index, rs in enumerate(self.real_servers):
            where = f"realServers[{index}]"
            if (wrong := family_error(rs.address, family)) is not None:
                raise ValueError(f"{where}.address {wrong}")
            port = self.real_port(rs)
            if (rs.address, port) in seen:
                raise ValueError(f"{where} repeats {rs.address} port {port}")
            seen.add((rs.address, port))
            if self.forwarding != Forwarding.NAT and self.port is not None and port != self.port:
                raise ValueError(
                    f"{where}.port {port} differs from the service's {self.port}: with "
                    f"{self.forwarding.value} forwarding the packet keeps its destination port; "
                    "use nat to change ports"
                )
        for message in (
            prefix_length_error(self.persistence, family),
            sorry_server_error(self.sorry_server, family),
            quorum_error(self.quorum, self.real_servers),
        ):
            if message is not None:
                raise ValueError(message)
        if self.check is not None and self.check.get("kind") == "tcp" and "port" not in self.check:
            for index, rs in enumerate(self.real_servers):
                if not self.real_port(rs):
                    raise ValueError(
                        f"check: a tcp check needs a port, and realServers[{index}] has none (a "
                        "firewall-mark service without ports keeps the client's port); set "
                        "check.port, or give the real servers a port"
                    )
        return self

    def real_server_checks(self) -> list[tuple[RealServer, Check]]:
        """The check of every real server: the template aimed at it (unless it names its own
        address or port), named ``<vs>/<address>:<port>`` for status and logs."""
        if self.check is None:
            return []
        template = _aimed_check(self.check, self.family, self.port)
        out = []
        for rs in self.real_servers:
            port = self.real_port(rs)
            update: dict[str, Any] = {"name": f"{self.name}/{_hostport(rs.address, port)}"}
            if "address" not in self.check and hasattr(template, "address"):
                update["address"] = rs.address
            if "port" not in self.check and hasattr(template, "port") and port:
                update["port"] = port
            if isinstance(template, ExecCheck):
                # One script serves every real server; it learns which one from its arguments.
                update["args"] = tuple(
                    a.replace("{address}", str(rs.address)).replace("{port}", str(port or ""))
                    for a in template.args
                )
            out.append((rs, template.model_copy(update=update)))
        return out

    def scripts(self) -> list[tuple[str, str]]:
        out = []
        if self.check is not None and self.check.get("kind") == "exec":
            out.append(("check.script", str(self.check.get("script"))))
        if self.quorum is not None:
            for hook in ("up", "down"):
                name = getattr(self.quorum, hook)
                if name is not None:
                    out.append((f"quorum.{hook}", name))
        return out


# --- rules shared with the VirtualServer custom resource (resources.VirtualServerSpec), which
# reports them at the field's own path; each returns the problem, or None.


def check_template(
    value: dict[str, Any] | None, family: int, port: int | None
) -> dict[str, Any] | None:
    """A check template (``check``) unchanged if it is a valid check once aimed at a real server
    of ``family`` (any family will do where the service's is unknown: it only picks the address
    placeholder); raises ValueError or a ValidationError located within the template."""
    if value is None:
        return None
    if "name" in value:
        raise ValueError(
            "remove name; each real server's check is named after it "
            "(<virtual server>/<address>:<port>)"
        )
    _aimed_check(value, family, port)
    return value


def scheduler_flag_errors(scheduler: str, flags: Sequence[SchedulerFlag]) -> list[tuple[int, str]]:
    """The flags (index, problem) that belong to another scheduler."""
    return [
        (index, f"schedulerFlags {flag.value} applies to scheduler {flag.value.split('-')[0]}, "
                f"not {scheduler}")
        for index, flag in enumerate(flags)
        if not flag.value.startswith(scheduler + "-")
    ]  # fmt: skip


def family_error(address: IPAddr, family: int) -> str | None:
    """A real server's address of another family than the service's."""
    if address.version == family:
        return None
    return f"{address} is IPv{address.version}, the service is IPv{family}"


def prefix_length_error(persistence: Persistence | None, family: int) -> str | None:
    if persistence is None or persistence.prefix_length is None:
        return None
    if persistence.prefix_length > (bits := 32 if family == 4 else 128):
        return (
            f"persistence.prefixLength {persistence.prefix_length} exceeds {bits} "
            f"for an IPv{family} service"
        )
    if family == 6 and persistence.prefix_length == 0:
        return (
            "persistence.prefixLength 0 is not possible for an IPv6 service: the kernel "
            "takes 1-128 (EINVAL); use 1 to group as many clients as possible, or remove "
            "prefixLength to keep each client address on its own real server"
        )
    return None


def sorry_server_error(sorry: SorryServer | None, family: int) -> str | None:
    if sorry is not None and sorry.address.version != family:
        return f"sorryServer must be IPv{family} like the service"
    return None


def quorum_error(quorum: Quorum | None, real_servers: Sequence[RealServer]) -> str | None:
    """A quorum the real servers could never reach (none given: they come later, unknown)."""
    total = sum(rs.weight for rs in real_servers)
    if quorum is not None and real_servers and quorum.min > total:
        return (
            f"quorum.min {quorum.min} exceeds the real servers' total weight "
            f"{total}, so the service could never be up; lower it or add weight"
        )
    return None


class ServiceFields(typing.Protocol):
    """What a virtual service's rules read: ipvs.VirtualServer's fields, and the custom resource's
    (resources.VirtualServerSpec)."""

    @property
    def scheduler(self) -> str: ...
    @property
    def scheduler_flags(self) -> tuple[SchedulerFlag, ...]: ...
    @property
    def real_servers(self) -> tuple[RealServer, ...]: ...
    @property
    def persistence(self) -> Persistence | None: ...
    @property
    def sorry_server(self) -> SorryServer | None: ...
    @property
    def quorum(self) -> Quorum | None: ...


def service_problems(vs: ServiceFields, family: int | None) -> ValidationError | None:
    """Every rule above that ``vs`` breaks, each at its own field (``realServers[1].address``),
    to raise from a model validator; with ``family`` None (unknown) only what holds for any."""
    found: list[tuple[tuple[int | str, ...], object, str | None]] = [
        (("schedulerFlags", index), vs.scheduler_flags[index].value, message)
        for index, message in scheduler_flag_errors(vs.scheduler, vs.scheduler_flags)
    ]
    if vs.quorum is not None:
        found.append((("quorum", "min"), vs.quorum.min, quorum_error(vs.quorum, vs.real_servers)))
    if family is not None:
        found += [
            (("realServers", index, "address"), str(rs.address), family_error(rs.address, family))
            for index, rs in enumerate(vs.real_servers)
        ]
        if vs.persistence is not None:
            prefix = vs.persistence.prefix_length
            message = prefix_length_error(vs.persistence, family)
            found.append((("persistence", "prefixLength"), prefix, message))
        if vs.sorry_server is not None:
            address, message = vs.sorry_server.address, sorry_server_error(vs.sorry_server, family)
            found.append((("sorryServer", "address"), str(address), message))
    errors = [
        InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": ValueError(text)})
        for loc, value, text in found
        if text is not None
    ]
    return ValidationError.from_exception_data(type(vs).__name__, errors) if errors else None


#: Check kinds that connect to an address (defaulting to the real server's).
_ADDRESS_KINDS = ("http", "https", "tcp", "smtp", "ping")


def _aimed_check(template: dict[str, Any], family: int, port: int | None) -> Check:
    """A check template validated as a check, with placeholders for what each real server fills
    in (name, and address and port unless the template sets them). Raises ValidationError with the
    template's own locations."""
    document: dict[str, Any] = {"name": "check", **template}
    kind = template.get("kind")
    if kind in _ADDRESS_KINDS and "address" not in template:
        document["address"] = "::1" if family == 6 else "127.0.0.1"
    if kind == "tcp" and "port" not in template:
        document["port"] = port or 1
    return _CHECK.validate_python(document)


def _hostport(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
