"""The instance runner executes the state machine's actions in order, adverts without delay."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
from collections.abc import Sequence

from vipkeeper_agent.instance import InstanceRunner
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
        runner.start(link_up=True)
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
        runner.start(link_up=True)
        while runner.router.state != fsm.State.MASTER:
            await asyncio.sleep(0.005)
        sent: list[float] = []
        original = effects.send_advertisement

        def stamp(r: InstanceRunner, a: Advertisement) -> None:
            sent.append(loop.time())
            original(r, a)

        effects.send_advertisement = stamp  # type: ignore[method-assign]
        effects.slow = 0.2  # a netlink call that hangs for 4 advert intervals
        runner.reconfigure(spec(priority=200, addresses=["192.0.2.100/24", "192.0.2.101/24"]))
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
        runner.start(link_up=True)
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
