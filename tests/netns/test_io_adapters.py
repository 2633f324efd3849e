"""The I/O adapters against a real kernel, in two network namespaces joined by a veth pair.

The adapters run inside a namespace, in a small Python snippet under ``ip netns exec``; the test
checks the outcome from outside (``ip -j``) or with a raw receiver in the peer namespace.
Every namespace is named ``vkio-*`` and every process and namespace is bounded in time and
removed in the fixtures' teardown, pass or fail.
"""

from __future__ import annotations

import ipaddress
import json
import queue
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from nshelpers import STEP_TIMEOUT, ip, require_root
from scapy.layers.inet6 import IPv6

from vipkeeper_agent.announce.frames import garp_reply, garp_request, unsolicited_na
from vipkeeper_agent.io.transport import frame_ipv4, parse_ipv6_ancillary

pytestmark = pytest.mark.netns

PYTHON = sys.executable  # the venv's interpreter, with vipkeeper_agent installed
A_IF, B_IF = "vka", "vkb"
A_V4, B_V4 = "192.0.2.1", "192.0.2.2"
A_V6, B_V6 = "2001:db8::1", "2001:db8::2"


def ip_json(ns: str, *args: str) -> Any:
    return json.loads(ip("-n", ns, "-j", *args) or "[]")


@dataclass(frozen=True)
class Pair:
    a: str
    b: str

    def mac(self, ns: str, dev: str) -> bytes:
        (link,) = ip_json(ns, "link", "show", "dev", dev)
        return bytes.fromhex(link["address"].replace(":", ""))

    def link_local(self, ns: str, dev: str) -> str:
        (link,) = ip_json(ns, "addr", "show", "dev", dev)
        return str(next(a["local"] for a in link["addr_info"] if a["local"].startswith("fe80:")))


