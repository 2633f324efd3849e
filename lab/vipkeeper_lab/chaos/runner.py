"""Chaos cycles on a Lab: inject each scheduled fault, observe, settle, judge. The I/O edge.

Observation is event-driven: ``ip -tshort monitor address`` in every node's namespace stamps
each VIP add/remove, and the client's ARP prober stamps every answer with its MAC. The runner
stamps what it does itself (link cut/restored, fault windows). timeline.py judges it all.

After every fault the runner waits, boundedly, for the settled state the next cycle starts
from: the highest-priority node MASTER and the only VIP holder, every agent answering, and the
client's GET http://VIP/ answered by that node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from vipkeeper_lab.agents import VipkeeperHandle, render_agent_yaml
from vipkeeper_lab.chaos import faults
from vipkeeper_lab.chaos.timeline import (
    Bounds,
    HoldEvent,
    LinkEvent,
    Observations,
    Verdict,
    Window,
    bounds,
    judge_cycle,
    parse_monitor_lines,
)
from vipkeeper_lab.measure import ArpAnswer, parse_arp_lines
from vipkeeper_lab.netns import ns_argv, run
from vipkeeper_lab.nodes import Lab, LabError, Node
from vipkeeper_lab.procs import Proc, tail

VIP = "192.0.2.100/24"
VRID = 51
PRIORITIES = (150, 100, 50)
ARP_INTERVAL = 0.005
#: Answers further apart than this are two stretches of answering, not one.
ARP_GAP = 4 * ARP_INTERVAL
#: The prober ends itself after 900 s (probe.MAX_DURATION); it is replaced well before.
PROBER_LIFETIME = 600.0
NFT_TABLE = "vkchaos"


@dataclass(frozen=True)
class ChaosSettings:
    seed: int
    cycles: int
    interval_cs: int = 10
    version: int = 3
    priorities: tuple[int, ...] = PRIORITIES
    #: Bound on every wait for the settled state (agent start-up on a loaded machine included).
    settle_timeout: float = 20.0

    @property
    def timing(self) -> faults.Timing:
        return faults.Timing(self.interval_cs, self.version, self.priorities)

    @property
    def quiet(self) -> float:
        """Kept observing after settling, so that a late transition is still seen."""
        return 3 * self.timing.advert + 0.1


@dataclass
class CycleResult:
    index: int
    fault: faults.Fault
    started: float
    ended: float
    windows: list[Window]
    limit: Bounds
    verdict: Verdict | None = None
    #: The settled-state invariants after the cycle: sole VIP holder, and who answered GET.
    holders: list[str] = field(default_factory=list)
    http_node: str | None = None
    expected: str = ""
    error: str | None = None
    #: On an error: the tail of every agent's log, taken before the lab is reset.
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return self.error is None and self.holders == [self.expected] == [self.http_node]

    def to_json(self) -> dict[str, Any]:
        def rel(t: float) -> float:
            return round(t - self.started, 4)

        judged = [] if self.verdict is None else [*self.verdict.duals, *self.verdict.nones]
        return {
            "cycle": self.index,
            "fault": faults.to_json(self.fault),
            "seconds": round(self.ended - self.started, 3),
            "windows": [[rel(w.start), rel(w.clear)] for w in self.windows],
            "bounds": {"dual": self.limit.dual, "none": self.limit.none},
            "intervals": [
                {
                    "kind": j.interval.kind,
                    "start": rel(j.interval.start),
                    "duration": round(j.duration, 4),
                    "measured": round(j.measured, 4),
                    "nodes": sorted(j.interval.nodes),
                    "source": j.interval.source,
                    "unended": j.unended,
                    "violation": j.violation,
                }
                for j in judged
            ],
            "expected": self.expected,
            "holders": self.holders,
            "http": self.http_node,
            "settled": self.settled,
            "error": self.error,
            "logs": self.logs,
        }


class LineTail:
    """The complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        return data[:complete].decode(errors="replace").splitlines()


def agent_config(settings: ChaosSettings, priority: int) -> dict[str, Any]:
    return {
        "instances": [
            {
                "name": "web",
                "vrid": VRID,
                "interface": "eth0",
                "version": settings.version,
                "priority": priority,
                "advertInterval": Decimal(settings.interval_cs) / 100,
                "preempt": True,
                "preemptDelay": 0,
                "addresses": [VIP],
            }
        ]
    }


