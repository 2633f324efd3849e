from __future__ import annotations

import ipaddress

import pytest

from vipkeeper_agent.topology import (
    AF_INET,
    AF_INET6,
    IFF_RUNNING,
    IFF_UP,
    InterfaceInfo,
    LinkStateTracker,
    choose_interface,
    deleted_with,
    kernel_supports_addr_proto,
    link_is_up,
    primary_address,
    vip_label,
)

ip = ipaddress.ip_address
ifc = ipaddress.ip_interface
MAC = bytes.fromhex("020000000001")


def iface(name: str, *addresses: str, index: int = 2, up: bool = True) -> InterfaceInfo:
    return InterfaceInfo(name, index, up, MAC, tuple(ifc(a) for a in addresses))


LO = iface("lo", "127.0.0.1/8", "::1/128", index=1)
ETH0 = iface("eth0", "192.0.2.1/24", "2001:db8::1/64", "fe80::1/64", index=2)
ETH1 = iface("eth1", "198.51.100.1/24", "fe80::2/64", index=3)


class TestChooseInterface:
    def test_subnet_containing_the_vip(self) -> None:
        assert choose_interface(ifc("192.0.2.10/32"), [LO, ETH0, ETH1]) is ETH0
        assert choose_interface(ifc("198.51.100.7/24"), [LO, ETH0, ETH1]) is ETH1
        assert choose_interface(ifc("2001:db8::10/64"), [LO, ETH0, ETH1]) is ETH0

    def test_no_match(self) -> None:
        assert choose_interface(ifc("203.0.113.5/24"), [LO, ETH0, ETH1]) is None
        assert choose_interface(ifc("192.0.2.10/24"), []) is None

    def test_longest_prefix_wins_whatever_the_order(self) -> None:
        wide = iface("wide", "192.0.2.1/16", index=4)
        narrow = iface("narrow", "192.0.2.129/25", index=5)
        vip = ifc("192.0.2.200/32")
        assert choose_interface(vip, [wide, narrow]) is narrow
        assert choose_interface(vip, [narrow, wide]) is narrow
        assert choose_interface(ifc("192.0.2.5/32"), [wide, narrow]) is wide

    def test_host_routes_do_not_count(self) -> None:
        only_host = iface("dummy0", "192.0.2.1/32", "2001:db8::1/128", index=6)
        assert choose_interface(ifc("192.0.2.1/24"), [only_host]) is None
        assert choose_interface(ifc("2001:db8::1/64"), [only_host]) is None

    def test_loopback_is_never_chosen(self) -> None:
        odd_lo = iface("lo", "127.0.0.1/8", "192.0.2.1/24", index=1)
        assert choose_interface(ifc("192.0.2.10/32"), [odd_lo]) is None
        assert choose_interface(ifc("127.0.0.5/32"), [iface("x", "127.0.0.1/8")]) is None

    def test_the_vip_itself_does_not_vote(self) -> None:
        # A VIP still present (e.g. an admin's copy) on the wrong interface.
        stray = iface("eth2", "203.0.113.9/24", index=7)
        assert choose_interface(ifc("203.0.113.9/24"), [stray]) is None

    def test_families_do_not_mix(self) -> None:
        v4_only = iface("eth3", "192.0.2.1/24", index=8)
        assert choose_interface(ifc("2001:db8::5/64"), [v4_only]) is None


class TestPrimaryAddress:
    def test_ipv4_first_address_that_is_not_a_vip(self) -> None:
        eth = iface("eth0", "192.0.2.50/24", "192.0.2.1/24", "fe80::1/64")
        assert primary_address(eth, AF_INET) == ip("192.0.2.50")
        assert primary_address(eth, AF_INET, exclude={ip("192.0.2.50")}) == ip("192.0.2.1")
        assert primary_address(eth, AF_INET, exclude=[ip("192.0.2.50"), ip("192.0.2.1")]) is None

    def test_ipv6_link_local(self) -> None:
        assert primary_address(ETH0, AF_INET6) == ip("fe80::1")
        assert primary_address(iface("x", "2001:db8::1/64"), AF_INET6) is None

    def test_missing_family(self) -> None:
        assert primary_address(iface("x", "fe80::1/64"), AF_INET) is None

    def test_unknown_family(self) -> None:
        with pytest.raises(ValueError, match="family"):
            primary_address(ETH0, 17)


