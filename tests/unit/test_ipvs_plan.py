"""The IPVS planner: desired() from specs + health + placement (keepalived's rules), diff()
between two tables (table-driven, plus a property test of minimality and idempotence), the
status rendering, and the kernel adapter's pure codec (checked against pyroute2's decoder)."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2.netlink.generic import ipvs as pyroute2_ipvs

from vipkeeper_agent.checks.hysteresis import initial, observe
from vipkeeper_agent.ipvs import kernel
from vipkeeper_agent.ipvs.plan import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
    SimulationError,
    assess,
    desired,
    diff,
    owned_keys,
    quorum_up,
    real_server_check_name,
    service_of,
    simulate,
)
from vipkeeper_agent.ipvs.status import ipvs_status, render_text, table_json
from vipkeeper_agent.ipvs.table import (
    FLAG_HASHED,
    FLAG_PERSISTENT,
    FLAG_SCHED1,
    FLAG_SCHED2,
    Counters,
    Destination,
    DestinationStats,
    ForwardingMethod,
    Service,
    ServiceKey,
    ServiceStats,
    VirtualService,
    make_table,
)
from vipkeeper_api import VirtualServer
from vipkeeper_api.ipvs import Protocol, Quorum

NAT, DR, TUN = ForwardingMethod.NAT, ForwardingMethod.DR, ForwardingMethod.TUNNEL
TCP, UDP = Protocol.TCP, Protocol.UDP


def vs(**fields: Any) -> VirtualServer:
    base: dict[str, Any] = {"name": "web", "address": "192.0.2.10", "port": 80, "placement": "all"}
    return VirtualServer.model_validate({**base, **fields})


def key(address: str = "192.0.2.10", port: int = 80, protocol: Protocol = TCP) -> ServiceKey:
    return ServiceKey.of(protocol, address, port)


def svc(k: ServiceKey | None = None, scheduler: str = "wlc", **fields: Any) -> Service:
    k = k or key()
    fields.setdefault("netmask", 32 if k.family == 4 else 128)
    return Service(k, scheduler, **fields)


def dest(address: str, port: int = 80, weight: int = 1, fwd: ForwardingMethod = NAT) -> Destination:
    return Destination(ipaddress.ip_address(address), port, weight, fwd)


def shape(ops: list[Op]) -> list[tuple[str, str, str]]:
    """(op, service, destination) of each op, for readable expectations."""
    out = []
    for op in ops:
        target = ""
        if isinstance(op, AddDest | EditDest | DeleteDest):
            target = str(op.destination)
            if isinstance(op, EditDest | AddDest):
                target += f" w{op.destination.weight} {op.destination.forwarding.value}"
        out.append((type(op).__name__, str(op.key), target))
    return out


# --- desired() --------------------------------------------------------------------------------

RS3 = [
    {"address": "10.0.0.1", "weight": 3},
    {"address": "10.0.0.2", "weight": 2},
    {"address": "10.0.0.3", "port": 8080},
]
CHECKED = {"check": {"kind": "tcp"}, "realServers": RS3}


def dests_of(
    table: dict[ServiceKey, VirtualService], k: ServiceKey | None = None
) -> dict[str, int]:
    entry = table[k or key()]
    return {str(d): d.weight for d in entry.destinations.values()}


def test_check_names_match_the_schema() -> None:
    spec = vs(**CHECKED)
    named = [check.name for _, check in spec.real_server_checks()]
    assert named == [real_server_check_name(spec, rs) for rs in spec.real_servers]
    assert named == ["web/10.0.0.1:80", "web/10.0.0.2:80", "web/10.0.0.3:8080"]
    v6 = vs(address="2001:db8::1", realServers=[{"address": "2001:db8::2"}], check={"kind": "tcp"})
    assert real_server_check_name(v6, v6.real_servers[0]) == "web/[2001:db8::2]:80"


def test_all_healthy_by_default() -> None:
    table = desired([vs(**CHECKED)], {}, {"web"})
    assert dests_of(table) == {"10.0.0.1:80": 3, "10.0.0.2:80": 2, "10.0.0.3:8080": 1}
    assert table[key()].service == Service(key(), "wlc", 0, 0, 32)


def test_failed_real_server_is_removed() -> None:
    table = desired([vs(**CHECKED)], {"web/10.0.0.2:80": False}, {"web"})
    assert dests_of(table) == {"10.0.0.1:80": 3, "10.0.0.3:8080": 1}


def test_failed_real_server_is_inhibited_to_weight_zero() -> None:
    spec = vs(**CHECKED, inhibitOnFailure=True)
    table = desired([spec], {"web/10.0.0.2:80": False}, {"web"})
    assert dests_of(table) == {"10.0.0.1:80": 3, "10.0.0.2:80": 0, "10.0.0.3:8080": 1}


def test_health_is_ignored_without_a_check() -> None:
    table = desired([vs(realServers=RS3)], {"web/10.0.0.2:80": False}, {"web"})
    assert "10.0.0.2:80" in dests_of(table)


def test_sorry_server_replaces_real_servers_when_all_fail() -> None:
    spec = vs(**CHECKED, sorryServer={"address": "10.0.9.9"})
    all_down = {f"web/10.0.0.{i}:{80 if i < 3 else 8080}": False for i in (1, 2, 3)}
    assert dests_of(desired([spec], all_down, {"web"})) == {"10.0.9.9:80": 1}
    one_up = {**all_down, "web/10.0.0.3:8080": True}
    assert dests_of(desired([spec], one_up, {"web"})) == {"10.0.0.3:8080": 1}


def test_sorry_server_port_and_forwarding() -> None:
    spec = vs(
        realServers=[{"address": "10.0.0.1"}],
        check={"kind": "tcp"},
        forwarding="dr",
        sorryServer={"address": "10.0.9.9", "port": 8000},
    )
    entry = desired([spec], {"web/10.0.0.1:80": False}, {"web"})[key()]
    assert list(entry.destinations.values()) == [dest("10.0.9.9", 8000, 1, DR)]


def test_sorry_server_with_inhibited_real_servers_keeps_them_at_zero() -> None:
    spec = vs(**CHECKED, inhibitOnFailure=True, sorryServer={"address": "10.0.9.9"})
    all_down = {"web/10.0.0.1:80": False, "web/10.0.0.2:80": False, "web/10.0.0.3:8080": False}
    assert dests_of(desired([spec], all_down, {"web"})) == {
        "10.0.0.1:80": 0,
        "10.0.0.2:80": 0,
        "10.0.0.3:8080": 0,
        "10.0.9.9:80": 1,
    }


def test_quorum_down_without_sorry_server_keeps_the_healthy_ones() -> None:
    """keepalived (ipwrapper.c update_quorum_state) only swaps in a sorry server; without one,
    losing the quorum changes nothing in the table."""
    spec = vs(**CHECKED, quorum={"min": 5})
    health = {"web/10.0.0.1:80": False}
    assert not assess([spec], health)["web"].quorum_up
    assert dests_of(desired([spec], health, {"web"})) == {"10.0.0.2:80": 2, "10.0.0.3:8080": 1}


def test_quorum_down_with_sorry_server() -> None:
    spec = vs(**CHECKED, quorum={"min": 5}, sorryServer={"address": "10.0.9.9"})
    health = {"web/10.0.0.1:80": False}
    result = assess([spec], health)["web"]
    assert (result.healthy, result.total, result.healthy_weight) == (2, 3, 3)
    assert result.sorry_server_active and not result.quorum_up
    assert dests_of(desired([spec], health, {"web"})) == {"10.0.9.9:80": 1}


def test_healthy_real_servers_of_weight_zero_do_not_make_a_quorum() -> None:
    spec = vs(
        realServers=[{"address": "10.0.0.1", "weight": 0}], sorryServer={"address": "10.9.9.9"}
    )
    assert dests_of(desired([spec], {}, {"web"})) == {"10.9.9.9:80": 1}


QUORUM_CASES = [
    # previous, healthy weight, min, hysteresis, up
    (None, 0, 1, 0, False),
    (None, 1, 1, 0, True),
    (None, 4, 4, 1, False),  # the start needs min + hysteresis, like keepalived's
    (None, 5, 4, 1, True),
    (True, 3, 4, 1, True),  # up stays up down to min - hysteresis
    (True, 2, 4, 1, False),
    (False, 4, 4, 1, False),  # down stays down up to min + hysteresis
    (False, 5, 4, 1, True),
    (True, 0, 1, 1, False),  # weight 0 is down even when min - hysteresis <= 0
    (True, 1, 1, 1, True),
    (False, 1, 1, 1, False),
    (False, 2, 1, 1, True),
]


@pytest.mark.parametrize(("previous", "weight", "minimum", "hysteresis", "up"), QUORUM_CASES)
def test_quorum_hysteresis(
    previous: bool | None, weight: int, minimum: int, hysteresis: int, up: bool
) -> None:
    assert quorum_up(previous, weight, Quorum(min=minimum, hysteresis=hysteresis)) is up


def test_no_quorum_block_means_up_while_any_weight_is_healthy() -> None:
    assert quorum_up(None, 1, None) and quorum_up(True, 1, None)
    assert not quorum_up(True, 0, None) and not quorum_up(False, 0, None)


def test_assess_carries_the_hysteresis_across_evaluations() -> None:
    spec = vs(
        realServers=[{"address": f"10.0.0.{i}"} for i in range(1, 7)],
        check={"kind": "tcp"},
        quorum={"min": 4, "hysteresis": 1},
        sorryServer={"address": "10.0.9.9"},
    )
    ups = []
    previous: dict[str, bool] = {}
    for healthy in (6, 5, 4, 3, 2, 3, 4, 5, 4):
        health = {f"web/10.0.0.{i}:80": i <= healthy for i in range(1, 7)}
        previous = {n: a.quorum_up for n, a in assess([spec], health, previous).items()}
        ups.append(previous["web"])
        table = desired([spec], health, {"web"}, previous)
        assert ("10.0.9.9:80" in dests_of(table)) is not previous["web"]
    assert ups == [True, True, True, True, False, False, False, True, True]


def test_inactive_services_are_absent() -> None:
    a, b = vs(name="a"), vs(name="b", port=443)
    assert set(desired([a, b], {}, {"b"})) == {key(port=443)}
    assert desired([a, b], {}, set()) == {}


def test_a_service_that_goes_inactive_is_removed() -> None:
    """The VIP moved away (placement: holder): the service is still owned, so it goes."""
    a, b = vs(name="a"), vs(name="b", port=443)
    both = simulate({}, diff({}, desired([a, b], {}, {"a", "b"}), set()))
    ops = diff(both, desired([a, b], {}, {"b"}), owned_keys([a, b]))
    assert shape(ops) == [("DeleteService", "TCP 192.0.2.10:80", "")]


def test_fwmark_service() -> None:
    spec = vs(
        address=None,
        port=None,
        fwmark=7,
        fwmarkFamily=6,
        scheduler="mh",
        schedulerFlags=["mh-port"],
        forwarding="tunnel",
        persistence={"timeout": 60, "prefixLength": 64},
        realServers=[{"address": "2001:db8::5"}, {"address": "2001:db8::6", "port": 443}],
    )
    table = desired([spec], {}, {"web"})
    k = ServiceKey.firewall_mark(6, 7)
    assert table[k].service == Service(k, "mh", FLAG_PERSISTENT | FLAG_SCHED2, 60, 64)
    assert sorted(str(d) for d in table[k].destinations.values()) == [
        "[2001:db8::5]:0",
        "[2001:db8::6]:443",
    ]
    assert {d.forwarding for d in table[k].destinations.values()} == {TUN}


def test_ipv6_service_and_persistence_netmask() -> None:
    plain = service_of(vs(address="2001:db8::10", port=443))
    assert (plain.key.family, plain.netmask, plain.timeout, plain.flags) == (6, 128, 0, 0)
    sticky = service_of(vs(address="2001:db8::10", port=443, persistence={"timeout": 900}))
    assert (sticky.netmask, sticky.timeout, sticky.flags) == (128, 900, FLAG_PERSISTENT)
    v4 = service_of(
        vs(
            persistence={"prefixLength": 24},
            scheduler="sh",
            schedulerFlags=["sh-fallback", "sh-port"],
        )
    )
    assert (v4.netmask, v4.timeout, v4.flags) == (
        24,
        300,
        FLAG_PERSISTENT | FLAG_SCHED1 | FLAG_SCHED2,
    )
    assert v4.scheduler_flag_names() == ["sh-fallback", "sh-port"]


def test_real_server_options_reach_the_destination() -> None:
    spec = vs(
        forwarding="dr",
        realServers=[
            {"address": "10.0.0.1", "weight": 7, "upperThreshold": 100, "lowerThreshold": 10}
        ],
    )
    (d,) = desired([spec], {}, {"web"})[key()].destinations.values()
    assert d == Destination(ipaddress.ip_address("10.0.0.1"), 80, 7, DR, 100, 10)


# --- diff() --------------------------------------------------------------------------------

A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
S80, S81 = key(port=80), key(port=81)
FOREIGN = key("198.51.100.1", 443)

DIFF_CASES: list[tuple[str, Any, Any, set[ServiceKey], list[tuple[str, str, str]]]] = [
    ("nothing", {}, {}, set(), []),
    (
        "add service",
        {},
        make_table((svc(S80), [dest(A), dest(B)])),
        set(),
        [
            ("AddService", "TCP 192.0.2.10:80", ""),
            ("AddDest", "TCP 192.0.2.10:80", "10.0.0.1:80 w1 nat"),
            ("AddDest", "TCP 192.0.2.10:80", "10.0.0.2:80 w1 nat"),
        ],
    ),
    (
        "remove owned service",
        make_table((svc(S80), [dest(A), dest(B)])),
        {},
        {S80},
        [("DeleteService", "TCP 192.0.2.10:80", "")],
    ),
    (
        "foreign service untouched",
        make_table((svc(FOREIGN, "rr"), [dest(C, 443)])),
        {},
        {S80},
        [],
    ),
    (
        "add, remove and re-weigh destinations",
        make_table((svc(S80), [dest(A), dest(B)])),
        make_table((svc(S80), [dest(A, weight=5), dest(C)])),
        {S80},
        [
            ("AddDest", "TCP 192.0.2.10:80", "10.0.0.3:80 w1 nat"),
            ("EditDest", "TCP 192.0.2.10:80", "10.0.0.1:80 w5 nat"),
            ("DeleteDest", "TCP 192.0.2.10:80", "10.0.0.2:80"),
        ],
    ),
    (
        "change scheduler",
        make_table((svc(S80, "wlc"), [dest(A)])),
        make_table((svc(S80, "rr"), [dest(A)])),
        {S80},
        [("EditService", "TCP 192.0.2.10:80", "")],
    ),
    (
        "change persistence",
        make_table((svc(S80), [dest(A)])),
        make_table((svc(S80, flags=FLAG_PERSISTENT, timeout=300, netmask=24), [dest(A)])),
        {S80},
        [("EditService", "TCP 192.0.2.10:80", "")],
    ),
    (
        "change forwarding in place",
        make_table((svc(S80), [dest(A)])),
        make_table((svc(S80), [dest(A, fwd=DR)])),
        {S80},
        [("EditDest", "TCP 192.0.2.10:80", "10.0.0.1:80 w1 dr")],
    ),
    (
        "change of identity is delete + add",
        make_table((svc(S80), [dest(A)])),
        make_table((svc(S81), [dest(A)])),
        {S80},
        [
            ("DeleteService", "TCP 192.0.2.10:80", ""),
            ("AddService", "TCP 192.0.2.10:81", ""),
            ("AddDest", "TCP 192.0.2.10:81", "10.0.0.1:80 w1 nat"),
        ],
    ),
    (
        "protocol change is a new identity",
        make_table((svc(S80), [dest(A)])),
        make_table((svc(key(protocol=UDP)), [dest(A)])),
        {S80},
        [
            ("DeleteService", "TCP 192.0.2.10:80", ""),
            ("AddService", "UDP 192.0.2.10:80", ""),
            ("AddDest", "UDP 192.0.2.10:80", "10.0.0.1:80 w1 nat"),
        ],
    ),
    (
        "owned but no longer desired, foreign beside it",
        make_table((svc(S80), [dest(A)]), (svc(FOREIGN), [dest(B)]), (svc(S81), [dest(C)])),
        make_table((svc(S81), [dest(C)])),
        {S80, S81},
        [("DeleteService", "TCP 192.0.2.10:80", "")],
    ),
    (
        "a desired service found in the kernel is adopted, not re-created",
        make_table((svc(S80), [dest(A), dest(C)])),
        make_table((svc(S80), [dest(A)])),
        set(),
        [("DeleteDest", "TCP 192.0.2.10:80", "10.0.0.3:80")],
    ),
    (
        "switch to the sorry server adds before it deletes",
        make_table((svc(S80), [dest(A), dest(B)])),
        make_table((svc(S80), [dest("10.9.9.9")])),
        {S80},
        [
            ("AddDest", "TCP 192.0.2.10:80", "10.9.9.9:80 w1 nat"),
            ("DeleteDest", "TCP 192.0.2.10:80", "10.0.0.1:80"),
            ("DeleteDest", "TCP 192.0.2.10:80", "10.0.0.2:80"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("current", "want", "owned", "expected"),
    [pytest.param(c, d, o, e, id=name) for name, c, d, o, e in DIFF_CASES],
)
def test_diff(current: Any, want: Any, owned: set[ServiceKey], expected: Any) -> None:
    ops = diff(current, want, owned)
    assert shape(ops) == expected
    after = simulate(current, ops)
    assert diff(after, want, owned | set(want)) == []


def test_diff_orders_phases() -> None:
    k6 = key("2001:db8::1", 443)
    current = make_table(
        (svc(S80), [dest(A), dest(B)]),
        (svc(S81, "rr"), [dest(A)]),
        (svc(key(port=82)), [dest(A)]),
    )
    want = make_table(
        (svc(S80), [dest(A, weight=2), dest(C)]),
        (svc(S81, "wrr"), [dest(A)]),
        (svc(k6), [dest("2001:db8::2", 443)]),
    )
    kinds = [type(op).__name__ for op in diff(current, want, {key(port=82)})]
    assert kinds == [
        "DeleteService",
        "AddService",
        "EditService",
        "AddDest",  # 10.0.0.3 to :80
        "AddDest",  # to the IPv6 service
        "EditDest",
        "DeleteDest",
    ]


def test_unchanged_restart_makes_zero_changes() -> None:
    specs = [
        vs(**CHECKED, sorryServer={"address": "10.0.9.9"}),
        vs(name="dns", port=53, protocol="UDP"),
    ]
    want = desired(specs, {"web/10.0.0.2:80": False}, {"web", "dns"})
    kernel_table = simulate({}, diff({}, want, set()))
    assert kernel_table == want
    assert diff(kernel_table, want, set()) == []
    assert diff(kernel_table, want, set(want)) == []


def test_simulate_refuses_what_the_kernel_refuses() -> None:
    table = make_table((svc(S80), [dest(A)]))
    with pytest.raises(SimulationError):
        simulate(table, [AddService(svc(S80))])
    with pytest.raises(SimulationError):
        simulate(table, [AddDest(S80, dest(A))])
    with pytest.raises(SimulationError):
        simulate(table, [DeleteDest(S80, dest(B))])
    with pytest.raises(SimulationError):
        simulate(table, [DeleteService(svc(S81))])
    with pytest.raises(SimulationError):
        simulate(table, [EditDest(S81, dest(A), dest(A))])


def test_ops_describe_themselves() -> None:
    ops = diff(
        make_table((svc(S80), [dest(A), dest(B)])),
        make_table(
            (
                svc(S80, "rr", flags=FLAG_PERSISTENT, timeout=60, netmask=24),
                [dest(A, weight=0), dest(C)],
            )
        ),
        {S80},
    )
    text = [op.describe() for op in ops]
    assert text == [
        "change service TCP 192.0.2.10:80: wlc -> rr persistent 60 netmask /24",
        "add 10.0.0.3:80 to TCP 192.0.2.10:80 nat weight 1",
        "change 10.0.0.1:80 in TCP 192.0.2.10:80: nat weight 1 -> nat weight 0",
        "delete 10.0.0.2:80 from TCP 192.0.2.10:80",
    ]


# Property: for any kernel table, desired table and owned set, diff() is exactly enough.

ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"])
SERVICE_KEYS = st.one_of(
    st.builds(
        ServiceKey.of,
        st.sampled_from([TCP, UDP]),
        st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::a"]),
        st.sampled_from([80, 443]),
    ),
    st.builds(ServiceKey.firewall_mark, st.sampled_from([4, 6]), st.sampled_from([1, 2])),
)


@st.composite
def tables(draw: st.DrawFn) -> dict[ServiceKey, VirtualService]:
    out = {}
    for k in draw(st.lists(SERVICE_KEYS, max_size=4, unique=True)):
        service = Service(
            k,
            draw(st.sampled_from(["rr", "wlc"])),
            draw(st.sampled_from([0, FLAG_PERSISTENT])),
            draw(st.sampled_from([0, 300])),
            32 if k.family == 4 else 128,
        )
        dests = {}
        for address in draw(st.lists(ADDRESSES, max_size=3, unique=True)):
            addr = ipaddress.ip_address(address)
            if addr.version != k.family:
                continue
            d = Destination(
                addr,
                draw(st.sampled_from([0, 80])),
                draw(st.integers(0, 3)),
                draw(st.sampled_from([NAT, DR])),
                draw(st.sampled_from([0, 10])),
            )
            dests[d.key] = d
        out[k] = VirtualService(service, dests)
    return out


@settings(max_examples=300, deadline=None)
@given(tables(), tables(), st.lists(SERVICE_KEYS, max_size=4))
def test_diff_is_complete_minimal_and_leaves_foreign_services_alone(
    current: dict[ServiceKey, VirtualService],
    want: dict[ServiceKey, VirtualService],
    owned_list: list[ServiceKey],
) -> None:
    owned = set(owned_list)
    ops = diff(current, want, owned)
    after = simulate(current, ops)  # no op the kernel would refuse
    for k, entry in after.items():
        if k in want:
            assert entry == want[k]
        else:
            assert k not in owned and entry == current[k]
    assert all(k in after for k in want)
    assert diff(after, want, owned) == []
    touched = {op.key for op in ops}
    assert touched <= set(want) | owned
    # Minimal: no op on an entry that already matches.
    assert not any(k in current and current[k] == want.get(k) for k in touched)


# --- status ----------------------------------------------------------------------------------


def test_render_text_is_ipvsadm_like() -> None:
    table = make_table(
        (svc(S80, "wrr"), [dest(B, 8080, 2), dest(A, 8080, 3)]),
        (
            svc(
                key("2001:db8::1", 53, UDP),
                "sh",
                flags=FLAG_PERSISTENT | FLAG_SCHED2,
                timeout=600,
                netmask=64,
            ),
            [dest("2001:db8::5", 53, 1, DR)],
        ),
        (
            svc(
                ServiceKey.firewall_mark(4, 5), "rr", flags=FLAG_PERSISTENT, timeout=60, netmask=24
            ),
            [dest("10.1.0.1", 0, 1, TUN)],
        ),
    )
    stats = {
        S80: ServiceStats(
            Counters(conns=5),
            {
                (ipaddress.ip_address(A), 8080): DestinationStats(
                    Counters(), active_conns=4, inactive_conns=1
                )
            },
        )
    }
    assert render_text(table, stats) == (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  192.0.2.10:80 wrr\n"
        "  -> 10.0.0.1:8080                Masq    3      4          1\n"
        "  -> 10.0.0.2:8080                Masq    2      0          0\n"
        "FWM  5 rr persistent 60 mask 255.255.255.0\n"
        "  -> 10.1.0.1:0                   Tunnel  1      0          0\n"
        "UDP  [2001:db8::1]:53 sh (sh-port) persistent 600 mask 64\n"
        "  -> [2001:db8::5]:53             Route   1      0          0\n"
    )


def test_status_document() -> None:
    spec = vs(**CHECKED, sorryServer={"address": "10.0.9.9"})
    health = {"web/10.0.0.2:80": False}
    assessments = assess([spec], health)
    table = desired([spec], health, {"web"})
    failed = observe(initial(False, 10.0), False, "connection refused", 0.01, 1, 1, 12.0)
    doc = ipvs_status(
        [spec],
        table,
        checks={"web/10.0.0.2:80": failed},
        assessments=assessments,
        active={"web"},
        wall_offset=1000.0,
        problems=["p"],
    )
    json.dumps(doc)
    (web,) = doc["virtualServers"]
    assert web["service"] == "TCP 192.0.2.10:80" and web["active"] and web["inKernel"]
    assert web["quorum"] == {"up": True, "healthyWeight": 4, "min": 1, "hysteresis": 0}
    assert web["sorryServer"] == {"address": "10.0.9.9", "port": 80, "inKernel": False}
    rs = {r["address"]: r for r in web["realServers"]}
    assert rs["10.0.0.2"]["healthy"] is False and rs["10.0.0.2"]["kernelWeight"] is None
    assert rs["10.0.0.2"]["since"] == 1012.0 and rs["10.0.0.2"]["detail"] == "connection refused"
    assert rs["10.0.0.1"] | {"stats": None} == {
        "address": "10.0.0.1",
        "port": 80,
        "healthy": True,
        "pending": False,
        "since": None,
        "detail": None,
        "weight": 3,
        "kernelWeight": 3,
        "stats": None,
    }
    assert doc["table"] == table_json(table) and doc["problems"] == ["p"]
    assert doc["table"][0]["destinations"][0]["forwarding"] == "nat"


# --- the kernel adapter's codec (no kernel needed) ----------------------------------------------

FAMILY_ID = 0x2A


def pyroute2_decode(data: bytes) -> Any:
    msg = pyroute2_ipvs.ipvsmsg(data)
    msg.decode()
    return msg


SERVICES = [
    svc(S80, "wrr"),
    svc(
        key("2001:db8::1", 443), "sh", flags=FLAG_PERSISTENT | FLAG_SCHED1, timeout=300, netmask=64
    ),
    svc(ServiceKey.firewall_mark(4, 7), "rr", flags=FLAG_PERSISTENT, timeout=60, netmask=24),
    svc(key("192.0.2.1", 9, Protocol.SCTP), "lc"),
]


@pytest.mark.parametrize("service", SERVICES, ids=str)
def test_service_ops_encode_as_pyroute2_decodes_them(service: Service) -> None:
    for op, cmd in ((AddService(service), 1), (EditService(service, service), 2)):
        msg = pyroute2_decode(kernel.encode_op(op, FAMILY_ID, 77))
        assert (msg["header"]["type"], msg["header"]["sequence_number"], msg["cmd"]) == (
            FAMILY_ID,
            77,
            cmd,
        )
        attrs = kernel.attr_map(msg.get("IPVS_CMD_ATTR_SERVICE"))
        assert attrs["IPVS_SVC_ATTR_FLAGS"] == {"flags": service.flags, "mask": 0xFFFFFFFF}
        assert attrs["IPVS_SVC_ATTR_SCHED_NAME"] == service.scheduler
        # What we send is what read() makes of the kernel's answer.
        assert kernel.service_from_attrs(attrs) == service
    msg = pyroute2_decode(kernel.encode_op(DeleteService(service), FAMILY_ID, 1))
    attrs = kernel.attr_map(msg.get("IPVS_CMD_ATTR_SERVICE"))
    assert msg["cmd"] == 3 and "IPVS_SVC_ATTR_SCHED_NAME" not in attrs
    assert kernel.service_from_attrs(attrs) == Service(
        service.key, "", 0, 0, 32 if service.key.family == 4 else 128
    )


def test_dest_ops_encode_as_pyroute2_decodes_them() -> None:
    d = Destination(ipaddress.ip_address("2001:db8::5"), 8443, 3, TUN, 100, 10)
    k = key("2001:db8::1", 8443)
    for op, cmd in ((AddDest(k, d), 5), (EditDest(k, d, d), 6)):
        msg = pyroute2_decode(kernel.encode_op(op, FAMILY_ID, 5))
        assert msg["cmd"] == cmd
        service = kernel.attr_map(msg.get("IPVS_CMD_ATTR_SERVICE"))
        assert (service["IPVS_SVC_ATTR_ADDR"], service["IPVS_SVC_ATTR_PORT"]) == (
            "2001:db8::1",
            8443,
        )
        assert kernel.destination_from_attrs(kernel.attr_map(msg.get("IPVS_CMD_ATTR_DEST"))) == d
    msg = pyroute2_decode(kernel.encode_op(DeleteDest(k, d), FAMILY_ID, 5))
    attrs = kernel.attr_map(msg.get("IPVS_CMD_ATTR_DEST"))
    assert msg["cmd"] == 7 and "IPVS_DEST_ATTR_WEIGHT" not in attrs
    assert attrs["IPVS_DEST_ATTR_ADDR"] == "2001:db8::5" and attrs["IPVS_DEST_ATTR_PORT"] == 8443


def stats_nla(base: int) -> dict[str, Any]:
    return {"attrs": [(f"IPVS_STATS_ATTR_{n}", base + i) for i, n in enumerate(kernel.STATS_NAMES)]}


def kernel_like_service(attrs: list[tuple[str, Any]]) -> bytes:
    """A dump reply as the kernel sends it, encoded by pyroute2."""
    msg = pyroute2_ipvs.ipvsmsg()
    msg["cmd"], msg["version"] = 1, 1
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", {"attrs": attrs})]
    msg.encode()
    return bytes(msg.data)


def nested(data: bytes, attr: int) -> bytes:
    body = data[kernel.NLMSG_HEADER.size + kernel.GENL_HEADER.size :]
    return kernel.attr_payloads(body)[attr]


def test_dump_replies_decode_like_pyroute2_does() -> None:
    v6 = kernel_like_service(
        [
            ("IPVS_SVC_ATTR_AF", socket.AF_INET6),
            ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_UDP),
            ("IPVS_SVC_ATTR_ADDR", "2001:db8::1"),
            ("IPVS_SVC_ATTR_PORT", 53),
            ("IPVS_SVC_ATTR_SCHED_NAME", "mh"),
            (
                "IPVS_SVC_ATTR_FLAGS",
                {"flags": FLAG_HASHED | FLAG_PERSISTENT | FLAG_SCHED2, "mask": 0xFFFFFFFF},
            ),
            ("IPVS_SVC_ATTR_TIMEOUT", 120),
            ("IPVS_SVC_ATTR_NETMASK", socket.inet_ntoa(struct.pack("=I", 56))),
            ("IPVS_SVC_ATTR_STATS", stats_nla(1)),
            ("IPVS_SVC_ATTR_STATS64", stats_nla(100)),
        ]
    )
    mine = kernel.decode_service(nested(v6, 1))
    theirs = kernel.attr_map(pyroute2_decode(v6).get("IPVS_CMD_ATTR_SERVICE"))
    assert (
        kernel.service_from_attrs(mine)
        == kernel.service_from_attrs(theirs)
        == Service(key("2001:db8::1", 53, UDP), "mh", FLAG_PERSISTENT | FLAG_SCHED2, 120, 56)
    )
    assert kernel.counters_from_attrs(mine, "IPVS_SVC_ATTR") == kernel.counters_from_attrs(
        theirs, "IPVS_SVC_ATTR"
    )
    assert kernel.counters_from_attrs(mine, "IPVS_SVC_ATTR").conns == 100  # STATS64 preferred
    assert "IPVS_SVC_ATTR_STATS" not in kernel.decode_service(nested(v6, 1), stats=False)


def test_kernel_sends_sixteen_byte_ipv4_addresses() -> None:
    """The kernel puts a whole union nf_inet_addr in IPVS_*_ATTR_ADDR; pyroute2 sends 4 bytes."""
    service = (
        kernel._nla(1, struct.pack("=H", socket.AF_INET))
        + kernel._nla(2, struct.pack("=H", 6))
        + kernel._nla(3, socket.inet_aton("192.0.2.7") + b"\0" * 12)
        + kernel._nla(4, struct.pack(">H", 8080))
        + kernel._nla(6, b"rr\0")
        + kernel._nla(7, struct.pack("=II", FLAG_HASHED, 0xFFFFFFFF))
        + kernel._nla(8, struct.pack("=I", 0))
        + kernel._nla(9, socket.inet_aton("255.255.255.255"))
    )
    dest_payload = (
        kernel._nla(1, socket.inet_aton("10.0.0.7") + b"\0" * 12)
        + kernel._nla(2, struct.pack(">H", 8080))
        + kernel._nla(3, struct.pack("=I", 3))
        + kernel._nla(4, struct.pack("=I", 9))
        + kernel._nla(7, struct.pack("=I", 12))
    )
    table, stats = kernel.table_from_attrs(
        [(kernel.decode_service(service), [kernel.decode_dest(dest_payload, socket.AF_INET)])]
    )
    k = key("192.0.2.7", 8080)
    assert table == make_table((Service(k, "rr"), [dest("10.0.0.7", 8080, 9, DR)]))
    assert stats[k].destinations[(ipaddress.ip_address("10.0.0.7"), 8080)].active_conns == 12


def test_entries_the_model_cannot_hold_are_skipped() -> None:
    assert kernel.service_from_attrs({"IPVS_SVC_ATTR_AF": 99}) is None
    weird = {"IPVS_SVC_ATTR_AF": 2, "IPVS_SVC_ATTR_PROTOCOL": 51, "IPVS_SVC_ATTR_ADDR": "192.0.2.1"}
    assert kernel.service_from_attrs(weird) is None
    table, _ = kernel.table_from_attrs([(weird, [])])
    assert table == {}


@pytest.mark.parametrize(
    ("family", "prefix", "shown"),
    [
        (4, 32, "255.255.255.255"),
        (4, 24, "255.255.255.0"),
        (4, 0, "0.0.0.0"),
        (6, 128, None),
        (6, 64, None),
    ],
)
def test_netmask_round_trip(family: int, prefix: int, shown: str | None) -> None:
    raw = kernel.prefix_to_netmask(family, prefix)
    if shown is not None:
        assert socket.inet_ntoa(raw) == shown
    else:  # the prefix length as a host-order u32, as the kernel stores it
        assert struct.unpack("=I", raw) == (prefix,)
    assert kernel.netmask_to_prefix(family, socket.inet_ntoa(raw)) == prefix


def test_non_contiguous_ipv4_mask_reads_as_bit_count() -> None:
    assert kernel.netmask_to_prefix(4, "255.0.255.0") == 16


def test_acks_and_errors() -> None:
    def error(seq: int, code: int) -> bytes:
        payload = struct.pack("=i", -code) + kernel.NLMSG_HEADER.pack(20, FAMILY_ID, 1, seq, 0)
        return kernel.NLMSG_HEADER.pack(16 + len(payload), kernel.NLMSG_ERROR, 0, seq, 0) + payload

    data = error(3, errno.EEXIST) + error(4, 0) + b"\x01\x02"
    assert kernel.parse_acks(data) == [(3, errno.EEXIST), (4, 0)]
    assert kernel.parse_acks(b"") == [] and kernel.parse_acks(b"\xff" * 40) == []


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([socket.AF_INET, socket.AF_INET6, 0]))
def test_decoders_never_raise_on_garbage(data: bytes, af: int) -> None:
    kernel.decode_service(data)
    kernel.decode_dest(data, af)
    list(kernel.iter_messages(data))
    kernel.parse_acks(data)


def test_explain_names_the_fix() -> None:
    add = AddService(svc(S80, "nosuch"))
    assert "modprobe ip_vs_nosuch" in kernel.explain(add, errno.ENOENT)
    assert "CAP_NET_ADMIN" in kernel.explain(add, errno.EPERM)
    assert "does not exist" in kernel.explain(AddDest(S80, dest(A)), errno.ESRCH)
    assert "is already in" in kernel.explain(AddDest(S80, dest(A)), errno.EEXIST)
    assert "lowerThreshold" in kernel.explain(AddDest(S80, dest(A)), errno.ERANGE)
    assert kernel.explain(DeleteService(svc(S80)), errno.EBUSY).startswith("EBUSY: ")


def test_get_family_request() -> None:
    data = kernel.encode_get_family(9)
    length, kind, flags, seq, _ = kernel.NLMSG_HEADER.unpack_from(data)
    assert (length, kind, flags, seq) == (len(data), 0x10, 1, 9)
    assert kernel.attr_payloads(data[20:]) == {2: b"IPVS\0"}
