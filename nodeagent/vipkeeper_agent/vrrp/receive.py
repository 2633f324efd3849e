"""The receive checks of RFC 3768 §7.1 and RFC 5798 §7.1 for one decoded advertisement.

``packet.decode`` has already verified what the message says about itself (length, version, type,
count, checksum); here it is compared with what one local instance is configured for. The order
is fixed so that counters mean the same thing on every node: ttl, version, vrid, peers, auth,
interval, addresses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vipkeeper_agent.vrrp.packet import (
    AUTH_DATA_LEN,
    AUTH_NONE,
    Advertisement,
    DropReason,
    IPAddress,
)

VRRP_TTL = 255

# fe80::/10 as the top 10 bits of the 128-bit integer: much cheaper than ``is_link_local``, which
# builds a network membership test on every call.
_LINK_LOCAL_SHIFT = 118
_LINK_LOCAL_PREFIX = 0xFE80 >> 6


def _routable(addresses: Iterable[IPAddress]) -> frozenset[IPAddress]:
    # RFC 5798 §5.2.9 makes the first IPv6 address the virtual router's link-local one, which is
    # derived per node or per VRID and need not be configured the same everywhere; only the
    # routable addresses must agree.
    return frozenset(
        address
        for address in addresses
        if address.version == 4 or int(address) >> _LINK_LOCAL_SHIFT != _LINK_LOCAL_PREFIX
    )


#: Drops that mean a peer is configured differently (RFC 3768/5798 §7.1: the receiver SHOULD log
#: the event): an operator must see these at the default log level, unlike TTL or checksum noise.
MISCONFIGURATION = frozenset(
    {
        DropReason.AUTH,
        DropReason.INTERVAL_MISMATCH,
        DropReason.ADDRESS_MISMATCH,
        DropReason.VERSION,
    }
)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What one local instance accepts; built once per (re)configuration, used per packet."""

    version: int
    vrid: int
    interval_cs: int
    addresses: frozenset[IPAddress]
    auth_type: int = AUTH_NONE
    auth_data: bytes = b""
    #: Unicast peers; empty means any source is accepted.
    peers: frozenset[IPAddress] = frozenset()
    #: ``addresses`` without IPv6 link-local ones, derived once here rather than per packet.
    routable_addresses: frozenset[IPAddress] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # decode() strips the NUL padding of the 8-byte field, so a longer password or one with
        # trailing NULs would silently never match: refuse it here, where the config is at hand.
        if len(self.auth_data) > AUTH_DATA_LEN or self.auth_data.endswith(b"\x00"):
            raise ValueError(
                f"auth_data {self.auth_data!r} can never match: at most {AUTH_DATA_LEN} bytes "
                "without trailing NULs"
            )
        object.__setattr__(self, "routable_addresses", _routable(self.addresses))


def check(
    adv: Advertisement, ttl: int, source: IPAddress, expect: Expectation
) -> DropReason | None:
    """None if ``adv`` (received with this TTL or hop limit, from ``source``) is for this instance
    and acceptable, else why it must be dropped. OTHER_VRID is not an error, just not ours."""
    # A router further than one hop away cannot be a peer on this link (RFC 5798 §7.1). In unicast
    # mode the configured peer list is the guard instead, and peers may sit behind a router (or,
    # like keepalived 2.2.7 over IPv6, send with hop limit 64): keepalived's rule too.
    if ttl != VRRP_TTL and not expect.peers:
        return DropReason.TTL
    if adv.version != expect.version:
        return DropReason.VERSION
    if adv.vrid != expect.vrid:
        return DropReason.OTHER_VRID
    if expect.peers and source not in expect.peers:
        return DropReason.UNKNOWN_PEER
    if expect.version == 2:
        # RFC 3768 §5.3.10: with auth type 0 the data field is ignored on reception.
        if adv.auth_type != expect.auth_type or (
            adv.auth_type != AUTH_NONE and adv.auth_data != expect.auth_data
        ):
            return DropReason.AUTH
        # Version 3 backups adopt the master's interval instead (RFC 5798 §6.4.2), but version 2
        # requires the same interval on every router (RFC 3768 §7.1).
        if adv.interval_cs != expect.interval_cs:
            return DropReason.INTERVAL_MISMATCH
    advertised = frozenset(adv.addresses)
    if advertised != expect.addresses and _routable(advertised) != expect.routable_addresses:
        return DropReason.ADDRESS_MISMATCH
    return None