def test_link_is_up_needs_admin_and_operational_state() -> None:
    assert link_is_up(IFF_UP | IFF_RUNNING)
    assert not link_is_up(IFF_UP)
    assert not link_is_up(IFF_RUNNING)
    assert link_is_up(0x11043)  # UP|BROADCAST|RUNNING|MULTICAST|LOWER_UP, a veth as seen live
    assert not link_is_up(0x1003)  # UP|BROADCAST|MULTICAST: NO-CARRIER


def test_vip_label_fits_ifnamsiz() -> None:
    assert vip_label("eth0") == "eth0:vk"
    assert vip_label("enp129s0f1") == "enp129s0f1:vk"
    assert vip_label("enp129s0f1np") == "enp129s0f1np:vk"  # 15 characters, the most
    assert vip_label("enp129s0f1np1") is None


class TestLinkStateTracker:
    def test_reports_changes_only(self) -> None:
        tracker = LinkStateTracker()
        tracker.seed(2, "eth0", IFF_UP | IFF_RUNNING)
        assert tracker.update(2, "eth0", IFF_UP | IFF_RUNNING | 0x100) is None
        assert tracker.update(2, "eth0", IFF_UP) == ("eth0", False)
        assert tracker.update(2, "eth0", 0) is None
        assert tracker.update(2, "eth0", IFF_UP | IFF_RUNNING) == ("eth0", True)

    def test_new_interfaces(self) -> None:
        tracker = LinkStateTracker()
        assert tracker.update(5, "vlan10", IFF_UP) is None
        assert tracker.update(6, "vlan11", IFF_UP | IFF_RUNNING) == ("vlan11", True)

    def test_rename_reports_the_new_name(self) -> None:
        tracker = LinkStateTracker()
        tracker.seed(3, "eth1", IFF_UP | IFF_RUNNING)
        assert tracker.update(3, "lan", IFF_UP | IFF_RUNNING) is None
        assert tracker.update(3, "lan", 0) == ("lan", False)

    def test_deleted_interface_goes_down_once(self) -> None:
        tracker = LinkStateTracker()
        tracker.seed(4, "eth2", IFF_UP | IFF_RUNNING)
        tracker.seed(7, "eth3", 0)
        assert tracker.remove(4) == ("eth2", False)
        assert tracker.remove(4) is None
        assert tracker.remove(7) is None
        assert tracker.remove(99) is None


@pytest.mark.parametrize(
    ("release", "supported"),
    [
        ("6.1.0-18-amd64", True),
        ("5.18.0", True),
        ("6.18.44-fc-v657", True),
        ("5.17.15-300.fc36.x86_64", False),
        ("4.18.0-513.el8.x86_64", False),
        ("5.4.0-150-generic", False),
        ("10.0", True),
        ("garbage", False),
    ],
)
def test_kernel_supports_addr_proto(release: str, supported: bool) -> None:
    assert kernel_supports_addr_proto(release) is supported


def test_deleted_with_a_primary_ipv4_address() -> None:
    vip = ifc("192.0.2.130/25")
    others = [ifc(a) for a in ("192.0.2.1/24", "192.0.2.131/25", "192.0.2.200/25", "192.0.2.5/25")]
    others.append(vip)
    assert deleted_with(vip, True, others) == [ifc("192.0.2.131/25"), ifc("192.0.2.200/25")]
    assert deleted_with(vip, False, others) == []
    v6 = ifc("2001:db8::10/64")
    assert deleted_with(v6, True, [ifc("2001:db8::11/64")]) == []
