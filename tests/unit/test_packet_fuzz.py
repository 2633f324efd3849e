"""Properties of the codec over generated inputs: decode never crashes, encode/decode round-trip,
every single-bit error is caught, and the bytes agree with scapy and with an RFC 1071 checksum."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from vrrp_oracle import scapy_message

from vipkeeper_agent.vrrp.packet import (
    VRRP_PROTOCOL,
    Advertisement,
    DecodeError,
    IPAddress,
    decode,
    encode,
)

V4 = ipaddress.IPv4Address


def _v4() -> st.SearchStrategy[IPAddress]:
    return st.ip_addresses(v=4)


def _v6() -> st.SearchStrategy[IPAddress]:
    return st.ip_addresses(v=6)


any_address: st.SearchStrategy[IPAddress] = st.one_of(_v4(), _v6())

# Up to 255 addresses per advert: generation, not the codec, is what can be slow, and a wall-clock
# deadline only makes that flaky on a loaded machine.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def endpoints(draw: st.DrawFn, family: int) -> tuple[IPAddress, IPAddress]:
    strategy = _v4() if family == 4 else _v6()
    return draw(strategy), draw(strategy)


@st.composite
def adverts(
    draw: st.DrawFn, versions: tuple[int, ...] = (2, 3)
) -> tuple[Advertisement, IPAddress, IPAddress]:
    version = draw(st.sampled_from(versions))
    family = 4 if version == 2 else draw(st.sampled_from([4, 6]))
    source, destination = draw(endpoints(family))
    addresses = tuple(draw(st.lists(_v4() if family == 4 else _v6(), min_size=1, max_size=255)))
    vrid = draw(st.integers(1, 255))
    priority = draw(st.integers(0, 255))
    if version == 3:
        interval = draw(st.integers(1, 0x0FFF))
        return Advertisement(3, vrid, priority, interval, addresses), source, destination
    interval = draw(st.integers(1, 255)) * 100
    auth_type = draw(st.sampled_from([0, 1]))
    auth = draw(st.binary(max_size=8).map(lambda b: b.rstrip(b"\x00"))) if auth_type else b""
    adv = Advertisement(2, vrid, priority, interval, addresses, auth_type, auth)
    return adv, source, destination


def _rfc1071(data: bytes) -> int:
    total: int = sum(word for (word,) in struct.iter_unpack("!H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@RELAXED
@given(message=st.binary(max_size=600), source=any_address, destination=any_address)
def test_decode_arbitrary_bytes_only_raises_decode_error(
    message: bytes, source: IPAddress, destination: IPAddress
) -> None:
    try:
        adv = decode(message, source, destination)
    except DecodeError as error:
        assert error.detail
        return
    assert adv.version in (2, 3)
    assert all(address.version == source.version for address in adv.addresses)


@st.composite
def plausible_messages(draw: st.DrawFn) -> tuple[bytes, IPAddress, IPAddress]:
    """Headers that get past the cheap checks, with a correct checksum, to reach the parsing."""
    family = draw(st.sampled_from([4, 6]))
    source, destination = draw(endpoints(family))
    version = draw(st.sampled_from([2, 3, draw(st.integers(0, 15))]))
    kind = draw(st.sampled_from([1, draw(st.integers(0, 15))]))
    count = draw(st.integers(0, 255))
    width = 4 if family == 4 else 16
    natural = count * width + (8 if version == 2 else 0)
    body_len = draw(st.sampled_from([natural, draw(st.integers(0, natural + 20))]))
    body = draw(st.binary(min_size=body_len, max_size=body_len))
    word = draw(st.integers(0, 0xFFFF))
    message = (
        struct.pack(
            "!BBBBHH",
            version << 4 | kind,
            draw(st.integers(0, 255)),
            draw(st.integers(0, 255)),
            count,
            word,
            0,
        )
        + body
    )
    if len(message) % 2 == 0:
        covered = message
        if version == 3:
            covered = (
                source.packed
                + destination.packed
                + (
                    struct.pack("!BBH", 0, VRRP_PROTOCOL, len(message))
                    if family == 4
                    else struct.pack("!I3xB", len(message), VRRP_PROTOCOL)
                )
                + message
            )
        message = message[:6] + struct.pack("!H", _rfc1071(covered)) + message[8:]
    return message, source, destination


@RELAXED
@given(case=plausible_messages())
def test_decode_plausible_bytes_only_raises_decode_error(
    case: tuple[bytes, IPAddress, IPAddress],
) -> None:
    message, source, destination = case
    try:
        adv = decode(message, source, destination)
    except DecodeError:
        return
    assert len(adv.addresses) == message[3]
    assert all(address.version == source.version for address in adv.addresses)


@RELAXED
@given(case=adverts())
def test_round_trip(case: tuple[Advertisement, IPAddress, IPAddress]) -> None:
    adv, source, destination = case
    assert decode(encode(adv, source, destination), source, destination) == adv


@RELAXED
@given(case=adverts())
def test_checksum_is_rfc1071(case: tuple[Advertisement, IPAddress, IPAddress]) -> None:
    adv, source, destination = case
    message = encode(adv, source, destination)
    covered = message
    if adv.version == 3:
        if source.version == 4:
            pseudo = struct.pack("!BBH", 0, VRRP_PROTOCOL, len(message))
        else:
            pseudo = struct.pack("!I3xB", len(message), VRRP_PROTOCOL)
        covered = source.packed + destination.packed + pseudo + message
    # Summing a message with its own checksum gives ones' complement zero.
    assert _rfc1071(covered) == 0


@RELAXED
@given(case=adverts(), data=st.data())
def test_any_single_bit_flip_is_caught(
    case: tuple[Advertisement, IPAddress, IPAddress], data: st.DataObject
) -> None:
    # 2**k is never 0 mod 0xFFFF, so one flipped bit always breaks the checksum, even in the rsvd
    # bits or the v2 auth data; an earlier check (version, type, count) may fire first.
    adv, source, destination = case
    message = bytearray(encode(adv, source, destination))
    bit = data.draw(st.integers(0, len(message) * 8 - 1))
    message[bit // 8] ^= 0x80 >> (bit % 8)
    try:
        decoded = decode(bytes(message), source, destination)
    except DecodeError:
        return
    raise AssertionError(f"bit {bit} flipped and still decoded to {decoded}")


@RELAXED
@given(case=adverts(versions=(3,)), data=st.data())
def test_v3_checksum_binds_the_addresses(
    case: tuple[Advertisement, IPAddress, IPAddress], data: st.DataObject
) -> None:
    adv, source, destination = case
    other = data.draw(_v4() if source.version == 4 else _v6())
    # A different address with the same ones' complement sum is indistinguishable by design.
    assume((int(other) - int(destination)) % 0xFFFF)
    message = encode(adv, source, destination)
    try:
        decode(message, source, other)
    except DecodeError as error:
        assert error.reason == "checksum"
    else:
        raise AssertionError("decoded with the wrong destination")


@settings(max_examples=50, deadline=None)
@given(case=adverts())
def test_matches_scapy(case: tuple[Advertisement, IPAddress, IPAddress]) -> None:
    adv, source, destination = case
    expected = scapy_message(adv, source, destination)
    assert encode(adv, source, destination) == expected
