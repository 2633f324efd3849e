"""Hand-crafted VRRP advertisements on a lab segment, built by scapy (the independent encoder).

The conformance tests must not trust the agent's own codec to produce the packets that test it,
so every advert here comes from scapy, including the deliberately broken ones (TTL, checksum).

Runs inside a node's namespace as a small server (``Injector`` starts it and is its client): one
JSON command per line on stdin, one JSON answer per line on stdout. One process per node keeps
scapy's import off every step of a test, and lets a "steady master" advertise from a thread
(``stream``/``stop``, optionally resigning with priority 0) while the test does other things;
``capture_start``/``capture_stop`` return the adverts another router put on the link meanwhile.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

# Imported whole, before any capture: the layers register the link and protocol types the
# sniffer dissects with, or it sees only raw bytes.
from scapy.arch import get_if_hwaddr
from scapy.config import conf
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRP, VRRPv3
from scapy.sendrecv import AsyncSniffer

if TYPE_CHECKING:
    from conftest import Agents

    from vipkeeper_lab.agents import VipkeeperHandle

#: Bound on every answer of the server (its start included: scapy's import is slow on a busy box).
ANSWER_TIMEOUT = 30.0
GROUP_V4 = "224.0.0.18"
GROUP_V6 = "ff02::12"
#: Added to a correct checksum to spoil it; never a multiple of 0xFFFF, so the result is wrong
#: in ones' complement too (0x0000 and 0xFFFF are the same value there).
CHECKSUM_SPOILER = 0x1234


@dataclass(frozen=True)
class Advert:
    """One advertisement as it goes on the wire; defaults are those of a well-behaved peer."""

    version: int
    vrid: int
    priority: int
    #: Version 3: centiseconds. Version 2: the wire carries whole seconds (interval_cs // 100).
    interval_cs: int
    addresses: tuple[str, ...]
    source: str
    ttl: int = 255
    bad_checksum: bool = False
    #: Version 2 only: 0 none, 1 simple text password.
    auth_type: int = 0
    password: str = ""

    @property
    def family(self) -> int:
        return 6 if ":" in self.source else 4

    def group(self) -> str:
        return GROUP_V6 if self.family == 6 else GROUP_V4

    def with_(self, **changes: Any) -> Advert:
        return replace(self, **changes)


# --- the server side (runs in the namespace) ---------------------------------------------------


def _frame(advert: Advert, mac: str) -> Any:
    common: dict[str, Any] = {
        "vrid": advert.vrid,
        "priority": advert.priority,
        "addrlist": list(advert.addresses),
    }
    vrrp: Any
    if advert.version == 2:
        auth = advert.password.encode().ljust(8, b"\x00")
        vrrp = VRRP(
            adv=advert.interval_cs // 100,
            authtype=advert.auth_type,
            auth1=int.from_bytes(auth[:4]),
            auth2=int.from_bytes(auth[4:]),
            **common,
        )
    else:
        vrrp = VRRPv3(adv=advert.interval_cs, **common)
    ip: Any
    if advert.family == 4:
        ip = IP(src=advert.source, dst=advert.group(), ttl=advert.ttl, proto=112)
    else:
        ip = IPv6(src=advert.source, dst=advert.group(), hlim=advert.ttl, nh=112)
    frame = Ether(src=mac) / ip / vrrp
    if advert.bad_checksum:
        layer = VRRP if advert.version == 2 else VRRPv3
        correct = int(Ether(bytes(frame))[layer].chksum)
        frame[layer].chksum = (correct + CHECKSUM_SPOILER) & 0xFFFF
    return frame


def _seen(packet: Any) -> dict[str, Any] | None:
    if packet.haslayer(VRRPv3):
        layer, version, interval_cs = packet[VRRPv3], 3, int(packet[VRRPv3].adv)
    elif packet.haslayer(VRRP):
        layer, version, interval_cs = packet[VRRP], 2, int(packet[VRRP].adv) * 100
    else:
        return None
    ip = packet[IP] if packet.haslayer(IP) else packet[IPv6]
    return {
        "source": str(ip.src),
        "version": version,
        "vrid": int(layer.vrid),
        "priority": int(layer.priority),
        "interval_cs": interval_cs,
        "ttl": int(ip.ttl if packet.haslayer(IP) else ip.hlim),
        "time": float(packet.time),  # wall clock, the kernel's receive timestamp
    }


class _Server:
    def __init__(self, iface: str) -> None:
        self.iface = iface
        self.mac = str(get_if_hwaddr(iface))
        self.socket = conf.L2socket(iface=iface)
        self.lock = threading.Lock()
        self.streams: dict[str, tuple[threading.Event, threading.Thread, Advert]] = {}
        self.sniffer: Any = None

    def send(self, advert: Advert, count: int = 1, every: float = 0.0) -> float:
        frame = _frame(advert, self.mac)
        at = 0.0
        for index in range(count):
            if index:
                time.sleep(every)
            with self.lock:
                self.socket.send(frame)
            at = time.monotonic()
        return at

    def stream(self, name: str, advert: Advert, every: float) -> None:
        stop = threading.Event()
        frame = _frame(advert, self.mac)

        def run() -> None:
            # Deadlines from the start, so a slow wake-up does not slow the advert rate down.
            deadline = time.monotonic()
            while not stop.is_set():
                with self.lock:
                    self.socket.send(frame)
                deadline += every
                stop.wait(max(0.0, deadline - time.monotonic()))

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.streams[name] = (stop, thread, advert)
        thread.start()

    def stop(self, name: str, resign: bool) -> float:
        stop, thread, advert = self.streams.pop(name)
        stop.set()
        thread.join(5.0)
        if resign:
            return self.send(advert.with_(priority=0))
        return time.monotonic()

    def capture_start(self, source: str) -> None:
        self.sniffer = AsyncSniffer(
            iface=self.iface,
            store=True,
            lfilter=lambda p: (s := _seen(p)) is not None and s["source"] == source,
        )
        self.sniffer.start()
        # AsyncSniffer opens its socket in its own thread: wait until it listens.
        deadline = time.monotonic() + 10.0
        while not getattr(self.sniffer, "running", False) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)

    def capture_stop(self) -> list[dict[str, Any]]:
        packets = self.sniffer.stop() if self.sniffer is not None else []
        self.sniffer = None
        return [s for p in packets if (s := _seen(p)) is not None]

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        raw = command.get("advert")
        advert = None if raw is None else Advert(**{**raw, "addresses": tuple(raw["addresses"])})
        if op == "send" and advert is not None:
            return {"at": self.send(advert, int(command["count"]), float(command["every"]))}
        if op == "stream" and advert is not None:
            self.stream(command["name"], advert, float(command["every"]))
            return {}
        if op == "stop":
            return {"at": self.stop(command["name"], bool(command["resign"]))}
        if op == "capture_start":
            self.capture_start(command["source"])
            return {}
        if op == "capture_stop":
            return {"adverts": self.capture_stop()}
        raise ValueError(f"bad command {command!r}")


def serve(iface: str) -> None:
    server = _Server(iface)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            answer = {"ok": True, **server.handle(json.loads(line))}
        except Exception as exc:  # The test gets the error instead of a hang.
            answer = {"ok": False, "error": repr(exc)}
        print(json.dumps(answer), flush=True)


# --- the test side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One protocol flavour a checklist item is walked with."""

    version: int
    family: int
    #: The agent's advert interval: short for version 3, version 2 has whole seconds only.
    interval: Decimal

    @property
    def vip(self) -> str:
        return "192.0.2.100/24" if self.family == 4 else "2001:db8::100/64"

    @property
    def vip_ip(self) -> str:
        return self.vip.split("/", 1)[0]

    @property
    def other_ip(self) -> str:
        """An address the agent is not configured for (the address-list mismatch)."""
        return "192.0.2.101" if self.family == 4 else "2001:db8::101"

    @property
    def interval_cs(self) -> int:
        return int(self.interval * 100)

    def __str__(self) -> str:
        return f"v{self.version}-ipv{self.family}"


