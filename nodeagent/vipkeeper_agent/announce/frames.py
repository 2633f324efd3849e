"""Wire formats of the takeover announcements (RFC 826, RFC 5227 §2.3, RFC 4861 §4.4 and §7.2.6).

Pure: ``struct`` only.
"""

from __future__ import annotations

import ipaddress
import struct

BROADCAST_MAC = b"\xff" * 6
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2

_ETHER = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_NA = struct.Struct("!BBHI16sBB6s")


def _check_mac(mac: bytes) -> None:
    if len(mac) != 6:
        raise ValueError(f"an Ethernet MAC address has 6 bytes, not {len(mac)}")


def _garp(op: int, mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    _check_mac(mac)
    vip = ip.packed
    # Sender and target IP are both the VIP: receivers update any cache entry for it and no one
    # answers. Target MAC is broadcast, as keepalived sends it; RFC 5227 says receivers ignore it.
    arp = _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, op, mac, vip, BROADCAST_MAC, vip)
    return _ETHER.pack(BROADCAST_MAC, mac, ETH_P_ARP) + arp


def garp_request(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A broadcast gratuitous ARP request (an RFC 5227 "ARP Announcement"), Ethernet header included."""
    return _garp(ARPOP_REQUEST, mac, ip)


def garp_reply(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """The broadcast gratuitous ARP reply form, for hosts and switches that ignore requests."""
    return _garp(ARPOP_REPLY, mac, ip)


def unsolicited_na(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """An ICMPv6 Neighbor Advertisement body for the VIP, to be sent to ff02::1.

    Override is set so neighbours replace the old master's link-layer address (RFC 4861 §7.2.6);
    Solicited must not be, as nobody asked. The checksum is left 0: on a raw ICMPv6 socket the
    kernel always computes it (RFC 3542 §3.1), since it needs the source address it picks.
    """
    _check_mac(mac)
    return _NA.pack(
        ICMPV6_NEIGHBOR_ADVERTISEMENT,
        0,
        0,
        NA_FLAG_OVERRIDE,
        ip.packed,
        ND_OPT_TARGET_LINKADDR,
        1,  # option length in units of 8 octets
        mac,
    )
