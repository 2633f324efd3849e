"""Raw VRRP sockets (IP protocol 112), one per (interface, family), on the asyncio loop.

The socket carries bytes only: the VRRP codec and the receive checks of RFC 5798 §7.1 (TTL/hop
limit 255, which the transport reports but does not enforce) belong to the pure core.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

IPPROTO_VRRP = 112
VRRP_GROUP_V4 = ipaddress.IPv4Address("224.0.0.18")
VRRP_GROUP_V6 = ipaddress.IPv6Address("ff02::12")

# Linux values missing from Python 3.11's socket module.
IP_PKTINFO = 8
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
SO_RCVBUFFORCE = 33

RECEIVE_BUFFER = 1 << 20
#: Datagrams read per wake-up, so that a flood on one socket cannot starve the loop.
_MAX_BATCH = 64
_IN_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("=16sI")  # ipi6_addr, ipi6_ifindex
_INT = struct.Struct("=i")
_ANCILLARY_SPACE = socket.CMSG_SPACE(_IN6_PKTINFO.size) + socket.CMSG_SPACE(_INT.size) + 64


@dataclass(frozen=True, slots=True)
class ReceivedDatagram:
    source: IPAddress
    destination: IPAddress
    #: IPv4 TTL or IPv6 hop limit as received.
    ttl: int
    ifindex: int
    #: The VRRP message alone (the IPv4 header is stripped).
    payload: bytes


def frame_ipv4(
    data: bytes,
) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, int, bytes] | None:
    """Split what an IPv4 raw socket returns into (source, destination, TTL, payload).

    None if it is not even an IPv4 header. The header length comes from IHL, since options
    (router alert, for one) may be present; the payload ends at Total Length if that is shorter
    than the buffer (link-layer padding).
    """
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    header_length = (data[0] & 0x0F) * 4
    total_length = int.from_bytes(data[2:4], "big")
    if header_length < 20 or header_length > len(data) or total_length < header_length:
        return None
    end = min(total_length, len(data))
    return (
        ipaddress.IPv4Address(data[12:16]),
        ipaddress.IPv4Address(data[16:20]),
        data[8],
        data[header_length:end],
    )


def parse_ipv6_ancillary(
    ancdata: list[tuple[int, int, bytes]],
) -> tuple[ipaddress.IPv6Address, int, int] | None:
    """(destination, ifindex, hop limit) from IPV6_PKTINFO and IPV6_HOPLIMIT, or None."""
    destination: ipaddress.IPv6Address | None = None
    ifindex = 0
    hop_limit: int | None = None
    for level, kind, value in ancdata:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
            raw, ifindex = _IN6_PKTINFO.unpack_from(value)
            destination = ipaddress.IPv6Address(raw)
        elif kind == socket.IPV6_HOPLIMIT and len(value) >= _INT.size:
            hop_limit = _INT.unpack_from(value)[0]
    if destination is None or hop_limit is None:
        return None
    return destination, ifindex, hop_limit


def _ipv4_ifindex(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, value in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= _IN_PKTINFO.size:
            return int(_IN_PKTINFO.unpack_from(value)[0])
    return None


class VrrpSocket:
    """A raw IP protocol 112 socket bound to one interface, read by the running asyncio loop."""

    def __init__(
        self,
        sock: socket.socket,
        ifname: str,
        ifindex: int,
        family: int,
        on_datagram: Callable[[ReceivedDatagram], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._sock = sock
        self.ifname = ifname
        self.ifindex = ifindex
        self.family = family
        self._on_datagram = on_datagram
        self._loop = loop
        self._groups: dict[IPAddress, int] = {}
        self._closed = False
        #: Datagrams dropped because they could not be framed (no usable IP header or metadata).
        self.framing_errors = 0
        #: recvmsg() failures other than "nothing to read".
        self.receive_errors = 0

    @classmethod
    def open(
        cls,
        ifname: str,
        ifindex: int,
        family: int,
        on_datagram: Callable[[ReceivedDatagram], None],
    ) -> VrrpSocket:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"unknown address family {family}")
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, IPPROTO_VRRP)
        try:
            # Adverts must only be heard on (and sent from) this segment, whatever the routes say.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            try:
                # Bursts of adverts from many VRIDs must not be dropped while the loop is busy.
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            if family == socket.AF_INET:
                # RFC 5798 §5.1.1.3: sent with TTL 255, so a receiver can tell it is on-link.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
                # Our own adverts must not come back as if from a peer.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                # Only the groups joined on this socket, not those any other socket joined.
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                sock.setsockopt(
                    socket.IPPROTO_IP,
                    socket.IP_MULTICAST_IF,
                    struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex),
                )
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            vrrp_socket = cls(sock, ifname, ifindex, family, on_datagram, loop)
            loop.add_reader(sock.fileno(), vrrp_socket._on_readable)
        except BaseException:
            sock.close()
            raise
        return vrrp_socket

    def _check_family(self, address: IPAddress) -> None:
        expected = 4 if self.family == socket.AF_INET else 6
        if address.version != expected:
            raise ValueError(f"{address} is not an IPv{expected} address")

    def _membership(self, group: IPAddress) -> bytes:
        if self.family == socket.AF_INET:
            return struct.pack("=4s4si", group.packed, b"\0" * 4, self.ifindex)  # ip_mreqn
        return struct.pack("=16si", group.packed, self.ifindex)  # ipv6_mreq

    def join(self, group: IPAddress) -> None:
        """Receive ``group`` on this interface; joins are counted, one per instance using it."""
        self._check_family(group)
        if not group.is_multicast:
            raise ValueError(f"{group} is not a multicast group")
        count = self._groups.get(group, 0)
        if count == 0:
            if self.family == socket.AF_INET:
                level, option = socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP
            else:
                level, option = socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP
            self._sock.setsockopt(level, option, self._membership(group))
        self._groups[group] = count + 1

    def leave(self, group: IPAddress) -> None:
        count = self._groups.get(group, 0)
        if count == 0:
            return
        if count > 1:
            self._groups[group] = count - 1
            return
        del self._groups[group]
        if self.family == socket.AF_INET:
            level, option = socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP
        else:
            level, option = socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP
        try:
            self._sock.setsockopt(level, option, self._membership(group))
        except OSError as exc:
            # The interface went away and took the membership with it.
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise

    def send(self, payload: bytes, destination: IPAddress, source: IPAddress) -> None:
        """Send one VRRP message; raises OSError (BlockingIOError if the queue is full)."""
        self._check_family(destination)
        self._check_family(source)
        # The source and the interface are explicit: the kernel's choice could be a VIP, or
        # another interface for a unicast peer behind a route.
        if self.family == socket.AF_INET:
            cmsg = (
                socket.IPPROTO_IP,
                IP_PKTINFO,
                _IN_PKTINFO.pack(self.ifindex, source.packed, b"\0" * 4),
            )
            self._sock.sendmsg([payload], [cmsg], 0, (str(destination), 0))
        else:
            cmsg = (
                socket.IPPROTO_IPV6,
                socket.IPV6_PKTINFO,
                _IN6_PKTINFO.pack(source.packed, self.ifindex),
            )
            scoped = destination.is_link_local or destination.is_multicast
            address = (str(destination), 0, 0, self.ifindex if scoped else 0)
            self._sock.sendmsg([payload], [cmsg], 0, address)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()  # Memberships go with the socket.
        self._groups.clear()

    def _on_readable(self) -> None:
        for _ in range(_MAX_BATCH):
            try:
                data, ancdata, _flags, address = self._sock.recvmsg(65535, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # E.g. ENETDOWN after the link went away; the link watcher reports that.
                self.receive_errors += 1
                log.debug("recvmsg on %s failed: %s", self.ifname, exc)
                return
            datagram = self._frame(data, ancdata, address)
            if datagram is None:
                self.framing_errors += 1
                continue
            try:
                self._on_datagram(datagram)
            except Exception:
                log.exception("VRRP datagram handler failed on %s", self.ifname)

    def _frame(
        self, data: bytes, ancdata: list[tuple[int, int, bytes]], address: tuple[object, ...]
    ) -> ReceivedDatagram | None:
        if self.family == socket.AF_INET:
            framed = frame_ipv4(data)
            if framed is None:
                return None
            source4, destination4, ttl, payload = framed
            ifindex = _ipv4_ifindex(ancdata) or self.ifindex
            return ReceivedDatagram(source4, destination4, ttl, ifindex, payload)
        meta = parse_ipv6_ancillary(ancdata)
        if meta is None:
            return None
        destination6, ifindex, hop_limit = meta
        # The kernel appends "%scope" to link-local sources; the address itself is what counts.
        source6 = ipaddress.IPv6Address(str(address[0]).split("%", 1)[0])
        return ReceivedDatagram(source6, destination6, hop_limit, ifindex or self.ifindex, data)