V2_IPV4 = Variant(2, 4, Decimal(1))
V3_IPV4 = Variant(3, 4, Decimal("0.1"))
V3_IPV6 = Variant(3, 6, Decimal("0.1"))
VARIANTS = (V2_IPV4, V3_IPV4, V3_IPV6)


def vrrp_source(ns: str, family: int, iface: str = "eth0") -> str:
    """The address a VRRP router in ``ns`` advertises from: the interface's IPv4 address, or its
    IPv6 link-local one (RFC 5798 §5.1.2.1), which is also what the tie-break compares."""
    scope = ["scope", "global"] if family == 4 else ["scope", "link"]
    out = subprocess.run(
        ["ip", "-n", ns, "-j", f"-{family}", "addr", "show", "dev", iface, *scope],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    # iproute2 prints {} for the addresses its scope filter left out.
    found = [a["local"] for link in json.loads(out) for a in link["addr_info"] if "local" in a]
    if not found:
        raise InjectorError(f"no IPv{family} VRRP source address on {iface} in {ns}")
    return str(found[0])


class InjectorError(RuntimeError):
    pass


class Injector:
    """The injector server in namespace ``ns``; ``close()`` stops it (by its own PID)."""

    def __init__(self, ns: str, iface: str = "eth0") -> None:
        # `ip netns exec` execs the interpreter in place: the PID is the server's own.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), iface],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ns = ns
        self._selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            self._answer()  # "ready": scapy is imported and the link socket open.
        except BaseException:
            self.close()
            raise

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        # Strictly one answer per command, so nothing can sit in the reader's buffer unseen.
        if not self._selector.select(ANSWER_TIMEOUT):
            raise InjectorError(f"injector in {self.ns}: no answer in {ANSWER_TIMEOUT} s")
        line = self.proc.stdout.readline()
        if not line:
            raise InjectorError(f"injector in {self.ns} exited ({self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("ok") is False:
            raise InjectorError(f"injector in {self.ns}: {answer['error']}")
        return answer

    def _call(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def send(self, advert: Advert, count: int = 1, every: float = 0.05) -> float:
        """Send ``count`` copies; the monotonic time (shared with this process) of the last."""
        return float(self._call(op="send", advert=asdict(advert), count=count, every=every)["at"])

    def stream(self, name: str, advert: Advert, every: float) -> None:
        self._call(op="stream", name=name, advert=asdict(advert), every=every)

    def stop(self, name: str, resign: bool = False) -> float:
        """End a stream; the monotonic time its last word (the resignation, if any) went out."""
        return float(self._call(op="stop", name=name, resign=resign)["at"])

    def capture_start(self, source: str) -> None:
        self._call(op="capture_start", source=source)

    def capture_stop(self) -> list[dict[str, Any]]:
        adverts: list[dict[str, Any]] = self._call(op="capture_stop")["adverts"]
        return adverts

    def close(self) -> None:
        self._selector.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        for stream in (self.proc.stdin, self.proc.stdout):
            stream and stream.close()


#: The VRID of the instance under test.
VRID = 51


def peer_advert(
    ns: str, variant: Variant, priority: int, *, vrid: int = VRID, **fields: Any
) -> Advert:
    """A well-formed advert of a peer in namespace ``ns``; ``fields`` change (or spoil) it."""
    advert = Advert(
        version=variant.version,
        vrid=vrid,
        priority=priority,
        interval_cs=variant.interval_cs,
        addresses=(variant.vip_ip,),
        source=vrrp_source(ns, variant.family),
    )
    return advert.with_(**fields)


def start_agent(
    agents: Agents,
    variant: Variant,
    priority: int,
    *,
    node: str = "n1",
    log_level: str = "info",
    **extra: Any,
) -> VipkeeperHandle:
    """The agent under test, with one instance ``web`` of this variant; returns once it answers."""
    spec = agents.instance(
        priority,
        vrid=VRID,
        version=variant.version,
        interval=variant.interval,
        addresses=[variant.vip],
        **extra,
    )
    handle = agents.lab.start_vipkeeper(node, agents.config(spec), log_level=log_level)
    agents.wait_ready(handle)
    return handle


def make_master(
    agents: Agents, handle: VipkeeperHandle, variant: Variant, peer: Injector, resign: Advert
) -> None:
    """Bring the agent (BACKUP, alone on the segment) to MASTER with the VIP.

    Alone it would wait Master_Down (3.6 s for version 2); ``resign``, a priority-0 advert of a
    master stepping down, cuts that to Skew_Time. Only a shortcut: the bound still allows for
    Master_Down, so a test does not depend on it.
    """
    info = agents.wait_state(handle, "BACKUP", timeout=5)
    peer.send(resign.with_(priority=0))
    interval = Decimal(str(info["advertInterval"]))
    bound = agents.mdi(int(info["priority"]), interval, variant.version) + 5.0
    agents.wait_state(handle, "MASTER", timeout=bound)
    agents.wait_holders(variant.vip, [handle.node], timeout=5)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "eth0")
