"""The VRRP codec against scapy's independent implementation, and every way decode() refuses bytes.

Scapy's VRRPv3 layer computes its checksum with ``in4_chksum``/``in6_chksum``, i.e. including the
IPv4 or IPv6 pseudo-header built from the enclosing IP layer, for IPv4 as well as IPv6; a VRRPv3
layer built without an IP layer gets checksum 0 (with a warning), so the golden bytes below are
always cut out of a whole IP packet. Scapy's VRRP (version 2) layer checksums the message alone.
keepalived (since 1.3.6) also puts the real source and destination into the v3 IPv4
pseudo-header; before that it used the multicast group even for unicast, which survives as the
``old_unicast_checksum`` compatibility option (keepalived issue #642).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import pytest
from scapy.utils import checksum
from vrrp_oracle import scapy_message

from vipkeeper_agent.vrrp.packet import (
    VRRP_PROTOCOL,
    Advertisement,
    DecodeError,
    DropReason,
    IPAddress,
    decode,
    encode,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

SRC4 = V4("192.0.2.10")
MCAST4 = V4("224.0.0.18")
PEER4 = V4("192.0.2.11")
SRC6 = V6("fe80::10")
MCAST6 = V6("ff02::12")


def reference_checksum(data: bytes) -> int:
    """RFC 1071 word by word, independent of packet.py's modular shortcut."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(word for (word,) in struct.iter_unpack("!H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(source: IPAddress, destination: IPAddress, length: int) -> bytes:
    if source.version == 4:
        return source.packed + destination.packed + struct.pack("!BBH", 0, VRRP_PROTOCOL, length)
    return source.packed + destination.packed + struct.pack("!I3xB", length, VRRP_PROTOCOL)


def with_checksum(message: bytes, source: IPAddress, destination: IPAddress) -> bytes:
    """``message`` with a correct checksum, so that a test reaches the check it is aimed at."""
    zeroed = message[:6] + b"\x00\x00" + message[8:]
    covered = zeroed
    if message[0] >> 4 == 3:
        covered = pseudo_header(source, destination, len(message)) + zeroed
    return zeroed[:6] + struct.pack("!H", reference_checksum(covered)) + zeroed[8:]


@dataclass(frozen=True)
class Golden:
    name: str
    adv: Advertisement
    source: IPAddress
    destination: IPAddress


GOLDEN = [
    Golden("v2 one address", Advertisement(2, 51, 100, 100, (V4("192.0.2.100"),)), SRC4, MCAST4),
    Golden(
        "v2 several addresses, password",
        Advertisement(
            2,
            7,
            255,
            300,
            (V4("192.0.2.100"), V4("198.51.100.1"), V4("203.0.113.254")),
            auth_type=1,
            auth_data=b"secret",
        ),
        SRC4,
        MCAST4,
    ),
    Golden(
        "v2 8-byte password, unicast",
        Advertisement(2, 255, 1, 25500, (V4("10.1.2.3"),), auth_type=1, auth_data=b"12345678"),
        SRC4,
        PEER4,
    ),
    Golden(
        "v3 IPv4 one address", Advertisement(3, 51, 100, 100, (V4("192.0.2.100"),)), SRC4, MCAST4
    ),
    Golden(
        "v3 IPv4 several addresses, unicast",
        Advertisement(3, 200, 0, 4095, (V4("192.0.2.100"), V4("192.0.2.101"), V4("10.0.0.1"))),
        SRC4,
        PEER4,
    ),
    Golden("v3 IPv6 one address", Advertisement(3, 1, 150, 50, (V6("fe80::1:1"),)), SRC6, MCAST6),
    Golden(
        "v3 IPv6 several addresses, unicast",
        Advertisement(
            3, 42, 254, 1, (V6("fe80::1:1"), V6("2001:db8::1"), V6("2001:db8:ffff::abcd"))
        ),
        V6("2001:db8::10"),
        V6("2001:db8::11"),
    ),
]


@pytest.mark.parametrize("case", GOLDEN, ids=lambda case: case.name)
def test_encode_matches_scapy(case: Golden) -> None:
    assert encode(case.adv, case.source, case.destination) == scapy_message(
        case.adv, case.source, case.destination
    )


@pytest.mark.parametrize("case", GOLDEN, ids=lambda case: case.name)
def test_decode_of_scapy_bytes(case: Golden) -> None:
    message = scapy_message(case.adv, case.source, case.destination)
    assert decode(message, case.source, case.destination) == case.adv


@pytest.mark.parametrize("case", GOLDEN, ids=lambda case: case.name)
def test_checksum_matches_rfc1071_reference(case: Golden) -> None:
    message = encode(case.adv, case.source, case.destination)
    assert with_checksum(message, case.source, case.destination) == message


