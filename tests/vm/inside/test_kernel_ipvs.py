"""The VM lane's proof: kernel IPVS works, through pyroute2 and ipvsadm, data path included.

pyroute2 0.9.7 IPVS API, as verified in this VM against Debian 12's kernel 6.1 (ipvsadm 1.31):

    from pyroute2 import IPVS, IPVSService, IPVSDest   # AsyncIPVS: same methods, awaitable
    ipvs = IPVS()                                       # generic netlink "IPVS"; close() it
    ipvs.service(cmd, service=IPVSService(...))         # cmd: add set del dump get
    ipvs.dest(cmd, service=IPVSService(...), dest=IPVSDest(...))  # cmd: add set del dump

IPVSService keyword fields (the kernel's IPVS_SVC_ATTR_<NAME>, lower-cased):
    af (2/10; derived from addr), protocol (socket.IPPROTO_TCP/UDP/SCTP), addr (str), port,
    fwmark (instead of protocol/addr/port), sched_name ("rr", "wrr", "lc", "wlc", "sh", "mh",
    ...: NOT "scheduler"), flags ({"flags": F, "mask": 0xFFFF}; 0x1 persistent, 0x2 hashed is
    set by the kernel), timeout (persistence seconds, with flag 0x1), netmask (persistence
    granularity, as an IPv4 dotted string), pe_name.
    Defaults are filled in: sched_name "wlc", flags 0, timeout 0; netmask "255.255.255.255"
    only when an IPv4 addr is given.
IPVSDest keyword fields (IPVS_DEST_ATTR_<NAME>, lower-cased):
    addr, port, fwd_method (0 masquerading/NAT, 2 tunnel, 3 direct routing, 1 local), weight,
    u_thresh, l_thresh (NOT u_threshold/l_threshold), addr_family (derived from addr),
    tun_type, tun_port, tun_flags. Defaults: fwd_method 3 (DR!), weight 1, thresholds 0.

Pitfalls (test_pyroute2_pitfalls keeps them honest):
- "update" sends IPVS_CMD_DEL_*: it deletes. Use "set".
- "set" sends every field, defaults included: a dest "set" without fwd_method turns a NAT
  dest into DR; a service "set" without sched_name/flags/timeout resets them to wlc/0/0.
  Always send the complete desired object.
- dest "get" fails with EOPNOTSUPP (the kernel has no GET_DEST doit): dump and filter.
- A fwmark service needs af and netmask given explicitly (else EINVAL):
  IPVSService(fwmark=42, af=AF_INET, netmask="255.255.255.255", sched_name="rr").
- An IPv6 service needs netmask set to the prefix length 128 as a host-order u32 squeezed
  into pyroute2's ip4addr type: "128.0.0.0" on x86 (else EINVAL). Its dests are plain
  IPVSDest(addr="fd00::10", ...).
- IPVSService/IPVSDest.from_message() lays its defaults over the kernel's values (a NAT dest
  reads back fwd_method 3, a persistent service flags 0 / timeout 0) and drops the stats: read
  the raw message instead. from_message(msg).dump_key() is fine as a key for "del".

Reading back (short names work on the service/dest NLA, not on the stats NLA; the counters
lag traffic by up to 2 s, the kernel's estimator period, as per-CPU counters are summed there):
    for msg in ipvs.service("dump"):
        svc = msg.get("IPVS_CMD_ATTR_SERVICE")
        svc.get("af"), svc.get("protocol"), svc.get("addr"), svc.get("port"),
        svc.get("fwmark"), svc.get("sched_name"), svc.get("flags"), svc.get("timeout"),
        svc.get("netmask")        # absent keys are None (e.g. addr of a fwmark service)
        stats = dict(svc.get("stats64")["attrs"])   # also "stats": 32-bit counters
        stats["IPVS_STATS_ATTR_CONNS"], ..._INPKTS, ..._OUTPKTS, ..._INBYTES, ..._OUTBYTES,
        ..._CPS, ..._INPPS, ..._OUTPPS, ..._INBPS, ..._OUTBPS
        for dmsg in ipvs.dest("dump", service=IPVSService(af=..., protocol=..., addr=..., port=...)):
            d = dmsg.get("IPVS_CMD_ATTR_DEST")
            d.get("addr"), d.get("port"), d.get("fwd_method"), d.get("weight"),
            d.get("u_thresh"), d.get("l_thresh"), d.get("active_conns"), d.get("inact_conns"),
            d.get("persist_conns"), d.get("addr_family"), d.get("stats64")
"""

