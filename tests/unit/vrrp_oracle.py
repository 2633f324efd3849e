"""scapy as the independent VRRP encoder: the oracle our struct codec is checked against."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.vrrp import VRRP, VRRPv3

from vipkeeper_agent.vrrp.packet import Advertisement

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def scapy_message(adv: Advertisement, source: IPAddress, destination: IPAddress) -> bytes:
    addresses = [str(address) for address in adv.addresses]
    layer: VRRP | VRRPv3
    if adv.version == 2:
        auth = adv.auth_data.ljust(8, b"\x00")
        layer = VRRP(
            vrid=adv.vrid,
            priority=adv.priority,
            adv=adv.interval_cs // 100,
            authtype=adv.auth_type,
            addrlist=addresses,
            auth1=int.from_bytes(auth[:4]),
            auth2=int.from_bytes(auth[4:]),
        )
    else:
        layer = VRRPv3(
            vrid=adv.vrid, priority=adv.priority, adv=adv.interval_cs, addrlist=addresses
        )
    if source.version == 4:
        return bytes(IP(src=str(source), dst=str(destination), ttl=255) / layer)[20:]
    return bytes(IPv6(src=str(source), dst=str(destination), hlim=255) / layer)[40:]
