"""The balancer adapter over a fake kernel: zero changes on an unchanged resync, placement and
reloads remove what we own and nothing else, quorum hooks on changes only, no IPVS reported
with its fix, and release on stop (or not)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

import pytest

from vipkeeper_agent.balancer import Balancer, View
from vipkeeper_agent.ipvs import plan
from vipkeeper_agent.ipvs.kernel import IpvsUnavailable
from vipkeeper_agent.ipvs.prereq import KernelFacts
from vipkeeper_agent.ipvs.table import (
    Destination,
    ForwardingMethod,
    Service,
    ServiceKey,
    ServiceStats,
    VirtualService,
    make_table,
)
from vipkeeper_api import VirtualServer
from vipkeeper_api.ipvs import Protocol

FACTS = KernelFacts(ipvs_loaded=True, ip_forward=True)
FOREIGN = ServiceKey.of(Protocol.TCP, "10.96.0.1", 443)  # kube-proxy's, say


class FakeKernel:
    """The kernel's IPVS table as plain data; applies ops with plan.simulate's rules."""

    def __init__(self, available: bool = True) -> None:
        self.available = available
        foreign = Service(FOREIGN, "rr", netmask=32)
        dest = Destination(
            ipaddress_of("10.0.0.9"), 6443, weight=1, forwarding=ForwardingMethod.NAT
        )
        self.table: dict[ServiceKey, VirtualService] = make_table((foreign, [dest]))
        self.applied: list[plan.Op] = []
        self.fail: set[str] = set()
        #: The services each snapshot was asked for (None: all).
        self.reads: list[frozenset[ServiceKey] | None] = []

    def open(self) -> None:
        if not self.available:
            raise IpvsUnavailable()

    def snapshot(
        self, keys: Collection[ServiceKey] | None = None
    ) -> tuple[dict[ServiceKey, VirtualService], dict[ServiceKey, ServiceStats]]:
        self.reads.append(None if keys is None else frozenset(keys))
        return {k: v for k, v in self.table.items() if keys is None or k in keys}, {}

    def apply(self, ops: Sequence[plan.Op]) -> list[plan.OpResult]:
        out = []
        for op in ops:
            if op.describe() in self.fail:
                out.append(plan.OpResult(op, "File exists", 17))
                continue
            self.table = plan.simulate(self.table, [op])
            self.applied.append(op)
            out.append(plan.OpResult(op))
        return out

    def close(self) -> None:
        pass


def ipaddress_of(text: str) -> Any:
    import ipaddress  # noqa: PLC0415

    return ipaddress.ip_address(text)


def web(**fields: Any) -> VirtualServer:
    base: dict[str, Any] = {
        "name": "web",
        "address": "192.0.2.10",
        "port": 80,
        "placement": "all",
        "realServers": [{"address": "10.0.0.1"}, {"address": "10.0.0.2"}],
        "check": {"kind": "tcp", "interval": 1},
    }
    return VirtualServer.model_validate({**base, **fields})


WEB_KEY = ServiceKey.of(Protocol.TCP, "192.0.2.10", 80)
RS1, RS2 = "web/10.0.0.1:80", "web/10.0.0.2:80"


class Notes:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int, tuple[str, ...]]] = []

    def notify_scripts(
        self, kind: str, name: str, state: str, value: int, scripts: tuple[str, ...]
    ) -> None:
        self.calls.append((kind, name, state, value, scripts))


class Rig:
    def __init__(self, kernel: FakeKernel | None = None) -> None:
        self.kernel = kernel or FakeKernel()
        self.view = View(health={}, active={"web"})
        self.notes = Notes()
        self.balancer = Balancer(
            lambda: self.view,
            self.notes,  # type: ignore[arg-type]
            kernel=lambda: self.kernel,
            facts=lambda: FACTS,
        )

    def sync(self, *, full: bool = True) -> list[plan.Op]:
        before = len(self.kernel.applied)
        asyncio.run(self.balancer.sync(full=full))
        return self.kernel.applied[before:]

    def dests(self, key: ServiceKey = WEB_KEY) -> dict[str, int]:
        entry = self.kernel.table.get(key)
        if entry is None:
            return {}
        return {str(d.address): d.weight for d in entry.destinations.values()}


def test_first_sync_programs_and_an_unchanged_resync_changes_nothing() -> None:
    rig = Rig()
    rig.balancer.configure([web()])
    ops = rig.sync()
    assert [type(op).__name__ for op in ops] == ["AddService", "AddDest", "AddDest"]
    assert rig.dests() == {"10.0.0.1": 1, "10.0.0.2": 1}
    assert rig.sync() == []
    # A restart: a new balancer over the same kernel table, same configuration.
    again = Rig(rig.kernel)
    again.balancer.configure([web()])
    assert again.sync() == []
    assert FOREIGN in rig.kernel.table


def test_health_moves_real_servers_out_or_to_weight_zero() -> None:
    rig = Rig()
    rig.balancer.configure([web()])
    rig.sync()
    rig.view = View(health={RS1: False}, active={"web"})
    ops = rig.sync()
    assert [(type(op).__name__, str(op.destination.address)) for op in ops] == [  # type: ignore[union-attr]
        ("DeleteDest", "10.0.0.1")
    ]
    assert rig.dests() == {"10.0.0.2": 1}
    rig.balancer.configure([web(inhibitOnFailure=True)])
    rig.sync()
    assert rig.dests() == {"10.0.0.1": 0, "10.0.0.2": 1}


def test_placement_and_reload_remove_only_what_we_own() -> None:
    rig = Rig()
    rig.balancer.configure([web()])
    rig.sync()
    rig.view = View(health={}, active=set())  # the VIP went to another node
    rig.sync()
    assert WEB_KEY not in rig.kernel.table and FOREIGN in rig.kernel.table
    rig.view = View(health={}, active={"web", "api"})
    api = web(name="api", port=8080, check=None)
    rig.balancer.configure([api])  # web left the configuration while not active here
    rig.sync()
    api_key = ServiceKey.of(Protocol.TCP, "192.0.2.10", 8080)
    assert set(rig.kernel.table) == {FOREIGN, api_key}
    rig.balancer.configure([])
    rig.sync()
    assert set(rig.kernel.table) == {FOREIGN}
    assert rig.balancer.status({}, 0.0)["table"] == []


def test_quorum_hooks_run_on_changes_not_on_the_first_judgement() -> None:
    rig = Rig()
    rig.balancer.configure(
        [
            web(
                quorum={"min": 2, "up": "lb-up", "down": "lb-down"},
                sorryServer={"address": "10.0.0.99"},
            )
        ]
    )
    rig.sync()
    assert rig.notes.calls == []
    rig.view = View(health={RS1: False}, active={"web"})
    rig.sync()
    assert rig.notes.calls == [("VS", "web", "DOWN", 1, ("lb-down",))]
    assert rig.dests() == {"10.0.0.99": 1}  # the sorry server replaces the healthy ones
    rig.view = View(health={RS1: True}, active={"web"})
    rig.sync()
    assert rig.notes.calls[-1] == ("VS", "web", "UP", 2, ("lb-up",))
    assert rig.dests() == {"10.0.0.1": 1, "10.0.0.2": 1}
    status = rig.balancer.status({}, 0.0)["virtualServers"][0]
    assert status["quorum"]["up"] is True and status["sorryServerActive"] is False


def test_no_ipvs_is_reported_with_its_fix_and_retried() -> None:
    rig = Rig(FakeKernel(available=False))
    rig.balancer.configure([web()])
    assert rig.sync() == []
    problems = rig.balancer.status({}, 0.0)["problems"]
    assert any("modprobe ip_vs" in p for p in problems)
    rig.kernel.available = True
    assert len(rig.sync()) == 3
    assert not any("modprobe ip_vs" in p for p in rig.balancer.status({}, 0.0)["problems"])


def test_a_refused_operation_is_reported_and_the_table_reread() -> None:
    rig = Rig()
    rig.balancer.configure([web()])
    add = plan.AddDest(WEB_KEY, Destination(ipaddress_of("10.0.0.2"), 80, 1, ForwardingMethod.NAT))
    rig.kernel.fail.add(add.describe())
    rig.sync()
    status = rig.balancer.status({}, 0.0)
    assert status["errors"] and add.describe() in status["errors"][0]
    assert len(status["table"][0]["destinations"]) == 1  # what the kernel really has
    rig.kernel.fail.clear()
    assert len(rig.sync()) == 1  # the next sync completes it


@pytest.mark.parametrize("release", [True, False])
def test_stop_releases_owned_services_unless_told_not_to(release: bool) -> None:
    rig = Rig()
    rig.balancer.configure([web()])

    async def run() -> None:
        rig.balancer.start()
        await rig.balancer.sync()
        await rig.balancer.close(release=release)

    asyncio.run(run())
    assert (WEB_KEY in rig.kernel.table) is not release
    assert FOREIGN in rig.kernel.table


API_KEY = ServiceKey.of(Protocol.TCP, "192.0.2.10", 8080)


def test_a_triggered_sync_reads_and_fixes_only_what_changed() -> None:
    rig = Rig()
    rig.view = View(health={}, active={"web", "api"})
    rig.balancer.configure([web(), web(name="api", port=8080)])
    rig.sync()
    assert rig.kernel.reads[-1] == {WEB_KEY, API_KEY}
    # Nothing changed: a triggered sync does not even read the kernel.
    reads = len(rig.kernel.reads)
    assert rig.sync(full=False) == [] and len(rig.kernel.reads) == reads
    # One real server of web fails: only web is read and changed.
    rig.view = View(health={RS1: False}, active={"web", "api"})
    ops = rig.sync(full=False)
    assert [op.key for op in ops] == [WEB_KEY] and rig.kernel.reads[-1] == {WEB_KEY}
    assert rig.dests() == {"10.0.0.2": 1} and len(rig.dests(API_KEY)) == 2
    # Drift behind our back is not seen by triggered syncs, and is repaired by the full one.
    del rig.kernel.table[API_KEY]
    assert rig.sync(full=False) == []
    assert [type(op).__name__ for op in rig.sync()] == ["AddService", "AddDest", "AddDest"]


def test_after_a_refused_operation_the_next_triggered_sync_reads_everything() -> None:
    rig = Rig()
    rig.view = View(health={}, active={"web", "api"})
    rig.balancer.configure([web(), web(name="api", port=8080)])
    add = plan.AddDest(WEB_KEY, Destination(ipaddress_of("10.0.0.2"), 80, 1, ForwardingMethod.NAT))
    rig.kernel.fail.add(add.describe())
    rig.sync()
    assert rig.dests() == {"10.0.0.1": 1}
    rig.kernel.fail.clear()
    rig.sync(full=False)
    assert rig.kernel.reads[-1] == {WEB_KEY, API_KEY}
    assert rig.dests() == {"10.0.0.1": 1, "10.0.0.2": 1}


def test_services_of_an_undecided_carrier_are_left_as_the_kernel_has_them() -> None:
    # A restart with --dont-release-ipvs on the holder: the kernel has the service; the new
    # agent's instance is BACKUP until it knows whether it is MASTER.
    rig = Rig()
    rig.balancer.configure([web(placement="holder")])
    rig.sync()
    assert rig.dests() == {"10.0.0.1": 1, "10.0.0.2": 1}
    again = Rig(rig.kernel)
    again.balancer.configure([web(placement="holder")])
    again.view = View(health={}, active=set(), undecided={"web"})
    assert again.sync() == [] and again.sync(full=False) == []
    # It became MASTER: nothing to change at all.
    again.view = View(health={}, active={"web"})
    assert again.sync(full=False) == [] and again.sync() == []
    # Had it stayed BACKUP, the service would go.
    again.view = View(health={}, active=set())
    assert [type(op).__name__ for op in again.sync(full=False)] == ["DeleteService"]