from __future__ import annotations

import errno
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPVS, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

VIP = "10.0.0.1"
STEP_TIMEOUT = 60.0
STATS_DELAY = 10.0
NAT, TUNNEL, ROUTE = 0, 2, 3


def sh(*argv: str, timeout: float = STEP_TIMEOUT) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}: {done.stderr}"
    return done.stdout


def stats_of(nla: Any) -> dict[str, int]:
    return {
        name.removeprefix("IPVS_STATS_ATTR_").lower(): value
        for name, value in nla.get("stats64")["attrs"]
    }


def services(ipvs: IPVS) -> list[dict[str, Any]]:
    """Every service with its dests, as plain dicts read from the raw netlink messages."""
    result = []
    for msg in ipvs.service("dump"):
        nla = msg.get("IPVS_CMD_ATTR_SERVICE")
        fields = ("af", "protocol", "addr", "port", "fwmark", "sched_name", "timeout", "netmask")
        svc: dict[str, Any] = {k: nla.get(k) for k in fields}
        svc["flags"] = nla.get("flags")["flags"]
        svc["stats"] = stats_of(nla)
        key = {
            k: svc[k] for k in ("af", "protocol", "addr", "port", "fwmark") if svc[k] is not None
        }
        svc["dests"] = []
        for dmsg in ipvs.dest("dump", service=IPVSService(**key)):
            d = dmsg.get("IPVS_CMD_ATTR_DEST")
            dest_fields = ("addr", "port", "fwd_method", "weight", "u_thresh", "l_thresh")
            dest: dict[str, Any] = {k: d.get(k) for k in dest_fields}
            dest["stats"] = stats_of(d)
            svc["dests"].append(dest)
        result.append(svc)
    return result


