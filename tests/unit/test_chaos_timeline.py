"""Dual-master and no-master intervals of a chaos cycle from timestamped observations, judged.

Times are seconds from 0; bounds as for 100 ms VRRPv3 adverts with the runner-up (100) taking
over: dual 110 ms after the fault cleared, no master 411.5 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vipkeeper_agent.vrrp.timers import master_down_interval
from vipkeeper_lab.chaos.timeline import (
    NONE_SLACK,
    HoldEvent,
    Judged,
    LinkEvent,
    Observations,
    Window,
    arp_segments,
    bounds,
    judge_cycle,
    parse_monitor_lines,
)
from vipkeeper_lab.measure import ArpAnswer

LIMIT = bounds(10, 3, 100)
GAP = 0.02
MACS = {"aa:00:00:00:00:01": "n1", "aa:00:00:00:00:02": "n2"}


def hold(t: float, node: str, held: bool = True) -> HoldEvent:
    return HoldEvent(t, node, held)


def cut(t: float, node: str, connected: bool = False) -> LinkEvent:
    return LinkEvent(t, node, connected)


def answers(mac: str, start: float, end: float, step: float = 0.005) -> list[ArpAnswer]:
    count = round((end - start) / step)
    return [ArpAnswer(round(start + i * step, 6), mac, "reply") for i in range(count + 1)]


A, B = "aa:00:00:00:00:01", "aa:00:00:00:00:02"


@dataclass(frozen=True)
class Case:
    name: str
    holds: tuple[HoldEvent, ...] = ()
    links: tuple[LinkEvent, ...] = ()
    arp: tuple[ArpAnswer, ...] = ()
    windows: tuple[Window, ...] = (Window(1.0, 2.0),)
    #: (start, end or None, measured, violation) per interval, in time order.
    duals: tuple[tuple[float, float | None, float, bool], ...] = ()
    nones: tuple[tuple[float, float | None, float, bool], ...] = ()
    sources: tuple[str, ...] = ()


CASES = [
    Case("steady master: nothing", windows=()),
    Case("clean handover (same instant)", holds=(hold(1.0, "n1", False), hold(1.0, "n2"))),
    Case(
        "handover with a gap is a no master",
        holds=(hold(1.0, "n1", False), hold(1.3, "n2")),
        nones=((1.0, 1.3, 0.3, False),),
    ),
    Case(
        "power cut: the cut-off node's stale VIP does not count; taken over in time",
        links=(cut(1.0, "n1"),),
        holds=(hold(1.35, "n2"),),
        nones=((1.0, 1.35, 0.35, False),),
        duals=(),
    ),
    Case(
        "power cut: taken over too late",
        links=(cut(1.0, "n1"),),
        holds=(hold(1.5, "n2"),),
        nones=((1.0, 1.5, 0.5, True),),
    ),
    Case(
        "no master that never ends",
        holds=(hold(1.0, "n1", False),),
        nones=((1.0, None, 3.0, True),),
    ),
    Case(
        "dual master during the fault, ends 50 ms after it cleared",
        holds=(hold(1.3, "n2"), hold(2.05, "n2", False)),
        duals=((1.3, 2.05, 0.05, False),),
        sources=("vip",),
    ),
    Case(
        "dual master during the fault, ends 200 ms after it cleared",
        holds=(hold(1.3, "n2"), hold(2.2, "n2", False)),
        duals=((1.3, 2.2, 0.2, True),),
    ),
    Case(
        "dual master wholly after the fault is measured whole",
        holds=(hold(2.5, "n2"), hold(2.65, "n2", False)),
        duals=((2.5, 2.65, 0.15, True),),
    ),
    Case(
        "dual master before a second disturbance: measured from the later clear",
        holds=(hold(2.5, "n2"), hold(3.05, "n2", False)),
        windows=(Window(1.0, 2.0), Window(2.9, 3.0)),
        duals=((2.5, 3.05, 0.05, False),),
    ),
    Case(
        "dual master that never ends",
        holds=(hold(1.2, "n2"),),
        duals=((1.2, None, 2.0, True),),
    ),
    Case(
        "reconnected while still holding: dual until the stale holder resigns",
        links=(cut(1.0, "n1"), cut(2.0, "n1", connected=True)),
        holds=(hold(1.3, "n2"), hold(2.04, "n1", False)),
        nones=((1.0, 1.3, 0.3, False),),
        duals=((2.0, 2.04, 0.04, False),),
    ),
    Case(
        "two MACs answering ARP, nobody else seen",
        arp=(*answers(A, 0.0, 4.0), *answers(B, 1.5, 2.08)),
        duals=((1.5, 2.08, 0.08, False),),
        sources=("arp",),
    ),
    Case(
        "ARP and VIP duals that overlap are one interval",
        holds=(hold(1.5, "n2"), hold(2.06, "n2", False)),
        arp=(*answers(A, 0.0, 4.0), *answers(B, 1.51, 2.07)),
        duals=((1.5, 2.07, 0.07, False),),
        sources=("vip+arp",),
    ),
    Case(
        "ARP handover without overlap is no dual",
        arp=(*answers(A, 0.0, 1.5), *answers(B, 1.505, 4.0)),
    ),
    Case(
        "gratuitous ARP is an announcement, not an answer",
        arp=(*answers(A, 0.0, 4.0), ArpAnswer(1.5, B, "garp")),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_judge_cycle(case: Case) -> None:
    obs = Observations(
        start=0.0,
        end=4.0,
        holders=frozenset({"n1"}),
        disconnected=frozenset(),
        holds=case.holds,
        links=case.links,
        arp=case.arp,
        macs=MACS,
    )
    verdict = judge_cycle(obs, case.windows, LIMIT, GAP)

    def shape(items: tuple[Judged, ...]) -> list[tuple[float, float | None, float, bool]]:
        out = []
        for j in items:
            end = None if j.interval.end is None else round(j.interval.end, 6)
            out.append((round(j.interval.start, 6), end, round(j.measured, 6), j.violation))
        return out

    assert shape(verdict.duals) == list(case.duals)
    assert shape(verdict.nones) == list(case.nones)
    if case.sources:
        assert [j.interval.source for j in verdict.duals] == list(case.sources)
    assert verdict.dual_violations == sum(d[3] for d in case.duals)
    assert verdict.none_violations == sum(n[3] for n in case.nones)
    assert verdict.unended == sum(i[1] is None for i in (*case.duals, *case.nones))


def test_a_dual_names_its_nodes_by_mac() -> None:
    obs = Observations(
        0.0,
        4.0,
        frozenset({"n1"}),
        frozenset(),
        arp=(*answers(A, 0.0, 4.0), *answers(B, 1.5, 1.6)),
        macs=MACS,
    )
    (dual,) = judge_cycle(obs, (), LIMIT, GAP).duals
    assert dual.interval.nodes == {"n1", "n2"}


def test_events_outside_the_observation_are_ignored() -> None:
    obs = Observations(
        10.0, 14.0, frozenset({"n1"}), frozenset(), holds=(hold(9.0, "n2"), hold(15.0, "n2"))
    )
    verdict = judge_cycle(obs, (), LIMIT, GAP)
    assert (verdict.duals, verdict.nones) == ((), ())


def test_a_node_cut_off_at_the_start_is_no_holder() -> None:
    obs = Observations(0.0, 1.0, frozenset({"n1"}), frozenset({"n1"}))
    (none,) = judge_cycle(obs, (), LIMIT, GAP).nones
    assert none.unended


@pytest.mark.parametrize(
    ("times", "segments"),
    [
        ([0.0, 0.01, 0.02], [(0.0, 0.02)]),
        ([0.0, 0.01, 0.05], [(0.0, 0.01), (0.05, 0.05)]),
        ([0.0, 0.02, 0.04], [(0.0, 0.04)]),  # exactly the gap apart: still one stretch
        ([], []),
    ],
)
def test_arp_segments(times: list[float], segments: list[tuple[float, float]]) -> None:
    found = arp_segments([ArpAnswer(t, A, "reply") for t in times], GAP, 0.0, 1.0)
    assert found.get(A, []) == segments


def test_bounds_come_from_the_agent_timers() -> None:
    fast = bounds(10, 3, 100)
    assert fast.dual == pytest.approx(0.11)
    assert fast.none == master_down_interval(100, 10, 3) + NONE_SLACK
    assert bounds(100, 2, 50).none == pytest.approx(3 + 206 / 256 + NONE_SLACK)


MONITOR = """\
[2026-12-04T07:36:21.882564] 2: eth0    inet 192.0.2.100/24 scope global secondary eth0
       valid_lft forever preferred_lft forever
[2026-12-04T07:36:21.883212] Deleted 2: eth0    inet 192.0.2.100/24 scope global secondary eth0
       valid_lft forever preferred_lft forever
[2026-12-04T07:36:22.000000] 2: eth0    inet 192.0.2.101/24 scope global secondary eth0
[2026-12-04T07:36:22.100000] 3: eth1    inet 192.0.2.100/24 scope global eth1
[2026-12-04T07:36:22.200000] 2: eth0    inet6 2001:db8::100/64 scope global
[2026-12-04T07:36:22.300000] Deleted 2: eth0    inet 192.0.2.100/32 scope global eth0
garbage
"""


def test_parse_monitor_lines() -> None:
    events = parse_monitor_lines(MONITOR.splitlines(), "n1", "192.0.2.100")
    assert [(e.node, e.held) for e in events] == [("n1", True), ("n1", False), ("n1", False)]
    assert events[1].t - events[0].t == pytest.approx(0.000648, abs=1e-5)
    assert events[2].t - events[0].t == pytest.approx(0.417436, abs=1e-5)
    six = parse_monitor_lines(MONITOR.splitlines(), "n1", "2001:db8::100")
    assert [e.held for e in six] == [True]