class ChaosRunner:
    """Drives one lab of len(priorities) nodes; node of rank r is lab.nodes[r]."""

    def __init__(self, lab: Lab, settings: ChaosSettings, say: Callable[[str], None]) -> None:
        self.lab = lab
        self.settings = settings
        self.say = say
        self.vip_ip = str(ip_interface(VIP).ip)
        self.nodes: list[Node] = lab.nodes[: len(settings.priorities)]
        self.agents: list[VipkeeperHandle] = []
        self.monitors: list[tuple[Node, LineTail]] = []
        self.holds: list[HoldEvent] = []
        self.arp: list[ArpAnswer] = []
        self.prober: Proc | None = None
        self.arp_tail: LineTail | None = None
        self.macs = {n.mac: n.name for n in self.nodes}

    # ----- set-up ------------------------------------------------------------------------------

    def setup(self) -> None:
        if len(self.lab.nodes) < len(self.settings.priorities):
            raise LabError(f"the lab needs {len(self.settings.priorities)} nodes")
        run(["nft", "--version"])  # fails early and clearly without the nftables package
        for node in self.nodes:
            proc = self.lab.spawn(node, ["ip", "-tshort", "monitor", "address"], name=f"{node}-mon")
            self.monitors.append((node, LineTail(proc.log_path)))
        self.lab.start_http_servers()
        self.agents = [
            self.lab.start_vipkeeper(node, agent_config(self.settings, prio))
            for node, prio in zip(self.nodes, self.settings.priorities, strict=True)
        ]
        self._start_prober()
        self.settle(0)

    def _start_prober(self) -> None:
        if self.prober is not None:
            self.prober.stop()
            self._collect()
        argv = self.lab.python(
            "vipkeeper_lab.probe",
            *("arp", "--iface", "eth0", "--target", self.vip_ip),
            *("--interval", str(ARP_INTERVAL)),
        )
        self.prober = self.lab.spawn(self.lab.the_client, argv, name=f"chaos-arp-{time.time():.0f}")
        self.arp_tail = LineTail(self.prober.log_path)
        self.lab.wait_for(
            "the ARP prober to start",
            lambda: '"event":"start"' in self.prober_text(),
            timeout=30,
            describe=self.prober_text,
        )

    def prober_text(self) -> str:
        return "" if self.prober is None else self.prober.log_text()[:300]

    def _collect(self) -> None:
        for node, lines in self.monitors:
            self.holds += parse_monitor_lines(lines.read(), node.name, self.vip_ip)
        if self.arp_tail is not None:
            self.arp += parse_arp_lines(self.arp_tail.read())

    # ----- settling ----------------------------------------------------------------------------

    def settle(self, rank: int) -> None:
        """Bounded wait: node ``rank`` the only MASTER and VIP holder, every agent answering."""
        expected = self.nodes[rank]
        self.lab.wait_master(
            self.agents, vip=VIP, expect=expected, timeout=self.settings.settle_timeout
        )
        self.lab.wait_for(
            "every agent to report its state",
            lambda: all(a.state() in ("MASTER", "BACKUP") for a in self.agents),
            self.settings.settle_timeout,
            describe=lambda: str(self.lab.states(self.agents)),
        )

    def hard_reset(self) -> None:
        """After a failed cycle: every agent stopped, every node rebooted, all started afresh."""
        for agent in self.agents:
            agent.proc.kill(signal.SIGCONT)
            agent.proc.stop()
        self._clear_loss()
        for node in self.nodes:
            self.lab.reboot(node)
        self.agents = [
            self.lab.start_vipkeeper(node, agent_config(self.settings, prio))
            for node, prio in zip(self.nodes, self.settings.priorities, strict=True)
        ]
        self.settle(0)

    # ----- one cycle ---------------------------------------------------------------------------

    def cycle(self, index: int, fault: faults.Fault) -> CycleResult:
        if self.prober is None or time.time() - self.prober.started_at > PROBER_LIFETIME:
            self._start_prober()
        self._collect()
        base = self.settings.priorities
        limit = bounds(
            self.settings.interval_cs, self.settings.version, faults.takeover_priority(fault, base)
        )
        started = time.time()
        holders = frozenset(self.lab.who_has(VIP))
        cut_at_start = frozenset(self.lab.cut_off)
        links: list[LinkEvent] = []
        result = CycleResult(index, fault, started, started, [], limit, expected=self.nodes[0].name)
        try:
            self._inject(fault, result.windows, links)
            self.settle(0)
            time.sleep(self.settings.quiet)
            result.holders = self.lab.who_has(VIP)
            result.http_node = self.lab.http_get(self.vip_ip, timeout=2.0)
        except (RuntimeError, OSError) as exc:  # LabError, NetnsError, StatusUnavailableError
            result.error = f"{type(exc).__name__}: {exc}"
            result.logs = {
                a.node: f"pid {a.proc.pid} alive {a.alive()}\n" + tail(a.proc.log_text(), 30)
                for a in self.agents
            }
        result.ended = time.time()
        time.sleep(2 * ARP_INTERVAL)  # the prober's last lines reach its log
        self._collect()
        obs = Observations(
            start=started,
            end=result.ended,
            holders=holders,
            disconnected=cut_at_start,
            holds=tuple(e for e in self.holds if e.t >= started),
            links=tuple(links),
            arp=tuple(a for a in self.arp if a.t >= started),
            macs=self.macs,
        )
        result.verdict = judge_cycle(obs, result.windows, limit, ARP_GAP)
        # Keep memory flat over a long run: nothing before this cycle is looked at again.
        self.holds = [e for e in self.holds if e.t >= result.ended]
        self.arp = [a for a in self.arp if a.t >= result.ended]
        if result.error is not None:
            self.say(f"cycle {index}: {result.error}; resetting the lab")
            self.hard_reset()
        return result

    def _inject(self, fault: faults.Fault, windows: list[Window], links: list[LinkEvent]) -> None:
        if isinstance(fault, faults.PowerCut):
            self._power_cut(fault, windows, links)
        elif isinstance(fault, faults.StopLong | faults.StopShort):
            agent = self.agents[fault.rank]
            at = time.time()
            agent.proc.kill(signal.SIGSTOP)
            try:
                time.sleep(fault.duration)
            finally:
                cleared = time.time()
                agent.proc.kill(signal.SIGCONT)
            windows.append(Window(at, cleared))
        elif isinstance(fault, faults.LinkFlap):
            node = self.nodes[fault.rank]
            at = time.time()
            links.append(LinkEvent(at, node.name, connected=False))
            self.lab.link_down(node)
            time.sleep(max(at + fault.down_for - time.time(), 0))
            self.lab.link_up(node)
            cleared = time.time()
            links.append(LinkEvent(cleared, node.name, connected=True))
            windows.append(Window(at, cleared))
        elif isinstance(fault, faults.Loss):
            at = time.time()
            self._set_loss(fault.percent)
            try:
                time.sleep(max(at + fault.duration - time.time(), 0))
            finally:
                self._clear_loss()
            windows.append(Window(at, time.time()))
        elif isinstance(fault, faults.Reload):
            base = self.settings.priorities
            now = faults.priorities_after(fault, base)
            windows.append(self._reload(fault.rank, fault.priority))
            self.settle(faults.expected_master(now))
            windows.append(self._reload(fault.rank, base[fault.rank]))
        else:
            at = time.time()
            handle = self.lab.restart(self.agents[fault.rank])
            if not isinstance(handle, VipkeeperHandle):
                raise LabError(f"restart gave {handle!r}")
            self.agents[fault.rank] = handle
            windows.append(Window(at, time.time()))

    def _power_cut(
        self, fault: faults.PowerCut, windows: list[Window], links: list[LinkEvent]
    ) -> None:
        agent, node = self.agents[fault.rank], self.nodes[fault.rank]
        # Not lab.crash(), which reaps the agent before taking the link down: meanwhile the
        # node's kernel keeps answering on the stale VIP, which a powered-off node never does.
        at = time.time()
        links.append(LinkEvent(at, node.name, connected=False))
        agent.proc.kill(signal.SIGKILL)
        self.lab.link_down(node)
        self.lab.kill(agent)  # reaps it
        time.sleep(max(at + fault.down_for - time.time(), 0))
        self.lab.reboot(node)  # stale VIP flushed first, then the link up
        links.append(LinkEvent(time.time(), node.name, connected=True))
        self.agents[fault.rank] = self.lab.start_vipkeeper(node, agent.config)
        windows.append(Window(at, time.time()))

    def _reload(self, rank: int, priority: int) -> Window:
        """Rewrite the agent's file with ``priority`` and SIGHUP it (as tests/netns do)."""
        agent = self.agents[rank]
        before = int(agent.status()["config"]["reloads"])
        agent.config = agent_config(self.settings, priority)
        temporary = agent.config_path.with_name(agent.config_path.name + ".new")
        temporary.write_text(render_agent_yaml(agent.config))
        os.replace(temporary, agent.config_path)
        at = time.time()
        agent.proc.kill(signal.SIGHUP, group=False)
        self.lab.wait_for(
            f"{agent.node} to reload",
            lambda: int(agent.status()["config"]["reloads"]) > before,
            timeout=10,
        )
        return Window(at, at)

    def _nft(self, script: str) -> None:
        run(ns_argv(self.lab.segment.ns, ["nft", script]))

    def _set_loss(self, percent: int) -> None:
        self._nft(
            f"add table bridge {NFT_TABLE}; "
            f"add chain bridge {NFT_TABLE} forward "
            "{ type filter hook forward priority 0; policy accept; }; "
            f"add rule bridge {NFT_TABLE} forward numgen random mod 100 < {percent} drop"
        )

    def _clear_loss(self) -> None:
        with contextlib.suppress(OSError, LabError):
            run(
                ns_argv(self.lab.segment.ns, ["nft", "delete", "table", "bridge", NFT_TABLE]),
                check=False,
            )

    # ----- the run -----------------------------------------------------------------------------

    def run(
        self, schedule: Sequence[faults.Fault], report: Callable[[CycleResult], None]
    ) -> list[CycleResult]:
        results = []
        for index, fault in enumerate(schedule, start=1):
            result = self.cycle(index, fault)
            results.append(result)
            report(result)
        return results

    def close(self) -> None:
        self._clear_loss()
        if self.prober is not None:
            self.prober.stop()
