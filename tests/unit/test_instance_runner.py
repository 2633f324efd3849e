"""The instance runner executes the state machine's actions in order, adverts without delay."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Sequence

from vipkeeper_agent.instance import InstanceRunner
from vipkeeper_agent.tracking import Assessment
from vipkeeper_agent.vrrp import fsm
from vipkeeper_agent.vrrp.packet import Advertisement
from vipkeeper_api import parse_spec

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
ME = ipaddress.ip_address("192.0.2.11")
PEER = ipaddress.ip_address("192.0.2.12")


class FakeEffects:
    def __init__(self, slow_netlink: float = 0.0) -> None:
        self.calls: list[str] = []
        self.adverts: list[Advertisement] = []
        self.slow = slow_netlink
        self.changes: list[fsm.Transition] = []
        self.ready = True

    def send_advertisement(self, runner: InstanceRunner, advert: Advertisement) -> None:
        self.adverts.append(advert)
        self.calls.append(f"advert:{advert.priority}")

    async def add_addresses(self, runner: InstanceRunner, addresses: Sequence[IPInterface]) -> None:
        await asyncio.sleep(self.slow)
        self.calls.append("add:" + ",".join(str(a) for a in addresses))

    async def remove_addresses(
        self, runner: InstanceRunner, addresses: Sequence[IPInterface]
    ) -> None:
        await asyncio.sleep(self.slow)
        self.calls.append("remove:" + ",".join(str(a) for a in addresses))

    def announce(self, runner: InstanceRunner, addresses: Sequence[IPInterface]) -> None:
        self.calls.append("announce")

    def stop_announce(self, runner: InstanceRunner) -> None:
        self.calls.append("stop_announce")

    def transitioned(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        self.calls.append(f"{transition.from_state}->{transition.to_state}")

    def state_changed(self, runner: InstanceRunner, transition: fsm.Transition) -> None:
        self.changes.append(transition)

    def group_ready(self, runner: InstanceRunner, now: float) -> bool:
        return self.ready


def spec(**kw: object) -> object:
    inst = {
        "name": "web",
        "vrid": 51,
        "advertInterval": 0.05,
        "addresses": ["192.0.2.100/24"],
        **kw,
    }
    return parse_spec({"instances": [inst]}).instances[0]


def test_takeover_shutdown_order_and_wire_fields() -> None:
    async def scenario() -> FakeEffects:
        effects = FakeEffects()
        runner = InstanceRunner(
            spec(priority=200), "eth0", 2, ME, effects, asyncio.get_running_loop()
        )  # type: ignore[arg-type]
        runner.start(Assessment(runner.spec.priority), maintenance=False)
        # 3 x 50 ms + skew: the runner's own timer must make it master in well under a second.
        for _ in range(100):
            await asyncio.sleep(0.01)
            if runner.router.state == fsm.State.MASTER:
                break
        await asyncio.sleep(0.12)  # two more adverts
        await runner.stop()
        return effects

    effects = asyncio.run(scenario())
    calls = effects.calls
    assert calls[:5] == [
        "INIT->BACKUP",
        "advert:200",
        "add:192.0.2.100/24",
        "announce",
        "BACKUP->MASTER",
    ]
    assert calls.count("advert:200") >= 3
    assert calls[-4:] == ["advert:0", "stop_announce", "remove:192.0.2.100/24", "MASTER->INIT"]
    advert = effects.adverts[0]
    assert (advert.version, advert.vrid, advert.interval_cs) == (3, 51, 5)
    assert advert.addresses == (ipaddress.ip_address("192.0.2.100"),)


def test_slow_netlink_does_not_delay_periodic_adverts() -> None:
    async def scenario() -> tuple[list[float], FakeEffects]:
        effects = FakeEffects()
        loop = asyncio.get_running_loop()
        runner = InstanceRunner(spec(priority=200), "eth0", 2, ME, effects, loop)  # type: ignore[arg-type]
        runner.start(Assessment(runner.spec.priority), maintenance=False)
        while runner.router.state != fsm.State.MASTER:
            await asyncio.sleep(0.005)
        sent: list[float] = []
        original = effects.send_advertisement

        def stamp(r: InstanceRunner, a: Advertisement) -> None:
            sent.append(loop.time())
            original(r, a)

        effects.send_advertisement = stamp  # type: ignore[method-assign]
        effects.slow = 0.2  # a netlink call that hangs for 4 advert intervals
        runner.reconfigure(
            spec(priority=200, addresses=["192.0.2.100/24", "192.0.2.101/24"]), Assessment(200)
        )
        await asyncio.sleep(0.3)
        await runner.stop()
        return sent, effects

    sent, _ = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) >= 5
    assert max(gaps) < 0.05 + 0.02, gaps


def test_received_advert_from_higher_priority_demotes() -> None:
    async def scenario() -> FakeEffects:
        effects = FakeEffects()
        runner = InstanceRunner(
            spec(priority=100), "eth0", 2, ME, effects, asyncio.get_running_loop()
        )  # type: ignore[arg-type]
        runner.start(Assessment(runner.spec.priority), maintenance=False)
        advert = Advertisement(version=3, vrid=51, priority=150, interval_cs=5, addresses=())
        for _ in range(10):
            runner.on_advertisement(advert, PEER)
            await asyncio.sleep(0.04)
        assert runner.router.state == fsm.State.BACKUP
        assert runner.router.master_address == PEER
        assert runner.counters.adverts_received == 10
        await runner.stop()
        return effects

    effects = asyncio.run(scenario())
    assert not any(c.startswith("advert") for c in effects.calls)


def test_sync_group_hold_and_synchronous_state_callback() -> None:
    """A backup whose group is not ready waits (no timer spin), and every transition is reported
    synchronously, before the queued actions run."""

    async def scenario() -> tuple[FakeEffects, InstanceRunner]:
        effects = FakeEffects()
        effects.ready = False
        runner = InstanceRunner(
            spec(priority=100), "eth0", 2, ME, effects, asyncio.get_running_loop()
        )  # type: ignore[arg-type]
        runner.start(Assessment(100), maintenance=False)
        await asyncio.sleep(0.4)  # Master_Down for 0.05 s adverts is ~0.19 s
        assert runner.router.state == fsm.State.BACKUP
        assert runner.router.awaiting_group
        runner.handle(fsm.Promote("sync group: other became MASTER"))
        assert runner.router.state == fsm.State.MASTER
        await runner.stop()
        return effects, runner

    effects, _ = asyncio.run(scenario())
    assert [(t.from_state, t.to_state) for t in effects.changes] == [
        (fsm.State.INIT, fsm.State.BACKUP),
        (fsm.State.BACKUP, fsm.State.MASTER),
        (fsm.State.MASTER, fsm.State.INIT),
    ]


def test_apply_assessment_faults_and_priorities() -> None:
    async def scenario() -> InstanceRunner:
        effects = FakeEffects()
        runner = InstanceRunner(
            spec(priority=100), "eth0", 2, ME, effects, asyncio.get_running_loop()
        )  # type: ignore[arg-type]
        runner.start(Assessment(80, ("check gw down",)), maintenance=False)
        assert runner.router.state == fsm.State.FAULT
        assert runner.router.last_transition is not None
        assert "check gw down" in runner.router.last_transition.reason
        runner.apply(Assessment(80))
        assert runner.router.state == fsm.State.BACKUP
        assert runner.router.priority == 80
        runner.apply(Assessment(120))
        assert runner.router.priority == 120
        await runner.stop()
        return runner

    asyncio.run(scenario())
