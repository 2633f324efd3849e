"""The VRRP advertisement on the wire: version 2 (RFC 3768 §5) and version 3 (RFC 5798 §5).

Only the VRRP message is handled here; the kernel builds and strips the IP header. The caller
passes the source and destination the packet was (or will be) carried with, because the version 3
checksum covers an IP pseudo-header and because the family decides the address width.

This is on the hot path (every advertisement sent and received), so the checksum is computed
arithmetically instead of word by word; see ``_sum``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VRRP_PROTOCOL = 112
ADVERTISEMENT = 1
AUTH_NONE = 0
AUTH_PASSWORD = 1
AUTH_DATA_LEN = 8
HEADER_LEN = 8
MAX_ADDRESSES = 255
MAX_V2_INTERVAL_S = 255
MAX_V3_INTERVAL_CS = 0x0FFF


class DropReason(StrEnum):
    TTL = "ttl"
    VERSION = "version"
    TYPE = "type"
    LENGTH = "length"
    CHECKSUM = "checksum"
    ADDRESS_COUNT = "address_count"
    AUTH = "auth"
    INTERVAL_MISMATCH = "interval_mismatch"
    #: An advert interval of 0: no sender may use it, and a v3 backup adopting it would compute
    #: a Master_Down_Interval of its skew alone and take over between any two adverts.
    INTERVAL = "interval"
    ADDRESS_MISMATCH = "address_mismatch"
    UNKNOWN_PEER = "unknown_peer"
    OTHER_VRID = "other_vrid"
    FAMILY = "family"


class DecodeError(ValueError):
    """A received message that is not a well-formed advertisement; ``reason`` feeds the counters."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Advertisement:
    version: int
    vrid: int
    priority: int
    #: Version 3: Max Adver Int in centiseconds. Version 2: Adver Int in seconds, times 100.
    interval_cs: int
    addresses: tuple[IPAddress, ...]
    #: Version 2 only: 0 none, 1 simple text password (kept for keepalived and RFC 2338 peers).
    auth_type: int = AUTH_NONE
    #: Version 2, auth type 1: the password without the NUL padding of the 8-byte wire field.
    auth_data: bytes = b""


# Version, type, VRID, priority, count, then one 16-bit word that is (auth type, adver int) in
# version 2 and (rsvd, max adver int) in version 3, then the checksum.
_HEADER = struct.Struct("!BBBBHH")
_V4_ADDRESSES = tuple(struct.Struct(f"!{n}I") for n in range(MAX_ADDRESSES + 1))
_AUTH_NONE_BYTES = bytes(AUTH_DATA_LEN)
_ONES = 0xFFFF


# Ones' complement sums of 16-bit words are congruent modulo 0xFFFF to the big-endian integer of
# the same bytes (2**16 == 1 mod 0xFFFF), so one int.from_bytes and one modulo replace the word
# loop. Every message here has an even length and the pseudo-header words sit on word boundaries,
# so the parts can be summed separately. A sum that is 0 mod 0xFFFF is the ones' complement value
# 0xFFFF (never +0: the version nibble makes the message non-zero), hence "valid iff sum % 0xFFFF
# == 0" and "checksum = -sum % 0xFFFF", which is also what scapy and the kernel produce.
def _pseudo_sum(source: IPAddress, destination: IPAddress, length: int) -> int:
    # RFC 5798 §5.2.8: the IPv4 (RFC 768 style) and IPv6 (RFC 2460 §8.1) pseudo-headers both
    # reduce to source + destination + next header + upper-layer length.
    return int(source) + int(destination) + VRRP_PROTOCOL + length


