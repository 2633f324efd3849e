"""What the agent needs to know about the node's interfaces, and the choices made from it.

Pure: the netlink adapter (``vipkeeper_agent.io.netlink``) fills ``InterfaceInfo`` and
``LinkStateTracker``; everything that decides something lives here so it can be tested without
a namespace.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

AF_INET = 2  # socket.AF_INET and AF_INET6 on Linux; repeated so this module stays import-pure.
AF_INET6 = 10

IFF_UP = 0x1
IFF_RUNNING = 0x40
IFNAMSIZ = 16  # includes the terminating NUL, so names and labels hold at most 15 characters.

_LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")
LOOPBACK_NAME = "lo"  # Linux gives the loopback device this name in every network namespace.


@dataclass(frozen=True, slots=True)
class InterfaceInfo:
    name: str
    index: int
    #: Administratively up and operationally up (carrier present, lower layers up).
    up: bool
    mac: bytes
    #: The interface's addresses, without those vipkeeper itself added (its VIPs).
    addresses: tuple[IPInterface, ...]


def link_is_up(flags: int) -> bool:
    """``ifi_flags`` to the agent's notion of up.

    IFF_RUNNING is the kernel's RFC 2863 operational state (UP or UNKNOWN): unlike IFF_LOWER_UP it
    also drops for a VLAN whose parent lost carrier or an 802.1X port that is still DORMANT.
    """
    return bool(flags & IFF_UP) and bool(flags & IFF_RUNNING)


def choose_interface(vip: IPInterface, interfaces: Sequence[InterfaceInfo]) -> InterfaceInfo | None:
    """The interface on whose subnet the VIP lives, or None.

    Host routes (/32, /128) say nothing about the segment, and the VIP's own address (possibly
    still present on some interface) must not vote for itself. Overlapping subnets are legal;
    the most specific one wins, as it would in the routing table.
    """
    best: InterfaceInfo | None = None
    best_prefix = -1
    for iface in interfaces:
        if iface.name == LOOPBACK_NAME:
            continue
        for addr in iface.addresses:
            if addr.version != vip.version or addr.ip == vip.ip or addr.ip.is_loopback:
                continue
            if addr.network.prefixlen == addr.max_prefixlen:
                continue
            if vip.ip in addr.network and addr.network.prefixlen > best_prefix:
                best, best_prefix = iface, addr.network.prefixlen
    return best


def primary_address(
    iface: InterfaceInfo, family: int, exclude: Collection[IPAddress] = ()
) -> IPAddress | None:
    """The address VRRP advertisements are sent from on this interface.

    RFC 5798 §5.1.1.1 / §5.1.2.1: IPv4 uses the interface's primary address, IPv6 its link-local
    address. The VIPs are excluded so that a master never advertises from an address it will
    give up at failover.
    """
    if family == AF_INET:
        for addr in iface.addresses:
            if isinstance(addr, ipaddress.IPv4Interface) and addr.ip not in exclude:
                return addr.ip
        return None
    if family == AF_INET6:
        for addr in iface.addresses:
            if (
                isinstance(addr, ipaddress.IPv6Interface)
                and addr.ip in _LINK_LOCAL_V6
                and addr.ip not in exclude
            ):
                return addr.ip
        return None
    raise ValueError(f"unknown address family {family}")


def vip_label(ifname: str) -> str | None:
    """The IPv4 label that shows a VIP as ours in ``ip addr``; None when it would not fit."""
    label = f"{ifname}:vk"
    return label if len(label) < IFNAMSIZ else None


class LinkStateTracker:
    """Turns the stream of RTM_NEWLINK/RTM_DELLINK messages into up/down changes.

    The kernel sends RTM_NEWLINK for many reasons (MTU, statistics, promiscuity...); only a change
    of ``link_is_up`` is reported. Keyed by index because an interface can be renamed.
    """

    def __init__(self) -> None:
        self._state: dict[int, tuple[str, bool]] = {}

    def seed(self, index: int, name: str, flags: int) -> None:
        """Record the current state without reporting it."""
        self._state[index] = (name, link_is_up(flags))

    def update(self, index: int, name: str, flags: int) -> tuple[str, bool] | None:
        """A link message arrived: the ``(name, up)`` change to report, or None."""
        up = link_is_up(flags)
        previous = self._state.get(index)
        self._state[index] = (name, up)
        if previous is None:
            # A new interface is only news if it is already usable; absent counts as down.
            return (name, True) if up else None
        if previous[1] != up:
            return (name, up)
        return None

    def remove(self, index: int) -> tuple[str, bool] | None:
        """The interface was deleted: report it down if it was up."""
        previous = self._state.pop(index, None)
        if previous is not None and previous[1]:
            return (previous[0], False)
        return None


def kernel_supports_addr_proto(release: str) -> bool:
    """Whether a kernel (``uname -r``) stores IFA_PROTO on addresses: Linux 5.18 and later."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match[1]), int(match[2])) >= (5, 18)


def deleted_with(
    target: IPInterface, target_is_primary: bool, others: Collection[IPInterface]
) -> list[IPInterface]:
    """The addresses among ``others`` that the kernel deletes along with ``target``.

    Deleting a primary IPv4 address deletes its secondaries (same subnet, same prefix length)
    unless ``net.ipv4.conf.<if>.promote_secondaries`` is set. IPv6 has no secondaries.
    """
    if target.version != 4 or not target_is_primary:
        return []
    return [
        other
        for other in others
        if other.version == 4 and other != target and other.network == target.network
    ]
