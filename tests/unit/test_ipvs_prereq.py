"""Kernel prerequisites of the virtual servers: problems() over facts, read_facts() over fake
/proc and /lib/modules trees, and the adapter's error on a kernel without IPVS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vipkeeper_agent.ipvs.kernel import IpvsKernel, IpvsUnavailable
from vipkeeper_agent.ipvs.prereq import KernelFacts, problems, read_facts
from vipkeeper_api import VirtualServer

GOOD = KernelFacts(
    ipvs_loaded=True,
    ipvs_available=True,
    ip_forward=True,
    ipv6_forwarding=True,
    conntrack=False,
    schedulers=frozenset({"rr", "wrr", "wlc", "sh"}),
    kernel_release="6.1.0-test",
)


def vs(name: str = "web", **fields: Any) -> VirtualServer:
    base = {"name": name, "address": "192.0.2.10", "port": 80, "placement": "all"}
    return VirtualServer.model_validate({**base, **fields})


def facts(**changes: Any) -> KernelFacts:
    values = {field: getattr(GOOD, field) for field in GOOD.__slots__}
    values.update(changes)
    return KernelFacts(**values)


V6 = {"address": "2001:db8::10"}

PROBLEM_CASES: list[tuple[str, list[VirtualServer], KernelFacts, list[str]]] = [
    ("all good", [vs(), vs("dr", port=81, forwarding="dr")], GOOD, []),
    ("no virtual servers, no problems", [], facts(ipvs_loaded=False, ip_forward=False), []),
    (
        "ip_vs not loaded",
        [vs()],
        facts(ipvs_loaded=False, ipvs_available=True),
        ["IPVS is not loaded: load ip_vs with `modprobe ip_vs`"],
    ),
    (
        "ip_vs not loaded, availability unknown",
        [vs()],
        facts(ipvs_loaded=False, ipvs_available=None),
        ["IPVS is not loaded: load ip_vs with `modprobe ip_vs`"],
    ),
    (
        "no ip_vs at all",
        [vs()],
        facts(ipvs_loaded=False, ipvs_available=False),
        ["the kernel (6.1.0-test) has no IPVS", "CONFIG_IP_VS", "virtual servers: web"],
    ),
    (
        "NAT without ip_forward",
        [vs(), vs("dr", port=81, forwarding="dr")],
        facts(ip_forward=False),
        [
            "NAT forwarding needs net.ipv4.ip_forward=1 (sysctl -w net.ipv4.ip_forward=1); "
            "real servers must route replies back through this node (virtual servers: web)"
        ],
    ),
    (
        "DR and tunnel need no forwarding",
        [vs(forwarding="dr"), vs("t", port=81, forwarding="tunnel")],
        facts(ip_forward=False, ipv6_forwarding=False),
        [],
    ),
    ("forwarding unknown is no problem", [vs()], facts(ip_forward=None), []),
    (
        "IPv6 NAT without forwarding",
        [vs(**V6)],
        facts(ipv6_forwarding=False, ip_forward=False),
        ["net.ipv6.conf.all.forwarding=1", "virtual servers: web"],
    ),
    (
        "scheduler module missing",
        [vs(scheduler="mh"), vs("b", port=81, scheduler="mh"), vs("c", port=82, scheduler="rr")],
        GOOD,
        [
            "scheduler mh is not available: this kernel has no ip_vs_mh module",
            "virtual servers: web, b",
        ],
    ),
    ("schedulers unknown is no problem", [vs(scheduler="twos")], facts(schedulers=None), []),
]


@pytest.mark.parametrize(
    ("servers", "kernel_facts", "needles"),
    [pytest.param(s, f, n, id=name) for name, s, f, n in PROBLEM_CASES],
)
def test_problems(
    servers: list[VirtualServer], kernel_facts: KernelFacts, needles: list[str]
) -> None:
    found = problems(servers, kernel_facts)
    if not needles:
        assert found == []
        return
    assert len(found) == 1, found
    for needle in needles:
        assert needle in found[0], f"{needle!r} not in {found[0]!r}"


def test_problems_add_up() -> None:
    found = problems(
        [vs(scheduler="mh"), vs("six", port=81, **V6)],
        facts(ipvs_loaded=False, ip_forward=False, ipv6_forwarding=False),
    )
    assert [p.split(" ", 2)[:2] for p in found] == [
        ["IPVS", "is"],
        ["NAT", "forwarding"],
        ["NAT", "forwarding"],
        ["scheduler", "mh"],
    ]


def fake_tree(
    tmp_path: Path,
    *,
    loaded: bool = True,
    modules: tuple[str, ...] = ("ip_vs.ko.xz", "ip_vs_rr.ko.xz", "ip_vs_sh.ko", "ip_vs_ftp.ko.zst"),
    builtin: tuple[str, ...] = (),
    proc_modules: str = "ip_vs 188416 1 - Live 0x0\nip_vs_wlc 16384 1 ip_vs, Live 0x0\n",
    sysctl: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    lib = tmp_path / "lib/modules"
    (proc / "net").mkdir(parents=True)
    if loaded:
        (proc / "net/ip_vs").write_text("IP Virtual Server version 1.2.1 (size=4096)\n")
    (proc / "modules").write_text(proc_modules)
    for name, value in (sysctl or {}).items():
        path = proc / "sys" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    ipvs = lib / "6.1.0-test/kernel/net/netfilter/ipvs"
    ipvs.mkdir(parents=True)
    for name in modules:
        (ipvs / name).write_bytes(b"")
    (lib / "6.1.0-test/modules.builtin").write_text(
        "".join(f"kernel/net/netfilter/ipvs/{name}\n" for name in builtin)
    )
    return proc, lib


def test_read_facts(tmp_path: Path) -> None:
    proc, lib = fake_tree(
        tmp_path,
        builtin=("ip_vs_mh.ko",),
        sysctl={
            "net/ipv4/ip_forward": "1",
            "net/ipv6/conf/all/forwarding": "0",
            "net/ipv4/vs/conntrack": "1",
        },
    )
    found = read_facts(proc, lib, "6.1.0-test")
    assert found == KernelFacts(
        ipvs_loaded=True,
        ipvs_available=True,
        ip_forward=True,
        ipv6_forwarding=False,
        conntrack=True,
        # module files, built in, and loaded (wlc); ip_vs_ftp is no scheduler
        schedulers=frozenset({"rr", "sh", "mh", "wlc"}),
        kernel_release="6.1.0-test",
    )
    assert found.as_dict()["schedulers"] == ["mh", "rr", "sh", "wlc"]


def test_read_facts_without_ipvs(tmp_path: Path) -> None:
    proc, lib = fake_tree(tmp_path, loaded=False, modules=(), proc_modules="")
    found = read_facts(proc, lib, "6.1.0-test")
    assert (found.ipvs_loaded, found.ipvs_available, found.schedulers) == (
        False,
        False,
        frozenset(),
    )
    assert (found.ip_forward, found.conntrack) == (None, None)
    assert "has no IPVS" in problems([vs()], found)[0]


def test_read_facts_without_the_modules_tree(tmp_path: Path) -> None:
    """In a container without the host's /lib/modules nothing can be said about modules."""
    proc, _ = fake_tree(tmp_path, loaded=False)
    found = read_facts(proc, tmp_path / "nowhere", "6.1.0-test")
    assert (found.ipvs_available, found.schedulers) == (True, None)  # ip_vs is in /proc/modules
    assert problems([vs(scheduler="twos")], found) == [problems([vs()], found)[0]]


def test_read_facts_of_this_machine_does_not_fail() -> None:
    found = read_facts()
    assert found.kernel_release
    problems([vs()], found)


@pytest.mark.skipif(
    Path("/proc/net/ip_vs").exists(), reason="this kernel has IPVS loaded; see the VM lane"
)
def test_adapter_says_how_to_get_ipvs() -> None:
    adapter = IpvsKernel()
    try:
        with pytest.raises(IpvsUnavailable, match=r"modprobe ip_vs.*CONFIG_IP_VS"):
            adapter.read()
        assert adapter.apply([]) == []  # nothing to do needs no kernel
        with pytest.raises(IpvsUnavailable):
            adapter.open()
    finally:
        adapter.close()
