"""The announcement frames against scapy as an independent encoder, and the send plan."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr
from scapy.layers.l2 import ARP, Ether

from vipkeeper_agent.announce.frames import garp_reply, garp_request, unsolicited_na
from vipkeeper_agent.announce.plan import announce_offsets

MAC = bytes.fromhex("02005e0001fe")
MAC_TEXT = "02:00:5e:00:01:fe"
BROADCAST = "ff:ff:ff:ff:ff:ff"
VIP4 = ipaddress.IPv4Address("192.0.2.10")
VIP6 = ipaddress.IPv6Address("2001:db8::10")


def scapy_garp(op: int) -> bytes:
    return bytes(
        Ether(dst=BROADCAST, src=MAC_TEXT)
        / ARP(op=op, hwsrc=MAC_TEXT, psrc=str(VIP4), hwdst=BROADCAST, pdst=str(VIP4))
    )


def test_garp_request_matches_scapy() -> None:
    frame = garp_request(MAC, VIP4)
    assert frame == scapy_garp(1)
    assert len(frame) == 42
    parsed = Ether(frame)
    assert parsed[ARP].op == 1
    assert parsed[ARP].psrc == parsed[ARP].pdst == str(VIP4)


def test_garp_reply_matches_scapy() -> None:
    frame = garp_reply(MAC, VIP4)
    assert frame == scapy_garp(2)
    assert Ether(frame)[ARP].hwdst == BROADCAST


def test_unsolicited_na_matches_scapy() -> None:
    body = unsolicited_na(MAC, VIP6)
    expected = ICMPv6ND_NA(R=0, S=0, O=1, tgt=str(VIP6), cksum=0) / ICMPv6NDOptDstLLAddr(
        lladdr=MAC_TEXT
    )
    assert body == bytes(expected)
    assert len(body) == 32
    parsed = ICMPv6ND_NA(body)
    assert (parsed.type, parsed.O, parsed.S, parsed.R, parsed.cksum) == (136, 1, 0, 0, 0)
    assert parsed[ICMPv6NDOptDstLLAddr].lladdr == MAC_TEXT


@pytest.mark.parametrize("build", [garp_request, garp_reply])
def test_bad_mac_is_refused(build: object) -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        build(b"\x00" * 5, VIP4)  # type: ignore[operator]
    with pytest.raises(ValueError, match="6 bytes"):
        unsolicited_na(b"\x00" * 8, VIP6)


class TestAnnounceOffsets:
    def test_one_burst(self) -> None:
        assert announce_offsets(3, 0.5, 0) == (0.0, 0.5, 1.0)

    def test_two_bursts(self) -> None:
        assert announce_offsets(2, 0.25, 5.0) == (0.0, 0.25, 5.0, 5.25)

    def test_keepalived_defaults(self) -> None:
        # garp_master_repeat 5, garp_interval 0, garp_master_delay 5
        assert announce_offsets(5, 0.0, 5.0) == (0.0,) * 5 + (5.0,) * 5

    def test_overlapping_bursts_stay_in_order(self) -> None:
        offsets = announce_offsets(3, 1.0, 1.5)
        assert offsets == (0.0, 1.0, 1.5, 2.0, 2.5, 3.5)

    def test_nothing(self) -> None:
        assert announce_offsets(0, 1.0, 5.0) == ()

    @pytest.mark.parametrize(("count", "interval", "delay"), [(-1, 0, 0), (1, -0.1, 0), (1, 0, -1)])
    def test_negative_values_are_refused(self, count: int, interval: float, delay: float) -> None:
        with pytest.raises(ValueError, match="negative"):
            announce_offsets(count, interval, delay)
