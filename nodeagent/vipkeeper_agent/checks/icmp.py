"""ICMP echo for ping checks: one raw socket per address family, shared by every ping check.

Replies are matched on (identifier, sequence), source address and a per-process cookie in the
payload, so concurrent probes (and other programs pinging) never answer each other. The sockets
are opened on first use, read with ``loop.add_reader`` and never block.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
import time
from typing import Final

from vipkeeper_agent.checks.result import ProbeResult, describe_os_error

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ICMP_ECHO_REPLY: Final = 0
ICMP_ECHO_REQUEST: Final = 8
ICMPV6_ECHO_REQUEST: Final = 128
ICMPV6_ECHO_REPLY: Final = 129
# Linux socket options missing from Python's socket module.
SOL_RAW: Final = 255
ICMP_FILTER: Final = 1
ICMPV6_FILTER: Final = 1
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
#: Datagrams read per wake-up, so that an ICMP flood cannot starve the loop.
_MAX_BATCH = 64


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def echo_request(family: int, identifier: int, sequence: int, payload: bytes) -> bytes:
    if family == socket.AF_INET6:
        # The kernel fills in the ICMPv6 checksum (it covers the IPv6 pseudo-header).
        return _HEADER.pack(ICMPV6_ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    unsummed = _HEADER.pack(ICMP_ECHO_REQUEST, 0, 0, identifier, sequence) + payload
    return _HEADER.pack(ICMP_ECHO_REQUEST, 0, checksum(unsummed), identifier, sequence) + payload


def parse_echo_reply(family: int, data: bytes) -> tuple[int, int, bytes] | None:
    """(identifier, sequence, payload) of an echo reply as a raw socket returns it, else None.

    IPv4 raw sockets include the IP header (its length from IHL); IPv6 ones do not.
    """
    if family == socket.AF_INET:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
        wanted = ICMP_ECHO_REPLY
    else:
        wanted = ICMPV6_ECHO_REPLY
    if len(data) < _HEADER.size:
        return None
    kind, code, _, identifier, sequence = _HEADER.unpack_from(data)
    if kind != wanted or code != 0:
        return None
    return identifier, sequence, data[_HEADER.size :]


def _open(family: int) -> socket.socket:
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto)
    try:
        # The kernel drops all but echo replies: a raw socket otherwise sees every ICMP message
        # of the namespace (including our own requests on loopback).
        if family == socket.AF_INET:
            sock.setsockopt(
                SOL_RAW, ICMP_FILTER, struct.pack("=I", ~(1 << ICMP_ECHO_REPLY) & 0xFFFFFFFF)
            )
        else:
            blocked = [0xFFFFFFFF] * 8
            blocked[ICMPV6_ECHO_REPLY >> 5] &= ~(1 << (ICMPV6_ECHO_REPLY & 31)) & 0xFFFFFFFF
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMPV6_FILTER, struct.pack("=8I", *blocked))
    except BaseException:
        sock.close()
        raise
    return sock


class Pinger:
    """Echo requests and their replies, for all ping checks of one event loop."""

    def __init__(self) -> None:
        self._identifier = int.from_bytes(os.urandom(2), "big")
        self._sequence = int.from_bytes(os.urandom(2), "big")
        # Replies must echo it: a stale reply for a reused sequence number does not match.
        self._cookie = os.urandom(8)
        self._sockets: dict[int, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[tuple[int, int], tuple[IPAddress, asyncio.Future[float]]] = {}

    def _socket(self, family: int) -> socket.socket:
        sock = self._sockets.get(family)
        if sock is None:
            loop = asyncio.get_running_loop()
            sock = _open(family)
            loop.add_reader(sock.fileno(), self._readable, sock, family)
            self._sockets[family] = sock
            self._loop = loop
        return sock

    def _next_sequence(self, family: int) -> int:
        for _ in range(0x10000):
            self._sequence = (self._sequence + 1) & 0xFFFF
            if (family, self._sequence) not in self._waiting:
                return self._sequence
        raise RuntimeError("65536 echo requests in flight")

    async def ping(self, address: IPAddress) -> ProbeResult:
        """One echo request; waits for its reply until cancelled (the caller's timeout)."""
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        try:
            sock = self._socket(family)
        except OSError as exc:
            return ProbeResult(False, f"cannot open an ICMP socket: {describe_os_error(exc)}")
        sequence = self._next_sequence(family)
        packet = echo_request(family, self._identifier, sequence, self._cookie)
        key = (family, sequence)
        reply: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[key] = (address, reply)
        try:
            sent = time.perf_counter()
            sock.sendto(packet, (str(address), 0))
            received = await reply
        except OSError as exc:
            return ProbeResult(False, describe_os_error(exc))
        finally:
            self._waiting.pop(key, None)
        return ProbeResult(True, f"reply in {(received - sent) * 1000:.1f} ms")

    def _readable(self, sock: socket.socket, family: int) -> None:
        for _ in range(_MAX_BATCH):
            try:
                data, source = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an error queued on the socket; the probes time out on their own
            now = time.perf_counter()
            echo = parse_echo_reply(family, data)
            if echo is None or echo[0] != self._identifier or echo[2] != self._cookie:
                continue
            waiting = self._waiting.get((family, echo[1]))
            if waiting is None or waiting[1].done():
                continue
            try:
                from_address = socket.inet_pton(family, source[0].partition("%")[0])
            except OSError:
                continue
            if from_address == waiting[0].packed:
                waiting[1].set_result(now)

    def close(self) -> None:
        for sock in self._sockets.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        for _, reply in self._waiting.values():
            reply.cancel()
        self._waiting.clear()