def wait_operstate_up(ns: str, dev: str, timeout: float = 5.0) -> None:
    # Carrier comes on through the kernel's linkwatch work, up to a second after "link set up";
    # until then the device has no queueing discipline and silently drops what is sent.
    deadline = time.monotonic() + timeout
    while ip_json(ns, "link", "show", "dev", dev)[0]["operstate"] != "UP":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dev} in {ns} did not come up within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def pair() -> Iterator[Pair]:
    require_root("creates network namespaces and opens raw sockets")
    tag = uuid.uuid4().hex[:8]
    a, b = f"vkio-{tag}-a", f"vkio-{tag}-b"
    created: list[str] = []
    try:
        for ns in (a, b):
            ip("netns", "add", ns)
            created.append(ns)
            # Interfaces copy "default" when created: no DAD, so link-local addresses are usable
            # (as NA sources) at once instead of after a second.
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"],
                check=True,
                timeout=STEP_TIMEOUT,
            )
        ip("link", "add", A_IF, "netns", a, "type", "veth", "peer", "name", B_IF, "netns", b)
        for ns, dev, v4, v6 in ((a, A_IF, A_V4, A_V6), (b, B_IF, B_V4, B_V6)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
        for ns, dev in ((a, A_IF), (b, B_IF)):
            wait_operstate_up(ns, dev)
        yield Pair(a, b)
    finally:
        for ns in created:
            subprocess.run(
                ["ip", "netns", "del", ns], check=False, capture_output=True, timeout=STEP_TIMEOUT
            )


def run_py(ns: str, code: str, *args: Any, timeout: float = STEP_TIMEOUT) -> Any:
    """Run a snippet in the namespace; it gets ``ARGS`` and its last stdout line is JSON."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, PYTHON, "-c", _prelude(code), json.dumps(args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"snippet failed in {ns} (rc {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _prelude(code: str) -> str:
    return (
        "import asyncio, ipaddress, json, os, socket, sys, time\n"
        "ARGS = json.loads(sys.argv[1])\n" + textwrap.dedent(code)
    )


class Background:
    """Snippets running alongside the test; each prints "ready" once it is listening."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str]] = []
        self._lines: dict[int, queue.Queue[str | None]] = {}

    def start(self, ns: str, code: str, *args: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, PYTHON, "-c", _prelude(code), json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(proc)
        # A reader thread, because select() cannot see lines already sitting in Python's buffer.
        lines: queue.Queue[str | None] = queue.Queue()
        self._lines[proc.pid] = lines
        threading.Thread(target=self._pump, args=(proc, lines), daemon=True).start()
        line = self.readline(proc, STEP_TIMEOUT)
        if line != "ready":
            proc.kill()
            proc.wait(timeout=STEP_TIMEOUT)
            assert proc.stderr is not None
            pytest.fail(f"background snippet in {ns} did not start: {line!r}\n{proc.stderr.read()}")
        return proc

    @staticmethod
    def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    def readline(self, proc: subprocess.Popen[str], timeout: float) -> str | None:
        try:
            return self._lines[proc.pid].get(timeout=timeout)
        except queue.Empty:
            return None

    def result(self, proc: subprocess.Popen[str]) -> Any:
        proc.wait(timeout=STEP_TIMEOUT)
        assert proc.stderr is not None
        if proc.returncode != 0:
            pytest.fail(f"background snippet failed (rc {proc.returncode}):\n{proc.stderr.read()}")
        output = []
        while (line := self.readline(proc, STEP_TIMEOUT)) is not None:
            output.append(line)
        return json.loads(output[-1])

    def cleanup(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=STEP_TIMEOUT)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def background(pair: Pair) -> Iterator[Background]:
    # Depends on pair so that the processes are gone before their namespaces are deleted.
    bg = Background()
    try:
        yield bg
    finally:
        bg.cleanup()


# --- snippets ---------------------------------------------------------------------------------

NETLINK_OPS = """
from pyroute2 import AsyncIPRoute
from vipkeeper_agent.io.netlink import AddressManager
from vipkeeper_agent.topology import AF_INET, AF_INET6, choose_interface, primary_address

def addrs(items):
    return [ipaddress.ip_interface(a) for a in items]

async def main():
    manager = await AddressManager.open()
    results = []
    try:
        for op, *params in ARGS[0]:
            try:
                if op == "add":
                    started = time.perf_counter()
                    await manager.add(params[0], addrs(params[1]))
                    results.append({"seconds": time.perf_counter() - started})
                elif op == "remove":
                    await manager.remove(params[0], addrs(params[1]))
                    results.append(None)
                elif op == "remove_stale":
                    removed = await manager.remove_stale()
                    results.append([[name, str(addr)] for name, addr in removed])
                elif op == "interfaces":
                    found = await manager.interfaces()
                    vip = ipaddress.ip_interface(params[0])
                    chosen = choose_interface(vip, found)
                    results.append({
                        "interfaces": [
                            {"name": i.name, "index": i.index, "up": i.up, "mac": i.mac.hex(),
                             "addresses": [str(a) for a in i.addresses]}
                            for i in found
                        ],
                        "chosen": chosen and chosen.name,
                        "primary4": chosen and str(primary_address(chosen, AF_INET)),
                        "primary6": chosen and str(primary_address(chosen, AF_INET6)),
                    })
                elif op == "ready":
                    print("ready", flush=True)
                    await asyncio.sleep(params[0])
            except OSError as exc:
                results.append({"error": type(exc).__name__, "errno": exc.errno,
                                "message": str(exc)})
    finally:
        await manager.close()
    print(json.dumps(results))

asyncio.run(main())
"""

DUMP_ADDRESSES = """
from pyroute2 import IPRoute
with IPRoute() as ipr:
    names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
    print(json.dumps([
        {"dev": names[m["index"]], "address": f"{m.get('local') or m.get('address')}/{m['prefixlen']}",
         "proto": m.get("proto"), "flags": m.get("flags"), "label": m.get("label")}
        for m in ipr.get_addr()
    ]))
"""

VRRP_RECEIVE = """
from vipkeeper_agent.io.transport import VrrpSocket
family, group, expected, seconds = ARGS

async def main():
    got = []
    done = asyncio.Event()
    def on_datagram(d):
        got.append({"source": str(d.source), "destination": str(d.destination), "ttl": d.ttl,
                    "ifindex": d.ifindex, "payload": d.payload.hex()})
        if len(got) >= expected:
            done.set()
    vs = VrrpSocket.open("vkb", socket.if_nametoindex("vkb"), family, on_datagram)
    if group:
        vs.join(ipaddress.ip_address(group))
    print("ready", flush=True)
    try:
        await asyncio.wait_for(done.wait(), seconds)
    except TimeoutError:
        pass
    vs.close()
    print(json.dumps({"datagrams": got, "framing_errors": vs.framing_errors,
                      "ifindex": socket.if_nametoindex("vkb")}))

asyncio.run(main())
"""

VRRP_SEND = """
from vipkeeper_agent.io.transport import VrrpSocket
family, destination, source, payload = ARGS

async def main():
    echoed = []
    vs = VrrpSocket.open("vka", socket.if_nametoindex("vka"), family, echoed.append)
    destination_ip = ipaddress.ip_address(destination)
    if destination_ip.is_multicast:
        vs.join(destination_ip)  # joined, yet our own adverts must not loop back
    vs.send(bytes.fromhex(payload), destination_ip, ipaddress.ip_address(source))
    await asyncio.sleep(0.3)
    vs.close()
    print(json.dumps({"echoed": len(echoed)}))

asyncio.run(main())
"""

MEMBERSHIP = """
from vipkeeper_agent.io.transport import VrrpSocket, VRRP_GROUP_V4, VRRP_GROUP_V6

def joined():
    # /proc/net/igmp lists IPv4 groups as little-endian hex, igmp6 IPv6 ones as plain hex.
    v4 = "120000E0" in open("/proc/net/igmp").read()
    v6 = "ff020000000000000000000000000012" in open("/proc/net/igmp6").read()
    return [v4, v6]

async def main():
    idx = socket.if_nametoindex("vka")
    v4 = VrrpSocket.open("vka", idx, socket.AF_INET, print)
    v6 = VrrpSocket.open("vka", idx, socket.AF_INET6, print)
    states = [joined()]
    for vs, group in ((v4, VRRP_GROUP_V4), (v6, VRRP_GROUP_V6)):
        vs.join(group)
        vs.join(group)
    states.append(joined())
    v4.leave(VRRP_GROUP_V4); v6.leave(VRRP_GROUP_V6)
    states.append(joined())
    v4.leave(VRRP_GROUP_V4); v6.leave(VRRP_GROUP_V6)
    v4.leave(VRRP_GROUP_V4)  # one too many: ignored
    states.append(joined())
    v4.close(); v6.close(); v4.close()
    print(json.dumps(states))

asyncio.run(main())
"""

CAPTURE = """
ethertype, seconds = ARGS
ETH_P_ALL = 0x0003
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
sock.bind(("vkb", 0))
sock.settimeout(0.1)
print("ready", flush=True)
frames = []
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        data, address = sock.recvfrom(65535)
    except TimeoutError:
        continue
    if address[2] != socket.PACKET_OUTGOING and int.from_bytes(data[12:14], "big") == ethertype:
        frames.append([time.monotonic(), data.hex()])
print(json.dumps(frames))
"""

ANNOUNCE = """
from vipkeeper_agent.io.announcer import Announcer
addresses, count, interval, repeat_delay, refresh, seconds = ARGS

async def main():
    mac = bytes.fromhex(open("/sys/class/net/vka/address").read().strip().replace(":", ""))
    announcer = Announcer()
    started = time.monotonic()
    announcer.start("vrid-51", "vka", socket.if_nametoindex("vka"), mac,
                    [ipaddress.ip_interface(a) for a in addresses],
                    count, interval, repeat_delay, refresh)
    sent_by_start = announcer.sent
    await asyncio.sleep(seconds)
    announcer.stop("vrid-51")
    sent_by_end = announcer.sent
    await asyncio.sleep(0.2)
    announcer.close()
    print(json.dumps({"started": started, "sent_by_start": sent_by_start,
                      "sent_by_end": sent_by_end, "sent_after_stop": announcer.sent,
                      "errors": announcer.errors}))

asyncio.run(main())
"""

WATCH_LINKS = """
from vipkeeper_agent.io.netlink import LinkWatcher

async def main():
    def on_change(name, up):
        print(json.dumps([name, up]), flush=True)
    watcher = await LinkWatcher.open(on_change)
    print("ready", flush=True)
    await asyncio.sleep(ARGS[0])
    await watcher.close()
    print(json.dumps("closed"), flush=True)

asyncio.run(main())
"""

OVERFLOW_LINK_EVENTS = """
import logging, subprocess
from vipkeeper_agent.io.netlink import LinkWatcher

class Remember(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

warnings = []
logging.getLogger("vipkeeper_agent").addHandler(Remember())

async def main():
    changes = []
    watcher = await LinkWatcher.open(lambda name, up: changes.append([name, up]))
    # A tiny receive buffer, and a loop too busy to read it: the kernel drops link events.
    watcher._ipr.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    for mtu in range(1300, 1360):
        subprocess.run(["ip", "link", "set", "vka", "mtu", str(mtu)], check=True, timeout=5)
    subprocess.run(["ip", "link", "set", "vka", "down"], check=True, timeout=5)
    await asyncio.sleep(1.0)
    await watcher.close()
    print(json.dumps({"changes": changes, "warnings": warnings}))

asyncio.run(main())
"""


# --- AddressManager ---------------------------------------------------------------------------


def addr_info(pair: Pair, ns: str, dev: str) -> dict[str, dict[str, Any]]:
    (link,) = ip_json(ns, "addr", "show", "dev", dev)
    return {f"{a['local']}/{a['prefixlen']}": a for a in link["addr_info"]}


def test_add_marks_and_flags_the_vips(pair: Pair) -> None:
    vips = ["192.0.2.10/24", "192.0.2.11/32", "2001:db8::10/64"]
    results = run_py(pair.a, NETLINK_OPS, [["add", A_IF, vips], ["add", A_IF, vips]])
    assert all("error" not in r for r in results), results

    info = addr_info(pair, pair.a, A_IF)
    for vip in vips:
        assert info[vip]["noprefixroute"] is True, info[vip]
    assert info["192.0.2.10/24"]["label"] == "vka:vk"
    assert info["192.0.2.11/32"]["label"] == "vka:vk"
    assert info["2001:db8::10/64"]["nodad"] is True
    assert "tentative" not in info["2001:db8::10/64"]
    # The admin's addresses are untouched and carry no label of ours.
    assert info[f"{A_V4}/24"]["label"] == A_IF

    # Debian 12's iproute2 (6.1) predates "proto" in ip addr; read IFA_PROTO with pyroute2.
    dumped = {d["address"]: d for d in run_py(pair.a, DUMP_ADDRESSES) if d["dev"] == A_IF}
    for vip in vips:
        assert dumped[vip]["proto"] == 0x76, dumped[vip]
    assert dumped[f"{A_V4}/24"]["proto"] in (None, 0)


def test_add_without_room_for_a_label(pair: Pair) -> None:
    long_name = "vklongname0123"  # 14 characters: "<name>:vk" would exceed IFNAMSIZ
    ip("-n", pair.a, "link", "add", long_name, "type", "bridge")
    results = run_py(pair.a, NETLINK_OPS, [["add", long_name, ["192.0.2.30/32"]]])
    assert "error" not in results[0]
    assert addr_info(pair, pair.a, long_name)["192.0.2.30/32"]["label"] == long_name


def test_add_time_for_one_address(pair: Pair) -> None:
    ops = []
    for i in range(100):
        vip = [f"192.0.2.{100 + i}/24"]
        ops += [["add", A_IF, vip], ["remove", A_IF, vip]]
    results = run_py(pair.a, NETLINK_OPS, ops)
    seconds = sorted(r["seconds"] for r in results[::2])
    median, p99 = statistics.median(seconds), seconds[98]
    print(f"\nAddressManager.add(1 address): median {median * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms")
    assert median < 0.05


def test_errors_name_the_interface(pair: Pair) -> None:
    results = run_py(
        pair.a,
        NETLINK_OPS,
        [["add", "eth9", ["192.0.2.10/24"]], ["remove", "eth9", ["192.0.2.10/24"]]],
    )
    assert results[0] == {
        "error": "InterfaceNotFoundError",
        "errno": 19,
        "message": "[Errno 19] interface eth9 does not exist",
    }
    assert results[1] is None  # an interface that is gone has no address left to remove


def test_remove_never_touches_an_admins_address(pair: Pair) -> None:
    # The admin's copy of the same VIP, and the same IP with another prefix.
    ip("-n", pair.a, "addr", "add", "192.0.2.20/24", "dev", A_IF)
    ip("-n", pair.a, "addr", "add", "192.0.2.21/32", "dev", A_IF)
    ip("-n", pair.a, "addr", "add", "2001:db8::20/64", "dev", A_IF, "nodad")
    ours = ["192.0.2.20/24", "192.0.2.21/24", "2001:db8::20/64", "192.0.2.22/24"]
    results = run_py(
        pair.a,
        NETLINK_OPS,
        [["add", A_IF, ours], ["remove", A_IF, ours], ["remove", A_IF, ours]],
    )
    assert results[1:] == [None, None], results

    info = addr_info(pair, pair.a, A_IF)
    assert "192.0.2.20/24" in info
    assert "192.0.2.21/32" in info
    assert "2001:db8::20/64" in info
    assert "192.0.2.21/24" not in info
    assert "192.0.2.22/24" not in info


def test_remove_keeps_the_secondaries_of_a_vip(pair: Pair) -> None:
    # Our VIP is first in 192.0.2.128/25, so the admin's address there becomes its secondary.
    results = run_py(pair.a, NETLINK_OPS, [["add", A_IF, ["192.0.2.130/25"]]])
    assert "error" not in results[0]
    ip("-n", pair.a, "addr", "add", "192.0.2.131/25", "dev", A_IF)
    results = run_py(
        pair.a,
        NETLINK_OPS,
        [["add", A_IF, ["192.0.2.132/25"]], ["remove", A_IF, ["192.0.2.130/25"]]],
    )
    assert results[1] is None

    info = addr_info(pair, pair.a, A_IF)
    assert "192.0.2.130/25" not in info
    assert "192.0.2.131/25" in info  # the kernel would have deleted it along with the VIP
    assert "192.0.2.132/25" in info  # and another instance's VIP too
    (value,) = run_py(
        pair.a,
        f"print(json.dumps([open('/proc/sys/net/ipv4/conf/{A_IF}/promote_secondaries').read()]))",
    )
    assert value.strip() == "1"


def test_remove_stale_after_sigkill(pair: Pair, background: Background) -> None:
    ip("-n", pair.a, "link", "add", "vkbr", "type", "bridge")
    ip("-n", pair.a, "addr", "add", "192.0.2.40/24", "dev", A_IF)  # the admin's
    previous = background.start(
        pair.a,
        NETLINK_OPS,
        [
            ["add", A_IF, ["192.0.2.40/24", "192.0.2.41/24", "2001:db8::41/64"]],
            ["add", "vkbr", ["192.0.2.42/32"]],
            ["ready", 30],
        ],
    )
    # The agent dies without cleaning up, as with kill -9 or the OOM killer.
    previous.send_signal(signal.SIGKILL)
    previous.wait(timeout=STEP_TIMEOUT)
    assert "192.0.2.41/24" in addr_info(pair, pair.a, A_IF)

    results = run_py(pair.a, NETLINK_OPS, [["remove_stale"], ["remove_stale"]])
    assert sorted(map(tuple, results[0])) == [
        ("vka", "192.0.2.41/24"),
        ("vka", "2001:db8::41/64"),
        ("vkbr", "192.0.2.42/32"),
    ]
    assert results[1] == []
    info = addr_info(pair, pair.a, A_IF)
    assert "192.0.2.40/24" in info
    assert "192.0.2.41/24" not in info
    assert "2001:db8::41/64" not in info
    assert addr_info(pair, pair.a, "vkbr") == {}


def test_interfaces_and_choice_of_interface(pair: Pair) -> None:
    results = run_py(
        pair.a,
        NETLINK_OPS,
        [["add", A_IF, ["192.0.2.50/24"]], ["interfaces", "192.0.2.77/32"]],
    )
    view = results[1]
    by_name = {i["name"]: i for i in view["interfaces"]}
    assert set(by_name) == {"lo", A_IF}
    vka = by_name[A_IF]
    (link,) = ip_json(pair.a, "link", "show", "dev", A_IF)
    assert vka["index"] == link["ifindex"]
    assert vka["up"] is True
    assert vka["mac"] == pair.mac(pair.a, A_IF).hex()
    assert f"{A_V4}/24" in vka["addresses"]
    assert f"{A_V6}/64" in vka["addresses"]
    assert "192.0.2.50/24" not in vka["addresses"]  # ours: a VIP is not the node's address
    assert view["chosen"] == A_IF
    assert view["primary4"] == A_V4
    assert view["primary6"] == pair.link_local(pair.a, A_IF)

    ip("-n", pair.a, "link", "set", A_IF, "down")
    view = run_py(pair.a, NETLINK_OPS, [["interfaces", "192.0.2.99/32"]])[0]
    vka = next(i for i in view["interfaces"] if i["name"] == A_IF)
    assert vka["up"] is False
    assert view["chosen"] == A_IF
    # Unless net.ipv6.conf.*.keep_addr_on_down is set, the kernel flushes every IPv6 address
    # of an interface that goes down (IPv4 ones stay): IPv6 VIPs must be re-added after that.
    assert not any(":" in a for a in vka["addresses"])


# --- VrrpSocket -------------------------------------------------------------------------------

ADVERT = "3133640100640000c000020a"  # a VRRPv3 advertisement for 192.0.2.10 (checksum not set)


@pytest.mark.parametrize(
    ("family", "destination", "group"),
    [
        (socket.AF_INET, "224.0.0.18", "224.0.0.18"),
        (socket.AF_INET, B_V4, None),
        (socket.AF_INET6, "ff02::12", "ff02::12"),
        (socket.AF_INET6, B_V6, None),
    ],
    ids=["v4-multicast", "v4-unicast", "v6-multicast", "v6-unicast"],
)
def test_vrrp_socket_send_and_receive(
    pair: Pair, background: Background, family: int, destination: str, group: str | None
) -> None:
    # IPv6 adverts come from the link-local address (RFC 5798 §5.1.2.1); unicast ones need not.
    source = (
        A_V4 if family == socket.AF_INET else (pair.link_local(pair.a, A_IF) if group else A_V6)
    )
    receiver = background.start(pair.b, VRRP_RECEIVE, family, group, 1, 5.0)
    sent = run_py(pair.a, VRRP_SEND, family, destination, source, ADVERT)
    received = background.result(receiver)

    assert sent == {"echoed": 0}  # IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP off
    assert received["framing_errors"] == 0
    assert received["datagrams"] == [
        {
            "source": source,
            "destination": destination,
            "ttl": 255,
            "ifindex": received["ifindex"],
            "payload": ADVERT,
        }
    ]


def test_vrrp_socket_multicast_needs_a_join(pair: Pair, background: Background) -> None:
    receiver = background.start(pair.b, VRRP_RECEIVE, socket.AF_INET, None, 1, 1.0)
    run_py(pair.a, VRRP_SEND, socket.AF_INET, "224.0.0.18", A_V4, ADVERT)
    assert background.result(receiver)["datagrams"] == []


def test_vrrp_socket_membership_is_counted(pair: Pair) -> None:
    states = run_py(pair.a, MEMBERSHIP)
    assert states == [[False, False], [True, True], [True, True], [False, False]]


def test_frame_ipv4() -> None:
    header = bytes.fromhex("45c0002000004000ff70" + "0000" + "c0000201" + "e0000012")
    payload = bytes.fromhex(ADVERT)
    assert frame_ipv4(header + payload) == (
        ipaddress.IPv4Address(A_V4),
        ipaddress.IPv4Address("224.0.0.18"),
        255,
        payload,
    )
    # IHL 6: a router alert option; the payload starts after it.
    with_option = bytes.fromhex("46c0002400004000ff700000c0000201e000001294040000")
    assert frame_ipv4(with_option + payload)[3] == payload  # type: ignore[index]
    # Link-layer padding beyond Total Length is not payload.
    assert frame_ipv4(header + payload + b"\0" * 6)[3] == payload  # type: ignore[index]
    assert frame_ipv4(header[:19]) is None
    assert frame_ipv4(b"\x60" + header[1:] + payload) is None  # not IPv4
    assert frame_ipv4(b"\x44" + header[1:] + payload) is None  # IHL below 5
    assert frame_ipv4(b"\x4f" + header[1:] + payload) is None  # IHL beyond the data


def test_parse_ipv6_ancillary() -> None:
    group = ipaddress.IPv6Address("ff02::12")
    pktinfo = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, group.packed + (7).to_bytes(4, "little"))
    hoplimit = (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, (255).to_bytes(4, "little"))
    assert parse_ipv6_ancillary([pktinfo, hoplimit]) == (group, 7, 255)
    assert parse_ipv6_ancillary([hoplimit]) is None
    assert parse_ipv6_ancillary([pktinfo]) is None


# --- Announcer --------------------------------------------------------------------------------

ETH_P_ARP, ETH_P_IPV6 = 0x0806, 0x86DD


def test_gratuitous_arp_request_and_reply(pair: Pair, background: Background) -> None:
    capture = background.start(pair.b, CAPTURE, ETH_P_ARP, 1.5)
    report = run_py(pair.a, ANNOUNCE, ["192.0.2.10/24"], 1, 0.0, 0.0, 0.0, 0.3)
    frames = [bytes.fromhex(f) for _, f in background.result(capture)]

    mac = pair.mac(pair.a, A_IF)
    vip = ipaddress.IPv4Address("192.0.2.10")
    garps = [f for f in frames if f[6:12] == mac]
    assert garps == [garp_request(mac, vip), garp_reply(mac, vip)]
    assert report["sent_by_start"] == 2  # sent synchronously, inside start()
    assert report["errors"] == 0


def icmpv6_checksum(source: str, destination: str, message: bytes) -> int:
    """RFC 4443 §2.3: over the RFC 8200 §8.1 pseudo-header and the message."""
    data = (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + len(message).to_bytes(4, "big")
        + bytes(3)
        + bytes([58])
        + message
        + bytes(len(message) % 2)
    )
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_unsolicited_na(pair: Pair, background: Background) -> None:
    capture = background.start(pair.b, CAPTURE, ETH_P_IPV6, 1.5)
    report = run_py(pair.a, ANNOUNCE, ["2001:db8::10/64"], 1, 0.0, 0.0, 0.0, 0.3)
    frames = [bytes.fromhex(f) for _, f in background.result(capture)]
    assert (report["sent_by_start"], report["errors"]) == (1, 0)

    mac = pair.mac(pair.a, A_IF)
    vip = ipaddress.IPv6Address("2001:db8::10")
    nas = [f for f in frames if f[6:12] == mac and f[14 + 6] == 58 and f[14 + 40] == 136]
    assert len(nas) == 1, frames
    (frame,) = nas
    assert frame[:6] == bytes.fromhex("333300000001")  # ff02::1
    packet = IPv6(frame[14:])
    assert packet.hlim == 255
    assert packet.src == pair.link_local(pair.a, A_IF)
    assert packet.dst == "ff02::1"
    body = frame[14 + 40 :]
    expected = unsolicited_na(mac, vip)
    assert body[:2] + body[4:] == expected[:2] + expected[4:]
    # The kernel filled in the checksum we left at 0.
    checksum = int.from_bytes(body[2:4], "big")
    zeroed = body[:2] + b"\0\0" + body[4:]
    assert checksum != 0
    assert checksum == icmpv6_checksum(packet.src, packet.dst, zeroed)


def test_announce_schedule(pair: Pair, background: Background) -> None:
    capture = background.start(pair.b, CAPTURE, ETH_P_ARP, 2.5)
    # A burst of 2, 0.2 s apart; again at 0.8 s; then a refresh every 0.5 s until 1.7 s.
    report = run_py(pair.a, ANNOUNCE, ["192.0.2.10/24"], 2, 0.2, 0.8, 0.5, 1.7)
    mac = pair.mac(pair.a, A_IF)
    request = garp_request(mac, ipaddress.IPv4Address("192.0.2.10")).hex()
    times = [t - report["started"] for t, f in background.result(capture) if f == request]

    expected = [0.0, 0.2, 0.8, 1.0, 1.5]
    assert len(times) == len(expected), times
    for seen, planned in zip(times, expected, strict=True):
        assert planned - 0.01 <= seen <= planned + 0.15, (times, expected)
    assert report["sent_by_end"] == 2 * len(expected)
    assert report["sent_after_stop"] == report["sent_by_end"]


# --- LinkWatcher ------------------------------------------------------------------------------


def test_link_watcher_reports_down_and_up(pair: Pair, background: Background) -> None:
    watcher = background.start(pair.a, WATCH_LINKS, 15)

    def next_change() -> Any:
        line = background.readline(watcher, 5.0)
        assert line, "no link change reported within 5 s"
        return json.loads(line)

    ip("-n", pair.a, "link", "set", A_IF, "down")
    assert next_change() == [A_IF, False]
    ip("-n", pair.a, "link", "set", A_IF, "up")
    assert next_change() == [A_IF, True]
    # Carrier loss: the peer end goes down, ours stays administratively up.
    ip("-n", pair.b, "link", "set", B_IF, "down")
    assert next_change() == [A_IF, False]
    ip("-n", pair.b, "link", "set", B_IF, "up")
    assert next_change() == [A_IF, True]
    # Changes that are not up/down are not reported, nor is a new interface that is down.
    ip("-n", pair.a, "link", "set", A_IF, "mtu", "1400")
    ip("-n", pair.a, "link", "add", "vkx0", "type", "veth", "peer", "name", "vkx1")
    ip("-n", pair.a, "link", "set", "vkx1", "up")  # no carrier until its peer is up too
    ip("-n", pair.a, "link", "set", "vkx0", "up")
    assert sorted([next_change(), next_change()]) == [["vkx0", True], ["vkx1", True]]
    ip("-n", pair.a, "link", "del", "vkx0")  # takes its peer with it
    assert sorted([next_change(), next_change()]) == [["vkx0", False], ["vkx1", False]]
    watcher.send_signal(signal.SIGTERM)


def test_link_watcher_recovers_lost_events(pair: Pair) -> None:
    # The down event itself may be among those dropped; the resynchronisation must report it.
    result = run_py(pair.a, OVERFLOW_LINK_EVENTS)
    assert result["changes"] == [[A_IF, False]]
    assert result["warnings"] == [
        "link events lost (No buffer space available); resubscribing to link events"
    ]
