"""The lab of test_agent_ipvs.py: a director running vipkeeper-agent, web backends, a client.

Every node is a network namespace on one bridge (``vipkeeper_lab.netns.Segment``), plus a
point-to-point link from the client to the director for NAT, whose replies must come back
through the director::

    client eth1 10.0.2.2-7 ──── 10.0.2.1 eth1  director  (NAT VIP 10.0.2.100 on eth1)
    client eth0 10.0.3.2 ─┐                      eth0 10.0.3.1   (DR VIP 10.0.3.100 on eth0)
                          └── bridge 10.0.3.0/24 ── b1 .11  b2 .12  b3 .13  sorry .20

The backends are busybox httpd (no Python start-up, which costs seconds under TCG) answering
``GET /`` with their name; they also carry the DR VIP on ``lo`` with ARP silenced, as
``examples/lvs-dr-real-server.sh`` sets up a DR real server. The client's requests are made from
this process through sockets created inside the client's namespace (see :func:`socket_in`), and
the kernel's IPVS table is read with ``ipvsadm`` inside the director's namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vipkeeper_lab.agents import (
    StatusUnavailableError,
    agent_executable,
    read_status_socket,
    render_agent_yaml,
)
from vipkeeper_lab.netns import (
    NETNS_DIR,
    Segment,
    interface_addresses,
    list_namespaces,
    new_prefix,
    ns_argv,
    run,
)
from vipkeeper_lab.procs import Proc, spawn, tail

T = TypeVar("T")

VIP_NAT = "10.0.2.100"
VIP_DR = "10.0.3.100"
CLIENT_LAN = "10.0.3.2"
#: The client's addresses on its NAT link: several "clients" for the hashing/persistence tests.
CLIENTS = tuple(f"10.0.2.{i}" for i in range(2, 8))
BACKENDS = {"b1": "10.0.3.11", "b2": "10.0.3.12", "b3": "10.0.3.13"}
SORRY = ("sorry", "10.0.3.20")
#: Under TCG the agent needs ~5 s just to import; every wait is bounded well above that.
START_TIMEOUT = 60.0
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def wait_for(
    what: str,
    predicate: Callable[[], T | None],
    timeout: float,
    describe: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with what was last seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = f"\nlast seen: {describe()}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(interval)


# --- the client: sockets of another namespace, made in-process ---------------------------------


def socket_in(ns: str) -> socket.socket:
    """A TCP socket in namespace ``ns``. setns(2) moves only the calling thread, so a throwaway
    thread enters ``ns`` and creates the socket, which keeps that namespace for life: no
    ``ip netns exec python`` (seconds under TCG) per client connection."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=enter, name=f"setns-{ns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def http_get(ns: str, host: str, port: int, source: str | None = None, timeout: float = 5.0) -> str:
    """``GET /`` from namespace ``ns`` (from ``source`` if given); the body, stripped."""
    with socket_in(ns) as sock:
        sock.settimeout(timeout)
        if source is not None:
            sock.bind((source, 0))
        sock.connect((host, port))
        sock.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    assert re.match(rb"HTTP/1\.[01] 200", status), f"{host}:{port} answered {data[:200]!r}"
    return body.decode(errors="replace").strip()


# --- the kernel's IPVS table, as ipvsadm shows it -------------------------------------------------


@dataclass(frozen=True)
class KernelService:
    #: What follows the address on ipvsadm's service line: scheduler and flags ("rr persistent 60").
    scheduler: str
    #: "10.0.3.11:80" -> (forwarding as ipvsadm names it, weight).
    dests: Mapping[str, tuple[str, int]]


def ipvsadm(ns: str, *args: str) -> str:
    return run(ns_argv(ns, ["ipvsadm", *args]), timeout=30.0).stdout


def kernel_table(ns: str) -> dict[str, KernelService]:
    return parse_ipvsadm(ipvsadm(ns, "-Ln"))


def parse_ipvsadm(text: str) -> dict[str, KernelService]:
    """``ipvsadm -Ln`` as {"TCP 10.0.2.100:80": KernelService}: no connection counts, so that
    two readings of an unchanged table compare equal."""
    table: dict[str, KernelService] = {}
    name: str | None = None
    scheduler = ""
    dests: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        svc = re.match(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s+(.*?)\s*$", line)
        dest = re.match(r"^\s+->\s+(\d\S+)\s+(\w+)\s+(\d+)", line)
        if svc:
            if name is not None:
                table[name] = KernelService(scheduler, dests)
            name, scheduler, dests = f"{svc[1]} {svc[2]}", svc[3], {}
        elif dest and name is not None:
            dests[dest[1]] = (dest[2], int(dest[3]))
    if name is not None:
        table[name] = KernelService(scheduler, dests)
    return table


def kernel_stats(ns: str) -> dict[str, tuple[int, ...]]:
    """``ipvsadm -Ln --stats --exact``: service or "service -> dest" to (conns, inpkts,
    outpkts, inbytes, outbytes). The kernel folds its per-CPU counters in every 2 s."""
    stats: dict[str, tuple[int, ...]] = {}
    name = ""
    for line in ipvsadm(ns, "-Ln", "--stats", "--exact").splitlines():
        svc = re.match(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)((?:\s+\d+){5})\s*$", line)
        dest = re.match(r"^\s+->\s+(\S+)((?:\s+\d+){5})\s*$", line)
        if svc:
            name = f"{svc[1]} {svc[2]}"
            stats[name] = tuple(int(n) for n in svc[3].split())
        elif dest and name:
            stats[f"{name} -> {dest[1]}"] = tuple(int(n) for n in dest[2].split())
    return stats


def persistence_templates(ns: str) -> list[tuple[str, str, str]]:
    """The persistence templates of ``ipvsadm -Lnc``: (client, virtual, real). A template is the
    entry with client port 0 (its state reads ASSURED or NONE depending on the kernel)."""
    found = []
    for line in ipvsadm(ns, "-Lnc").splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[3].endswith(":0"):
            found.append((parts[3], parts[4], parts[5]))
    return found


# --- the nodes -------------------------------------------------------------------------------


@dataclass
class Backend:
    """busybox httpd on port 80 of its namespace, answering ``GET /`` with its name."""

    name: str
    ns: str
    address: str
    docroot: Path
    proc: Proc | None = None

    def start(self) -> None:
        self.docroot.mkdir(parents=True, exist_ok=True)
        (self.docroot / "index.html").write_text(f"{self.name}\n")
        # -f: stay in the foreground, so the PID we get is the server's; -v: log each client.
        argv = ["busybox", "httpd", "-f", "-v", "-p", "80", "-h", str(self.docroot)]
        self.proc = spawn(
            ns_argv(self.ns, argv), self.name, self.docroot.parent / f"{self.name}.log"
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill(signal.SIGKILL)
            self.proc.wait(10.0)
            self.proc = None

    def log(self) -> str:
        return "" if self.proc is None else self.proc.log_text()


@dataclass
class Agent:
    proc: Proc
    socket_path: Path

    def status(self) -> dict[str, Any] | None:
        try:
            return read_status_socket(self.socket_path, timeout=5.0)
        except StatusUnavailableError:
            return None

    def ipvs(self) -> dict[str, Any]:
        status = self.status()
        assert status is not None, f"the agent does not answer:\n{tail(self.proc.log_text(), 30)}"
        ipvs = status.get("ipvs")
        assert isinstance(ipvs, dict), status
        return ipvs

    def virtual_server(self, name: str) -> dict[str, Any]:
        for vs in self.ipvs()["virtualServers"]:
            if vs["name"] == name:
                return dict(vs)
        raise AssertionError(f"no virtual server {name!r} in the agent's status")

    def log(self, lines: int = 30) -> str:
        return tail(self.proc.log_text(), lines)

    def status_ipvs_text(self) -> str:
        """What ``vipkeeper-agent status --ipvs`` prints (the CLI, as a user runs it)."""
        argv = [str(agent_executable()), "status", "--status-socket", str(self.socket_path)]
        return run([*argv, "--ipvs"], timeout=START_TIMEOUT).stdout


@dataclass
class DirectorLab:
    """The namespaces of the module docstring, the backends' servers and the agents started;
    :meth:`close` stops every process by its PID, then deletes the namespaces."""

    workdir: Path
    segment: Segment = field(default_factory=lambda: Segment(new_prefix()))
    backends: dict[str, Backend] = field(default_factory=dict)
    agent: Agent | None = None
    agents: list[Agent] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.segment.prefix}-{role}"

    @property
    def director(self) -> str:
        return self.ns("dir")

    @property
    def client(self) -> str:
        return self.ns("cli")

    def build(self) -> None:
        seg = self.segment
        seg.create()
        director = seg.attach("dir", _v4("10.0.3.1/24"), _v6(1))
        # NAT: replies are forwarded back by the director; the agent checks this sysctl.
        run(ns_argv(director.ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        client = seg.attach("cli", _v4(f"{CLIENT_LAN}/24"), _v6(2))
        run(
            [
                *("ip", "-n", client.ns, "link", "add", "eth1", "type", "veth"),
                *("peer", "name", "eth1", "netns", director.ns),
            ]
        )
        run(["ip", "-n", director.ns, "addr", "add", "10.0.2.1/24", "dev", "eth1"])
        run(["ip", "-n", director.ns, "link", "set", "eth1", "up"])
        for address in CLIENTS:
            run(["ip", "-n", client.ns, "addr", "add", f"{address}/24", "dev", "eth1"])
        run(["ip", "-n", client.ns, "link", "set", "eth1", "up"])
        for index, (name, address) in enumerate([*BACKENDS.items(), SORRY], start=11):
            node = seg.attach(name, _v4(f"{address}/24"), _v6(index))
            run(["ip", "-n", node.ns, "route", "add", "default", "via", "10.0.3.1"])
            # A DR real server: the VIP on lo, never announced nor answered for in ARP.
            run(["ip", "-n", node.ns, "addr", "add", f"{VIP_DR}/32", "dev", "lo"])
            sysctls = ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]
            run(ns_argv(node.ns, ["sysctl", "-q", "-w", *sysctls]))
            self.backends[name] = Backend(name, node.ns, address, self.workdir / "www" / name)
        for backend in self.backends.values():
            backend.start()
        for backend in self.backends.values():
            self.wait_serving(backend)

    def wait_serving(self, backend: Backend) -> None:
        def answers() -> bool:
            assert backend.proc is not None and backend.proc.alive(), backend.log()
            try:
                return http_get(self.director, backend.address, 80, timeout=2.0) == backend.name
            except OSError:
                return False

        wait_for(f"{backend.name} to serve", answers, START_TIMEOUT, backend.log)

    def get(self, port: int, source: str | None = None, vip: str = VIP_NAT) -> str:
        return http_get(self.client, vip, port, source)

    def table(self) -> dict[str, KernelService]:
        return kernel_table(self.director)

    def director_addresses(self) -> set[str]:
        return {str(address.ip) for _, address in interface_addresses(self.director)}

    def start_agent(self, config: Mapping[str, Any], *args: str) -> Agent:
        """vipkeeper-agent in the director's namespace; returns once its status answers."""
        n = len(self.agents)
        config_path = self.workdir / "agent.yaml"
        config_path.write_text(render_agent_yaml(config))
        socket_path = self.workdir / f"agent{n}.sock"
        argv = [
            str(agent_executable()),
            *("--config", str(config_path), "--status-socket", str(socket_path)),
            *("--maintenance-file", str(self.workdir / "down")),
            *("--script-dir", str(self.workdir / "scripts")),
            *args,
        ]
        proc = spawn(ns_argv(self.director, argv), f"agent{n}", self.workdir / f"agent{n}.log")
        agent = Agent(proc, socket_path)
        self.agents.append(agent)
        self.agent = agent

        def answers() -> bool:
            assert proc.alive(), f"the agent exited ({proc.returncode}):\n{agent.log()}"
            return agent.status() is not None

        wait_for("the agent's status socket", answers, START_TIMEOUT, agent.log)
        return agent

    def stop_agent(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the current agent and wait for it to exit; its exit status."""
        agent = self.agent
        assert agent is not None
        agent.proc.kill(sig, group=False)
        code = agent.proc.wait(timeout)
        assert code is not None, f"the agent did not exit within {timeout:g} s:\n{agent.log()}"
        self.agent = None
        return code

    def close(self) -> None:
        # By PID first (the agent gracefully), then whatever is left in the namespaces.
        for agent in self.agents:
            agent.proc.stop()
        for backend in self.backends.values():
            backend.stop()
        self.segment.close()
        leftovers = [ns for ns in list_namespaces() if ns.startswith(self.segment.prefix + "-")]
        assert leftovers == [], f"namespaces left behind: {leftovers}"


def _v4(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


def _v6(host: int) -> ipaddress.IPv6Interface:
    # The segment gives every node an IPv6 address too; these tests do not use them.
    return ipaddress.IPv6Interface(f"fd00:3::{host}/64")
