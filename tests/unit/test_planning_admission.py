"""Cross-object admission rules (webhook) and the render's view of the same conflicts."""

from __future__ import annotations

import pytest
from test_planning_builders import vip, vs, world

from vipkeeper_operator.planning.admission import (
    address_conflicts,
    check_virtual_ip,
    check_virtual_server,
    virtual_server_conflicts,
)
from vipkeeper_operator.world import VirtualIP, VirtualServer

EXISTING = [
    vip("web", "192.0.2.10/24", "2001:db8::10/64", vrid=5),
    vip("api", "192.0.2.11/24", status_vrid=1),
    vip("old", "192.0.2.12/24", status_vrid=2, deleting=True),
    vip("lan", "198.51.100.1/24", interface="eth1", vrid=9),
]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (vip("new", "192.0.2.20/24"), []),
        (vip("new", "192.0.2.20/24", vrid=6), []),
        (vip("web", "192.0.2.10/24", vrid=5), []),  # an update of itself
        (vip("new", "192.0.2.20/24", vrid=9), []),  # 9 is on eth1 only
        (vip("new", "192.0.2.20/24", vrid=5, interface="eth2"), []),
        (
            vip("new", "192.0.2.10/32"),
            ["spec.addresses[0]: 192.0.2.10 is already an address of VirtualIP default/web; "],
        ),
        (vip("new", "192.0.2.12/24"), ["(being deleted: retry once it is gone)"]),
        (
            vip("new", "192.0.2.20/24", vrid=5),
            [
                "spec.vrid: 5 is already used on the auto-detected interface (IPv4) by VirtualIP "
                "default/web",
                "choose a free one such as 3, or remove vrid",
            ],
        ),
        (vip("new", "2001:db8::20/64", vrid=5), ["by VirtualIP default/web"]),
        (vip("new", "192.0.2.20/24", vrid=1), ["by VirtualIP default/api"]),  # allocated, recorded
        (vip("new", "192.0.2.20/24", vrid=2), ["by VirtualIP default/old"]),  # still resigning
        (vip("new", "198.51.100.2/24", interface="eth1", vrid=9), ["interface eth1 (IPv4)"]),
        (vip("new", "192.0.2.11/24", vrid=5), ["default/api", "default/web"]),
    ],
)
def test_check_virtual_ip(candidate: VirtualIP, expected: list[str]) -> None:
    messages = check_virtual_ip(world(vips=EXISTING), candidate)
    text = " | ".join(messages)
    assert all(part in text for part in expected), text
    assert bool(messages) == bool(expected)


def test_vrid_message_without_a_free_one() -> None:
    w = world(vips=[vip("a", "192.0.2.1/24", vrid=1)], vrid_range=(1, 1))
    (message,) = check_virtual_ip(w, vip("b", "192.0.2.2/24", vrid=1))
    assert message.endswith("fight: remove vrid to have one allocated")


SERVERS = [vs("web-http", "web"), vs("web-dns", "web", port=53, protocol="UDP")]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (vs("web-https", "web", port=443), []),
        (vs("web-http", "web", scheduler="rr"), []),  # an update of itself
        (vs("web-dns-tcp", "web", port=53), []),
        (vs("x", "gone"), ["spec.virtualIPRef.name: VirtualIP default/gone does not exist"]),
        (vs("x", "old"), ["VirtualIP default/old is being deleted"]),
        (
            vs("x", "web", port=8080, address="192.0.2.99"),
            ["spec.address: 192.0.2.99 is not an address of VirtualIP default/web"],
        ),
        (
            vs("x", "web"),
            [
                "spec.port: TCP port 80 on VirtualIP default/web is already served by VirtualServer default/web-http"
            ],
        ),
        (vs("x", "web", address="2001:db8::10"), ["VirtualServer default/web-http"]),
        (vs("x", "api"), []),
    ],
)
def test_check_virtual_server(candidate: VirtualServer, expected: list[str]) -> None:
    messages = check_virtual_server(world(vips=EXISTING, servers=SERVERS), candidate)
    text = " | ".join(messages)
    assert all(part in text for part in expected), text
    assert bool(messages) == bool(expected)


def test_address_conflicts_keep_the_running_one() -> None:
    vips = [
        vip("a", "192.0.2.10/24"),
        vip("b", "192.0.2.10/24", status_vrid=4),
        vip("c", "192.0.2.10/24", "192.0.2.11/24"),
        vip("d", "192.0.2.11/24", deleting=True),
    ]
    got = address_conflicts({v.key: v for v in vips})
    assert sorted(got) == ["default/a", "default/c"]
    assert "also in VirtualIP default/b, which keeps it" in got["default/a"].message
    assert got["default/a"].reason == "AddressConflict"


def test_virtual_server_conflicts_keep_the_first_by_key() -> None:
    servers = [vs("b", "web"), vs("a", "web"), vs("c", "web", port=81), vs("d", "other")]
    got = virtual_server_conflicts({s.key: s for s in servers})
    assert list(got) == ["default/b"]
    assert "already served by VirtualServer default/a" in got["default/b"].message
