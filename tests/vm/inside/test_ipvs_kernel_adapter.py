"""vipkeeper_agent.ipvs.kernel against the real kernel IPVS (VM lane only; see conftest.py).

Each test starts and ends with an empty IPVS table (``ipvsadm -C``). Timings are printed for
the report (``-s`` or the JUnit system-out); under TCG they are 15-30x native.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import IPVS, IPVSService

from vipkeeper_agent.ipvs.kernel import IpvsKernel, attr_map, table_from_attrs
from vipkeeper_agent.ipvs.plan import (
    AddDest,
    AddService,
    EditDest,
    EditService,
    Op,
    desired,
    diff,
)
from vipkeeper_agent.ipvs.table import (
    FLAG_PERSISTENT,
    FLAG_SCHED2,
    Destination,
    ForwardingMethod,
    Service,
    ServiceKey,
    make_table,
)
from vipkeeper_api import VirtualServer
from vipkeeper_api.ipvs import Protocol


def ipvsadm(*args: str) -> str:
    done = subprocess.run(
        ["ipvsadm", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"ipvsadm {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def kernel() -> Iterator[IpvsKernel]:
    ipvsadm("-C")
    adapter = IpvsKernel()
    try:
        yield adapter
    finally:
        adapter.close()
        ipvsadm("-C")


def vs(**fields: Any) -> VirtualServer:
    return VirtualServer.model_validate({"placement": "all", **fields})


WEB = vs(
    name="web",
    address="192.0.2.10",
    port=80,
    scheduler="wrr",
    realServers=[
        {"address": "10.0.0.1", "port": 8080, "weight": 3},
        {"address": "10.0.0.2", "port": 8080, "weight": 2, "upperThreshold": 100},
        {"address": "10.0.0.3", "port": 8081, "lowerThreshold": 5, "upperThreshold": 50},
    ],
)
DNS6 = vs(
    name="dns6",
    address="2001:db8::10",
    port=53,
    protocol="UDP",
    scheduler="sh",
    schedulerFlags=["sh-port"],
    forwarding="dr",
    persistence={"timeout": 600, "prefixLength": 64},
    realServers=[{"address": f"2001:db8::{i}"} for i in (21, 22, 23)],
)
MARKED = vs(
    name="marked",
    fwmark=5,
    scheduler="rr",
    forwarding="tunnel",
    persistence={"timeout": 60, "prefixLength": 24},
    realServers=[{"address": "10.1.0.1"}, {"address": "10.1.0.2", "weight": 4}],
)


def apply_clean(kernel: IpvsKernel, ops: list[Op]) -> None:
    results = kernel.apply(ops)
    assert [r.error for r in results if not r.ok] == []


def test_empty_table_reads_empty(kernel: IpvsKernel) -> None:
    assert kernel.read() == {}
    assert kernel.stats() == {}
    assert kernel.apply([]) == []


def test_two_services_three_dests_round_trip(kernel: IpvsKernel) -> None:
    want = desired([WEB, DNS6], {}, active={"web", "dns6"})
    ops = diff(kernel.read(), want, owned=set())
    assert sum(isinstance(op, AddService) for op in ops) == 2
    assert sum(isinstance(op, AddDest) for op in ops) == 6
    apply_clean(kernel, ops)
    assert kernel.read() == want
    assert diff(kernel.read(), want, owned=set(want)) == []
    shown = ipvsadm("-Ln")
    assert "UDP  [2001:db8::10]:53 sh (sh-port) persistent 600 mask 64" in shown
    assert "-> 10.0.0.2:8080" in shown


def test_fwmark_tunnel_persistence_round_trip(kernel: IpvsKernel) -> None:
    want = desired([MARKED], {}, active={"marked"})
    apply_clean(kernel, diff(kernel.read(), want, owned=set()))
    assert kernel.read() == want
    assert "FWM  5 rr persistent 60 mask 255.255.255.0" in ipvsadm("-Ln")


def test_foreign_service_is_untouched(kernel: IpvsKernel) -> None:
    ipvsadm("-A", "-t", "198.51.100.1:443", "-s", "lc")
    ipvsadm("-a", "-t", "198.51.100.1:443", "-r", "10.9.9.9:443", "-m", "-w", "7")
    foreign = kernel.read()
    assert len(foreign) == 1
    want = desired([WEB], {}, active={"web"})
    apply_clean(kernel, diff(kernel.read(), want, owned=set()))
    table = kernel.read()
    assert {k: v for k, v in table.items() if k not in want} == foreign
    assert kernel.read(keys=set(want)) == want
    # The configuration drops "web": only our service goes.
    ops = diff(table, {}, owned=set(want))
    assert [type(op).__name__ for op in ops] == ["DeleteService"]
    apply_clean(kernel, ops)
    assert kernel.read() == foreign
    assert diff(kernel.read(), {}, owned=set(want)) == []


def test_edit_dest_weight_forwarding_thresholds_in_place(kernel: IpvsKernel) -> None:
    key = ServiceKey.of(Protocol.TCP, "192.0.2.20", 80)
    rs = Destination(ipaddress.ip_address("10.0.0.9"), 80, weight=5)
    apply_clean(kernel, diff({}, make_table((Service(key, "rr"), [rs])), set()))
    for changed in (
        Destination(rs.address, 80, weight=0),
        Destination(rs.address, 80, weight=9, forwarding=ForwardingMethod.DR),
        Destination(rs.address, 80, weight=9, forwarding=ForwardingMethod.TUNNEL),
        Destination(rs.address, 80, weight=1, upper_threshold=10, lower_threshold=3),
    ):
        want = make_table((Service(key, "rr"), [changed]))
        ops = diff(kernel.read(), want, owned={key})
        assert [type(op) for op in ops] == [EditDest]
        apply_clean(kernel, ops)
        assert kernel.read() == want, changed


def test_edit_service_scheduler_and_persistence_in_place(kernel: IpvsKernel) -> None:
    key = ServiceKey.of(Protocol.TCP, "2001:db8::30", 443)
    rs = Destination(ipaddress.ip_address("2001:db8::31"), 443)
    apply_clean(kernel, diff({}, make_table((Service(key, "wlc", netmask=128), [rs])), set()))
    for service in (
        Service(key, "sh", flags=FLAG_PERSISTENT | FLAG_SCHED2, timeout=300, netmask=48),
        Service(key, "rr", netmask=128),
    ):
        want = make_table((service, [rs]))
        ops = diff(kernel.read(), want, owned={key})
        assert [type(op) for op in ops] == [EditService]
        apply_clean(kernel, ops)
        assert kernel.read() == want


def test_errors_are_reported_per_op_and_the_rest_continue(kernel: IpvsKernel) -> None:
    missing = ServiceKey.of(Protocol.TCP, "192.0.2.40", 80)
    present = ServiceKey.of(Protocol.TCP, "192.0.2.41", 80)
    dest = Destination(ipaddress.ip_address("10.0.0.40"), 80)
    bad_v6 = Service(ServiceKey.of(Protocol.TCP, "2001:db8::40", 80), "rr", netmask=0)
    # The kernel wants lower <= upper even when upper is 0 ("no limit"); the schema does not.
    thresholds = Destination(ipaddress.ip_address("10.0.0.41"), 80, lower_threshold=5)
    ops: list[Op] = [
        AddDest(missing, dest),
        AddService(Service(present, "rr")),
        AddService(Service(present, "rr")),
        AddService(bad_v6),
        AddDest(present, thresholds),
        AddDest(present, dest),
        AddDest(present, dest),
    ]
    expected = [errno.ESRCH, 0, errno.EEXIST, errno.EINVAL, errno.ERANGE, 0, errno.EEXIST]
    results = kernel.apply(ops)
    assert [r.errno for r in results] == expected
    assert "does not exist" in (results[0].error or "")
    assert "lowerThreshold" in (results[4].error or "")
    assert present in kernel.read()
    # Failures are matched to their ops wherever they fall in a batch.
    for batch in (1, 2, 3):
        ipvsadm("-C")
        with IpvsKernel(batch=batch) as small:
            assert [r.errno for r in small.apply(ops)] == expected, batch


def test_unknown_scheduler_names_the_module(kernel: IpvsKernel) -> None:
    key = ServiceKey.of(Protocol.TCP, "192.0.2.50", 80)
    (result,) = kernel.apply([AddService(Service(key, "nosuch"))])
    assert result.errno == errno.ENOENT
    assert "modprobe ip_vs_nosuch" in (result.error or "")


def test_read_agrees_with_pyroute2_and_ipvsadm(kernel: IpvsKernel) -> None:
    """The struct codec against pyroute2's decoder, on entries ipvsadm made (so not ours)."""
    ipvsadm("-A", "-t", "198.51.100.2:80", "-s", "wrr", "-p", "120", "-M", "255.255.0.0")
    ipvsadm("-a", "-t", "198.51.100.2:80", "-r", "10.3.0.1:8080", "-m", "-w", "3", "-x", "9")
    ipvsadm(
        "-a", "-t", "198.51.100.2:80", "-r", "10.3.0.2:8080", "-m", "-w", "0", "-x", "9", "-y", "2"
    )
    ipvsadm("-A", "-u", "[2001:db8::50]:53", "-s", "mh", "-b", "mh-fallback,mh-port")
    ipvsadm("-a", "-u", "[2001:db8::50]:53", "-r", "[2001:db8::51]:53", "-g")
    ipvsadm("-A", "-f", "9", "-6", "-s", "sh", "-p", "30", "-M", "56")
    ipvsadm("-a", "-f", "9", "-6", "-r", "2001:db8::52", "-i")
    ipvsadm("--add-service", "--sctp-service", "192.0.2.70:9", "-s", "lc")
    ipvs = IPVS()
    try:
        entries = [
            (
                attr_map(msg.get("IPVS_CMD_ATTR_SERVICE")),
                [
                    attr_map(d.get("IPVS_CMD_ATTR_DEST"))
                    for d in ipvs.dest("dump", service=IPVSService.from_message(msg))
                ],
            )
            for msg in ipvs.service("dump")
        ]
    finally:
        ipvs.close()
    oracle = table_from_attrs(entries)
    mine = kernel.snapshot()
    assert mine == oracle
    table = mine[0]
    assert len(table) == 4
    shown = {str(k): v for k, v in table.items()}
    web = shown["TCP 198.51.100.2:80"]
    assert (web.service.timeout, web.service.netmask, web.service.persistent) == (120, 16, True)
    assert sorted(
        (d.weight, d.upper_threshold, d.lower_threshold) for d in web.destinations.values()
    ) == [
        (0, 9, 2),
        (3, 9, 0),
    ]
    dns = shown["UDP [2001:db8::50]:53"]
    assert dns.service.scheduler_flag_names() == ["mh-fallback", "mh-port"]
    assert [d.forwarding for d in dns.destinations.values()] == [ForwardingMethod.DR]
    marked = shown["FWM 9 IPv6"]
    assert (marked.service.scheduler, marked.service.netmask) == ("sh", 56)
    assert [d.forwarding for d in marked.destinations.values()] == [ForwardingMethod.TUNNEL]
    assert "SCTP 192.0.2.70:9" in shown


