"""Sends the takeover announcements: gratuitous ARP for IPv4 VIPs, unsolicited NA for IPv6 ones.

The frames come from ``vipkeeper_agent.announce.frames`` and the timing from
``vipkeeper_agent.announce.plan``. A failed send is logged and counted, never raised: the VIP is
already in place, and a neighbour that missed the news still learns it when its cache expires.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from vipkeeper_agent.announce.frames import ETH_P_ARP, garp_reply, garp_request, unsolicited_na
from vipkeeper_agent.announce.plan import announce_offsets

log = logging.getLogger(__name__)

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ALL_NODES = "ff02::1"
ICMP6_FILTER = 1
#: An icmp6_filter with every bit set: the announcer's ICMPv6 socket receives nothing.
_BLOCK_ALL_ICMP6 = b"\xff" * 32


@dataclass(frozen=True, slots=True)
class _Batch:
    """Everything one announcement message needs, computed once at start()."""

    ifname: str
    ifindex: int
    arp_frames: tuple[bytes, ...]
    na_bodies: tuple[bytes, ...]


class Announcer:
    """One per agent; schedules are keyed by the caller (e.g. the VRRP instance)."""

    def __init__(self) -> None:
        #: Frames handed to the kernel (each ARP request, ARP reply and NA counts one).
        self.sent = 0
        #: Frames the kernel refused, or that could not be sent for want of a socket.
        self.errors = 0
        self._schedules: dict[str, asyncio.Task[None]] = {}
        self._packet: socket.socket | None = None
        self._icmp6: socket.socket | None = None

    def start(
        self,
        key: str,
        ifname: str,
        ifindex: int,
        mac: bytes,
        addresses: Sequence[IPInterface],
        count: int,
        interval: float,
        repeat_delay: float,
        refresh: float,
    ) -> None:
        """Announce ``addresses`` now, then per ``announce_offsets``, then every ``refresh`` s.

        Replaces any schedule running under ``key``. The first message is sent before this
        returns: every millisecond until the neighbours know is a millisecond of lost traffic.
        """
        self.stop(key)
        loop = asyncio.get_running_loop()
        started = loop.time()
        batch = _Batch(
            ifname=ifname,
            ifindex=ifindex,
            arp_frames=tuple(
                frame
                for addr in addresses
                if isinstance(addr, ipaddress.IPv4Interface)
                for frame in (garp_request(mac, addr.ip), garp_reply(mac, addr.ip))
            ),
            na_bodies=tuple(
                unsolicited_na(mac, addr.ip)
                for addr in addresses
                if isinstance(addr, ipaddress.IPv6Interface)
            ),
        )
        offsets = announce_offsets(count, interval, repeat_delay)
        if offsets and offsets[0] <= 0:
            self._send(batch)
            offsets = offsets[1:]
        if offsets or refresh > 0:
            self._schedules[key] = loop.create_task(
                self._run(batch, started, offsets, refresh), name=f"announce-{key}"
            )

    def stop(self, key: str) -> None:
        task = self._schedules.pop(key, None)
        if task is not None:
            task.cancel()

    def close(self) -> None:
        for key in list(self._schedules):
            self.stop(key)
        for sock in (self._packet, self._icmp6):
            if sock is not None:
                sock.close()
        self._packet = self._icmp6 = None

    async def _run(
        self, batch: _Batch, started: float, offsets: tuple[float, ...], refresh: float
    ) -> None:
        loop = asyncio.get_running_loop()
        for offset in offsets:
            # Sleep to an absolute time so that late wake-ups do not accumulate.
            await asyncio.sleep(max(0.0, started + offset - loop.time()))
            self._send(batch)
        while refresh > 0:
            await asyncio.sleep(refresh)
            self._send(batch)

    def _send(self, batch: _Batch) -> None:
        if batch.arp_frames:
            packet = self._packet_socket()
            for frame in batch.arp_frames:
                if packet is None:
                    self.errors += 1
                    continue
                try:
                    packet.sendto(frame, (batch.ifname, ETH_P_ARP))
                    self.sent += 1
                except OSError as exc:
                    self.errors += 1
                    log.warning("gratuitous ARP on %s failed: %s", batch.ifname, exc)
        if batch.na_bodies:
            icmp6 = self._icmp6_socket()
            # No source address: the kernel picks the interface's link-local one for ff02::1,
            # which is what RFC 4861 §7.2.6 receivers expect (and they check hop limit 255).
            pktinfo = struct.pack("=16sI", bytes(16), batch.ifindex)
            ancillary = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, pktinfo)]
            for body in batch.na_bodies:
                if icmp6 is None:
                    self.errors += 1
                    continue
                try:
                    icmp6.sendmsg([body], ancillary, 0, (ALL_NODES, 0, 0, batch.ifindex))
                    self.sent += 1
                except OSError as exc:
                    self.errors += 1
                    log.warning("unsolicited NA on %s failed: %s", batch.ifname, exc)

    def _packet_socket(self) -> socket.socket | None:
        if self._packet is None:
            try:
                # Protocol 0: a send-only socket, the kernel queues nothing for it to read.
                self._packet = socket.socket(
                    socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0
                )
            except OSError:
                log.exception("cannot open the packet socket for gratuitous ARP")
        return self._packet

    def _icmp6_socket(self) -> socket.socket | None:
        if self._icmp6 is None:
            try:
                sock = socket.socket(
                    socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMPV6
                )
            except OSError:
                log.exception("cannot open the ICMPv6 socket for unsolicited NA")
                return None
            # RFC 4861 §7.1.2: an NA with any other hop limit is dropped by its receivers.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, _BLOCK_ALL_ICMP6)
            self._icmp6 = sock
        return self._icmp6
