"""Shared fixtures of the agent's network-namespace behaviour tests.

Each test gets a fresh ``Lab`` (N nodes and a client on one bridge, in namespaces) and an
``Agents`` helper that starts vipkeeper-agent on the nodes and waits, always boundedly, for what
the test expects to see: states in the agents' JSON status, VIP holders, HTTP answers.

The lab is torn down whatever happens (pass, failure, timeout): every process it started is
stopped by PID and every namespace it created is deleted.

Node count: 3 by default, otherwise ``@pytest.mark.lab_nodes(N)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from vipkeeper_agent.vrrp.timers import master_down_interval, skew_time
from vipkeeper_lab.agents import StatusUnavailableError, VipkeeperHandle, render_agent_yaml
from vipkeeper_lab.netns import list_namespaces
from vipkeeper_lab.nodes import Lab, LabTimeoutError
from vipkeeper_lab.procs import tail

T = TypeVar("T")

VIP4 = "192.0.2.100/24"
VIP6 = "2001:db8::100/64"
#: Default advert interval of these tests (VRRP v3): sub-second failover keeps the suite short.
FAST = Decimal("0.1")
#: Extra time on top of a protocol bound before a test calls it a failure: CI machines are slow,
#: the tests check correctness, the benchmark checks speed.
MARGIN = 0.3


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_nodes(n): number of VRRP nodes of the `lab` fixture")


def _netns_unusable() -> str | None:
    """Why network namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    probe = f"vkprobe{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(
            ["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` does not work here: {exc}"
    if done.returncode != 0:
        return f"`ip netns add` does not work here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


@pytest.fixture(scope="session")
def netns_usable() -> None:
    reason = _netns_unusable()
    if reason is not None:
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets the lab fixture know, at teardown, whether the test itself failed.
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def _dump_logs(testbed: Lab) -> None:
    """The tail of every log the lab's processes wrote: shown with a failing test's report."""
    for proc in testbed.procs:
        if proc.name.startswith("probe-") or proc.name.endswith("-httpd"):
            continue
        print(f"----- {proc.name} ({proc!r}) -----")
        print(tail(proc.log_text(), 40))


@pytest.fixture
def lab(request: pytest.FixtureRequest, netns_usable: None) -> Iterator[Lab]:
    marker = request.node.get_closest_marker("lab_nodes")
    nodes = int(marker.args[0]) if marker else 3
    with Lab(nodes=nodes) as testbed:
        yield testbed
        if request.node.stash.get(_FAILED, False):
            _dump_logs(testbed)
    # Lab.close() is unconditional; make sure it really left nothing behind.
    leftovers = [ns for ns in list_namespaces() if ns.startswith(testbed.prefix + "-")]
    assert leftovers == [], f"namespaces left behind: {leftovers}"


@pytest.fixture
def agents(lab: Lab) -> Agents:
    return Agents(lab)


@pytest.fixture
def web(lab: Lab) -> None:
    """The client-facing web servers: each node answers GET / with its name."""
    lab.start_http_servers()


def instance(
    priority: int,
    *,
    name: str = "web",
    vrid: int = 51,
    addresses: Sequence[str] = (VIP4,),
    version: int = 3,
    interval: Decimal | str = FAST,
    **extra: Any,
) -> dict[str, Any]:
    """One instance of the standalone YAML (camelCase keys, as a user writes them)."""
    spec: dict[str, Any] = {
        "name": name,
        "vrid": vrid,
        "interface": "eth0",
        "version": version,
        "priority": priority,
        "advertInterval": Decimal(interval),
        "addresses": list(addresses),
    }
    spec.update(extra)
    return spec


def config(*instances: Mapping[str, Any]) -> dict[str, Any]:
    return {"instances": [dict(i) for i in instances]}


def mdi(priority: int, interval: Decimal | str = FAST, version: int = 3) -> float:
    """Master_Down_Interval of a backup, from the agent's own timer formulas."""
    return master_down_interval(priority, int(Decimal(interval) * 100), version)


def skew(priority: int, interval: Decimal | str = FAST, version: int = 3) -> float:
    return skew_time(priority, int(Decimal(interval) * 100), version)


class Agents:
    """vipkeeper-agent on the lab's nodes, and bounded waits on what they report.

    The config builders and timer formulas are here too, so that test modules reach them through
    the fixture instead of importing this conftest (fragile once several conftests exist).
    """

    instance = staticmethod(instance)
    config = staticmethod(config)
    mdi = staticmethod(mdi)
    skew = staticmethod(skew)
    VIP4 = VIP4
    VIP6 = VIP6
    FAST = FAST
    MARGIN = MARGIN

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    # --- starting -----------------------------------------------------------------------------

    def start(self, node: str, *instances: Mapping[str, Any]) -> VipkeeperHandle:
        """Start the agent on ``node`` with these instances; returns once its status answers."""
        handle = self.lab.start_vipkeeper(node, config(*instances))
        self.wait_ready(handle)
        return handle

    def wait_ready(self, handle: VipkeeperHandle, timeout: float = 15.0) -> None:
        def answers() -> bool:
            if not handle.alive():
                raise AssertionError(
                    f"vipkeeper on {handle.node} exited ({handle.proc.returncode}):\n"
                    + tail(handle.proc.log_text())
                )
            return self.try_status(handle) is not None

        self.lab.wait_for(f"vipkeeper on {handle.node} to answer", answers, timeout)

    def rewrite(self, handle: VipkeeperHandle, *instances: Mapping[str, Any]) -> None:
        """Replace the agent's configuration file (the handle keeps it for restarts)."""
        handle.config = config(*instances)
        self.write_file(handle, render_agent_yaml(handle.config))

    @staticmethod
    def write_file(handle: VipkeeperHandle, text: str) -> None:
        """Replace the agent's file atomically (as editors and config managers do): the agent
        polls the file and must never see it half-written."""
        temporary = handle.config_path.with_name(handle.config_path.name + ".new")
        temporary.write_text(text)
        os.replace(temporary, handle.config_path)

    # --- status -------------------------------------------------------------------------------

    @staticmethod
    def try_status(handle: VipkeeperHandle) -> dict[str, Any] | None:
        try:
            return handle.status()
        except StatusUnavailableError:
            return None

    def info(self, handle: VipkeeperHandle, name: str = "web") -> dict[str, Any]:
        """The status entry of one instance (fails the test if the agent does not answer)."""
        document = handle.status()
        for item in document["instances"]:
            if item.get("name") == name:
                return dict(item)
        raise AssertionError(f"{handle.node}: no instance {name!r} in {document['instances']}")

    def try_info(self, handle: VipkeeperHandle, name: str = "web") -> dict[str, Any] | None:
        document = self.try_status(handle)
        if document is None:
            return None
        for item in document["instances"]:
            if item.get("name") == name:
                return dict(item)
        return None

    def dropped(self, handle: VipkeeperHandle, reason: str, name: str = "web") -> int:
        return int(self.info(handle, name)["counters"]["dropped"].get(reason, 0))

    def states(self, handles: Sequence[VipkeeperHandle], name: str = "web") -> dict[str, str]:
        out = {}
        for h in handles:
            item = self.try_info(h, name)
            out[h.node] = "-" if item is None else str(item.get("state"))
        return out

    # --- waiting ------------------------------------------------------------------------------

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], T | None],
        timeout: float,
        describe: Callable[[], str] | None = None,
    ) -> T:
        try:
            return self.lab.wait_for(what, predicate, timeout, interval=0.02, describe=describe)
        except LabTimeoutError as exc:
            raise AssertionError(str(exc)) from None

    def wait_state(
        self,
        handle: VipkeeperHandle,
        state: str,
        timeout: float,
        name: str = "web",
        **fields: Any,
    ) -> dict[str, Any]:
        """Wait until ``handle``'s instance is in ``state`` with the given status fields."""

        def reached() -> dict[str, Any] | None:
            item = self.try_info(handle, name)
            if item is None or item.get("state") != state:
                return None
            if any(item.get(k) != v for k, v in fields.items()):
                return None
            return item

        def seen() -> str:
            item = self.try_info(handle, name)
            if item is None:
                return "no status"
            return ", ".join(f"{k}={item.get(k)!r}" for k in ("state", *fields))

        return self.wait_for(
            f"{handle.node}/{name} in {state} {fields or ''}".strip(), reached, timeout, seen
        )

    def wait_dropped(
        self,
        handle: VipkeeperHandle,
        reason: str,
        at_least: int,
        timeout: float,
        name: str = "web",
    ) -> int:
        """Wait until ``handle``'s instance has dropped at least ``at_least`` adverts for
        ``reason`` (the ``counters.dropped`` of its status)."""

        def enough() -> int | None:
            count = self.dropped(handle, reason, name)
            return count if count >= at_least else None

        return self.wait_for(
            f"{at_least} {reason} drops on {handle.node}/{name}",
            enough,
            timeout,
            lambda: str(self.info(handle, name)["counters"]),
        )

    def wait_holders(self, vip: str, holders: Sequence[str], timeout: float) -> None:
        """Wait until exactly ``holders`` (node names) have ``vip`` configured."""
        wanted = sorted(holders)
        self.wait_for(
            f"{vip} on {wanted}",
            lambda: sorted(self.lab.who_has(vip)) == wanted,
            timeout,
            lambda: f"{vip} on {self.lab.who_has(vip)}",
        )

    def wait_http(self, vip: str, node: str, timeout: float = 10.0) -> str:
        """Wait until the client's GET http://VIP/ is answered by ``node``."""
        ip = vip.split("/", 1)[0]
        last: list[str | None] = [None]

        def answered() -> str | None:
            last[0] = self.lab.http_get(ip, timeout=0.5)
            return last[0] if last[0] == node else None

        return self.wait_for(
            f"http://{ip}/ answered by {node}", answered, timeout, lambda: f"answer {last[0]!r}"
        )

    def hold(
        self,
        what: str,
        predicate: Callable[[], bool],
        duration: float,
        describe: Callable[[], str] | None = None,
    ) -> None:
        """Check that ``predicate`` stays true for ``duration`` seconds (polled).

        For the things that must *not* happen (a preemption, a split brain): the only way to
        observe an absence is to watch for a bounded while.
        """
        end = time.monotonic() + duration
        while True:
            if not predicate():
                seen = f"; seen: {describe()}" if describe else ""
                raise AssertionError(f"{what} stopped holding{seen}")
            if time.monotonic() >= end:
                return
            time.sleep(0.02)

    def log(self, handle: VipkeeperHandle) -> str:
        return handle.proc.log_text()
