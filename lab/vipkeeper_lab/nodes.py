"""The testbed: N VRRP nodes and one client on one Ethernet segment, each in its own namespace.

    with Lab(nodes=3) as lab:
        lab.start_http_servers()
        agents = [lab.start_keepalived(n, config(prio)) for n, prio in zip(lab.nodes, (150, 100))]
        master = lab.wait_master(agents, vip="192.0.2.100")
        probes = lab.start_probes("192.0.2.100")
        fault_at = lab.crash(master)
        ...

Teardown is unconditional: leaving the ``with`` block (normally, by exception, Ctrl-C, SIGTERM or
SIGHUP) stops every process the lab started by its PID, kills anything else left inside the lab's
namespaces, deletes the namespaces and removes the work directory.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from vipkeeper_lab import housekeeping, netns
from vipkeeper_lab.agents import (
    AgentHandle,
    VipkeeperHandle,
    agent_executable,
    render_agent_yaml,
    vipkeeper_argv,
)
from vipkeeper_lab.httpd import READY_LINE
from vipkeeper_lab.keepalived import (
    KEEPALIVED,
    KeepalivedHandle,
    KeepalivedInstance,
    KeepalivedPaths,
    instances_from_config,
    keepalived_argv,
    render_conf,
)
from vipkeeper_lab.probe import Probes
from vipkeeper_lab.procs import (
    Proc,
    acquire_subreaper,
    reap_orphans,
    release_subreaper,
    spawn,
    stop_all,
    tail,
)

T = TypeVar("T")
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

SUBNET_V4 = ipaddress.IPv4Network("192.0.2.0/24")
SUBNET_V6 = ipaddress.IPv6Network("2001:db8::/64")
CLIENT = "client"
#: Node addresses are .11-.50, which leaves .100 and up for VIPs.
MAX_NODES = 40
WORKDIR_PREFIX = "vipkeeper-lab-"


class LabError(RuntimeError):
    pass


class LabTimeoutError(LabError):
    """A bounded wait ran out; the message says what was awaited and what was seen last."""


@dataclass(frozen=True)
class Node:
    """A host on the segment (a VRRP node, or the client)."""

    name: str
    ns: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface
    mac: str
    ifname: str = "eth0"

    def __str__(self) -> str:
        return self.name


def host_addresses(index: int) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv6Interface]:
    """Addresses of node ``index`` (1-based); index 0 is the client.

    The IPv6 address mirrors the IPv4 host number (digits read as hex), so 192.0.2.11 pairs with
    2001:db8::11 and the client 192.0.2.250 with 2001:db8::250.
    """
    host = 250 if index == 0 else 10 + index
    v4 = ipaddress.IPv4Interface(f"{SUBNET_V4.network_address + host}/{SUBNET_V4.prefixlen}")
    v6 = ipaddress.IPv6Interface(f"{SUBNET_V6.network_address + int(str(host), 16)}/64")
    return v4, v6


class Lab:
    """A running testbed. Use as a context manager; every wait it offers is bounded."""

    def __init__(
        self,
        nodes: int = 3,
        *,
        prefix: str | None = None,
        base_dir: Path | None = None,
        keep_workdir: bool = False,
        handle_signals: bool = True,
    ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be 1-{MAX_NODES}, got {nodes}")
        self.prefix = prefix or netns.new_prefix()
        self.segment = netns.Segment(self.prefix)
        self.node_count = nodes
        self.nodes: list[Node] = []
        self.client: Node | None = None
        self.base_dir = base_dir or Path(tempfile.gettempdir())
        self.keep_workdir = keep_workdir
        self.workdir = Path()
        self.procs: list[Proc] = []
        #: Nodes currently cut off the segment (link down or isolated), for reports.
        self.cut_off: set[str] = set()
        self._starts = 0
        self._holds_subreaper = False
        self._registered = False
        self._handle_signals = handle_signals
        self._saved_handlers: dict[int, Any] = {}
        self._closing = False
        self._closed = False
        self._deferred_signal: int | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._install_signal_handlers()
        atexit.register(self.close)
        acquire_subreaper()
        self._holds_subreaper = True
        try:
            self.workdir = Path(
                tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{self.prefix}-", dir=self.base_dir)
            )
            # Scripts run as an unprivileged user, who must be able to reach them (but not
            # change them: the agent refuses group- or world-writable script directories).
            self.workdir.chmod(0o755)
            self.script_dir.mkdir(mode=0o755)
            # Before any namespace exists: lets `vipkeeper-lab cleanup` tell this live lab from
            # the remains of a SIGKILLed one.
            housekeeping.register(
                self.prefix, os.getpid(), self.workdir, keep_workdir=self.keep_workdir
            )
            self._registered = True
            self.segment.create()
            for index in range(1, self.node_count + 1):
                self.nodes.append(self._attach(f"n{index}", index))
            self.client = self._attach(CLIENT, 0)
        except BaseException:
            self.close()
            raise

    def _attach(self, name: str, index: int) -> Node:
        v4, v6 = host_addresses(index)
        att = self.segment.attach(name, v4, v6)
        return Node(name=name, ns=att.ns, ipv4=att.ipv4, ipv6=att.ipv6, mac=att.mac)

    def close(self) -> None:
        """Stop everything and remove every trace. Idempotent; never raises for cleanup errors."""
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            with contextlib.suppress(OSError):  # the namespace sweep below kills what is left
                stop_all(self.procs)
            self.segment.close()
            self._reap()
            if self._holds_subreaper:
                self._holds_subreaper = False
                release_subreaper()
            if self.workdir != Path() and not self.keep_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            if self._registered:
                housekeeping.unregister(self.prefix)
        finally:
            self._closed = True
            self._closing = False
            atexit.unregister(self.close)
            self._restore_signal_handlers()
        if self._deferred_signal is not None:
            signum, self._deferred_signal = self._deferred_signal, None
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)

    def _install_signal_handlers(self) -> None:
        # Python's default SIGTERM/SIGHUP kill the interpreter without unwinding, which would
        # leak namespaces and daemons; turning them into SystemExit runs __exit__ like Ctrl-C.
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            current = signal.getsignal(sig)
            if sig == signal.SIGINT and current is not signal.default_int_handler:
                continue
            if sig != signal.SIGINT and current is not signal.SIG_DFL:
                continue
            self._saved_handlers[sig] = current
            signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._saved_handlers.items():
            signal.signal(sig, handler)
        self._saved_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._closing:
            # A second Ctrl-C during teardown must not abandon half-deleted namespaces.
            self._deferred_signal = signum
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    # ----- hosts -----------------------------------------------------------------------------

    def node(self, which: Node | str) -> Node:
        """A node (or the client) by Node, name ("n1", "client") or namespace name."""
        if isinstance(which, Node):
            return which
        for host in self.hosts:
            if which in (host.name, host.ns):
                return host
        raise KeyError(f"no node {which!r} in lab {self.prefix}")

    @property
    def hosts(self) -> list[Node]:
        return [*self.nodes, *([self.client] if self.client else [])]

    @property
    def the_client(self) -> Node:
        if self.client is None:
            raise LabError("the lab is not started")
        return self.client

    def node_by_mac(self, mac: str) -> str | None:
        for host in self.hosts:
            if host.mac == mac.lower():
                return host.name
        return None

    # ----- commands and processes ------------------------------------------------------------

    def exec(
        self, where: Node | str, argv: Sequence[str], timeout: float = 10.0, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside a node's namespace and wait (at most ``timeout``) for it."""
        return netns.run(netns.ns_argv(self.node(where).ns, argv), timeout=timeout, check=check)

    def spawn(
        self,
        where: Node | str,
        argv: Sequence[str],
        log_path: Path | None = None,
        *,
        name: str | None = None,
    ) -> Proc:
        """Start a long-running process in a node's namespace; the lab stops it on close."""
        host = self.node(where)
        label = name or f"{host.name}-{Path(argv[0]).name}"
        log = log_path or self.workdir / "logs" / f"{label}.log"
        proc = spawn(netns.ns_argv(host.ns, argv), label, log)
        self.procs.append(proc)
        return proc

    def _reap(self) -> None:
        # Orphans die a moment after their group leader; give them that moment, boundedly.
        deadline = time.monotonic() + 1.0
        while reap_orphans(self.procs) and time.monotonic() < deadline:
            time.sleep(0.01)

    def python(self, module: str, *args: str) -> list[str]:
        """argv running one of the lab's modules with this interpreter (and so this venv)."""
        return [sys.executable, "-m", module, *args]

    # ----- faults ----------------------------------------------------------------------------

    def link_down(self, node: Node | str) -> None:
        """Take the node's bridge-side veth down: the node's eth0 loses carrier."""
        host = self.node(node)
        self.segment.set_port(host.ns, up=False)
        self.cut_off.add(host.name)

    def link_up(self, node: Node | str) -> None:
        host = self.node(node)
        self.segment.set_port(host.ns, up=True)
        self.cut_off.discard(host.name)

    def isolate(self, node: Node | str) -> None:
        """Detach the node from the bridge with its carrier still up: a silent partition."""
        host = self.node(node)
        self.segment.set_bridged(host.ns, bridged=False)
        self.cut_off.add(host.name)

    def rejoin(self, node: Node | str) -> None:
        host = self.node(node)
        self.segment.set_bridged(host.ns, bridged=True)
        self.cut_off.discard(host.name)

    def kill(self, agent: AgentHandle, sig: int = signal.SIGKILL) -> float:
        """Signal the agent's whole process group; returns the instant (time.time()) of the fault.

        The group matters for keepalived: SIGKILL to its parent PID alone is not a crash, since
        the VRRP child gets SIGTERM as parent-death signal and resigns gracefully (priority 0).
        """
        at = time.time()
        agent.proc.kill(sig, group=True)
        if sig == signal.SIGKILL:
            agent.proc.wait(1.0)
            self._reap()
        return at

    def crash(self, agent: AgentHandle) -> float:
        """Power-cut the agent's node: kill -9 the agent and take its link down at once.

        A bare kill -9 leaves the VIP configured on the node, which keeps answering ARP and
        serving HTTP; a crashed machine answers nothing, and only this shows the client's gap.
        """
        at = self.kill(agent)
        self.link_down(agent.node)
        return at

    def reboot(self, node: Node | str) -> None:
        """Bring a crashed node back as after a reboot: only its own addresses, link up."""
        host = self.node(node)
        own = {host.ipv4, host.ipv6}
        for ifname, addr in netns.interface_addresses(host.ns):
            if ifname == host.ifname and addr not in own and not addr.ip.is_link_local:
                self.exec(host, ["ip", "addr", "del", str(addr), "dev", ifname], check=False)
        self.link_up(host)

    # ----- observation -----------------------------------------------------------------------

    def addresses(self, node: Node | str) -> list[IPInterface]:
        host = self.node(node)
        return [a for ifname, a in netns.interface_addresses(host.ns) if ifname == host.ifname]

    def who_has(self, vip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
        """Names of the nodes whose namespace currently has ``vip`` configured."""
        ip = ipaddress.ip_interface(str(vip)).ip
        return [n.name for n in self.nodes if any(a.ip == ip for a in self.addresses(n))]

    def http_get(self, host: str, port: int = 80, timeout: float = 2.0) -> str | None:
        """GET http://host/ from the client; the answering node's name, or None."""
        ip = ipaddress.ip_address(host)
        url = f"http://[{ip}]:{port}/" if ip.version == 6 else f"http://{ip}:{port}/"
        done = self.exec(
            self.the_client,
            ["curl", "--silent", "--globoff", "--max-time", f"{timeout:g}", url],
            timeout=timeout + 5,
            check=False,
        )
        if done.returncode != 0:
            return None
        return done.stdout.strip() or None

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], T | None],
        timeout: float,
        interval: float = 0.05,
        describe: Callable[[], str] | None = None,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy; LabTimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                seen = f"; last seen: {describe()}" if describe else ""
                raise LabTimeoutError(f"timed out after {timeout:g} s waiting for {what}{seen}")
            time.sleep(interval)

    # ----- services --------------------------------------------------------------------------

    def start_http(self, node: Node | str, port: int = 80, timeout: float = 10.0) -> Proc:
        """The node's web server (answers with the node's name); returns once it listens."""
        host = self.node(node)
        argv = self.python("vipkeeper_lab.httpd", "--name", host.name, "--port", str(port))
        label = f"{host.name}-httpd"
        # Logs are appended to: a restarted server's log already holds the first one's line.
        log = self.workdir / "logs" / f"{label}.log"
        seen = log.read_text().count(READY_LINE) if log.exists() else 0
        proc = self.spawn(host, argv, name=label)

        def ready() -> bool:
            if not proc.alive():
                raise LabError(f"httpd on {host.name} exited: {proc.log_text()[-500:]}")
            return proc.log_text().count(READY_LINE) > seen

        self.wait_for(f"httpd on {host.name}", ready, timeout)
        return proc

    def start_http_servers(self, port: int = 80) -> list[Proc]:
        return [self.start_http(n, port) for n in self.nodes]

    def start_probes(
        self, vip: str, *, port: int = 80, arp_interval: float = 0.005, http_interval: float = 0.01
    ) -> Probes:
        """ARP prober (IPv4 VIPs only) and HTTP prober, both in the client namespace."""
        client = self.the_client
        ip = ipaddress.ip_interface(vip).ip
        stamp = f"{time.time():.0f}"
        arp = None
        if ip.version == 4:
            argv = self.python(
                "vipkeeper_lab.probe",
                *("arp", "--iface", client.ifname, "--target", str(ip)),
                *("--interval", str(arp_interval)),
            )
            arp = self.spawn(client, argv, name=f"probe-arp-{stamp}")
        argv = self.python(
            "vipkeeper_lab.probe",
            *("http", "--host", str(ip), "--port", str(port)),
            *("--interval", str(http_interval)),
        )
        web = self.spawn(client, argv, name=f"probe-http-{stamp}")
        return Probes(arp, web)

    # ----- agents ----------------------------------------------------------------------------

    @property
    def script_dir(self) -> Path:
        """The allowlist directory every agent of this lab takes exec checks and notify scripts from."""
        return self.workdir / "scripts"

    def install_script(self, name: str, body: str) -> Path:
        """Put an executable script into :attr:`script_dir` (root-owned, mode 0755)."""
        path = self.script_dir / name
        path.write_text(body)
        path.chmod(0o755)
        return path

    def maintenance_file(self, node: Node | str) -> Path:
        return self._node_dir(self.node(node)) / "down"

    def set_maintenance(self, node: Node | str, on: bool) -> None:
        """The keepalived idiom, per lab node: `touch down` hands over, removing it ends it."""
        path = self.maintenance_file(node)
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def _node_dir(self, host: Node) -> Path:
        path = self.workdir / host.name
        path.mkdir(exist_ok=True)
        return path

    def start_vipkeeper(
        self,
        node: Node | str,
        config: Mapping[str, Any],
        *,
        log_level: str = "info",
        executable: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> VipkeeperHandle:
        """Write ``config`` as the node's YAML file and start vipkeeper-agent on it.

        ``executable`` replaces the agent of this environment (e.g. another build to compare).
        Every agent gets the lab's script directory and a maintenance file of its own node.
        """
        host = self.node(node)
        exe = executable or agent_executable()
        if not exe.exists():
            raise LabError(f"{exe} does not exist; is the vipkeeper package installed?")
        directory = self._node_dir(host)
        config_path = directory / "vipkeeper.yaml"
        socket_path = directory / "status.sock"
        config_path.write_text(render_agent_yaml(config))
        argv = vipkeeper_argv(config_path, socket_path, log_level=log_level, executable=exe)
        argv += [
            *("--script-dir", str(self.script_dir)),
            *("--maintenance-file", str(directory / "down")),
            *extra_args,
        ]
        proc = self.spawn(host, argv, name=f"{host.name}-vipkeeper")
        return VipkeeperHandle(
            host.name, proc, config, config_path, socket_path, exe, extra_args=tuple(extra_args)
        )

    def start_keepalived(
        self,
        node: Node | str,
        settings: Mapping[str, Any] | KeepalivedInstance | Iterable[KeepalivedInstance],
    ) -> KeepalivedHandle:
        """Start keepalived (VRRP only) with its own config and pid files in the work directory.

        ``settings`` is either a vipkeeper config dict (as for :meth:`start_vipkeeper`, so one
        dict drives both implementations) or KeepalivedInstance objects.
        """
        host = self.node(node)
        if shutil.which(KEEPALIVED) is None:
            raise LabError("keepalived is not installed (apt-get install keepalived)")
        if isinstance(settings, Mapping):
            instances = instances_from_config(settings)
        elif isinstance(settings, KeepalivedInstance):
            instances = [settings]
        else:
            instances = list(settings)
        # A fresh set of pid files per start: a SIGKILLed keepalived leaves its files behind,
        # and it refuses to start while an old one names a PID that still exists.
        self._starts += 1
        paths = KeepalivedPaths.in_dir(self._node_dir(host), f"keepalived-{self._starts}")
        paths.conf.write_text(render_conf(instances, router_id=host.name))
        proc = self.spawn(host, keepalived_argv(paths), name=f"{host.name}-keepalived")
        return KeepalivedHandle(host.name, proc, instances, paths)

    def restart(self, agent: AgentHandle, timeout: float = 5.0) -> AgentHandle:
        """Stop ``agent`` if it still runs, then start the same kind with the same config."""
        agent.proc.stop(timeout)
        if isinstance(agent, KeepalivedHandle):
            return self.start_keepalived(agent.node, agent.instances)
        if isinstance(agent, VipkeeperHandle):
            return self.start_vipkeeper(
                agent.node, agent.config, executable=agent.executable, extra_args=agent.extra_args
            )
        raise LabError(f"cannot restart {agent!r}")

    def states(self, agents: Iterable[AgentHandle], instance: str | None = None) -> dict[str, str]:
        """node -> state ("-" when the daemon does not answer)."""
        return {a.node: a.state(instance) or "-" for a in agents}

    def wait_master(
        self,
        agents: Sequence[AgentHandle],
        *,
        vip: str | None = None,
        timeout: float = 15.0,
        instance: str | None = None,
        exclude: Iterable[str] = (),
        expect: Node | str | None = None,
    ) -> AgentHandle:
        """Wait until exactly one agent reports MASTER and, if ``vip`` is given, it alone has it.

        Nodes in ``exclude`` (e.g. a crashed node still holding a stale VIP) are ignored; with
        ``expect``, only that node being the master counts (e.g. to wait for preemption).
        """
        skip = set(exclude)
        wanted = None if expect is None else self.node(expect).name
        live = [a for a in agents if a.node not in skip]

        def settled() -> AgentHandle | None:
            for agent in live:
                if not agent.alive():
                    last = tail(agent.proc.log_text(), 1) or "(empty log)"
                    raise LabError(
                        f"{agent.kind} on {agent.node} exited with status "
                        f"{agent.proc.returncode}; last log line: {last.strip()}"
                    )
            masters = [a for a in live if a.state(instance) == "MASTER"]
            if len(masters) != 1 or wanted not in (None, masters[0].node):
                return None
            if vip is not None and [n for n in self.who_has(vip) if n not in skip] != [
                masters[0].node
            ]:
                return None
            return masters[0]

        def seen() -> str:
            holders = f", {vip} on {self.who_has(vip) or 'nobody'}" if vip else ""
            return f"states {self.states(live, instance)}{holders}"

        return self.wait_for("a single master", settled, timeout, describe=seen)
