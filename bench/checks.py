#!/usr/bin/env python3
"""Health-check benchmark: checks per second on one core, and advert jitter while checks run.

    sudo .venv/bin/python bench/checks.py            # full run, ~1.5 minutes
    sudo .venv/bin/python bench/checks.py --quick    # smoke run, ~20 s

Two parts, in one lab (see bench/README.md for method and definitions):

* throughput: the agent's own CheckScheduler, in a process pinned to one CPU, runs http (then tcp)
  checks as fast as it can against a fast local server pinned to the other CPU;
* jitter: a master running 200 checks and one script that hangs forever, its backup, and two
  reference masters on the same segment (our agent without checks, keepalived 2.2.7); a sniffer
  in the client namespace logs every advert, and the spread of their inter-arrival times is
  compared.

Figures, ratios and the issue's targets (MET/MISSED) are printed and written (JSON, Markdown);
nothing is asserted: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from failover import AdvertLog, Out, cpu_seconds, foreign_namespaces, machine_info, process_tree
from stats import Summary, ratio, summarize
from vipkeeper_agent.checks.hysteresis import CheckState
from vipkeeper_agent.checks.scheduler import CheckScheduler
from vipkeeper_api.checks import Check
from vipkeeper_lab import netns
from vipkeeper_lab.agents import StatusUnavailableError, VipkeeperHandle
from vipkeeper_lab.fastserver import READY_LINE
from vipkeeper_lab.nodes import Lab, LabError, Node
from vipkeeper_lab.procs import Proc, tail

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_MARKDOWN = BENCH_DIR / "results" / "checks.md"
DEFAULT_JSON = BENCH_DIR / "results" / "checks.json"

HTTP_PORT = 8080
TCP_PORT = 8081
KINDS = ("http", "tcp")

# --- throughput -----------------------------------------------------------------------------
#: Far more checks than one core can run at the schema's shortest interval: the offered load
#: (20 000/s) must exceed the capacity, or the figure would measure the configuration.
THROUGHPUT_CHECKS = 1000
THROUGHPUT_INTERVAL = 0.05
THROUGHPUT_TIMEOUT = 1.0
#: Period of the event-loop timer whose lateness the worker records (an advert's timer stand-in).
TICK = 0.01
#: Above this share of one core a process counts as saturated (the bottleneck).
SATURATED = 0.9

# --- jitter ---------------------------------------------------------------------------------
ADVERT_INTERVAL = Decimal("0.1")
HTTP_CHECKS = 100
TCP_CHECKS = 99  # + the hung exec check = 200 checks
CHECK_INTERVAL = 0.5
CHECK_TIMEOUT = 1.0
HANG_SCRIPT = "hang-forever"
HANG_TIMEOUT = 1.0
HANG_INTERVAL = 1.0
#: The schema's limit of trackChecks per instance: the master tracks the hung check and 63
#: others; the remaining checks run all the same (the scheduler runs every defined check).
MAX_TRACKED = 64
#: An inter-arrival this many intervals long or more means adverts were lost in between.
MISSED_FACTOR = 1.5
#: Process start-up (Python imports, keepalived's parse) plus Master_Down before a master.
STARTUP = 15.0
#: Once every check reported: let the loops spread out before the window opens.
SETTLE = 1.0

#: Every row of the jitter part: one master each, on its own node, VRID and VIP.
ROWS = ("checks", "plain", "keepalived")
ROW_TEXT = {
    "checks": "ours, 200 checks + 1 hung script",
    "plain": "ours, no checks",
    "keepalived": "keepalived 2.2.7, no checks",
}
ROW_NODE = {"checks": "n1", "plain": "n3", "keepalived": "n4"}
BACKUP_NODE = "n2"
VRID = {"checks": 51, "plain": 52, "keepalived": 53}
VIP = {"checks": "192.0.2.100/24", "plain": "192.0.2.101/24", "keepalived": "192.0.2.102/24"}

TARGET_HTTP_RATE = 3000.0
TARGET_JITTER_P99 = 0.005


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# ----- the worker: one CheckScheduler on one CPU ---------------------------------------------


def build_checks(kind: str, count: int, interval: float, timeout: float, port: int) -> list[Any]:
    """``count`` identical checks of ``kind`` against 127.0.0.1:``port``, parsed by the schema."""
    adapter: TypeAdapter[Any] = TypeAdapter(Check)
    return [
        adapter.validate_python(
            {
                "name": f"{kind}-{i:04d}",
                "kind": kind,
                "address": "127.0.0.1",
                "port": port,
                "interval": interval,
                "timeout": timeout,
            }
        )
        for i in range(count)
    ]


def _proc_cpu(pid: int) -> float | None:
    try:
        return cpu_seconds([pid]) if Path(f"/proc/{pid}").exists() else None
    except OSError:
        return None


def cpu_ticks(cpus: Sequence[int]) -> tuple[float, float]:
    """(busy, steal) seconds of these CPUs since boot, from /proc/stat.

    busy is everything but idle, iowait and steal: with the checker's own CPU time it shows
    whether something else ran on its CPU. steal is the time the hypervisor ran something
    else while these CPUs had work: on a shared virtual machine this, not the code, is often
    where a late timer's time went.
    """
    wanted = {f"cpu{c}" for c in cpus}
    busy = steal = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in wanted and len(fields) > 8:
                    user, nice, system, _idle, _iowait, irq, softirq, stolen = map(int, fields[1:9])
                    busy += user + nice + system + irq + softirq
                    steal += stolen
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, steal / tick


@dataclass
class _Snapshot:
    at: float
    runs: int
    failures: int
    cpu: float
    server_cpu: float | None
    cpu_busy: float
    steal: float


def _snapshot(scheduler: Any, server_pid: int | None, cpu: int | None) -> _Snapshot:
    checks = scheduler.stats()["checks"].values()
    own = os.times()
    busy, steal = cpu_ticks([] if cpu is None else [cpu])
    return _Snapshot(
        at=time.monotonic(),
        runs=sum(c["runs"] for c in checks),
        failures=sum(c["failures"] for c in checks),
        cpu=own.user + own.system,
        server_cpu=None if server_pid is None else _proc_cpu(server_pid),
        cpu_busy=busy,
        steal=steal,
    )


async def _tick(lateness: list[float]) -> None:
    """A periodic timer like an advert's: how late does the loop run it?"""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + TICK
        await asyncio.sleep(TICK)
        lateness.append(loop.time() - due)


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    checks = build_checks(
        args.worker, args.checks, THROUGHPUT_INTERVAL, THROUGHPUT_TIMEOUT, args.port
    )
    # Why checks turned FAILED (the scheduler keeps only each check's last detail).
    failed: Counter[str] = Counter()

    def on_change(name: str, state: CheckState) -> None:
        if state.health != "OK":
            failed[state.last_detail] += 1

    scheduler = CheckScheduler(checks, on_change, None)
    # As the agent does once configured: long-lived objects out of the collector's scans.
    gc.collect()
    gc.freeze()
    scheduler.start()
    lateness: list[float] = []
    ticker = asyncio.get_running_loop().create_task(_tick(lateness))
    await asyncio.sleep(args.warmup)
    before = _snapshot(scheduler, args.server_pid, args.cpu)
    lateness.clear()
    await asyncio.sleep(args.duration)
    after = _snapshot(scheduler, args.server_pid, args.cpu)
    late = list(lateness)
    ticker.cancel()
    await scheduler.stop()
    elapsed = after.at - before.at
    runs = after.runs - before.runs
    failures = after.failures - before.failures
    server = (
        None
        if after.server_cpu is None or before.server_cpu is None
        else (after.server_cpu - before.server_cpu) / elapsed
    )
    lag = summarize(late)
    return {
        "event": "result",
        "kind": args.worker,
        "checks": args.checks,
        "interval": THROUGHPUT_INTERVAL,
        "max_concurrency": scheduler.stats()["max_concurrency"],
        "elapsed": elapsed,
        "runs": runs,
        "failures": failures,
        "rate": runs / elapsed,
        "ok_rate": (runs - failures) / elapsed,
        "checker_cpu": (after.cpu - before.cpu) / elapsed,
        "server_cpu": server,
        "checker_cpu_steal": (after.steal - before.steal) / elapsed,
        # The checker's CPU busy with anything but the checker (loopback softirqs included).
        "checker_cpu_others": (after.cpu_busy - before.cpu_busy - (after.cpu - before.cpu))
        / elapsed,
        "timer_late": None if lag is None else lag.__dict__,
        "failed_details": dict(failed.most_common(5)),
    }