def test_scapy_v3_ipv4_checksum_includes_pseudo_header() -> None:
    adv = Advertisement(3, 51, 100, 100, (V4("192.0.2.100"),))
    message = scapy_message(adv, SRC4, MCAST4)
    zeroed = message[:6] + b"\x00\x00" + message[8:]
    field = int.from_bytes(message[6:8])
    assert field != checksum(zeroed)
    assert field == reference_checksum(pseudo_header(SRC4, MCAST4, len(message)) + zeroed)
    # ... and therefore the destination matters: the same advert sent unicast differs.
    assert scapy_message(adv, SRC4, PEER4)[6:8] != message[6:8]


def test_scapy_v2_checksum_has_no_pseudo_header() -> None:
    adv = Advertisement(2, 51, 100, 100, (V4("192.0.2.100"),))
    assert scapy_message(adv, SRC4, MCAST4) == scapy_message(adv, SRC4, PEER4)
    assert encode(adv, SRC4, MCAST4) == encode(adv, V4("10.9.9.9"), PEER4)


def test_known_bytes() -> None:
    # Fixed vectors so that a change in scapy cannot move both sides at once.
    v3 = encode(Advertisement(3, 5, 100, 100, (V4("10.0.0.100"),)), V4("10.0.0.1"), MCAST4)
    assert v3.hex() == "31056401006475a10a000064"
    v2 = encode(
        Advertisement(2, 5, 100, 100, (V4("10.0.0.100"),), 1, b"passwd"), V4("10.0.0.1"), MCAST4
    )
    assert v2.hex() == "210564010101145b0a0000647061737377640000"


def _zero_checksum_advert() -> Advertisement:
    # Shift the address by the checksum it produced: the sum then lands on 0 mod 0xFFFF.
    base = Advertisement(2, 9, 100, 100, (V4("10.20.0.0"),))
    field = int.from_bytes(encode(base, SRC4, MCAST4)[6:8])
    return Advertisement(2, 9, 100, 100, (V4(int(V4("10.20.0.0")) + field),))


def test_checksum_zero_is_sent_as_zero_like_scapy() -> None:
    adv = _zero_checksum_advert()
    message = encode(adv, SRC4, MCAST4)
    assert message[6:8] == b"\x00\x00"
    assert message == scapy_message(adv, SRC4, MCAST4)


def test_checksum_ffff_is_accepted_as_the_other_zero() -> None:
    adv = _zero_checksum_advert()
    message = encode(adv, SRC4, MCAST4)
    assert decode(message[:6] + b"\xff\xff" + message[8:], SRC4, MCAST4) == adv


def test_v2_auth_data_ignored_without_auth() -> None:
    message = encode(Advertisement(2, 9, 100, 100, (V4("10.0.0.1"),)), SRC4, MCAST4)
    junk = with_checksum(message[:-8] + b"garbage!", SRC4, MCAST4)
    assert decode(junk, SRC4, MCAST4).auth_data == b""


def test_v2_unknown_auth_type_is_decoded_for_check_to_refuse() -> None:
    message = encode(Advertisement(2, 9, 100, 100, (V4("10.0.0.1"),)), SRC4, MCAST4)
    ah = with_checksum(
        message[:4] + b"\x02" + message[5:-8] + b"ab\x00\x00\x00\x00\x00\x00", SRC4, MCAST4
    )
    decoded = decode(ah, SRC4, MCAST4)
    assert (decoded.auth_type, decoded.auth_data) == (2, b"ab")


def test_v3_reserved_bits_ignored() -> None:
    message = encode(Advertisement(3, 9, 100, 250, (V4("10.0.0.1"),)), SRC4, MCAST4)
    reserved = with_checksum(message[:4] + bytes([message[4] | 0xF0]) + message[5:], SRC4, MCAST4)
    assert decode(reserved, SRC4, MCAST4).interval_cs == 250


def test_decode_accepts_memoryview_and_bytearray() -> None:
    adv = Advertisement(3, 9, 100, 250, (V6("2001:db8::1"),))
    message = encode(adv, SRC6, MCAST6)
    assert decode(memoryview(message), SRC6, MCAST6) == adv  # type: ignore[arg-type]
    assert decode(bytearray(message), SRC6, MCAST6) == adv  # type: ignore[arg-type]


def test_max_addresses() -> None:
    addresses = tuple(V4(int(V4("10.0.0.0")) + n) for n in range(255))
    adv = Advertisement(3, 9, 100, 100, addresses)
    message = encode(adv, SRC4, MCAST4)
    assert len(message) == 8 + 255 * 4
    assert message == scapy_message(adv, SRC4, MCAST4)
    assert decode(message, SRC4, MCAST4) == adv


# --- decode refusals --------------------------------------------------------------------------