def test_stats_match_the_table(kernel: IpvsKernel) -> None:
    want = desired([WEB], {}, active={"web"})
    apply_clean(kernel, diff({}, want, set()))
    table, stats = kernel.snapshot()
    assert set(stats) == set(table)
    for key, entry in table.items():
        assert set(stats[key].destinations) == set(entry.destinations)
        assert stats[key].counters.conns == 0


def test_usable_from_any_thread(kernel: IpvsKernel) -> None:
    async def main() -> None:
        await asyncio.to_thread(kernel.apply, diff({}, desired([WEB], {}, {"web"}), set()))
        reads = await asyncio.gather(*(asyncio.to_thread(kernel.read) for _ in range(4)))
        assert all(r == reads[0] for r in reads) and len(reads[0]) == 1

    asyncio.run(main())


def test_thousand_dests_from_empty_then_noop(kernel: IpvsKernel) -> None:
    big = vs(
        name="big",
        address="192.0.2.60",
        port=80,
        scheduler="rr",
        realServers=[{"address": f"10.2.{i // 250}.{i % 250 + 1}"} for i in range(1000)],
    )
    t0 = time.monotonic()
    want = desired([big], {}, active={"big"})
    ops = diff(kernel.read(), want, owned=set())
    t1 = time.monotonic()
    results = kernel.apply(ops)
    t2 = time.monotonic()
    table = kernel.read()
    t3 = time.monotonic()
    again = diff(table, want, owned=set(want))
    t4 = time.monotonic()
    print(
        f"1000 dests: desired+diff {t1 - t0:.2f} s, apply {len(ops)} ops {t2 - t1:.2f} s, "
        f"read {t3 - t2:.2f} s, re-diff {t4 - t3:.2f} s"
    )
    assert all(r.ok for r in results)
    assert table == want and again == []
    # A health flip of 100 real servers is 100 EditDests (inhibit) or DeleteDests.
    health = {f"big/10.2.0.{i}:80": False for i in range(1, 101)}
    flipped = desired([big.model_copy(update={"check": {"kind": "tcp"}})], health, {"big"})
    ops = diff(table, flipped, owned=set(want))
    assert len(ops) == 100
    t5 = time.monotonic()
    apply_clean(kernel, ops)
    print(f"100 dest deletes {time.monotonic() - t5:.2f} s")
    assert kernel.read() == flipped
