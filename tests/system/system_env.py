"""The system tier's world: the lab's nodes and client (tests/netns' testbed), a management network
reaching an API emulator from every node, the product operator and one Kubernetes-mode agent per
node.

Where each piece lives and why:

- The VRRP segment is the lab's (``vipkeeper_lab.nodes.Lab``): nodes n1-n3 at 192.0.2.11-13 on
  eth0, a client at 192.0.2.250, each in its own namespace, VIPs from .100 up.
- The management network is a second bridge in a namespace of its own (``<prefix>-seg``), with
  one more namespace, ``<prefix>-api``, for the API's endpoint at 198.18.0.1, and a veth
  ``mgmt0`` into every node namespace (198.18.0.11-13). Only addresses inside namespaces this
  module creates are used; nothing is configured in the test's own namespace.
- The emulator (tests/support/kapi.py) runs in the test process, as in the operator tier. It
  listens twice: on 127.0.0.1 of the test's namespace (for the in-process operator and the test's
  own reads) and on a socket made inside the api namespace (a thread ``setns``-es into it just to
  create that socket), which is what the agents' kubeconfig names. Cutting the api namespace's
  port off the management bridge is an API outage as the nodes see it; the operator keeps its
  view (as a control plane that still runs while the nodes are partitioned from it).
- Agents run as ``vipkeeper-agent --kubernetes`` in the node namespaces, each started and
  stopped by its own PID (the lab's ``Proc``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.kapi import KubeAPI
from vipkeeper_lab import netns
from vipkeeper_lab.agents import StatusUnavailableError, VipkeeperHandle, agent_executable
from vipkeeper_lab.nodes import Lab
from vipkeeper_lab.procs import tail
from vipkeeper_operator.controller import Controller

CLONE_NEWNET = 0x40000000
MGMT_NET = ipaddress.IPv4Network("198.18.0.0/24")
API_ADDRESS = ipaddress.IPv4Interface("198.18.0.1/24")
API_ADDRESS6 = ipaddress.IPv6Interface("fd00:18::1/64")


def mgmt_address(index: int) -> ipaddress.IPv4Interface:
    """Node ``index`` (1-based) on the management network: .11, .12, ..., like its VRRP address."""
    return ipaddress.IPv4Interface(f"{MGMT_NET.network_address + 10 + index}/{MGMT_NET.prefixlen}")


def listening_socket_in(ns: str, host: str) -> socket.socket:
    """A TCP socket listening on ``host``:<free port> inside network namespace ``ns``.

    setns(2) moves only the calling thread, so a short-lived thread enters ``ns``, makes the
    socket and ends; the socket stays in ``ns`` whoever uses it afterwards.
    """
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_listen() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns.NETNS_DIR / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(128)
            sock.setblocking(False)
            made.append(sock)
        except BaseException as exc:  # handed to the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=enter_and_listen, name=f"setns-{ns}")
    thread.start()
    thread.join(timeout=10)
    if failed:
        raise failed[0]
    if not made:
        raise RuntimeError(f"no socket made in {ns} within 10 s")
    return made[0]


class NetnsKubeAPI(KubeAPI):
    """The emulator, also served on ``address`` inside namespace ``ns`` (for the nodes)."""

    def __init__(self, ns: str, address: str) -> None:
        super().__init__()
        self.ns, self.address = ns, address
        self.node_port = 0

    async def _astart(self) -> None:
        await super()._astart()
        sock = listening_socket_in(self.ns, self.address)
        self._node_server = await asyncio.get_running_loop().create_server(self._web, sock=sock)
        self.node_port = sock.getsockname()[1]

    async def _astop(self) -> None:
        self._node_server.close()
        await super()._astop()

    @property
    def node_url(self) -> str:
        return f"http://{self.address}:{self.node_port}"

    def write_node_kubeconfig(self, path: Path) -> Path:
        """The kubeconfig the agents get: the API as the node namespaces reach it."""
        return self.write_kubeconfig(path, self.node_url)


class ManagementNetwork:
    """The second bridge (its own lab prefix) with the api namespace and a leg into each node."""

    def __init__(self) -> None:
        self.segment = netns.Segment(netns.new_prefix())
        self.api_ns = ""

    def create(self, lab: Lab) -> None:
        seg = self.segment
        seg.create()
        self.api_ns = seg.attach("api", API_ADDRESS, API_ADDRESS6).ns
        for index, node in enumerate(lab.nodes, start=1):
            port = f"m-{node.name}"
            netns.run(["ip", "-n", seg.ns, "link", "add", port, "type", "veth",
                       "peer", "name", "mgmt0", "netns", node.ns])  # fmt: skip
            netns.run(["ip", "-n", seg.ns, "link", "set", port, "master", netns.BRIDGE, "up"])
            netns.run(
                ["ip", "-n", node.ns, "addr", "add", str(mgmt_address(index)), "dev", "mgmt0"]
            )
            netns.run(["ip", "-n", node.ns, "link", "set", "mgmt0", "up"])

    def cut(self) -> None:
        """The API's endpoint leaves the bridge, carrier up: the nodes' packets to it vanish."""
        self.segment.set_bridged(self.api_ns, bridged=False)

    def restore(self) -> None:
        self.segment.set_bridged(self.api_ns, bridged=True)

    def close(self) -> None:
        """Deletes its namespaces (and with them the nodes' mgmt0 legs). Idempotent."""
        self.segment.close()


class NodeAgents:
    """``vipkeeper-agent --kubernetes`` on the lab's nodes, each stopped by its own PID."""

    def __init__(self, lab: Lab, kubeconfig: Path) -> None:
        self.lab, self.kubeconfig = lab, kubeconfig
        self.handles: dict[str, VipkeeperHandle] = {}

    def start(self, node: str) -> VipkeeperHandle:
        host = self.lab.node(node)
        directory = self.lab.workdir / host.name
        directory.mkdir(exist_ok=True)
        socket_path = directory / "status.sock"
        argv = [
            # `env` execs the agent: the PID the lab gets is the agent's own.
            *("env", "-u", "KUBERNETES_SERVICE_HOST", f"KUBECONFIG={self.kubeconfig}"),
            str(agent_executable()),
            *("--kubernetes", "--node-name", host.name),
            *("--cache-dir", str(directory / "cache")),
            *("--status-socket", str(socket_path)),
            *("--script-dir", str(self.lab.script_dir)),
            *("--maintenance-file", str(directory / "down")),
            *("--metrics-address", "off", "--log-level", "info"),
        ]
        proc = self.lab.spawn(host, argv, name=f"{host.name}-agent")
        handle = VipkeeperHandle(host.name, proc, {}, directory / "cache", socket_path)
        self.handles[host.name] = handle
        return handle

    def kill(self, node: str) -> None:
        """SIGKILL the agent by its PID (a crash: its VIPs stay configured on the node)."""
        self.lab.kill(self.handles[node])

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            return self.handles[node].status()
        except StatusUnavailableError:
            return None

    def state(self, node: str, instance: str) -> str:
        doc = self.status(node)
        for item in (doc or {}).get("instances", ()):
            if item.get("name") == instance:
                return str(item.get("state"))
        return "-"

    def states(self, instance: str) -> dict[str, str]:
        return {n: self.state(n, instance) for n in self.handles}

    def check_alive(self, *nodes: str) -> None:
        for node in nodes:
            handle = self.handles[node]
            if not handle.alive():
                raise AssertionError(
                    f"the agent on {node} exited ({handle.proc.returncode}):\n"
                    + tail(handle.proc.log_text(), 30)
                )

    def logs(self) -> str:
        return "\n".join(
            f"----- {n} agent ({h.proc!r}) -----\n{tail(h.proc.log_text(), 40)}"
            for n, h in self.handles.items()
        )


@dataclass
class System:
    """The running world the ``system`` fixture yields."""

    lab: Lab
    mgmt: ManagementNetwork
    kapi: NetnsKubeAPI
    controller: Controller
    agents: NodeAgents


def expect(what: str, predicate: Callable[[], Any], timeout: float, seen: Callable[[], str]) -> Any:
    """``predicate``'s first truthy value within ``timeout`` s, else an AssertionError naming
    ``what`` and what was seen last (``seen()``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}; seen: {seen()}")
        time.sleep(0.05)
