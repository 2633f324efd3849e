"""Netlink adapters: the VIPs on the interfaces, and interface up/down events (pyroute2).

Ownership of an address is recorded in the kernel itself, with the address protocol attribute
(IFA_PROTO, Linux >= 5.18): whatever carries ``VIPKEEPER_ADDR_PROTO`` was added by vipkeeper, and
nothing else is ever removed. That survives a ``kill -9`` of the agent, unlike a list in memory.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK

from vipkeeper_agent.topology import (
    InterfaceInfo,
    IPInterface,
    LinkStateTracker,
    deleted_with,
    kernel_supports_addr_proto,
    link_is_up,
    vip_label,
)

log = logging.getLogger(__name__)

#: IFA_PROTO of the addresses vipkeeper adds. 0-3 belong to the kernel (unspec, kernel_lo,
#: kernel_ra, kernel_ll); keepalived uses 18 (RTPROT_KEEPALIVED, also in its rt_addrprotos.d
#: file) and OVN-Kubernetes 85 for EgressIPs. 0x76 is ASCII "v", for vipkeeper; iproute2 >= 6.3
#: shows it as ``proto 0x76`` (or by name, given an /etc/iproute2/rt_addrprotos.d entry).
VIPKEEPER_ADDR_PROTO = 0x76

IFA_F_SECONDARY = 0x01
IFA_F_NODAD = 0x02
IFA_F_NOPREFIXROUTE = 0x200
AF_BRIDGE = 7


class InterfaceNotFoundError(OSError):
    def __init__(self, ifname: str) -> None:
        super().__init__(errno.ENODEV, f"interface {ifname} does not exist")
        self.ifname = ifname


def _address_of(msg: Any) -> IPInterface:
    # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    # IPv6 addresses only carry IFA_ADDRESS.
    ip = msg.get("local") or msg.get("address")
    return ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}")


def _netlink_oserror(exc: NetlinkError, action: str) -> OSError:
    return OSError(exc.code, f"{action}: {os.strerror(exc.code)}")


class AddressManager:
    """Adds and removes VIPs, marking them with ``VIPKEEPER_ADDR_PROTO``."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr
        # remove() is a dump then a delete; keep another operation from slipping in between.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls) -> AddressManager:
        release = os.uname().release
        if not kernel_supports_addr_proto(release):
            raise RuntimeError(
                f"kernel {release} cannot mark address ownership (IFA_PROTO needs Linux >= 5.18);"
                " vipkeeper could not tell its VIPs from an administrator's addresses"
            )
        # Not bound to any multicast group: this socket only sees replies to its own requests.
        return cls(AsyncIPRoute())

    async def close(self) -> None:
        self._ipr.close()

    async def _index(self, ifname: str) -> int:
        try:
            links = await self._ipr.link("get", ifname=ifname)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                raise InterfaceNotFoundError(ifname) from None
            raise _netlink_oserror(exc, f"cannot look up interface {ifname}") from None
        return int(links[0]["index"])

    async def interfaces(self) -> list[InterfaceInfo]:
        """Every interface with its addresses, leaving out the VIPs vipkeeper added."""
        addresses: dict[int, list[IPInterface]] = {}
        async for msg in await self._ipr.addr("dump"):
            if msg.get("proto") == VIPKEEPER_ADDR_PROTO:
                continue
            addresses.setdefault(msg["index"], []).append(_address_of(msg))
        result = []
        async for link in await self._ipr.link("dump"):
            mac = link.get("address")
            result.append(
                InterfaceInfo(
                    name=link.get("ifname"),
                    index=link["index"],
                    up=link_is_up(link["flags"]),
                    mac=bytes.fromhex(mac.replace(":", "")) if mac else b"",
                    addresses=tuple(addresses.get(link["index"], ())),
                )
            )
        return result

    async def add(
        self, ifname: str, addresses: Sequence[IPInterface], index: int | None = None
    ) -> None:
        """Add the VIPs to the interface; an address already there (ours or not) is left alone.

        ``index``, when the caller knows it, saves a netlink round trip on the takeover path.
        """
        async with self._lock:
            if index is None:
                index = await self._index(ifname)
            for addr in addresses:
                # noprefixroute: the VIP must not add a second connected route for its subnet,
                # which would change the source address the node uses on that subnet.
                flags = IFA_F_NOPREFIXROUTE
                extra: dict[str, Any] = {}
                if addr.version == 6:
                    # VRRP is the duplicate detection; DAD would only delay the takeover by a
                    # second and could leave the VIP "dadfailed" after a transient split brain.
                    flags |= IFA_F_NODAD
                else:
                    label = vip_label(ifname)
                    if label is not None:
                        extra["label"] = label
                try:
                    await self._ipr.addr(
                        "add",
                        index=index,
                        address=str(addr.ip),
                        prefixlen=addr.network.prefixlen,
                        flags=flags,
                        proto=VIPKEEPER_ADDR_PROTO,
                        **extra,
                    )
                except NetlinkError as exc:
                    if exc.code == errno.EEXIST:
                        continue
                    if exc.code == errno.ENODEV:
                        raise InterfaceNotFoundError(ifname) from None
                    raise _netlink_oserror(exc, f"cannot add {addr} to {ifname}") from None

    async def remove(self, ifname: str, addresses: Sequence[IPInterface]) -> None:
        """Remove those of the VIPs that vipkeeper added; anything else, or nothing, is fine.

        An interface that no longer exists has no addresses left, so that is not an error.
        """
        async with self._lock:
            try:
                index = await self._index(ifname)
            except InterfaceNotFoundError:
                log.debug("not removing %s: interface %s is gone", addresses, ifname)
                return
            wanted = set(addresses)
            present = [msg async for msg in await self._ipr.addr("dump", index=index)]
            for msg in present:
                if msg.get("proto") == VIPKEEPER_ADDR_PROTO and _address_of(msg) in wanted:
                    await self._delete(ifname, msg, present)

    async def remove_stale(self) -> list[tuple[str, IPInterface]]:
        """Remove every address vipkeeper added, on every interface; return what was removed.

        For the agent's start: a previous run killed with SIGKILL (or OOM) left its VIPs behind,
        and a second master is worse than a short gap.
        """
        async with self._lock:
            names = {
                link["index"]: link.get("ifname") async for link in await self._ipr.link("dump")
            }
            present = [msg async for msg in await self._ipr.addr("dump")]
            removed = []
            for msg in present:
                if msg.get("proto") != VIPKEEPER_ADDR_PROTO:
                    continue
                ifname = names.get(msg["index"], f"#{msg['index']}")
                same_interface = [m for m in present if m["index"] == msg["index"]]
                if await self._delete(ifname, msg, same_interface):
                    removed.append((ifname, _address_of(msg)))
            return removed

    async def _delete(self, ifname: str, msg: Any, same_interface: Sequence[Any]) -> bool:
        # The kernel ignores IFA_PROTO when deleting, so the caller must have checked it.
        addr = _address_of(msg)
        # Ours count too: another instance's VIP in the same subnet must not go with this one.
        others = [_address_of(m) for m in same_interface]
        primary = not (msg.get("flags") or msg["flags"]) & IFA_F_SECONDARY
        at_risk = deleted_with(addr, primary, others)
        if at_risk:
            _promote_secondaries(ifname, addr, at_risk)
        try:
            await self._ipr.addr(
                "del",
                index=msg["index"],
                address=str(addr.ip),
                prefixlen=addr.network.prefixlen,
            )
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return False  # Gone already, with its interface or by someone else's hand.
            raise _netlink_oserror(exc, f"cannot remove {addr} from {ifname}") from None
        return True


