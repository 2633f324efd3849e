"""Helpers of the keepalived interop tests: the config matrix and how each side is observed.

A plain module (not conftest.py) so that test modules can import it by a unique name.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from vipkeeper_agent.vrrp.timers import master_down_interval
from vipkeeper_lab.agents import AgentHandle, StatusUnavailableError, VipkeeperHandle
from vipkeeper_lab.keepalived import KeepalivedHandle, parse_transitions
from vipkeeper_lab.nodes import Lab, Node

VIP4 = "192.0.2.100/24"
VIP6 = "2001:db8::100/64"
INSTANCE = "web"
VRID = 51
HIGH, LOW = 150, 100
#: Added to every timer-derived bound: process start-up, netlink, polling (50 ms) and the load of
#: a CI machine. The RFC figure itself is what the assertion is about, the margin only absorbs
#: scheduling noise.
MARGIN = 1.5


# ----- the cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavour:
    """One VRRP version / address family / interval combination of the matrix."""

    id: str
    version: int
    family: int
    interval: Decimal

    @property
    def vip(self) -> str:
        return VIP4 if self.family == 4 else VIP6

    @property
    def vip_ip(self) -> str:
        return str(ipaddress.ip_interface(self.vip).ip)

    @property
    def interval_cs(self) -> int:
        return int(self.interval * 100)

    @property
    def interval_s(self) -> float:
        return float(self.interval)

    def master_down(self, priority: int) -> float:
        """Master_Down_Interval of a backup with ``priority`` (RFC 3768 / 5798 §6.1)."""
        return master_down_interval(priority, self.interval_cs, self.version)

    def skew(self, priority: int) -> float:
        return self.master_down(priority) - 3 * self.interval_s


# keepalived rounds VRRPv2 intervals to whole seconds, so v2 runs at 1 s (and is slow: keep it
# to the cases that need it).
V2 = Flavour("v2", 2, 4, Decimal(1))
V3 = Flavour("v3", 3, 4, Decimal("0.1"))
V3_IPV6 = Flavour("v3-ipv6", 3, 6, Decimal("0.1"))


def own_address(node: Node, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return node.ipv4.ip if family == 4 else node.ipv6.ip


def vrrp_config(
    flavour: Flavour,
    *,
    me: Node,
    peer: Node,
    priority: int,
    unicast: bool = False,
    password: str | None = None,
) -> dict[str, Any]:
    """The standalone config of one node; the same dict drives vipkeeper-agent or keepalived."""
    instance: dict[str, Any] = {
        "name": INSTANCE,
        "vrid": VRID,
        "interface": "eth0",
        "version": flavour.version,
        "priority": priority,
        "advertInterval": flavour.interval,
        "preempt": True,
        "addresses": [flavour.vip],
    }
    if unicast:
        instance["unicastPeers"] = [str(own_address(peer, flavour.family))]
        # Explicit for both families: our IPv6 default is the link-local address, keepalived's
        # unicast_peer list names global ones, and each side only accepts its listed peers.
        instance["unicastSource"] = str(own_address(me, flavour.family))
    if password is not None:
        instance["auth"] = {"password": password}
    return {"instances": [instance]}


# ----- observing the two implementations ---------------------------------------------------


def our_instance(agent: VipkeeperHandle) -> dict[str, Any]:
    return dict(agent.status()["instances"][0])


def our_dropped(agent: VipkeeperHandle) -> tuple[dict[str, int], dict[str, int]]:
    """(instance-level, agent-level) drop counters."""
    status = agent.status()
    return dict(status["instances"][0]["counters"]["dropped"]), dict(status["dropped"])


def keepalived_states(agent: KeepalivedHandle) -> list[str]:
    """Every state keepalived entered, oldest first (from its log)."""
    return [t.state for t in parse_transitions(agent.proc.log_text().splitlines())]


def link_local(lab: Lab, node: Node) -> ipaddress.IPv6Address:
    found = [a.ip for a in lab.addresses(node) if a.version == 6 and a.ip.is_link_local]
    assert found, f"{node} has no IPv6 link-local address: {lab.addresses(node)}"
    return found[0]


def advert_source(lab: Lab, node: Node, flavour: Flavour, *, unicast: bool) -> str:
    """The source address ``node`` sends its adverts from (what a peer reports as master)."""
    if flavour.family == 6 and not unicast:
        return str(link_local(lab, node))
    return str(own_address(node, flavour.family))


def wait_ready(lab: Lab, agent: AgentHandle, timeout: float = 10.0) -> float:
    """Wait until the daemon has started its instance; returns that instant (monotonic)."""

    def ready() -> bool:
        if not agent.alive():
            raise AssertionError(f"{agent.kind} on {agent.node} exited: {logs(agent)}")
        if isinstance(agent, VipkeeperHandle):
            try:
                return bool(agent.status()["instances"])
            except StatusUnavailableError:
                return False
        assert isinstance(agent, KeepalivedHandle)
        return bool(keepalived_states(agent))

    lab.wait_for(f"{agent.kind} on {agent.node} to start", ready, timeout, interval=0.02)
    return time.monotonic()


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds it took)."""
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


def logs(*agents: AgentHandle, lines: int = 40) -> str:
    """The tail of each daemon's log, for assertion messages."""
    out = []
    for agent in agents:
        text = agent.proc.log_text().splitlines()
        useful = [line for line in text if "level=debug" not in line]
        out.append(f"--- {agent.kind} on {agent.node} ---\n" + "\n".join(useful[-lines:]))
    return "\n".join(out)


def wait_http(lab: Lab, vip: str, node: str, timeout: float = 5.0) -> str:
    """Wait until the client's GET to ``vip`` is answered by ``node``."""
    seen: list[str | None] = []

    def answered() -> bool:
        seen.append(lab.http_get(vip, timeout=0.5))
        return seen[-1] == node

    lab.wait_for(
        f"the client to reach {vip} on {node}",
        answered,
        timeout,
        interval=0.05,
        describe=lambda: f"last answer {seen[-1] if seen else None!r}",
    )
    return node