def ipvsadm_table() -> dict[str, dict[str, Any]]:
    """``ipvsadm -Ln`` as {"TCP 10.0.0.1:80": {"scheduler": .., "dests": {addr: (fwd, weight)}}}."""
    table: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in sh("ipvsadm", "-Ln").splitlines():
        svc = re.match(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s+(\S+)", line)
        dest = re.match(r"^\s+->\s+(\S+)\s+(\w+)\s+(\d+)", line)
        if svc:
            current = {"scheduler": svc[3], "dests": {}}
            table[f"{svc[1]} {svc[2]}"] = current
        elif dest and current is not None:
            current["dests"][dest[1]] = (dest[2], int(dest[3]))
    return table


@pytest.fixture
def ipvs() -> Iterator[IPVS]:
    sock = IPVS()
    try:
        yield sock
    finally:
        # The VM's table is ours alone: leave it empty for the next test.
        for msg in sock.service("dump"):
            nla = msg.get("IPVS_CMD_ATTR_SERVICE")
            key = {k: nla.get(k) for k in ("af", "protocol", "addr", "port", "fwmark")}
            sock.service(
                "del", service=IPVSService(**{k: v for k, v in key.items() if v is not None})
            )
        sock.close()


def web(protocol: int = socket.IPPROTO_TCP, sched: str = "rr") -> IPVSService:
    return IPVSService(addr=VIP, port=80, protocol=protocol, sched_name=sched)


def test_proc_net_ip_vs() -> None:
    text = Path("/proc/net/ip_vs").read_text()
    assert text.startswith("IP Virtual Server version"), text


def test_service_lifecycle(ipvs: IPVS) -> None:
    svc = web()
    ipvs.service("add", service=svc)
    for addr in ("10.0.1.1", "10.0.1.2"):
        ipvs.dest("add", service=svc, dest=IPVSDest(addr=addr, port=8080, fwd_method=NAT))

    [listed] = services(ipvs)
    assert (listed["af"], listed["protocol"], listed["addr"], listed["port"]) == (
        socket.AF_INET,
        socket.IPPROTO_TCP,
        VIP,
        80,
    )
    assert listed["sched_name"] == "rr"
    assert listed["stats"]["conns"] == 0
    assert sorted(
        (d["addr"], d["port"], d["fwd_method"], d["weight"]) for d in listed["dests"]
    ) == [
        ("10.0.1.1", 8080, NAT, 1),
        ("10.0.1.2", 8080, NAT, 1),
    ]
    assert ipvsadm_table() == {
        "TCP 10.0.0.1:80": {
            "scheduler": "rr",
            "dests": {"10.0.1.1:8080": ("Masq", 1), "10.0.1.2:8080": ("Masq", 1)},
        }
    }

    ipvs.dest(
        "set", service=svc, dest=IPVSDest(addr="10.0.1.2", port=8080, fwd_method=NAT, weight=5)
    )
    assert ipvsadm_table()["TCP 10.0.0.1:80"]["dests"]["10.0.1.2:8080"] == ("Masq", 5)

    ipvs.dest("del", service=svc, dest=IPVSDest(addr="10.0.1.1", port=8080))
    assert [d["addr"] for d in services(ipvs)[0]["dests"]] == ["10.0.1.2"]
    ipvs.service("del", service=svc)
    assert services(ipvs) == []
    assert ipvsadm_table() == {}


@pytest.mark.parametrize(
    ("fwd_method", "shown"), [(NAT, "Masq"), (TUNNEL, "Tunnel"), (ROUTE, "Route")]
)
def test_forward_method(ipvs: IPVS, fwd_method: int, shown: str) -> None:
    svc = web(socket.IPPROTO_UDP, "wrr")
    ipvs.service("add", service=svc)
    dest = IPVSDest(
        addr="10.0.1.7", port=80, fwd_method=fwd_method, weight=3, u_thresh=100, l_thresh=10
    )
    ipvs.dest("add", service=svc, dest=dest)
    [listed] = services(ipvs)[0]["dests"]
    assert (listed["fwd_method"], listed["weight"], listed["u_thresh"], listed["l_thresh"]) == (
        fwd_method,
        3,
        100,
        10,
    )
    assert ipvsadm_table()["UDP 10.0.0.1:80"]["dests"]["10.0.1.7:80"] == (shown, 3)


def test_pyroute2_pitfalls(ipvs: IPVS) -> None:
    """Library behaviour the IPVS feature relies on working around; fails if pyroute2 changes."""
    svc = web()
    ipvs.service("add", service=svc)
    for addr in ("10.0.1.1", "10.0.1.2"):
        ipvs.dest("add", service=svc, dest=IPVSDest(addr=addr, port=8080, fwd_method=NAT))

    ipvs.dest(
        "update", service=svc, dest=IPVSDest(addr="10.0.1.1", port=8080, fwd_method=NAT, weight=4)
    )
    assert list(ipvsadm_table()["TCP 10.0.0.1:80"]["dests"]) == ["10.0.1.2:8080"], "update deletes"

    ipvs.dest("set", service=svc, dest=IPVSDest(addr="10.0.1.2", port=8080, weight=4))
    assert ipvsadm_table()["TCP 10.0.0.1:80"]["dests"]["10.0.1.2:8080"] == ("Route", 4)

    with pytest.raises(NetlinkError) as raised:
        list(ipvs.dest("get", service=svc, dest=IPVSDest(addr="10.0.1.2", port=8080)))
    assert raised.value.code == errno.EOPNOTSUPP

    ipvs.service("set", service=IPVSService(addr=VIP, port=80, protocol=socket.IPPROTO_TCP))
    assert services(ipvs)[0]["sched_name"] == "wlc"

    persistent = IPVSService(
        addr=VIP,
        port=80,
        protocol=socket.IPPROTO_TCP,
        sched_name="sh",
        flags={"flags": 1, "mask": 0xFFFF},
        timeout=300,
    )
    ipvs.service("set", service=persistent)
    [raw] = list(ipvs.service("dump"))
    listed = raw.get("IPVS_CMD_ATTR_SERVICE")
    assert (listed.get("sched_name"), listed.get("flags")["flags"] & 1, listed.get("timeout")) == (
        "sh",
        1,
        300,
    )
    from_message = IPVSService.from_message(raw)
    assert (from_message["flags"]["flags"], from_message["timeout"]) == (0, 0), "defaults win"

    fwmark = IPVSService(fwmark=42, af=socket.AF_INET, netmask="255.255.255.255", sched_name="rr")
    ipvs.service("add", service=fwmark)
    v6 = IPVSService(
        addr="fd00::1", port=443, protocol=socket.IPPROTO_TCP, sched_name="rr", netmask="128.0.0.0"
    )
    ipvs.service("add", service=v6)
    ipvs.dest("add", service=v6, dest=IPVSDest(addr="fd00::10", port=443, fwd_method=NAT))
    table = ipvsadm_table()
    assert table["FWM 42"]["scheduler"] == "rr"
    assert table["TCP [fd00::1]:443"]["dests"] == {"[fd00::10]:443": ("Masq", 1)}


CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 80), timeout=30) as s:
    s.sendall(b"GET /whoami HTTP/1.0\\r\\nHost: vip\\r\\n\\r\\n")
    reply = b""
    while chunk := s.recv(4096):
        reply += chunk