V3_4 = encode(Advertisement(3, 9, 100, 100, (V4("10.0.0.1"),)), SRC4, MCAST4)
V3_6 = encode(Advertisement(3, 9, 100, 100, (V6("fe80::1"), V6("2001:db8::1"))), SRC6, MCAST6)
V2 = encode(Advertisement(2, 9, 100, 100, (V4("10.0.0.1"), V4("10.0.0.2"))), SRC4, MCAST4)


def fixed(message: bytes, source: IPAddress = SRC4, destination: IPAddress = MCAST4) -> bytes:
    return with_checksum(message, source, destination)


@dataclass(frozen=True)
class Bad:
    name: str
    message: bytes
    reason: DropReason
    detail: str
    source: IPAddress = SRC4
    destination: IPAddress = MCAST4


BAD = [
    Bad("family mixed", V3_4, DropReason.FAMILY, "differ in family", SRC4, MCAST6),
    Bad("family mixed other way", V3_6, DropReason.FAMILY, "differ in family", SRC6, MCAST4),
    Bad("empty", b"", DropReason.LENGTH, "0 bytes, shorter than the 8-byte header"),
    Bad("short header", V3_4[:7], DropReason.LENGTH, "7 bytes"),
    Bad("truncated address", fixed(V3_4[:10]), DropReason.LENGTH, "10 bytes, expected 12"),
    Bad("trailing bytes v3", fixed(V3_4 + b"\x00\x00"), DropReason.LENGTH, "14 bytes, expected 12"),
    Bad("v2 without auth data", fixed(V2[:-8]), DropReason.LENGTH, "16 bytes, expected 24 for"),
    Bad("trailing bytes v2", fixed(V2 + b"\x00" * 4), DropReason.LENGTH, "28 bytes, expected 24"),
    Bad(
        "count larger than message",
        fixed(V3_4[:3] + b"\x02" + V3_4[4:]),
        DropReason.LENGTH,
        "12 bytes, expected 16",
    ),
    Bad(
        "IPv4-sized addresses over IPv6",
        fixed(V3_4, SRC6, MCAST6),
        DropReason.LENGTH,
        "expected 24 for version 3 with 1 IPv6",
        SRC6,
        MCAST6,
    ),
    Bad("version 0", fixed(b"\x01" + V3_4[1:]), DropReason.VERSION, "version 0, expected 2 or 3"),
    Bad("version 1", fixed(b"\x11" + V3_4[1:]), DropReason.VERSION, "version 1"),
    Bad("version 4", fixed(b"\x41" + V3_4[1:]), DropReason.VERSION, "version 4"),
    Bad("version 15", fixed(b"\xf1" + V3_4[1:]), DropReason.VERSION, "version 15"),
    Bad(
        "version 2 over IPv6",
        fixed(b"\x21" + V3_6[1:], SRC6, MCAST6),
        DropReason.VERSION,
        "version 2 over IPv6",
        SRC6,
        MCAST6,
    ),
    Bad("type 0", fixed(b"\x30" + V3_4[1:]), DropReason.TYPE, "type 0, expected 1"),
    Bad("type 2", fixed(b"\x22" + V2[1:]), DropReason.TYPE, "type 2"),
    Bad("type 15", fixed(b"\x3f" + V3_4[1:]), DropReason.TYPE, "type 15"),
    Bad("count 0", fixed(V3_4[:3] + b"\x00" + V3_4[4:8]), DropReason.ADDRESS_COUNT, "count"),
    Bad("count 0 v2", fixed(V2[:3] + b"\x00" + V2[4:8] + V2[-8:]), DropReason.ADDRESS_COUNT, "0"),
    Bad("v3 interval 0", fixed(V3_4[:4] + b"\x00\x00" + V3_4[6:]), DropReason.INTERVAL, "0"),
    Bad(
        "v3 interval 0, rsvd bits set",
        fixed(V3_4[:4] + b"\xf0\x00" + V3_4[6:]),
        DropReason.INTERVAL,
        "interval 0",
    ),
    Bad("v2 interval 0", fixed(V2[:5] + b"\x00" + V2[6:]), DropReason.INTERVAL, "interval 0"),
    Bad(
        "v3 checksum off by one",
        V3_4[:7] + bytes([V3_4[7] ^ 1]) + V3_4[8:],
        DropReason.CHECKSUM,
        "checksum",
    ),
    Bad("v2 priority changed", V2[:2] + b"\x65" + V2[3:], DropReason.CHECKSUM, "checksum"),
    Bad("v2 password changed", V2[:-1] + b"\x01", DropReason.CHECKSUM, "checksum"),
    Bad("v3 wrong destination", V3_4, DropReason.CHECKSUM, "checksum", SRC4, PEER4),
    Bad("v3 wrong source", V3_4, DropReason.CHECKSUM, "checksum", PEER4, MCAST4),
    Bad("v3 IPv6 wrong source", V3_6, DropReason.CHECKSUM, "checksum", V6("fe80::11"), MCAST6),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda bad: bad.name)