def worker_main(args: argparse.Namespace) -> int:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    random.seed(args.seed)  # the scheduler's start spread
    result = asyncio.run(_measure(args))
    print(json.dumps(result), flush=True)
    return 0


# ----- throughput ----------------------------------------------------------------------------


@dataclass
class Throughput:
    kind: str
    result: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def limit(self) -> str:
        """Which side ran out of CPU: the figure is the capacity of that side."""
        checker = self.result.get("checker_cpu") or 0.0
        server = self.result.get("server_cpu") or 0.0
        steal = self.result.get("checker_cpu_steal") or 0.0
        if checker >= SATURATED:
            return "checker (its one core is saturated)"
        others = self.result.get("checker_cpu_others") or 0.0
        if checker + others + steal >= SATURATED:
            return (
                f"checker's core, shared: {100 * others:.0f} % other work, "
                f"{100 * steal:.0f} % steal (a low figure)"
            )
        if server >= SATURATED:
            return "SERVER (saturated: the figure is the server's capacity, not the checker's)"
        return "neither saturated (latency / offered load)"


def _cpus() -> tuple[int, int]:
    usable = sorted(os.sched_getaffinity(0))
    return (usable[0], usable[1]) if len(usable) > 1 else (usable[0], usable[0])


def _wait_line(lab: Lab, proc: Proc, what: str, needle: str, timeout: float) -> None:
    lab.wait_for(
        what, lambda: needle in proc.log_text() or not proc.alive(), timeout, interval=0.05
    )
    if needle not in proc.log_text():
        raise LabError(f"{what}: exited: {tail(proc.log_text(), 5)}")