print(reply.decode(errors="replace"))
"""


def _veth_to(ns: str, host_if: str, host_addr: str, ns_addr: str, gateway: str) -> None:
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "addr", "add", host_addr, "dev", host_if)
    sh("ip", "link", "set", host_if, "up")
    sh("ip", "-n", ns, "addr", "add", ns_addr, "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", gateway)


def _wait_listening(addr: str, port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        assert server.poll() is None, f"backend exited: {log.read_text(errors='replace')}"
        try:
            with socket.create_connection((addr, port), timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"backend not listening on {addr}:{port} after {STEP_TIMEOUT:g} s")


def test_nat_tcp_through_vip(ipvs: IPVS, tmp_path: Path) -> None:
    """client ns 10.0.2.2 -> VIP 10.0.0.1:80 on the director (the VM's root ns) -> NAT ->
    backend ns 10.0.3.2:8080 (python -m http.server); replies go back through the director."""
    prefix = "vk" + secrets.token_hex(2)
    client, backend = f"{prefix}-c", f"{prefix}-b"
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "whoami").write_text("backend-1\n")
    log = tmp_path / "backend.log"
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    forward_before = forward.read_text()
    server: subprocess.Popen[bytes] | None = None
    try:
        _veth_to(client, f"{prefix}c", "10.0.2.1/24", "10.0.2.2/24", "10.0.2.1")
        _veth_to(backend, f"{prefix}b", "10.0.3.1/24", "10.0.3.2/24", "10.0.3.1")
        sh("ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        # NAT replies from the backend are forwarded by the director on their way back.
        forward.write_text("1\n")
        with log.open("wb") as out:
            server = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    backend,
                    sys.executable,
                    "-m",
                    "http.server",
                    "8080",
                    "--bind",
                    "10.0.3.2",
                    "--directory",
                    str(docroot),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        svc = web()
        ipvs.service("add", service=svc)
        ipvs.dest("add", service=svc, dest=IPVSDest(addr="10.0.3.2", port=8080, fwd_method=NAT))
        _wait_listening("10.0.3.2", 8080, server, log)

        reply = sh("ip", "netns", "exec", client, sys.executable, "-c", CLIENT, VIP)
        assert reply.startswith("HTTP/1.0 200"), reply
        assert reply.rstrip().endswith("backend-1"), reply

        # The kernel folds its per-CPU counters into what netlink reports from its rate
        # estimator timer, every 2 s: fresh traffic shows up in the stats with that delay.
        deadline = time.monotonic() + STATS_DELAY
        while True:
            [listed] = services(ipvs)
            both = (listed["stats"], listed["dests"][0]["stats"])
            if all(s["conns"] == 1 and s["outbytes"] > 0 for s in both):
                break
            assert time.monotonic() < deadline, both
            time.sleep(0.25)
        for stats in both:
            assert stats["inpkts"] > 0 and stats["outpkts"] > 0, stats
            assert stats["inbytes"] > 0, stats
        # NAT rewrites the destination only: the backend sees the real client.
        assert "10.0.2.2 - -" in log.read_text(errors="replace")
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        for ns in (client, backend):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        subprocess.run(
            ["ip", "addr", "del", f"{VIP}/32", "dev", "lo"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        forward.write_text(forward_before)
