"""Receive checks: every rule, and the order in which they are applied."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from vipkeeper_agent.vrrp.packet import Advertisement, DropReason, IPAddress, decode, encode
from vipkeeper_agent.vrrp.receive import Expectation, check

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address

SOURCE = V4("192.0.2.10")
OTHER = V4("192.0.2.99")
VIP_A = V4("192.0.2.100")
VIP_B = V4("192.0.2.101")

V3_EXPECT = Expectation(version=3, vrid=51, interval_cs=100, addresses=frozenset({VIP_A, VIP_B}))
V3_ADV = Advertisement(3, 51, 100, 100, (VIP_A, VIP_B))
V2_EXPECT = Expectation(
    version=2,
    vrid=51,
    interval_cs=100,
    addresses=frozenset({VIP_A}),
    auth_type=1,
    auth_data=b"secret",
)
V2_ADV = Advertisement(2, 51, 100, 100, (VIP_A,), auth_type=1, auth_data=b"secret")

LL1 = V6("fe80::1")
LL2 = V6("fe80::2")
G1 = V6("2001:db8::1")
G2 = V6("2001:db8::2")
V6_EXPECT = Expectation(version=3, vrid=7, interval_cs=100, addresses=frozenset({LL1, G1, G2}))
V6_ADV = Advertisement(3, 7, 100, 100, (LL1, G1, G2))
SOURCE6 = V6("fe80::10")


CASES: list[tuple[str, Advertisement, int, IPAddress, Expectation, DropReason | None]] = [
    ("v3 accepted", V3_ADV, 255, SOURCE, V3_EXPECT, None),
    ("v2 accepted", V2_ADV, 255, SOURCE, V2_EXPECT, None),
    ("v6 accepted", V6_ADV, 255, SOURCE6, V6_EXPECT, None),
    # ttl
    ("ttl 254", V3_ADV, 254, SOURCE, V3_EXPECT, DropReason.TTL),
    ("ttl 64", V3_ADV, 64, SOURCE, V3_EXPECT, DropReason.TTL),
    ("ttl 0", V3_ADV, 0, SOURCE, V3_EXPECT, DropReason.TTL),
    ("hop limit 1", V6_ADV, 1, SOURCE6, V6_EXPECT, DropReason.TTL),
    # version
    (
        "v2 advert, v3 instance",
        replace(V3_ADV, version=2),
        255,
        SOURCE,
        V3_EXPECT,
        DropReason.VERSION,
    ),
    (
        "v3 advert, v2 instance",
        replace(V2_ADV, version=3),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.VERSION,
    ),
    # vrid
    ("other vrid", replace(V3_ADV, vrid=52), 255, SOURCE, V3_EXPECT, DropReason.OTHER_VRID),
    ("vrid 0", replace(V3_ADV, vrid=0), 255, SOURCE, V3_EXPECT, DropReason.OTHER_VRID),
    # peers
    (
        "unknown peer",
        V3_ADV,
        255,
        OTHER,
        replace(V3_EXPECT, peers=frozenset({SOURCE})),
        DropReason.UNKNOWN_PEER,
    ),
    ("known peer", V3_ADV, 255, SOURCE, replace(V3_EXPECT, peers=frozenset({OTHER, SOURCE})), None),
    ("no peers: any source", V3_ADV, 255, OTHER, V3_EXPECT, None),
    # Unicast: the peer list replaces the TTL guard (routed peers; keepalived's IPv6 hop limit 64).
    (
        "unicast peer, ttl 64",
        V3_ADV,
        64,
        SOURCE,
        replace(V3_EXPECT, peers=frozenset({SOURCE})),
        None,
    ),
    (
        "unicast stranger, ttl 64",
        V3_ADV,
        64,
        OTHER,
        replace(V3_EXPECT, peers=frozenset({SOURCE})),
        DropReason.UNKNOWN_PEER,
    ),
    # auth
    (
        "auth type 0 received",
        replace(V2_ADV, auth_type=0, auth_data=b""),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.AUTH,
    ),
    ("auth type 2 received", replace(V2_ADV, auth_type=2), 255, SOURCE, V2_EXPECT, DropReason.AUTH),
    (
        "wrong password",
        replace(V2_ADV, auth_data=b"secreT"),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.AUTH,
    ),
    (
        "password prefix",
        replace(V2_ADV, auth_data=b"secre"),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.AUTH,
    ),
    ("empty password", replace(V2_ADV, auth_data=b""), 255, SOURCE, V2_EXPECT, DropReason.AUTH),
    (
        "password received, none configured",
        V2_ADV,
        255,
        SOURCE,
        replace(V2_EXPECT, auth_type=0, auth_data=b""),
        DropReason.AUTH,
    ),
    (
        "auth type 0: data ignored (RFC 3768 §5.3.10)",
        replace(V2_ADV, auth_type=0, auth_data=b"junk"),
        255,
        SOURCE,
        replace(V2_EXPECT, auth_type=0, auth_data=b""),
        None,
    ),
    ("v3 has no auth", replace(V3_ADV, auth_type=1, auth_data=b"x"), 255, SOURCE, V3_EXPECT, None),
    # interval
    (
        "v2 interval differs",
        replace(V2_ADV, interval_cs=200),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.INTERVAL_MISMATCH,
    ),
    ("v3 interval adopted", replace(V3_ADV, interval_cs=37), 255, SOURCE, V3_EXPECT, None),
    # addresses
    (
        "address missing",
        replace(V3_ADV, addresses=(VIP_A,)),
        255,
        SOURCE,
        V3_EXPECT,
        DropReason.ADDRESS_MISMATCH,
    ),
    (
        "extra address",
        replace(V3_ADV, addresses=(VIP_A, VIP_B, OTHER)),
        255,
        SOURCE,
        V3_EXPECT,
        DropReason.ADDRESS_MISMATCH,
    ),
    (
        "address replaced",
        replace(V3_ADV, addresses=(VIP_A, OTHER)),
        255,
        SOURCE,
        V3_EXPECT,
        DropReason.ADDRESS_MISMATCH,
    ),
    (
        "order does not matter",
        replace(V3_ADV, addresses=(VIP_B, VIP_A)),
        255,
        SOURCE,
        V3_EXPECT,
        None,
    ),
    (
        "duplicates do not matter",
        replace(V3_ADV, addresses=(VIP_B, VIP_A, VIP_B)),
        255,
        SOURCE,
        V3_EXPECT,
        None,
    ),
    (
        "owner is not exempt",
        replace(V3_ADV, priority=255, addresses=(VIP_A,)),
        255,
        SOURCE,
        V3_EXPECT,
        DropReason.ADDRESS_MISMATCH,
    ),
    ("other link-local", replace(V6_ADV, addresses=(LL2, G1, G2)), 255, SOURCE6, V6_EXPECT, None),
    (
        "no link-local advertised",
        replace(V6_ADV, addresses=(G2, G1)),
        255,
        SOURCE6,
        V6_EXPECT,
        None,
    ),
    (
        "link-local advertised, none expected",
        V6_ADV,
        255,
        SOURCE6,
        replace(V6_EXPECT, addresses=frozenset({G1, G2})),
        None,
    ),
    (
        "link-local only on each side, but different",
        replace(V6_ADV, addresses=(LL2,)),
        255,
        SOURCE6,
        replace(V6_EXPECT, addresses=frozenset({LL1})),
        None,
    ),
    (
        "global v6 missing",
        replace(V6_ADV, addresses=(LL1, G1)),
        255,
        SOURCE6,
        V6_EXPECT,
        DropReason.ADDRESS_MISMATCH,
    ),
    (
        "febf:: is link-local, fec0:: is not",
        replace(V6_ADV, addresses=(V6("febf::1"), G1, G2, V6("fec0::1"))),
        255,
        SOURCE6,
        V6_EXPECT,
        DropReason.ADDRESS_MISMATCH,
    ),
    (
        "febf:: ignored",
        replace(V6_ADV, addresses=(V6("febf:ffff::1"), G1, G2)),
        255,
        SOURCE6,
        V6_EXPECT,
        None,
    ),
    # order of the checks: each case breaks two rules and expects the earlier one
    ("ttl before version", replace(V3_ADV, version=2), 1, SOURCE, V3_EXPECT, DropReason.TTL),
    (
        "version before vrid",
        replace(V3_ADV, version=2, vrid=1),
        255,
        SOURCE,
        V3_EXPECT,
        DropReason.VERSION,
    ),
    (
        "vrid before peers",
        replace(V3_ADV, vrid=1),
        255,
        OTHER,
        replace(V3_EXPECT, peers=frozenset({SOURCE})),
        DropReason.OTHER_VRID,
    ),
    (
        "peers before auth",
        replace(V2_ADV, auth_data=b"nope"),
        255,
        OTHER,
        replace(V2_EXPECT, peers=frozenset({SOURCE})),
        DropReason.UNKNOWN_PEER,
    ),
    (
        "auth before interval",
        replace(V2_ADV, auth_data=b"nope", interval_cs=300),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.AUTH,
    ),
    (
        "interval before addresses",
        replace(V2_ADV, interval_cs=300, addresses=(OTHER,)),
        255,
        SOURCE,
        V2_EXPECT,
        DropReason.INTERVAL_MISMATCH,
    ),
]


@pytest.mark.parametrize(
    ("adv", "ttl", "source", "expect", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_check(
    adv: Advertisement, ttl: int, source: IPAddress, expect: Expectation, reason: DropReason | None
) -> None:
    assert check(adv, ttl, source, expect) is reason


@pytest.mark.parametrize("password", [b"123456789", b"pw\x00", b"\x00"])
def test_expectation_refuses_passwords_that_can_never_match(password: bytes) -> None:
    with pytest.raises(ValueError, match="can never match"):
        Expectation(2, 1, 100, frozenset({VIP_A}), auth_type=1, auth_data=password)


def test_expectation_equality_ignores_derived_field() -> None:
    again = Expectation(3, 51, 100, frozenset({VIP_B, VIP_A}))
    assert again == V3_EXPECT
    assert hash(again) == hash(V3_EXPECT)
    assert V6_EXPECT.routable_addresses == frozenset({G1, G2})
    assert replace(V6_EXPECT, addresses=frozenset({G1})).routable_addresses == frozenset({G1})


def test_decoded_advertisement_passes_its_own_expectation() -> None:
    cases: list[tuple[Expectation, Advertisement, IPAddress, IPAddress]] = [
        (V2_EXPECT, V2_ADV, SOURCE, V4("224.0.0.18")),
        (V3_EXPECT, V3_ADV, SOURCE, V4("224.0.0.18")),
        (V6_EXPECT, V6_ADV, SOURCE6, V6("ff02::12")),
    ]
    for expect, adv, source, destination in cases:
        received = decode(encode(adv, source, destination), source, destination)
        assert check(received, 255, source, expect) is None


def test_v2_without_auth_ignores_junk_on_the_wire() -> None:
    expect = replace(V2_EXPECT, auth_type=0, auth_data=b"")
    adv = replace(V2_ADV, auth_type=0, auth_data=b"")
    destination = V4("224.0.0.18")
    received = decode(encode(adv, SOURCE, destination), SOURCE, destination)
    assert check(received, 255, SOURCE, expect) is None