def _json_line(text: str, event: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{") and f'"event": "{event}"' in line:
            found: dict[str, Any] = json.loads(line)
            return found
    return None


def start_server(lab: Lab, node: Node, name: str, cpu: int | None) -> Proc:
    argv = lab.python(
        "vipkeeper_lab.fastserver",
        *("--http-port", str(HTTP_PORT), "--tcp-port", str(TCP_PORT)),
        *(("--cpu", str(cpu)) if cpu is not None else ()),
    )
    server = lab.spawn(node, argv, name=name)
    _wait_line(lab, server, f"the fast server on {node.name}", READY_LINE, 10)
    return server


def throughput(lab: Lab, kind: str, args: argparse.Namespace, out: Out) -> Throughput:
    node = lab.nodes[0]
    record = Throughput(kind)
    checker_cpu, server_cpu = _cpus()
    server = start_server(lab, node, f"fastserver-{kind}", server_cpu)
    try:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            *("--worker", kind, "--checks", str(args.checks), "--port"),
            str(HTTP_PORT if kind == "http" else TCP_PORT),
            *("--warmup", f"{args.warmup:g}", "--duration", f"{args.duration:g}"),
            *("--cpu", str(checker_cpu), "--server-pid", str(server.pid)),
            *("--seed", str(args.seed)),
        ]
        worker = lab.spawn(node, argv, name=f"checker-{kind}")
        if worker.wait(args.warmup + args.duration + 30) is None:
            worker.stop()
            record.error = "the checker did not finish in time"
        result = _json_line(worker.log_text(), "result")
        if result is None:
            record.error = record.error or f"no result: {tail(worker.log_text(), 5)}"
        else:
            record.result = result
    finally:
        server.stop()
    record.server = _json_line(server.log_text(), "stop") or {}
    r = record.result
    if r:
        lag = r.get("timer_late") or {}
        out.say(
            f"throughput {kind}: {r['rate']:.0f} checks/s ({r['ok_rate']:.0f} ok, "
            f"{r['failures'] / r['elapsed']:.0f} failed/s) with {r['checks']} checks every "
            f"{r['interval'] * 1000:g} ms; checker CPU {100 * r['checker_cpu']:.0f} % of a core, "
            f"server CPU {100 * (r['server_cpu'] or 0):.0f} %; on the checker's CPU: others "
            f"{100 * (r.get('checker_cpu_others') or 0):.0f} %, steal "
            f"{100 * (r.get('checker_cpu_steal') or 0):.0f} %; 10 ms timer late p99 "
            f"{ms(lag.get('p99'))} ms; limit: {record.limit}"
        )
        if r.get("failed_details"):
            out.say(f"  checks turned FAILED because: {r['failed_details']}")
    else:
        out.say(f"throughput {kind}: ERROR {record.error}")
    return record


# ----- jitter ---------------------------------------------------------------------------------


def instance(row: str, priority: int, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "web",
        "vrid": VRID[row],
        "interface": "eth0",
        "version": 3,
        "priority": priority,
        "advertInterval": ADVERT_INTERVAL,
        "preempt": True,
        "addresses": [VIP[row]],
    }
    spec.update(extra)
    return spec


def checks_config() -> tuple[list[dict[str, Any]], list[str]]:
    """The master's 200 checks and the names it tracks (the hung one first)."""
    checks: list[dict[str, Any]] = [
        {
            "name": "hang",
            "kind": "exec",
            "script": HANG_SCRIPT,
            "interval": HANG_INTERVAL,
            "timeout": HANG_TIMEOUT,
            "weight": -1,
        }
    ]
    for kind, count, port in (("http", HTTP_CHECKS, HTTP_PORT), ("tcp", TCP_CHECKS, TCP_PORT)):
        checks += [
            {
                "name": f"{kind}-{i:03d}",
                "kind": kind,
                "address": "127.0.0.1",
                "port": port,
                "interval": CHECK_INTERVAL,
                "timeout": CHECK_TIMEOUT,
                # Small: a check failing under load lowers 150 to no less than the backup's 100.
                "weight": -1,
            }
            for i in range(count)
        ]
    # Alternate http and tcp so that the tracked ones are a mix of both.
    http = [c["name"] for c in checks if c["kind"] == "http"]
    tcp = [c["name"] for c in checks if c["kind"] == "tcp"]
    mixed = [name for pair in zip(http, tcp, strict=False) for name in pair]
    return checks, ["hang", *mixed[: MAX_TRACKED - 1]]


HANG_BODY = """#!/bin/sh
# Never answers: the agent must kill it (and its sleep) at every timeout.
sleep infinity
"""


def hung_processes(ns: str) -> tuple[int, int]:
    """Live (not zombie) processes of the hung script in namespace ``ns``: (runs, processes).

    Each run is its own session (the agent starts scripts with setsid), so runs are counted by
    session: a shell that has forked but not yet exec'd its sleep looks like a second shell.
    """
    sessions: set[int] = set()
    processes = 0
    for pid in netns.pids_in_namespace(ns):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited between the scan and the read
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if state == "Z":
            continue
        if comm == "sleep" or HANG_SCRIPT.encode() in cmdline:
            processes += 1
            sessions.add(int(session))
    return len(sessions), processes


@dataclass
class Row:
    key: str
    node: str
    vrid: int
    adverts: int = 0
    expected: int = 0
    missed: int = 0
    jitter: Summary | None = None
    #: Mean of (inter-arrival - interval): a timer re-armed from when it fired drifts this much.
    drift: float | None = None
    cpu: float | None = None
    #: Inter-arrival gaps (s) of the worst adverts, for the JSON.
    worst_gaps: list[float] = field(default_factory=list)


@dataclass
class Jitter:
    window: float = 0.0
    rows: dict[str, Row] = field(default_factory=dict)
    backup_became_master: bool | None = None
    backup_adverts: int = 0
    backup_states: list[str] = field(default_factory=list)
    #: The most runs of the hung script alive at once (1: each run killed before the next),
    #: and the most of its processes (a run is its shell and the shell's sleep).
    hung_max_runs: int = 0
    hung_max_processes: int = 0
    hung_status: dict[str, Any] = field(default_factory=dict)
    check_rate: float | None = None
    #: Seconds per second the hypervisor took from the machine's CPUs during the window.
    steal: float | None = None
    #: Seconds per second the machine's CPUs were busy (everything, other labs and VMs too).
    busy: float | None = None
    failing_checks: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _checks_ready(handle: VipkeeperHandle, count: int) -> bool:
    try:
        states = handle.status()["checks"]
    except (StatusUnavailableError, KeyError):
        return False
    return len(states) == count and all(not s["pending"] for s in states.values())


def _total_runs(handle: VipkeeperHandle) -> int:
    return sum(int(s["runs"]) for s in handle.status()["checks"].values())


def jitter(lab: Lab, args: argparse.Namespace, out: Out) -> Jitter:
    result = Jitter(window=args.window)
    n1 = lab.node(ROW_NODE["checks"])
    lab.install_script(HANG_SCRIPT, HANG_BODY)
    start_server(lab, n1, "fastserver-n1", None)
    checks, tracked = checks_config()
    sniffer = AdvertLog(lab, duration=args.window + STARTUP + 120)
    try:
        master = lab.start_vipkeeper(
            n1, {"checks": checks, "instances": [instance("checks", 150, trackChecks=tracked)]}
        )
        lab.wait_master([master], vip=VIP["checks"], timeout=STARTUP)
        backup = lab.start_vipkeeper(BACKUP_NODE, {"instances": [instance("checks", 100)]})
        plain = lab.start_vipkeeper(ROW_NODE["plain"], {"instances": [instance("plain", 150)]})
        reference = lab.start_keepalived(
            ROW_NODE["keepalived"], {"instances": [instance("keepalived", 150)]}
        )
        lab.wait_master([plain], vip=VIP["plain"], timeout=STARTUP)
        lab.wait_master([reference], vip=VIP["keepalived"], timeout=STARTUP)
        lab.wait_for(
            "n2 to be BACKUP", lambda: backup.state() == "BACKUP", timeout=STARTUP, interval=0.1
        )
        lab.wait_for(
            "every check of n1 to report",
            lambda: _checks_ready(master, len(checks)),
            timeout=STARTUP,
            interval=0.2,
        )
        time.sleep(SETTLE)
        out.say(
            f"jitter: n1 master with {len(checks)} checks ({len(tracked)} tracked), n2 backup, "
            f"n3 ours without checks, n4 keepalived; {args.window:g} s window"
        )
        procs = {
            "checks": master.proc.pid,
            "plain": plain.proc.pid,
            "keepalived": reference.proc.pid,
        }
        pids = {row: process_tree(pid) for row, pid in procs.items()}
        cpu_before = {row: cpu_seconds(p) for row, p in pids.items()}
        runs_before = _total_runs(master)
        cpus = sorted(os.sched_getaffinity(0))
        busy_before, steal_before = cpu_ticks(cpus)
        started, t0 = time.monotonic(), time.time()
        # Sampled, not continuous: the sampling itself costs CPU on the machine being measured.
        while time.monotonic() - started < args.window:
            runs, processes = hung_processes(n1.ns)
            result.hung_max_runs = max(result.hung_max_runs, runs)
            result.hung_max_processes = max(result.hung_max_processes, processes)
            state = backup.state() or "-"
            if state not in result.backup_states:
                result.backup_states.append(state)
            time.sleep(0.25)
        t1, elapsed = time.time(), time.monotonic() - started
        runs_after = _total_runs(master)
        busy_after, steal_after = cpu_ticks(cpus)
        result.busy = (busy_after - busy_before) / elapsed
        result.steal = (steal_after - steal_before) / elapsed
        cpu_after = {row: cpu_seconds(p) for row, p in pids.items()}
        result.check_rate = (runs_after - runs_before) / elapsed
        status = master.status()
        result.hung_status = dict(status["checks"]["hang"])
        failing = Counter(
            s["lastDetail"]
            for name, s in status["checks"].items()
            if name != "hang" and s["health"] != "OK"
        )
        result.failing_checks = dict(failing)
        time.sleep(0.3)  # the last adverts of the window reach the sniffer's log
        interval = float(ADVERT_INTERVAL)
        for row in ROWS:
            node = lab.node(ROW_NODE[row])
            times = [
                a.t
                for a in sniffer.adverts(VRID[row], since=t0)
                if a.t <= t1 and a.src == str(node.ipv4.ip)
            ]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            record = Row(row, node.name, VRID[row])
            record.adverts = len(times)
            record.expected = round((t1 - t0) / interval)
            record.missed = sum(
                max(round(g / interval) - 1, 0) for g in gaps if g >= MISSED_FACTOR * interval
            )
            record.jitter = summarize(abs(g - interval) for g in gaps)
            record.drift = sum(g - interval for g in gaps) / len(gaps) if gaps else None
            record.cpu = (cpu_after[row] - cpu_before[row]) / elapsed
            record.worst_gaps = sorted(gaps, key=lambda g: abs(g - interval))[-5:]
            result.rows[row] = record
        b_ip = str(lab.node(BACKUP_NODE).ipv4.ip)
        result.backup_adverts = sum(
            1 for a in sniffer.adverts(VRID["checks"], since=t0 - STARTUP) if a.src == b_ip
        )
        last = (backup.status()["instances"][0] or {}).get("lastTransition") or {}
        result.backup_became_master = (
            "MASTER" in result.backup_states
            or result.backup_adverts > 0
            or last.get("to") == "MASTER"
        )
        for agent in (master, backup, plain, reference):
            if not agent.alive():
                result.errors.append(f"{agent.kind} on {agent.node} exited")
    finally:
        sniffer.stop()
    for row in ROWS:
        r = result.rows.get(row)
        if r is not None:
            j = r.jitter
            out.say(
                f"jitter {ROW_TEXT[row]:34} ({r.node}): {r.adverts} adverts "
                f"(expected ~{r.expected}), missed {r.missed}, |gap - 100 ms| p50 "
                f"{ms(j.p50 if j else None)} p99 {ms(j.p99 if j else None)} max "
                f"{ms(j.maximum if j else None)} ms, mean drift {ms(r.drift)} ms, CPU {100 * (r.cpu or 0):.1f} %"
            )
    out.say(
        f"n1 ran {result.check_rate:.0f} checks/s; hung check {result.hung_status.get('health')} "
        f"({result.hung_status.get('lastDetail')!r}, {result.hung_status.get('runs')} runs); "
        f"at most {result.hung_max_runs} run(s) ({result.hung_max_processes} processes) of it "
        "alive at once; "
        f"n2 states seen {result.backup_states}, became MASTER: {result.backup_became_master}; "
        f"machine CPU busy {100 * (result.busy or 0):.0f} % of one CPU, steal "
        f"{100 * (result.steal or 0):.1f} %"
    )
    if result.failing_checks:
        out.say(f"  other failing checks on n1: {result.failing_checks}")
    return result


# ----- the report -----------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]], *, markdown: bool, left: int = 1) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append(
            "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"
        )
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for n, row in enumerate([headers, *rows]):
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _target(name: str, value: float | None, ok: bool | None, text: str) -> dict[str, Any]:
    status = "n/a" if ok is None else ("MET" if ok else "MISSED")
    return {"target": name, "value": value, "status": status, "text": f"{status:6} {text}"}