def _promote_secondaries(ifname: str, addr: IPInterface, at_risk: list[IPInterface]) -> None:
    """Keep the kernel from deleting other addresses (an administrator's, or VIPs of other
    instances) along with a VIP.

    A VIP that is the first address of its subnet on the interface is that subnet's primary, and
    the addresses added later in the subnet are its secondaries: without promote_secondaries, the
    kernel deletes them with it.
    """
    path = f"/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries"
    try:
        with open(path) as current:
            if current.read().strip() != "0":
                return
        with open(path, "w") as setting:
            setting.write("1")
    except OSError as exc:
        log.error(
            "removing %s from %s will also delete %s: cannot set %s (%s)",
            addr,
            ifname,
            ", ".join(map(str, at_risk)),
            path,
            exc,
        )
        return
    log.warning(
        "set net.ipv4.conf.%s.promote_secondaries=1 so that removing %s keeps %s",
        ifname,
        addr,
        ", ".join(map(str, at_risk)),
    )


class LinkWatcher:
    """Reports interfaces going up or down (see ``topology.link_is_up``) from RTMGRP_LINK events.

    Open the watcher before reading ``AddressManager.interfaces()``, so that a change in between
    is not lost. If the kernel drops events (receive buffer overflow), the watcher reopens its
    socket and reports whatever differs from what it knew.
    """

    def __init__(self, on_change: Callable[[str, bool], None]) -> None:
        self._on_change = on_change
        self._tracker = LinkStateTracker()
        self._ipr: Any = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, on_change: Callable[[str, bool], None]) -> LinkWatcher:
        watcher = cls(on_change)
        await watcher._subscribe(report=False)
        watcher._task = asyncio.get_running_loop().create_task(
            watcher._run(), name="vipkeeper-link-watcher"
        )
        return watcher

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # wait() rather than await: the task's CancelledError is expected, ours is not.
            await asyncio.wait([self._task])
            self._task = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    async def _subscribe(self, report: bool) -> None:
        ipr = AsyncIPRoute()
        try:
            # Subscribe first, then dump: a change during the dump is queued, not lost.
            await ipr.bind(groups=RTMGRP_LINK)
            async for link in await ipr.link("dump"):
                if report:
                    self._handle(link)
                else:
                    self._tracker.seed(link["index"], link.get("ifname"), link["flags"])
        except BaseException:
            ipr.close()
            raise
        self._ipr = ipr

    async def _run(self) -> None:
        while True:
            received = False
            try:
                # One get() returns one datagram's worth of messages.
                async for msg in self._ipr.get():
                    received = True
                    self._handle(msg)
            except (OSError, NetlinkError) as exc:
                # pyroute2 turns a socket error (ENOBUFS: the kernel dropped events) into a
                # NetlinkError on the queue; the socket is unusable afterwards.
                code = exc.errno if isinstance(exc, OSError) else exc.code
                reason = os.strerror(code) if code else str(exc)
                await self._resubscribe(f"link events lost ({reason})")
                continue
            if not received:
                # get() only comes back empty when the socket was closed under us.
                await self._resubscribe("netlink socket closed")

    async def _resubscribe(self, why: str) -> None:
        log.warning("%s; resubscribing to link events", why)
        self._ipr.close()
        self._ipr = None
        while True:
            try:
                await self._subscribe(report=True)
                return
            except (OSError, NetlinkError):
                log.exception("cannot resubscribe to link events; retrying in 1 s")
                await asyncio.sleep(1.0)

    def _handle(self, msg: Any) -> None:
        event = msg.get("event")
        # AF_BRIDGE link messages describe bridge ports; RTM_DELLINK there means "left the bridge".
        if event not in ("RTM_NEWLINK", "RTM_DELLINK") or msg.get("family") == AF_BRIDGE:
            return
        if event == "RTM_DELLINK":
            change = self._tracker.remove(msg["index"])
        else:
            change = self._tracker.update(msg["index"], msg.get("ifname"), msg["flags"])
        if change is None:
            return
        try:
            self._on_change(*change)
        except Exception:
            log.exception("link change callback failed for %s", change)
