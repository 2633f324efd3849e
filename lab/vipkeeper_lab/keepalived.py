"""keepalived as the reference implementation: config rendering, command line and status.

The renderer is a pure function so that what we ask keepalived to do can be unit-tested without
root, and so that an interop test can drive keepalived and vipkeeper from the same spec.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

from vipkeeper_lab.agents import AgentHandle, StatusUnavailableError
from vipkeeper_lab.procs import Proc

KEEPALIVED = "keepalived"
#: keepalived tokenises on whitespace and treats '#' and '!' as comment starts; there is no quoting
#: for these, so such values would silently change meaning.
_UNSAFE = re.compile(r"[\s#!{}\"]")
_DEFAULT_INTERFACE = "eth0"
_PASS_MAX_BYTES = 8


@dataclass(frozen=True)
class KeepalivedInstance:
    """The subset of a keepalived vrrp_instance that the lab needs (all others: defaults)."""

    name: str
    vrid: int
    priority: int
    addresses: tuple[str, ...]
    interface: str = _DEFAULT_INTERFACE
    version: int = 3
    advert_int: Decimal = Decimal(1)
    preempt: bool = True
    preempt_delay: Decimal = Decimal(0)
    unicast_peers: tuple[str, ...] = ()
    unicast_src_ip: str | None = None
    mcast_dst_ip: str | None = None
    auth_pass: str | None = None
    #: None: keepalived's defaults (5 GARPs at takeover, a second burst 5 s later, no refresh).
    garp_master_repeat: int | None = None
    garp_master_delay: Decimal | None = None
    garp_master_refresh: Decimal | None = None
    #: Raw lines added inside the vrrp_instance block, unchecked: for interop tests that need a
    #: keepalived option this dataclass does not model (e.g. "lower_prio_no_advert").
    extra: tuple[str, ...] = ()


def _dec(value: object) -> Decimal:
    # Through str so that 0.1 (a binary float) becomes exactly Decimal("0.1").
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _fmt(value: Decimal) -> str:
    # normalize() drops trailing zeros ("0.10" -> "0.1"); "f" avoids "1E+1" for whole tens.
    return format(value.normalize(), "f")


def _check_token(what: str, value: str) -> str:
    if not value or _UNSAFE.search(value):
        raise ValueError(f"{what} {value!r} cannot be written into keepalived.conf")
    return value


def validate_instance(inst: KeepalivedInstance) -> None:
    """Reject settings keepalived would refuse, or would silently reinterpret."""
    _check_token("instance name", inst.name)
    _check_token("interface", inst.interface)
    if not 1 <= inst.vrid <= 255:
        raise ValueError(f"{inst.name}: virtual_router_id {inst.vrid} is not 1-255")
    if not 1 <= inst.priority <= 255:
        raise ValueError(f"{inst.name}: priority {inst.priority} is not 1-255")
    if inst.version not in (2, 3):
        raise ValueError(f"{inst.name}: version {inst.version} is not 2 or 3")
    if not inst.addresses:
        raise ValueError(f"{inst.name}: no virtual_ipaddress")
    families = {ip_interface(a).version for a in inst.addresses}
    if len(families) != 1:
        raise ValueError(f"{inst.name}: IPv4 and IPv6 VIPs must be in separate instances")
    if 6 in families and inst.version != 3:
        raise ValueError(f"{inst.name}: IPv6 needs VRRP version 3")
    interval = _dec(inst.advert_int)
    if inst.version == 2 and (interval != interval.to_integral_value() or interval < 1):
        raise ValueError(f"{inst.name}: VRRPv2 advert_int must be whole seconds, got {interval}")
    if interval <= 0:
        raise ValueError(f"{inst.name}: advert_int must be positive")
    if inst.auth_pass is not None:
        if inst.version != 2:
            raise ValueError(f"{inst.name}: PASS authentication exists only in VRRPv2")
        _check_token("auth_pass", inst.auth_pass)
        if len(inst.auth_pass.encode()) > _PASS_MAX_BYTES:
            # keepalived would silently use only the first 8 bytes.
            raise ValueError(f"{inst.name}: auth_pass is longer than {_PASS_MAX_BYTES} bytes")
    for peer in (*inst.unicast_peers, *filter(None, [inst.unicast_src_ip, inst.mcast_dst_ip])):
        if ip_address(peer).version not in families:
            raise ValueError(f"{inst.name}: {peer} is not the VIPs' address family")


def render_conf(instances: Sequence[KeepalivedInstance], *, router_id: str) -> str:
    """keepalived.conf text for ``instances``; raises ValueError on settings keepalived rejects.

    Every instance starts as BACKUP: that is what a non-owner must do (RFC 5798 §6.4.1), and
    keepalived only honours nopreempt/preempt_delay for instances that start as BACKUP.
    """
    if not instances:
        raise ValueError("keepalived needs at least one vrrp_instance")
    _check_token("router_id", router_id)
    names = [i.name for i in instances]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate instance names: {names}")
    lines = [
        "# Generated by vipkeeper-lab; keepalived runs with -f on this file only.",
        "global_defs {",
        f"    router_id {router_id}",
        "}",
    ]
    for inst in instances:
        validate_instance(inst)
        lines += _render_instance(inst)
    return "\n".join(lines) + "\n"


def _render_instance(inst: KeepalivedInstance) -> list[str]:
    out = [
        "",
        f"vrrp_instance {inst.name} {{",
        "    state BACKUP",
        f"    interface {inst.interface}",
        f"    virtual_router_id {inst.vrid}",
        f"    priority {inst.priority}",
        f"    advert_int {_fmt(_dec(inst.advert_int))}",
        f"    version {inst.version}",
    ]
    if not inst.preempt:
        out.append("    nopreempt")
    elif _dec(inst.preempt_delay) > 0:
        out.append(f"    preempt_delay {_fmt(_dec(inst.preempt_delay))}")
    if inst.garp_master_repeat is not None:
        out.append(f"    garp_master_repeat {inst.garp_master_repeat}")
    if inst.garp_master_delay is not None:
        out.append(f"    garp_master_delay {_fmt(_dec(inst.garp_master_delay))}")
    if inst.garp_master_refresh is not None:
        out.append(f"    garp_master_refresh {_fmt(_dec(inst.garp_master_refresh))}")
    if inst.mcast_dst_ip is not None:
        out.append(f"    mcast_dst_ip {inst.mcast_dst_ip}")
    if inst.unicast_src_ip is not None:
        out.append(f"    unicast_src_ip {inst.unicast_src_ip}")
    if inst.unicast_peers:
        out.append("    unicast_peer {")
        out += [f"        {peer}" for peer in inst.unicast_peers]
        out.append("    }")
    if inst.auth_pass is not None:
        out += [
            "    authentication {",
            "        auth_type PASS",
            f"        auth_pass {inst.auth_pass}",
            "    }",
        ]
    out += [f"    {line}" for line in inst.extra]
    out.append("    virtual_ipaddress {")
    out += [
        f"        {ip_interface(a).with_prefixlen} dev {inst.interface}" for a in inst.addresses
    ]
    out += ["    }", "}"]
    return out


def instances_from_config(config: Mapping[str, Any]) -> list[KeepalivedInstance]:
    """Translate a vipkeeper standalone config (the dict given to the agent) for keepalived.

    The vipkeeper schema validates it first, so both implementations in an interop test are
    driven by exactly the same, valid, spec.
    """
    from vipkeeper_api import parse_spec  # noqa: PLC0415 - keeps the pure renderer import-light

    spec = parse_spec(dict(config), source="lab config")
    out = []
    for inst in spec.instances:
        if inst.address_owner:
            raise ValueError(f"{inst.name}: the lab's keepalived does not model address owners")
        garp = inst.garp
        defaults = type(garp)()
        out.append(
            KeepalivedInstance(
                name=inst.name,
                vrid=inst.vrid,
                priority=inst.priority,
                addresses=tuple(a.with_prefixlen for a in inst.addresses),
                interface=inst.interface or _DEFAULT_INTERFACE,
                version=inst.version,
                advert_int=inst.advert_interval,
                preempt=inst.preempt,
                preempt_delay=_dec(inst.preempt_delay),
                unicast_peers=tuple(str(p) for p in inst.unicast_peers),
                unicast_src_ip=None if inst.unicast_source is None else str(inst.unicast_source),
                mcast_dst_ip=None if inst.multicast_group is None else str(inst.multicast_group),
                auth_pass=None if inst.auth is None else inst.auth.password,
                garp_master_repeat=None if garp.count == defaults.count else garp.count,
                garp_master_delay=(
                    None if garp.repeat_delay == defaults.repeat_delay else _dec(garp.repeat_delay)
                ),
                garp_master_refresh=None if garp.refresh == 0 else _dec(garp.refresh),
            )
        )
    return out


@dataclass(frozen=True)
class KeepalivedPaths:
    conf: Path
    pid: Path
    vrrp_pid: Path
    checkers_pid: Path

    @classmethod
    def in_dir(cls, directory: Path, stem: str) -> KeepalivedPaths:
        return cls(
            conf=directory / f"{stem}.conf",
            pid=directory / f"{stem}.pid",
            vrrp_pid=directory / f"{stem}.vrrp.pid",
            checkers_pid=directory / f"{stem}.checkers.pid",
        )


def keepalived_argv(paths: KeepalivedPaths, executable: str = KEEPALIVED) -> list[str]:
    """Foreground, VRRP only, log to the console and not to the host's syslog.

    Separate pid files per node matter: keepalived refuses to start when the pid file names a
    live keepalived, and all labs share one mount namespace (and so /run).
    """
    return [
        executable,
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
        f"--use-file={paths.conf}",
        f"--pid={paths.pid}",
        f"--vrrp_pid={paths.vrrp_pid}",
        f"--checkers_pid={paths.checkers_pid}",
    ]


_ENTERING = re.compile(
    r"^(?P<stamp>\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4}): \((?P<name>[^)]+)\) "
    r"Entering (?P<state>[A-Z]+) STATE(?: \((?P<reason>[^)]*)\))?"
)


@dataclass(frozen=True)
class Transition:
    name: str
    state: str
    at: float
    reason: str


def parse_transitions(log_lines: Iterable[str]) -> list[Transition]:
    """State changes keepalived -l -D logged, oldest first (times have 1 s resolution)."""
    found = []
    for line in log_lines:
        match = _ENTERING.match(line)
        if match is None:
            continue
        try:
            at = time.mktime(time.strptime(match["stamp"], "%a %b %d %H:%M:%S %Y"))
        except ValueError:
            at = 0.0
        found.append(Transition(match["name"], match["state"], at, match["reason"] or ""))
    return found


def status_from_log(
    log_lines: Iterable[str], instances: Sequence[KeepalivedInstance], started_at: float
) -> dict[str, Any]:
    """A status document shaped like vipkeeper-agent's, reconstructed from keepalived's log.

    keepalived has no equivalent of our status socket that does not write to the shared /tmp,
    so only name, vrid, state, priority and transitions are known; counters are None.
    """
    transitions = parse_transitions(log_lines)
    out = []
    for inst in instances:
        mine = [t for t in transitions if t.name == inst.name]
        last = mine[-1] if mine else None
        before = mine[-2].state if len(mine) > 1 else "INIT"
        out.append(
            {
                "name": inst.name,
                "vrid": inst.vrid,
                "state": last.state if last else "INIT",
                "priority": inst.priority,
                "masterAddress": None,
                "since": last.at if last else started_at,
                "lastTransition": (
                    {"from": before, "to": last.state, "reason": last.reason, "at": last.at}
                    if last
                    else None
                ),
                "counters": None,
            }
        )
    return {"instances": out}


class KeepalivedHandle(AgentHandle):
    kind = "keepalived"

    def __init__(
        self,
        node: str,
        proc: Proc,
        config: Sequence[KeepalivedInstance],
        paths: KeepalivedPaths,
    ) -> None:
        super().__init__(node, proc, config, paths.conf)
        self.instances = tuple(config)
        self.paths = paths

    def status(self) -> dict[str, Any]:
        if not self.proc.alive():
            raise StatusUnavailableError(f"keepalived on {self.node} is not running")
        return status_from_log(
            self.proc.log_text().splitlines(), self.instances, self.proc.started_at
        )