def targets(rates: Sequence[Throughput], jit: Jitter | None) -> list[dict[str, Any]]:
    found = []
    http = next((t for t in rates if t.kind == "http" and t.result), None)
    if any(t.kind == "http" for t in rates):
        rate = None if http is None else float(http.result["rate"])
        found.append(
            _target(
                "http checks/s",
                rate,
                None if rate is None else rate >= TARGET_HTTP_RATE,
                f"HTTP checks/s on one core: {'n/a' if rate is None else f'{rate:.0f}'} "
                f"(target >= {TARGET_HTTP_RATE:.0f})",
            )
        )
    if jit is not None:
        row = jit.rows.get("checks")
        p99 = None if row is None or row.jitter is None else row.jitter.p99
        found.append(
            _target(
                "advert jitter p99",
                p99,
                None if p99 is None else p99 <= TARGET_JITTER_P99,
                f"advert jitter p99 with 200 checks + a hung script: {ms(p99)} ms "
                f"(target <= {ms(TARGET_JITTER_P99)} ms)",
            )
        )
        became = jit.backup_became_master
        found.append(
            _target(
                "no spurious takeover",
                None,
                None if became is None else not became,
                f"the backup never became MASTER: {'n/a' if became is None else not became}",
            )
        )
    return found


def render(
    machine: dict[str, Any],
    options: dict[str, Any],
    rates: Sequence[Throughput],
    jit: Jitter | None,
    found: Sequence[dict[str, Any]],
    *,
    markdown: bool,
) -> str:
    h = "## " if markdown else ""
    parts = []
    if markdown:
        parts.append("# vipkeeper health-check benchmark\n")
        parts.append("\n".join(f"- {k}: {v}" for k, v in {**machine, **options}.items()) + "\n")
    if rates:
        parts.append(f"{h}Checks per second, checker pinned to one CPU, server to the other\n")
        rows = []
        for t in rates:
            r = t.result
            if not r:
                rows.append([t.kind, "error", *[""] * 8, t.error or ""])
                continue
            lag = r.get("timer_late") or {}
            rows.append(
                [
                    t.kind,
                    f"{r['checks']} x {r['interval'] * 1000:g} ms",
                    f"{r['rate']:.0f}",
                    f"{r['ok_rate']:.0f}",
                    f"{r['failures'] / r['elapsed']:.0f}",
                    f"{100 * r['checker_cpu']:.0f}",
                    f"{100 * (r.get('checker_cpu_others') or 0):.0f}",
                    f"{100 * (r.get('checker_cpu_steal') or 0):.0f}",
                    "n/a" if r["server_cpu"] is None else f"{100 * r['server_cpu']:.0f}",
                    ms(lag.get("p99")),
                    t.limit,
                ]
            )
        headers = [
            "kind",
            "checks x interval",
            "checks/s",
            "ok/s",
            "failed/s",
            "checker CPU %",
            "others on its CPU %",
            "steal %",
            "server CPU %",
            "10 ms timer late p99 (ms)",
            "limit",
        ]
        parts.append(_table(headers, rows, markdown=markdown, left=2) + "\n")
    if jit is not None and jit.rows:
        parts.append(
            f"{h}Advert jitter, VRRPv3 100 ms adverts, {jit.window:g} s "
            "(|inter-arrival - 100 ms| at the client's sniffer)\n"
        )
        ka = jit.rows.get("keepalived")
        rows = []
        for key in ROWS:
            row = jit.rows.get(key)
            if row is None:
                continue
            j = row.jitter
            k = None if ka is None else ka.jitter
            rows.append(
                [
                    ROW_TEXT[key],
                    row.node,
                    str(row.adverts),
                    str(row.missed),
                    ms(j.p50 if j else None),
                    ms(j.p99 if j else None),
                    ms(j.maximum if j else None),
                    ms(row.drift),
                    fmt_ratio(ratio(j.p50 if j else None, k.p50 if k else None)),
                    fmt_ratio(ratio(j.p99 if j else None, k.p99 if k else None)),
                    f"{100 * (row.cpu or 0):.1f}",
                ]
            )
        headers = [
            "master",
            "node",
            "adverts",
            "missed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "mean drift ms",
            "p50 / ka",
            "p99 / ka",
            "CPU %",
        ]
        parts.append(_table(headers, rows, markdown=markdown, left=2) + "\n")
        plain = jit.rows.get("plain")
        mine = jit.rows.get("checks")
        if plain and mine and plain.jitter and mine.jitter:
            parts.append(
                "with checks / without: p50 "
                f"{fmt_ratio(ratio(mine.jitter.p50, plain.jitter.p50))}, p99 "
                f"{fmt_ratio(ratio(mine.jitter.p99, plain.jitter.p99))}"
            )
        hung = jit.hung_status
        parts.append(
            f"n1 ran {jit.check_rate or 0:.0f} checks/s; hung check: {hung.get('health')} "
            f"({hung.get('lastDetail')!r}, {hung.get('runs')} runs), at most "
            f"{jit.hung_max_runs} run(s) ({jit.hung_max_processes} processes) of it alive at "
            "once; backup n2 states seen: "
            f"{', '.join(jit.backup_states)}; its adverts for VRID {VRID['checks']}: "
            f"{jit.backup_adverts}"
        )
        parts.append(
            f"during the window the machine's {len(os.sched_getaffinity(0))} CPUs were busy "
            f"{100 * (jit.busy or 0):.0f} % of one CPU (everything running, this lab's "
            f"masters, servers and sniffer included); steal {100 * (jit.steal or 0):.1f} %"
        )
        if jit.failing_checks:
            parts.append(f"other checks failing on n1 at the end: {jit.failing_checks}")
        for error in jit.errors:
            parts.append(f"ERROR: {error}")
        parts.append("")
    if found:
        parts.append(f"{h}Targets\n")
        parts += [("- " if markdown else "  ") + t["text"] for t in found]
    return "\n".join(parts) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, Summary):
        return value.__dict__
    if isinstance(value, Throughput | Row | Jitter):
        return {k: _plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----- main -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/checks.py",
        description="Health-check benchmark: checks/s on one core, advert jitter (needs root).",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows")
    parser.add_argument(
        "--only", action="append", choices=("throughput", "jitter"), help="run only these parts"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the checks' start spread")
    parser.add_argument(
        "--checks",
        type=int,
        default=THROUGHPUT_CHECKS,
        help=f"checks of the throughput part (default {THROUGHPUT_CHECKS})",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="throughput window, s (default 10; quick 3)"
    )
    parser.add_argument(
        "--window", type=float, default=None, help="jitter window, s (default 60; quick 5)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results (JSON)")
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="tables (Markdown)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the lab's work directory")
    # The throughput worker: this script again, inside the lab's namespace.
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=HTTP_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.window is None:
        args.window = 5.0 if args.quick else 60.0
    if args.worker:
        return worker_main(args)
    if os.geteuid() != 0:
        print("bench/checks.py needs root (network namespaces)", file=sys.stderr)
        return 2
    parts = args.only or ["throughput", "jitter"]
    out = Out()
    machine = machine_info()
    checker_cpu, server_cpu = _cpus()
    options = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "parts": ",".join(parts),
        "seed": args.seed,
        "throughput": f"{args.checks} checks every {THROUGHPUT_INTERVAL * 1000:g} ms, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s, checker on CPU {checker_cpu}, "
        f"server on CPU {server_cpu}",
        "jitter": f"{args.window:g} s; n1 {ROW_TEXT['checks']} (prio 150) + n2 backup (100), "
        f"n3 {ROW_TEXT['plain']}, n4 {ROW_TEXT['keepalived']}",
    }
    for key, value in {**machine, **options}.items():
        print(f"{key:>18}: {value}")
    if checker_cpu == server_cpu:
        out.say("WARNING: one usable CPU: checker and server share it")

    rates: list[Throughput] = []
    jit: Jitter | None = None
    status = 0
    try:
        with Lab(nodes=4, keep_workdir=args.keep_logs) as lab:
            out.say(f"lab {lab.prefix} up; workdir {lab.workdir}")
            others = foreign_namespaces(lab)
            if others:
                out.say(
                    f"WARNING: {len(others)} other network namespaces exist (other labs or tests "
                    "running?); they share the CPUs and add noise"
                )
            if "throughput" in parts:
                for kind in KINDS:
                    rates.append(throughput(lab, kind, args, out))
            if "jitter" in parts:
                jit = jitter(lab, args, out)
            if args.keep_logs:
                out.say(f"logs kept in {lab.workdir}")
    except KeyboardInterrupt:
        out.say("interrupted: lab cleaned up; reporting what was measured")
        status = 130
    except (LabError, netns.NetnsError, StatusUnavailableError, OSError) as exc:
        out.say(f"ABORTED: {type(exc).__name__}: {exc}; reporting what was measured")
        status = 1

    found = targets(rates, jit)
    print()
    print(render(machine, options, rates, jit, found, markdown=False))
    document = {
        "machine": machine,
        "options": options,
        "partial": status != 0,
        "throughput": _plain(rates),
        "jitter": _plain(jit),
        "targets": found,
    }
    for path, text in (
        (args.json, json.dumps(document, indent=2) + "\n"),
        (args.markdown, render(machine, options, rates, jit, found, markdown=True)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out.say(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