def test_decode_refuses(bad: Bad) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(bad.message, bad.source, bad.destination)
    assert caught.value.reason is bad.reason
    assert bad.detail in caught.value.detail
    assert isinstance(caught.value, ValueError)
    assert str(bad.reason) in str(caught.value)


def test_checksum_detail_names_both_values() -> None:
    broken = V3_4[:6] + b"\x12\x34" + V3_4[8:]
    with pytest.raises(DecodeError) as caught:
        decode(broken, SRC4, MCAST4)
    assert caught.value.detail == f"checksum 0x1234, expected 0x{V3_4[6:8].hex()}"


def test_drop_reason_values_are_counter_names() -> None:
    assert {reason.value for reason in DropReason} == {
        "ttl",
        "version",
        "type",
        "length",
        "checksum",
        "address_count",
        "auth",
        "interval_mismatch",
        "interval",
        "address_mismatch",
        "unknown_peer",
        "other_vrid",
        "family",
    }
    assert f"{DropReason.INTERVAL_MISMATCH}" == "interval_mismatch"


# --- encode refusals --------------------------------------------------------------------------

ONE4 = (V4("10.0.0.1"),)


@pytest.mark.parametrize(
    ("adv", "source", "destination", "message"),
    [
        (Advertisement(2, 1, 100, 100, (V6("2001:db8::1"),)), SRC6, MCAST6, "IPv4 only"),
        (Advertisement(3, 1, 100, 100, ONE4), SRC4, MCAST6, "differ in family"),
        (Advertisement(3, 1, 100, 100, (V6("2001:db8::1"),)), SRC4, MCAST4, "not IPv4"),
        (Advertisement(3, 1, 100, 100, (V4("10.0.0.1"), V6("::1"))), SRC4, MCAST4, "not IPv4"),
        (Advertisement(3, 1, 100, 100, ONE4), SRC6, MCAST6, "not IPv6"),
        (Advertisement(3, 1, 100, 100, ()), SRC4, MCAST4, "0 addresses"),
        (
            Advertisement(3, 1, 100, 100, tuple(V4(n) for n in range(256))),
            SRC4,
            MCAST4,
            "256 addresses",
        ),
        (Advertisement(3, 0, 100, 100, ONE4), SRC4, MCAST4, "VRID 0"),
        (Advertisement(3, 256, 100, 100, ONE4), SRC4, MCAST4, "VRID 256"),
        (Advertisement(3, 1, -1, 100, ONE4), SRC4, MCAST4, "priority -1"),
        (Advertisement(3, 1, 256, 100, ONE4), SRC4, MCAST4, "priority 256"),
        (Advertisement(1, 1, 100, 100, ONE4), SRC4, MCAST4, "version 1"),
        (Advertisement(4, 1, 100, 100, ONE4), SRC4, MCAST4, "version 4"),
        (Advertisement(2, 1, 100, 150, ONE4), SRC4, MCAST4, "whole number of seconds"),
        (Advertisement(2, 1, 100, 0, ONE4), SRC4, MCAST4, "interval 0"),
        (Advertisement(2, 1, 100, 25600, ONE4), SRC4, MCAST4, "interval 25600"),
        (Advertisement(3, 1, 100, 0, ONE4), SRC4, MCAST4, "interval 0"),
        (Advertisement(3, 1, 100, 4096, ONE4), SRC4, MCAST4, "interval 4096"),
        (Advertisement(2, 1, 100, 100, ONE4, 2, b"x"), SRC4, MCAST4, "auth type 2"),
        (Advertisement(2, 1, 100, 100, ONE4, 0, b"x"), SRC4, MCAST4, "auth type 0"),
        (Advertisement(2, 1, 100, 100, ONE4, 1, b"123456789"), SRC4, MCAST4, "longer than 8"),
        (Advertisement(2, 1, 100, 100, ONE4, 1, b"ab\x00"), SRC4, MCAST4, "ends with NUL"),
        (Advertisement(3, 1, 100, 100, ONE4, 1, b"pw"), SRC4, MCAST4, "no authentication"),
        (Advertisement(3, 1, 100, 100, ONE4, 0, b"pw"), SRC4, MCAST4, "no authentication"),
    ],
)
def test_encode_refuses(
    adv: Advertisement, source: IPAddress, destination: IPAddress, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode(adv, source, destination)


def test_v2_empty_password_round_trips() -> None:
    adv = Advertisement(2, 1, 100, 100, ONE4, 1, b"")
    message = encode(adv, SRC4, MCAST4)
    assert message[-8:] == bytes(8)
    assert decode(message, SRC4, MCAST4) == adv