def encode(adv: Advertisement, source: IPAddress, destination: IPAddress) -> bytes:
    """The VRRP message for ``adv``; raises ValueError for what the wire format cannot carry."""
    family = source.version
    if destination.version != family:
        raise ValueError(f"source {source} and destination {destination} differ in family")
    count = len(adv.addresses)
    if not 1 <= count <= MAX_ADDRESSES:
        raise ValueError(f"{count} addresses; an advertisement carries 1 to {MAX_ADDRESSES}")
    if not 1 <= adv.vrid <= 255:
        raise ValueError(f"VRID {adv.vrid} outside 1..255")
    if not 0 <= adv.priority <= 255:
        raise ValueError(f"priority {adv.priority} outside 0..255")
    for address in adv.addresses:
        if address.version != family:
            raise ValueError(f"address {address} is not IPv{family} like source {source}")

    if adv.version == 2:
        if family != 4:
            raise ValueError("VRRP version 2 is IPv4 only (RFC 3768)")
        seconds, rest = divmod(adv.interval_cs, 100)
        if rest or not 1 <= seconds <= MAX_V2_INTERVAL_S:
            raise ValueError(
                f"interval {adv.interval_cs} cs is not a whole number of seconds in "
                f"1..{MAX_V2_INTERVAL_S}, as version 2 requires"
            )
        if adv.auth_type == AUTH_NONE:
            if adv.auth_data:
                raise ValueError("auth_data given with auth type 0")
            auth = _AUTH_NONE_BYTES
        elif adv.auth_type == AUTH_PASSWORD:
            if len(adv.auth_data) > AUTH_DATA_LEN:
                raise ValueError(f"password longer than {AUTH_DATA_LEN} bytes")
            # Trailing NULs could not be told apart from the padding by the receiver.
            if adv.auth_data.endswith(b"\x00"):
                raise ValueError("password ends with NUL, indistinguishable from padding")
            auth = adv.auth_data.ljust(AUTH_DATA_LEN, b"\x00")
        else:
            raise ValueError(f"auth type {adv.auth_type} not supported (only 0 and 1)")
        word = adv.auth_type << 8 | seconds
    elif adv.version == 3:
        if not 1 <= adv.interval_cs <= MAX_V3_INTERVAL_CS:
            raise ValueError(f"interval {adv.interval_cs} cs outside 1..{MAX_V3_INTERVAL_CS}")
        if adv.auth_type != AUTH_NONE or adv.auth_data:
            raise ValueError("version 3 has no authentication (RFC 5798 §9)")
        word = adv.interval_cs
    else:
        raise ValueError(f"version {adv.version}; only 2 and 3 exist")

    if family == 4:
        body = _V4_ADDRESSES[count].pack(*map(int, adv.addresses))
    else:
        body = b"".join([address.packed for address in adv.addresses])
    if adv.version == 2:
        body += auth

    first = adv.version << 4 | ADVERTISEMENT
    total = (first << 8 | adv.vrid) + (adv.priority << 8 | count) + word + int.from_bytes(body)
    if adv.version == 3:
        total += _pseudo_sum(source, destination, HEADER_LEN + len(body))
    return _HEADER.pack(first, adv.vrid, adv.priority, count, word, -total % _ONES) + body


def decode(message: bytes, source: IPAddress, destination: IPAddress) -> Advertisement:
    """Parse and verify one received VRRP message; raises only DecodeError, whatever the bytes."""
    length = len(message)
    family = source.version
    if destination.version != family:
        raise DecodeError(
            DropReason.FAMILY, f"source {source} and destination {destination} differ in family"
        )
    if length < HEADER_LEN:
        raise DecodeError(
            DropReason.LENGTH, f"{length} bytes, shorter than the {HEADER_LEN}-byte header"
        )
    first, vrid, priority, count, word, checksum = _HEADER.unpack_from(message)
    version = first >> 4
    if version == 2:
        if family != 4:
            raise DecodeError(DropReason.VERSION, "version 2 over IPv6 (RFC 3768 is IPv4 only)")
    elif version != 3:
        raise DecodeError(DropReason.VERSION, f"version {version}, expected 2 or 3")
    kind = first & 0x0F
    if kind != ADVERTISEMENT:
        raise DecodeError(DropReason.TYPE, f"type {kind}, expected {ADVERTISEMENT}")
    if count == 0:
        raise DecodeError(DropReason.ADDRESS_COUNT, "count of addresses is 0, minimum is 1")

    # RFC 3768 and 5798 §7.1 only ask that the packet *contain* the whole message, but trailing
    # bytes are rejected: keepalived drops any length other than the exact one (vrrp_in_chk,
    # "packet length mismatch"), so nothing it sends has them; the v3 checksum length and
    # keepalived's reading of the v2 password from the end of the packet would be ambiguous.
    width = 4 if family == 4 else 16
    expected = HEADER_LEN + count * width + (AUTH_DATA_LEN if version == 2 else 0)
    if length != expected:
        raise DecodeError(
            DropReason.LENGTH,
            f"{length} bytes, expected {expected} for version {version} "
            f"with {count} IPv{family} addresses",
        )

    if not (word & MAX_V3_INTERVAL_CS if version == 3 else word & 0xFF):
        raise DecodeError(DropReason.INTERVAL, "advert interval 0, minimum is 1")

    total = int.from_bytes(message)
    if version == 3:
        total += _pseudo_sum(source, destination, length)
    if total % _ONES:
        wanted = -(total - checksum) % _ONES
        raise DecodeError(DropReason.CHECKSUM, f"checksum {checksum:#06x}, expected {wanted:#06x}")

    addresses: tuple[IPAddress, ...]
    if family == 4:
        addresses = tuple(
            map(ipaddress.IPv4Address, _V4_ADDRESSES[count].unpack_from(message, HEADER_LEN))
        )
    else:
        addresses = tuple(
            ipaddress.IPv6Address(int.from_bytes(message[offset : offset + 16]))
            for offset in range(HEADER_LEN, HEADER_LEN + 16 * count, 16)
        )

    if version == 3:
        # The 4 rsvd bits are ignored on reception (RFC 5798 §5.2.6).
        return Advertisement(3, vrid, priority, word & MAX_V3_INTERVAL_CS, addresses)
    auth_type = word >> 8
    # RFC 3768 §5.3.10: with no authentication the data field is ignored on reception, so junk
    # there must not make two otherwise identical advertisements differ.
    auth_data = b"" if auth_type == AUTH_NONE else bytes(message[-AUTH_DATA_LEN:]).rstrip(b"\x00")
    return Advertisement(2, vrid, priority, (word & 0xFF) * 100, addresses, auth_type, auth_data)
