#!/usr/bin/env python3
"""Failover benchmark: vipkeeper-agent against keepalived, side by side, in one lab.

    sudo .venv/bin/python bench/failover.py            # everything, 20 trials per cell
    sudo .venv/bin/python bench/failover.py --quick    # smoke run, 3 trials per cell

Figures, ratios and targets are printed and written (JSON with every trial, Markdown table); nothing
is asserted: this is a benchmark, not a test. See bench/README.md for method and definitions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

from stats import Summary, ratio, summarize
from vipkeeper_lab import netns
from vipkeeper_lab.agents import AgentHandle, StatusUnavailableError
from vipkeeper_lab.measure import HttpSample
from vipkeeper_lab.nodes import Lab, LabError, Node
from vipkeeper_lab.probe import Probes
from vipkeeper_lab.procs import stop_all, tail

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SNIFFER = BENCH_DIR / "vrrp_sniff.py"
DEFAULT_MARKDOWN = BENCH_DIR / "results" / "failover.md"
DEFAULT_JSON = BENCH_DIR / "results" / "failover.json"

IMPLS = ("vipkeeper", "keepalived")
LABEL = {"vipkeeper": "ours", "keepalived": "keepalived"}
SCENARIOS = ("unplanned", "planned")
SCENARIO_TEXT = {
    "unplanned": "kill -9 of the master's process group + its link down",
    "planned": "SIGTERM to the master's process group (graceful: priority-0 advert)",
}
#: Priorities of a set's three nodes; the first is the master to fail, the second takes over.
PRIORITIES = (150, 100, 50)
#: Each implementation has its own three nodes, VRID and VIP on the one shared segment.
VIP = {"vipkeeper": "192.0.2.100/24", "keepalived": "192.0.2.101/24"}
VRID = {"vipkeeper": 51, "keepalived": 52}

#: Probes answered by the old master before the random phase starts (a pre-fault baseline).
BASELINE = 0.3
#: After the new holder answered HTTP: let late probe lines reach the logs.
SETTLE = 0.3
#: Allowance on top of VRRP's own bounds (process start-up, a loaded 2-core machine).
SLACK = 5.0
#: Seconds for a daemon to start (Python imports, keepalived's config parse) before its timers.
STARTUP = 5.0

#: The HTTP prober's timeout per GET in vipkeeper_lab.probe (and so in Lab.start_probes).
LAB_HTTP_TIMEOUT = 0.05

MEMORY_COUNTS = (1, 100)
MEMORY_STEADY = 5.0

TARGET_UNPLANNED_P99_RATIO = 1.0
TARGET_PLANNED_P99 = 0.070
TARGET_GAP_RATIO = 1.2
TARGET_RSS_MB = 80.0


@dataclass(frozen=True)
class IntervalSpec:
    key: str
    version: int
    interval: Decimal

    @property
    def seconds(self) -> float:
        return float(self.interval)

    def skew(self, priority: int) -> float:
        """RFC 3768/5798 Skew_Time (v2: whole seconds; v3: scaled by the advert interval)."""
        scale = 1.0 if self.version == 2 else self.seconds
        return (256 - priority) * scale / 256

    def master_down(self, priority: int) -> float:
        return 3 * self.seconds + self.skew(priority)


INTERVALS = {
    "v2-1s": IntervalSpec("v2-1s", 2, Decimal(1)),
    "v3-100ms": IntervalSpec("v3-100ms", 3, Decimal("0.1")),
}


class TrialError(Exception):
    pass


# ----- output ---------------------------------------------------------------------------------


class Out:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def fmt_ratio3(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ----- machine --------------------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=10, check=False, cwd=REPO
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dirty = _first_line(["git", "status", "--porcelain"]) not in ("unknown", "")
    commit = _first_line(["git", "rev-parse", "--short", "HEAD"])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "keepalived": _first_line(["keepalived", "--version"]),
        "vipkeeper_commit": commit + (" (+ uncommitted changes)" if dirty else ""),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# ----- the agent sets -------------------------------------------------------------------------


def instance_config(impl: str, spec: IntervalSpec, priority: int) -> dict[str, Any]:
    """One config dict; it drives both implementations (keepalived through the lab's renderer)."""
    return {
        "instances": [
            {
                "name": "web",
                "vrid": VRID[impl],
                "interface": "eth0",
                "version": spec.version,
                "priority": priority,
                "advertInterval": spec.interval,
                "preempt": True,
                "preemptDelay": 0,
                "addresses": [VIP[impl]],
            }
        ]
    }


def start_agent(lab: Lab, impl: str, node: Node, config: dict[str, Any]) -> AgentHandle:
    if impl == "keepalived":
        return lab.start_keepalived(node, config)
    return lab.start_vipkeeper(node, config)


@dataclass
class AgentSet:
    """Three nodes running one implementation; agents[0] is the preferred master."""

    impl: str
    spec: IntervalSpec
    nodes: list[Node]
    agents: list[AgentHandle] = field(default_factory=list)

    @property
    def vip(self) -> str:
        return VIP[self.impl]

    @property
    def vip_ip(self) -> str:
        return str(ip_interface(self.vip).ip)

    def priority(self, node_name: str) -> int:
        return PRIORITIES[[n.name for n in self.nodes].index(node_name)]

    def start(self, lab: Lab) -> None:
        self.agents = [
            start_agent(lab, self.impl, node, instance_config(self.impl, self.spec, prio))
            for node, prio in zip(self.nodes, PRIORITIES, strict=True)
        ]

    def stable_timeout(self) -> float:
        return STARTUP + self.spec.master_down(PRIORITIES[0]) + self.spec.seconds + SLACK

    def wait_stable(self, lab: Lab, timeout: float | None = None) -> AgentHandle:
        """The preferred master is MASTER and alone holds the VIP; the others are not MASTER."""
        return lab.wait_master(
            self.agents,
            vip=self.vip,
            expect=self.nodes[0],
            timeout=self.stable_timeout() if timeout is None else timeout,
        )

    def stop(self, lab: Lab) -> None:
        stop_all([a.proc for a in self.agents])
        for node in self.nodes:
            lab.reboot(node)  # drops any VIP a killed daemon left, brings the link up

    def reset(self, lab: Lab) -> None:
        self.stop(lab)
        self.start(lab)
        self.wait_stable(lab)


# ----- the advert log -------------------------------------------------------------------------


@dataclass(frozen=True)
class Advert:
    t: float
    src: str
    vrid: int
    prio: int


class AdvertLog:
    """The VRRP sniffer in the client namespace (bench/vrrp_sniff.py) and its parsed log."""

    def __init__(self, lab: Lab, duration: float) -> None:
        argv = [sys.executable, str(SNIFFER), "--iface", "eth0", "--duration", f"{duration:.0f}"]
        self.proc = lab.spawn(lab.the_client, argv, name=f"vrrp-sniff-{time.time():.0f}")
        lab.wait_for(
            "the VRRP sniffer",
            lambda: '"start"' in self.proc.log_text() or not self.proc.alive(),
            timeout=10,
        )
        if not self.proc.alive():
            raise LabError(f"the VRRP sniffer exited: {tail(self.proc.log_text(), 5)}")
        self._offset = 0
        self._seen: list[Advert] = []

    def _refresh(self) -> None:
        """Parse what the sniffer wrote since the last call (its log only grows)."""
        try:
            with self.proc.log_path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._offset += end
        for raw in chunk[:end].splitlines():
            if not raw.startswith(b"{") or b'"src"' not in raw:
                continue
            try:
                rec = json.loads(raw)
                advert = Advert(
                    float(rec["t"]), str(rec["src"]), int(rec["vrid"]), int(rec["prio"])
                )
            except (ValueError, KeyError, TypeError):
                continue
            self._seen.append(advert)

    def adverts(self, vrid: int, since: float) -> list[Advert]:
        self._refresh()
        return sorted((a for a in self._seen if a.vrid == vrid and a.t >= since), key=lambda a: a.t)

    def wait_advert(self, vrid: int, src: str, after: float, timeout: float) -> Advert | None:
        """The first advert from ``src`` for ``vrid`` seen at or after ``after`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [a for a in self.adverts(vrid, after) if a.src == src and a.prio > 0]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)

    def stop(self) -> None:
        self.proc.stop()


# ----- one trial ------------------------------------------------------------------------------


@dataclass
class Trial:
    impl: str
    scenario: str
    interval: str
    index: int
    old_node: str
    new_node: str | None = None
    fault_at: float = 0.0
    #: Wanted time from the old master's last advert to the fault; drawn once per pair of trials.
    target_phase: float = 0.0
    # Client-side figures (seconds after the fault).
    arp_takeover: float | None = None
    garp_delay: float | None = None
    http_takeover: float | None = None
    gap: float | None = None
    gap_from: float | None = None
    gap_to: float | None = None
    failed_requests: int = 0
    #: Last GET the old master answered after the fault instant (it serves until its link drops).
    old_served_until: float | None = None
    #: How long injecting the fault took (kill -9 and reap, then link down; or the SIGTERM).
    fault_took: float | None = None
    # From the advert sniffer (seconds; see README "Where the time goes").
    since_last_advert: float | None = None
    resign_advert: float | None = None
    expected_takeover: float | None = None
    advert_takeover: float | None = None
    timer_late: float | None = None
    arp_after_advert: float | None = None
    #: Takeover minus the RFC timer expiry: what the implementation adds to the protocol's wait.
    arp_over_expected: float | None = None
    garp_over_expected: float | None = None
    # Restoring the old master afterwards.
    stale_vip_after_stop: bool | None = None
    restore_seconds: float | None = None
    #: 1-minute load average at the fault, and network namespaces of other labs on the machine.
    loadavg: float | None = None
    foreign_namespaces: int | None = None
    error: str | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, out: Out) -> None:
        self.args = args
        self.out = out
        self.rng = random.Random(args.seed)
        self.trials: list[Trial] = []
        self.memory: list[dict[str, Any]] = []
        self._last_probe_second = 0

    # --- probes ---------------------------------------------------------------------------

    def _start_probes(self, lab: Lab, vip: str) -> Probes:
        # The lab names probe logs by the wall-clock second: never start two in the same one.
        while int(time.time()) <= self._last_probe_second:
            time.sleep(0.05)
        self._last_probe_second = int(time.time())
        if self.args.http_timeout == LAB_HTTP_TIMEOUT:
            return lab.start_probes(vip)
        # The lab's probers, but the HTTP one with another timeout (Lab.start_probes has none).
        stamp = f"{time.time():.0f}"
        ip = str(ip_interface(vip).ip)
        client = lab.the_client
        arp = lab.spawn(
            client,
            lab.python("vipkeeper_lab.probe", "arp", "--iface", client.ifname, "--target", ip),
            name=f"probe-arp-{stamp}",
        )
        web = lab.spawn(
            client,
            lab.python(
                "vipkeeper_lab.probe",
                *("http", "--host", ip, "--timeout", f"{self.args.http_timeout:g}"),
            ),
            name=f"probe-http-{stamp}",
        )
        return Probes(arp, web)

    @staticmethod
    def _wait_arp(probes: Probes, mac: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(a.mac == mac and a.kind == "reply" for a in probes.arp_answers()):
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _wait_new_answer(
        probes: Probes, fault_at: float, old: str, timeout: float
    ) -> HttpSample | None:
        deadline = time.monotonic() + timeout
        while True:
            for sample in probes.http_samples():
                if sample.ok and sample.end >= fault_at and sample.node != old:
                    return sample
            if time.monotonic() >= deadline or not probes.http.alive():
                return None
            time.sleep(0.05)

    # --- a trial --------------------------------------------------------------------------

    @staticmethod
    def _sleep_to_phase(sniffer: AdvertLog, aset: AgentSet, old: Node, target: float) -> None:
        """Sleep until ``target`` seconds after one of the old master's adverts.

        The adverts are periodic, so the last one the sniffer logged anchors the schedule. The
        fault then lands at the same phase for both implementations of a pair of trials (the
        phase is random, and shared), which keeps the phase out of their difference.
        """
        interval = aset.spec.seconds
        src = str(old.ipv4.ip)
        recent = [
            a for a in sniffer.adverts(VRID[aset.impl], time.time() - 3 * interval) if a.src == src
        ]
        anchor = (
            recent[-1]
            if recent
            else sniffer.wait_advert(VRID[aset.impl], src, time.time(), 2 * interval + 1)
        )
        if anchor is None:
            raise TrialError(f"the sniffer saw no advert from {old.name}")
        at = anchor.t + target
        while at < time.time() + 0.002:
            at += interval
        time.sleep(max(at - time.time(), 0))

    def trial(
        self,
        lab: Lab,
        aset: AgentSet,
        scenario: str,
        index: int,
        sniffer: AdvertLog,
        phase: float,
    ) -> Trial:
        spec = aset.spec
        master = aset.wait_stable(lab)
        old = lab.node(master.node)
        record = Trial(aset.impl, scenario, spec.key, index, old.name)
        probes = self._start_probes(lab, aset.vip)
        try:
            if probes.wait_http(SLACK, node=old.name) is None:
                raise TrialError(f"the HTTP prober got no answer from {old.name} before the fault")
            if probes.arp is not None and not self._wait_arp(probes, old.mac, SLACK):
                raise TrialError(f"the ARP prober got no reply from {old.name} before the fault")
            record.loadavg = float(Path("/proc/loadavg").read_text().split()[0])
            record.foreign_namespaces = len(foreign_namespaces(lab))
            time.sleep(BASELINE)
            record.target_phase = phase * spec.seconds
            self._sleep_to_phase(sniffer, aset, old, record.target_phase)

            if scenario == "unplanned":
                # A power cut: SIGKILL to the daemon's process group and the link down at once.
                # Not lab.crash(), which reaps the daemon before taking the link down: the kernel
                # needs 15-25 ms to tear down our (Python) agent after SIGKILL against 1-6 ms for
                # keepalived, and meanwhile the node keeps answering on the VIP, which would cut
                # that much off our client-visible gap only.
                record.fault_at = time.time()
                master.proc.kill(signal.SIGKILL, group=True)
                lab.link_down(old)
                record.fault_took = time.time() - record.fault_at
                lab.kill(master)  # reaps it (and keepalived's orphaned VRRP child)
                # Nothing can happen before the runner-up's timer expires: do not poll meanwhile.
                time.sleep(max(spec.master_down(PRIORITIES[1]) - spec.seconds - 0.1, 0))
                bound = spec.master_down(PRIORITIES[1]) + SLACK
            else:
                # Like `systemctl stop` (KillMode=control-group): every process of the daemon.
                record.fault_at = lab.kill(master, signal.SIGTERM)
                record.fault_took = time.time() - record.fault_at
                bound = spec.skew(PRIORITIES[1]) + SLACK
            fault_at = record.fault_at

            answer = self._wait_new_answer(probes, fault_at, old.name, bound)
            time.sleep(SETTLE)
            until = time.time()
            new = lab.wait_master(aset.agents, vip=aset.vip, exclude=[old.name], timeout=SLACK)
            new_node = lab.node(new.node)
            record.new_node = new_node.name
            result = probes.takeover(
                fault_at,
                old_mac=old.mac,
                new_mac=new_node.mac,
                old_node=old.name,
                until=until,
            )
            record.arp_takeover = result.arp_takeover
            record.garp_delay = result.garp_delay
            record.http_takeover = result.http_takeover
            record.gap = result.gap
            if result.gap_from is not None and result.gap_to is not None:
                record.gap_from = result.gap_from - fault_at
                record.gap_to = result.gap_to - fault_at
            served = [
                s.end
                for s in probes.http_samples()
                if s.ok and s.node == old.name and fault_at <= s.end < until
            ]
            record.old_served_until = max(served) - fault_at if served else None
            record.failed_requests = result.failed_requests
            if answer is None:
                record.error = f"no HTTP answer from a new holder within {bound:.1f} s"
            self._adverts(record, aset, sniffer, old, new_node, result.arp_at)
        finally:
            probes.stop()
        self._restore(lab, aset, scenario, master, record)
        return record

    @staticmethod
    def _adverts(
        record: Trial,
        aset: AgentSet,
        sniffer: AdvertLog,
        old: Node,
        new: Node,
        arp_at: float | None,
    ) -> None:
        spec, fault_at = aset.spec, record.fault_at
        adverts = sniffer.adverts(VRID[aset.impl], since=fault_at - 3 * spec.seconds - 1)
        old_ip, new_ip = str(old.ipv4.ip), str(new.ipv4.ip)
        before = [a.t for a in adverts if a.src == old_ip and a.prio > 0 and a.t < fault_at]
        resign = [a.t for a in adverts if a.src == old_ip and a.prio == 0 and a.t >= fault_at]
        first_new = [a.t for a in adverts if a.src == new_ip and a.prio > 0 and a.t >= fault_at]
        new_prio = aset.priority(new.name)
        expected_at = None
        if before:
            record.since_last_advert = fault_at - before[-1]
        if resign:
            record.resign_advert = resign[0] - fault_at
        if record.scenario == "unplanned" and before:
            expected_at = before[-1] + spec.master_down(new_prio)
        elif record.scenario == "planned" and resign:
            expected_at = resign[0] + spec.skew(new_prio)
        if expected_at is not None:
            record.expected_takeover = expected_at - fault_at
        if first_new:
            record.advert_takeover = first_new[0] - fault_at
            if expected_at is not None:
                record.timer_late = first_new[0] - expected_at
            if arp_at is not None:
                record.arp_after_advert = arp_at - first_new[0]
        if expected_at is not None and record.arp_takeover is not None:
            record.arp_over_expected = record.arp_takeover - (expected_at - fault_at)
        if expected_at is not None and record.garp_delay is not None:
            record.garp_over_expected = record.garp_delay - (expected_at - fault_at)

    def _restore(
        self, lab: Lab, aset: AgentSet, scenario: str, master: AgentHandle, record: Trial
    ) -> None:
        """Bring the old master back (as after a reboot, or a plain restart) and wait for it to
        preempt; the set is then as before the fault."""
        old = lab.node(master.node)
        if scenario == "unplanned":
            lab.reboot(old)
        else:
            master.proc.wait(SLACK)  # a graceful stop; restart() below SIGKILLs a straggler
            record.stale_vip_after_stop = aset.vip_ip in {str(a.ip) for a in lab.addresses(old)}
            if record.stale_vip_after_stop:
                lab.reboot(old)
        started = time.monotonic()
        aset.agents[0] = lab.restart(master)
        aset.wait_stable(lab)
        record.restore_seconds = time.monotonic() - started

    # --- blocks ---------------------------------------------------------------------------

    def failover_block(self, lab: Lab, spec: IntervalSpec, scenarios: Sequence[str]) -> None:
        trials = self.args.trials
        per_trial = 2 * spec.master_down(150) + 2 * SLACK + STARTUP
        sniffer = AdvertLog(lab, duration=len(scenarios) * trials * 2 * per_trial + 600)
        sets = {
            impl: AgentSet(impl, spec, lab.nodes[3 * i : 3 * i + 3]) for i, impl in enumerate(IMPLS)
        }
        try:
            for aset in sets.values():
                aset.start(lab)
            for aset in sets.values():
                master = aset.wait_stable(lab)
                self.out.say(
                    f"{spec.key}: {LABEL[aset.impl]} on "
                    f"{'/'.join(f'{n.name}({p})' for n, p in zip(aset.nodes, PRIORITIES, strict=True))}"
                    f", VRID {VRID[aset.impl]}, VIP {aset.vip}: master {master.node}"
                )
            for scenario in scenarios:
                self.out.say(f"{spec.key} {scenario}: {SCENARIO_TEXT[scenario]}")
                for index in range(1, trials + 1):
                    # One random phase per pair: both implementations see the same one.
                    phase = self.rng.random()
                    for impl in IMPLS:  # alternate: ours, keepalived, ours, ...
                        self._one(lab, sets[impl], scenario, index, sniffer, phase)
        finally:
            for aset in sets.values():
                aset.stop(lab)
            sniffer.stop()

    def _one(
        self,
        lab: Lab,
        aset: AgentSet,
        scenario: str,
        index: int,
        sniffer: AdvertLog,
        phase: float,
    ) -> None:
        try:
            record = self.trial(lab, aset, scenario, index, sniffer, phase)
        except (LabError, TrialError, netns.NetnsError, OSError) as exc:
            record = Trial(aset.impl, scenario, aset.spec.key, index, aset.nodes[0].name)
            record.error = f"{type(exc).__name__}: {exc}"
            self.out.say(f"  trial failed ({record.error}); restarting the {aset.impl} set")
            for agent in aset.agents:
                text = tail(agent.proc.log_text(), 4)
                if text:
                    print(f"      --- {agent.node} {agent.kind} ---\n{text}", flush=True)
            aset.reset(lab)
        self.trials.append(record)
        self.out.say(
            f"  {record.interval} {scenario:9} #{index:02d} {LABEL[aset.impl]:10} "
            f"{record.old_node}->{record.new_node or '?'}  arp {ms(record.arp_takeover):>7}  "
            f"http {ms(record.http_takeover):>7}  gap {ms(record.gap):>7} ms  "
            f"(last advert {ms(record.since_last_advert)} before [target {ms(record.target_phase)}], "
            f"timer expiry {ms(record.expected_takeover)}, new advert {ms(record.advert_takeover)})"
            + (f"  ERROR {record.error}" if record.error else "")
        )

    # --- memory ---------------------------------------------------------------------------

    def memory_block(self, lab: Lab) -> None:
        node = lab.nodes[0]
        window = self.args.cpu_window
        for count in MEMORY_COUNTS:
            for impl in IMPLS:
                row = self._memory_one(lab, node, impl, count, window)
                self.memory.append(row)
                self.out.say(
                    f"memory {LABEL[impl]:10} {count:3} instances: RSS {row['rss_mb']:.1f} MB "
                    f"(HWM {row['hwm_mb']:.1f} MB, {row['processes']} processes), CPU "
                    f"{row['cpu_seconds']:.3f} s in {window:g} s ({row['cpu_percent']:.2f} %), "
                    f"all MASTER after {row['converge_seconds']:.1f} s, "
                    f"{row['vips_configured']} VIPs configured"
                )

    def _memory_one(
        self, lab: Lab, node: Node, impl: str, count: int, window: float
    ) -> dict[str, Any]:
        config = {
            "instances": [
                {
                    "name": f"vip{i:03d}",
                    "vrid": i,
                    "interface": "eth0",
                    "version": 3,
                    "priority": 150,
                    "advertInterval": Decimal(1),
                    "preempt": True,
                    "addresses": [f"192.0.2.{99 + i}/24"],
                }
                for i in range(1, count + 1)
            ]
        }
        agent = start_agent(lab, impl, node, config)
        try:
            started = time.monotonic()

            def all_master() -> bool:
                if not agent.alive():
                    raise LabError(f"{impl} exited: {tail(agent.proc.log_text(), 3)}")
                try:
                    states = [i.get("state") for i in agent.status()["instances"]]
                except (StatusUnavailableError, KeyError, TypeError):
                    return False
                return len(states) == count and all(s == "MASTER" for s in states)

            lab.wait_for(
                f"{count} {impl} instances to be MASTER",
                all_master,
                timeout=STARTUP + 3.5 + SLACK + count * 0.05,
                interval=0.2,
            )
            converge = time.monotonic() - started
            time.sleep(MEMORY_STEADY)
            pids = process_tree(agent.proc.pid)
            cpu_before = cpu_seconds(pids)
            time.sleep(window)
            cpu_after = cpu_seconds(pids)
            procs = [proc_memory(pid) for pid in pids]
            vips = sum(
                1 for a in lab.addresses(node) if a.ip.version == 4 and a.ip.packed[3] >= 100
            )
            cpu = cpu_after - cpu_before
            return {
                "impl": impl,
                "instances": count,
                "processes": len(pids),
                "per_process": procs,
                "rss_mb": sum(p["rss_kb"] for p in procs) / 1024,
                "hwm_mb": sum(p["hwm_kb"] for p in procs) / 1024,
                "cpu_seconds": cpu,
                "cpu_window": window,
                "cpu_percent": 100 * cpu / window,
                "converge_seconds": converge,
                "vips_configured": vips,
            }
        finally:
            stop_all([agent.proc])
            lab.reboot(node)


def foreign_namespaces(lab: Lab) -> list[str]:
    """Network namespaces that are not this lab's: other labs or tests sharing the CPUs."""
    return [ns for ns in netns.list_namespaces() if not ns.startswith(lab.prefix + "-")]


# ----- /proc ----------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (keepalived: the parent and its VRRP child)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                continue
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of ``pids`` (their own, not their waited-for children's), in seconds."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": pid, "name": "?", "rss_kb": 0, "hwm_kb": 0}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "Name":
            out["name"] = value.strip()
        elif key == "VmRSS":
            out["rss_kb"] = int(value.split()[0])
        elif key == "VmHWM":
            out["hwm_kb"] = int(value.split()[0])
    return out


# ----- the report -----------------------------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def text(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.headers, *self.rows]) for i in range(len(self.headers))
        ]
        lines = []
        for n, row in enumerate([self.headers, *self.rows]):
            cells = [
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |"]
        lines.append(
            "|" + "|".join("---" if i < 3 else "---:" for i in range(len(self.headers))) + "|"
        )
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


def cell(
    trials: Sequence[Trial], impl: str, scenario: str, interval: str, metric: str
) -> Summary | None:
    return summarize(
        getattr(t, metric)
        for t in trials
        if (t.impl, t.scenario, t.interval) == (impl, scenario, interval)
    )


def _p(s: Summary | None, which: str) -> float | None:
    return None if s is None else getattr(s, which)


MAIN_METRICS = (
    ("arp_takeover", "takeover (first ARP reply)"),
    ("http_takeover", "first HTTP answer"),
    ("gap", "client-visible gap"),
)
DETAIL_METRICS = (
    ("since_last_advert", "old master's last advert before fault"),
    ("resign_advert", "priority-0 advert after SIGTERM"),
    ("expected_takeover", "RFC timer expiry (expected)"),
    ("advert_takeover", "new master's first advert"),
    ("timer_late", "first advert minus timer expiry"),
    ("arp_after_advert", "first ARP reply minus first advert"),
    ("garp_delay", "first gratuitous ARP"),
    ("garp_over_expected", "first gratuitous ARP minus timer expiry"),
    ("arp_over_expected", "first ARP reply minus timer expiry"),
    ("fault_took", "fault injection took"),
    ("gap_from", "gap starts (last good GET)"),
    ("old_served_until", "old master's last GET answered"),
)


@dataclass
class Report:
    main: Table
    detail: Table
    memory: Table | None
    targets: list[dict[str, Any]]
    summary: dict[str, Any]


def build_report(trials: Sequence[Trial], memory: Sequence[dict[str, Any]]) -> Report:
    cells = sorted(
        {(t.scenario, t.interval) for t in trials},
        key=lambda c: (SCENARIOS.index(c[0]), list(INTERVALS).index(c[1])),
    )
    main = Table(
        [
            "scenario",
            "interval",
            "metric (ms)",
            "ours p50",
            "ours p99",
            "ka p50",
            "ka p99",
            "ratio p50",
            "ratio p99",
            "n ours/ka",
        ]
    )
    detail = Table(
        [
            "scenario",
            "interval",
            "where the time goes (ms)",
            "ours p50",
            "ours p99",
            "ka p50",
            "ka p99",
        ]
    )
    summary: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for scenario, interval in cells:
        per: dict[str, dict[str, Summary | None]] = {}
        for impl in IMPLS:
            per[impl] = {
                m: cell(trials, impl, scenario, interval, m)
                for m, _ in (*MAIN_METRICS, *DETAIL_METRICS)
            }
        summary[f"{scenario}/{interval}"] = {
            impl: {m: None if s is None else asdict(s) for m, s in per[impl].items()}
            for impl in IMPLS
        }
        for metric, label in MAIN_METRICS:
            o, k = per["vipkeeper"][metric], per["keepalived"][metric]
            main.rows.append(
                [
                    scenario,
                    interval,
                    label,
                    ms(_p(o, "p50")),
                    ms(_p(o, "p99")),
                    ms(_p(k, "p50")),
                    ms(_p(k, "p99")),
                    fmt_ratio(ratio(_p(o, "p50"), _p(k, "p50"))),
                    fmt_ratio(ratio(_p(o, "p99"), _p(k, "p99"))),
                    f"{o.n if o else 0}/{k.n if k else 0}",
                ]
            )
        gap_ratio = {
            impl: {
                q: ratio(_p(per[impl]["gap"], q), _p(per[impl]["arp_takeover"], q))
                for q in ("p50", "p99")
            }
            for impl in IMPLS
        }
        main.rows.append(
            [
                scenario,
                interval,
                "gap / takeover (ratio)",
                fmt_ratio(gap_ratio["vipkeeper"]["p50"]),
                fmt_ratio(gap_ratio["vipkeeper"]["p99"]),
                fmt_ratio(gap_ratio["keepalived"]["p50"]),
                fmt_ratio(gap_ratio["keepalived"]["p99"]),
                "",
                "",
                "",
            ]
        )
        summary[f"{scenario}/{interval}"]["gap_over_takeover"] = gap_ratio
        for metric, label in DETAIL_METRICS:
            if metric == "resign_advert" and scenario != "planned":
                continue
            o, k = per["vipkeeper"][metric], per["keepalived"][metric]
            detail.rows.append(
                [
                    scenario,
                    interval,
                    label,
                    ms(_p(o, "p50")),
                    ms(_p(o, "p99")),
                    ms(_p(k, "p50")),
                    ms(_p(k, "p99")),
                ]
            )

        o_arp, k_arp = per["vipkeeper"]["arp_takeover"], per["keepalived"]["arp_takeover"]
        if scenario == "unplanned":
            value = ratio(_p(o_arp, "p99"), _p(k_arp, "p99"))
            targets.append(
                _target(
                    f"unplanned {interval}: takeover p99 ours/keepalived",
                    value,
                    TARGET_UNPLANNED_P99_RATIO,
                    fmt_ratio3,
                )
            )
        if scenario == "planned" and interval == "v3-100ms":
            targets.append(
                _target(
                    "planned v3-100ms: takeover p99 (ours)",
                    _p(o_arp, "p99"),
                    TARGET_PLANNED_P99,
                    lambda v: f"{ms(v)} ms",
                )
            )
        targets.append(
            _target(
                f"{scenario} {interval}: gap/takeover p99 (ours)",
                gap_ratio["vipkeeper"]["p99"],
                TARGET_GAP_RATIO,
                fmt_ratio3,
            )
        )

    mem_table = None
    if memory:
        mem_table = Table(
            [
                "implementation",
                "instances",
                "processes",
                "VmRSS MB",
                "VmHWM MB",
                "CPU s",
                "CPU %",
                "all MASTER after s",
            ]
        )
        for row in memory:
            mem_table.rows.append(
                [
                    LABEL[row["impl"]],
                    str(row["instances"]),
                    str(row["processes"]),
                    f"{row['rss_mb']:.1f}",
                    f"{row['hwm_mb']:.1f}",
                    f"{row['cpu_seconds']:.3f} / {row['cpu_window']:g} s",
                    f"{row['cpu_percent']:.2f}",
                    f"{row['converge_seconds']:.1f}",
                ]
            )
        ours = [
            r for r in memory if r["impl"] == "vipkeeper" and r["instances"] == max(MEMORY_COUNTS)
        ]
        if ours:
            targets.append(
                _target(
                    f"memory: ours VmRSS with {max(MEMORY_COUNTS)} instances (MB)",
                    ours[0]["rss_mb"],
                    TARGET_RSS_MB,
                    lambda v: f"{v:.1f}",
                )
            )
    return Report(main, detail, mem_table, targets, summary)


def _target(
    name: str, value: float | None, limit: float, fmt: Callable[[float | None], str]
) -> dict[str, Any]:
    status = "n/a" if value is None else ("MET" if value <= limit else "MISSED")
    return {
        "target": name,
        "value": value,
        "limit": limit,
        "status": status,
        "text": f"{status:6} {name}: {fmt(value)} (target <= {fmt(limit)})",
    }


def render(
    machine: dict[str, Any],
    options: dict[str, Any],
    report: Report,
    trials: Sequence[Trial],
    *,
    markdown: bool,
) -> str:
    def table(t: Table) -> str:
        return t.markdown() if markdown else t.text()

    failed = [t for t in trials if t.error]
    parts = []
    if markdown:
        parts.append("# vipkeeper failover benchmark\n")
        parts.append("\n".join(f"- {k}: {v}" for k, v in {**machine, **options}.items()) + "\n")
    if report.main.rows:
        parts.append(
            ("## " if markdown else "")
            + "Failover (ms after the fault; ratio = ours / keepalived)\n"
        )
        parts.append(table(report.main) + "\n")
        parts.append(
            ("## " if markdown else "") + "Where the time goes (from the VRRP advert sniffer)\n"
        )
        parts.append(table(report.detail) + "\n")
        for impl in IMPLS:
            mine = [t for t in trials if t.impl == impl and t.loadavg is not None]
            if mine:
                shared = sum(1 for t in mine if t.foreign_namespaces)
                parts.append(
                    f"{LABEL[impl]}: mean 1-min load average at the fault "
                    f"{sum(t.loadavg or 0 for t in mine) / len(mine):.2f}; other labs present in "
                    f"{shared}/{len(mine)} trials"
                )
        parts.append("")
        if failed:
            parts.append(
                f"{len(failed)} trial(s) had errors (their figures, if any, are included):"
            )
            parts += [f"- {t.interval} {t.scenario} #{t.index} {t.impl}: {t.error}" for t in failed]
            parts.append("")
    if report.memory is not None:
        parts.append(
            ("## " if markdown else "") + "Memory and CPU, one node, v3 1 s adverts, steady state\n"
        )
        parts.append(table(report.memory) + "\n")
    if report.targets:
        parts.append(("## " if markdown else "") + "Targets\n")
        parts += [("- " if markdown else "  ") + t["text"] for t in report.targets]
    return "\n".join(parts) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/failover.py",
        description="Failover benchmark: vipkeeper-agent against keepalived (needs root).",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials per cell (default 20)")
    parser.add_argument(
        "--only",
        action="append",
        choices=("unplanned", "planned", "memory"),
        help="run only these parts (repeatable; default: all)",
    )
    parser.add_argument(
        "--interval",
        action="append",
        choices=tuple(INTERVALS),
        help="advert settings to run (repeatable; default: both)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials, short windows")
    parser.add_argument(
        "--http-timeout",
        type=float,
        default=LAB_HTTP_TIMEOUT,
        help="timeout of each GET of the HTTP prober, in s (default 0.05, the lab's); it bounds "
        "the resolution of the HTTP figures: a GET sent to the old MAC waits that long",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault-phase RNG")
    parser.add_argument(
        "--cpu-window", type=float, default=None, help="CPU-time window in s (default 20; quick 3)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="raw trials (JSON)")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="table (Markdown)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the lab's work directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials is None:
        args.trials = 3 if args.quick else 20
    if args.trials < 1:
        raise SystemExit("--trials must be at least 1")
    if not 0.001 <= args.http_timeout <= 1:
        raise SystemExit("--http-timeout must be 0.001-1 s")
    if args.cpu_window is None:
        args.cpu_window = 3.0 if args.quick else 20.0
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if os.geteuid() != 0:
        print("bench/failover.py needs root (network namespaces)", file=sys.stderr)
        return 2
    parts = args.only or ["unplanned", "planned", "memory"]
    scenarios = [s for s in SCENARIOS if s in parts]
    intervals = [INTERVALS[k] for k in INTERVALS if k in (args.interval or list(INTERVALS))]

    out = Out()
    machine = machine_info()
    options = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "trials per cell": args.trials,
        "parts": ",".join(parts),
        "intervals": ",".join(i.key for i in intervals),
        "seed": args.seed,
        "http prober timeout": f"{args.http_timeout * 1000:g} ms",
        "topology": "6 nodes + client on one bridge: ours n1-n3, keepalived n4-n6, prio 150/100/50",
    }
    for key, value in {**machine, **options}.items():
        print(f"{key:>18}: {value}")

    bench = Bench(args, out)
    status = 0
    try:
        with Lab(nodes=6, keep_workdir=args.keep_logs) as lab:
            out.say(f"lab {lab.prefix} up; workdir {lab.workdir}")
            others = foreign_namespaces(lab)
            if others:
                out.say(
                    f"WARNING: {len(others)} other network namespaces exist (other labs or tests "
                    "running?); they share the CPUs and add noise"
                )
            if scenarios:
                lab.start_http_servers()
                for spec in intervals:
                    bench.failover_block(lab, spec, scenarios)
            if "memory" in parts:
                bench.memory_block(lab)
            if args.keep_logs:
                out.say(f"logs kept in {lab.workdir}")
    except KeyboardInterrupt:
        out.say("interrupted: lab cleaned up; reporting the trials done so far")
        status = 130
    except (LabError, netns.NetnsError) as exc:
        out.say(f"ABORTED: {exc}; reporting the trials done so far")
        status = 1

    report = build_report(bench.trials, bench.memory)
    print()
    print(render(machine, options, report, bench.trials, markdown=False))
    document = {
        "machine": machine,
        "options": options,
        "partial": status != 0,
        "trials": [asdict(t) for t in bench.trials],
        "memory": bench.memory,
        "summary": report.summary,
        "targets": report.targets,
    }
    for path, text in (
        (args.json, json.dumps(document, indent=2) + "\n"),
        (args.markdown, render(machine, options, report, bench.trials, markdown=True)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out.say(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
