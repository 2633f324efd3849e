#!/usr/bin/env python3
"""The inside half of the IPVS benchmark: runs in the VM (``bench/ipvs.py`` boots it), as root.

Reconfigures the root namespace's IPVS table (``ipvsadm -C`` between runs), so it refuses to run
outside the VM unless ``VIPKEEPER_IN_VM=1``. No address is configured and no packet is sent: the
services and real servers (10.x) only exist as table entries.

Ours is the agent's own ``Balancer.sync()`` (snapshot -> diff -> apply -> simulate) on a
``TimedKernel`` that times the kernel calls; the plan functions it calls are wrapped in place to
time them too. The reference is ``ipvsadm -R`` fed the same rules. Raw samples go to ``--out``
as JSON; the host side (``bench/ipvs.py``) summarizes them. Exit 1 on any functional failure.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vipkeeper_agent.balancer import Balancer, View
from vipkeeper_agent.ipvs import plan
from vipkeeper_agent.ipvs.kernel import IpvsKernel
from vipkeeper_agent.ipvs.table import ServiceKey, ServiceStats, VirtualService
from vipkeeper_api.ipvs import VirtualServer

SCHEDULER = "wrr"
PORT = 80
REAL_PORT = 8080
#: Plan functions the Balancer calls, timed per sync (module attributes, looked up at call time).
PLAN_PHASES = ("assess", "desired", "diff", "simulate")
IPVSADM_TIMEOUT = 120.0
#: What ``vip()`` and ``real()`` can number: 10.1-54.x.y real servers, one /24 per service.
MAX_REAL_SERVERS = 250
MAX_SERVICES = 250 * 54

F = TypeVar("F", bound=Callable[..., Any])


def vip(s: int) -> str:
    return f"10.200.{s // 250}.{s % 250 + 1}"


def real(s: int, r: int) -> str:
    return f"10.{1 + s // 250}.{s % 250}.{r + 1}"


def specs(services: int, reals: int, *, bumped: bool = False) -> list[VirtualServer]:
    """``services`` NAT TCP services of ``reals`` real servers each, all weight 1; ``bumped``
    gives the first real server of the first service weight 2 (the single change)."""
    out = []
    for s in range(services):
        rs = [
            {"address": real(s, r), "port": REAL_PORT, "weight": 2 if bumped and s == r == 0 else 1}
            for r in range(reals)
        ]
        out.append(
            VirtualServer.model_validate(
                {
                    "name": f"svc{s}",
                    "address": vip(s),
                    "port": PORT,
                    "scheduler": SCHEDULER,
                    "forwarding": "nat",
                    "placement": "all",
                    "realServers": rs,
                }
            )
        )
    return out


def rules_text(services: int, reals: int) -> str:
    """The same table as ``specs()``, as ``ipvsadm -S`` writes it (input of ``ipvsadm -R``)."""
    lines = []
    for s in range(services):
        svc = f"{vip(s)}:{PORT}"
        lines.append(f"-A -t {svc} -s {SCHEDULER}")
        lines += [f"-a -t {svc} -r {real(s, r)}:{REAL_PORT} -m -w 1" for r in range(reals)]
    return "\n".join(lines) + "\n"


def pure_pass(vs_list: Sequence[VirtualServer]) -> float:
    """Seconds of the Balancer's pure work for a bulk load (assess, desired, diff from empty,
    simulate): run on the host and in the VM, it gives the VM's slowdown of Python."""
    t0 = time.perf_counter()
    names = {vs.name for vs in vs_list}
    quorum = {n: a.quorum_up for n, a in plan.assess(vs_list, {}).items()}
    want = plan.desired(vs_list, {}, names, quorum)
    plan.simulate({}, plan.diff({}, want, set()))
    return time.perf_counter() - t0


class TimedKernel:
    """``IpvsKernel`` for the Balancer, timing each call into ``phases`` (seconds, summed)."""

    def __init__(self) -> None:
        self.inner = IpvsKernel()
        self.phases: dict[str, float] = {}
        self.ops = 0
        self.op_kinds: list[str] = []
        self.errors: list[str] = []

    def reset(self) -> None:
        self.phases, self.ops, self.op_kinds = {}, 0, []

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def open(self) -> None:
        self.inner.open()

    def snapshot(
        self, keys: Collection[ServiceKey] | None = None
    ) -> tuple[dict[ServiceKey, VirtualService], dict[ServiceKey, ServiceStats]]:
        t0 = time.perf_counter()
        try:
            return self.inner.snapshot(keys)
        finally:
            self.add("snapshot", time.perf_counter() - t0)

    def apply(self, ops: Sequence[plan.Op]) -> list[plan.OpResult]:
        t0 = time.perf_counter()
        results = self.inner.apply(ops)
        self.add("apply", time.perf_counter() - t0)
        self.ops += len(ops)
        self.op_kinds += sorted({type(op).__name__ for op in ops})
        self.errors += [f"{r.op.describe()}: {r.error}" for r in results if not r.ok]
        return results

    def close(self) -> None:
        self.inner.close()


def time_plan_functions(kernel: TimedKernel) -> None:
    """Wrap the plan functions the Balancer calls so that their time lands in ``kernel.phases``."""

    def timed(name: str, func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                kernel.add(name, time.perf_counter() - t0)

        return wrapper  # type: ignore[return-value]

    for name in PLAN_PHASES:
        setattr(plan, name, timed(name, getattr(plan, name)))


def ipvsadm(*args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        ["ipvsadm", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=IPVSADM_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ipvsadm {' '.join(args)}: exit {done.returncode}: {done.stderr}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.base = specs(args.services, args.real_servers)
        self.bumped = specs(args.services, args.real_servers, bumped=True)
        self.names = {vs.name for vs in self.base}
        self.rules = rules_text(args.services, args.real_servers)
        self.want = plan.desired(self.base, {}, self.names)
        self.kernel = TimedKernel()
        self.failures: list[str] = []
        self.cut_short: list[str] = []
        self.out: dict[str, Any] = {
            "kernel": os.uname().release,
            "services": args.services,
            "real_servers": args.real_servers,
            "destinations": args.services * args.real_servers,
            "bulk_ours": [],
            "bulk_ipvsadm": [],
            "noop": [],
            "read_no_stats": [],
            "change": [],
        }

    def over_budget(self, part: str, done: int) -> bool:
        if done > 0 and time.monotonic() - self.started > self.args.budget:
            self.cut_short.append(f"{part}: {done} runs (budget of {self.args.budget:g} s used)")
            return True
        return False

    def fail(self, message: str) -> None:
        print(f"FAILED: {message}", flush=True)
        self.failures.append(message)

    def balancer(self) -> Balancer:
        view = View(health={}, active=self.names)
        return Balancer(lambda: view, None, kernel=lambda: self.kernel)

    async def timed_sync(self, balancer: Balancer, *, full: bool = True) -> dict[str, Any]:
        self.kernel.reset()
        errors_before = len(self.kernel.errors)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await balancer.sync(full=full)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if len(self.kernel.errors) > errors_before:
            self.fail(f"kernel refused ops: {self.kernel.errors[errors_before:][:3]}")
        return {
            "wall": wall,
            "cpu": cpu,
            "ops": self.kernel.ops,
            "op_kinds": self.kernel.op_kinds,
            "phases": dict(self.kernel.phases),
        }

    def check_table(self, who: str, want: dict[ServiceKey, VirtualService]) -> None:
        have = self.kernel.inner.read()
        dests = sum(len(v.destinations) for v in have.values())
        if have != want:
            self.fail(
                f"{who}: the table read back differs from the desired one "
                f"({len(have)} services, {dests} destinations)"
            )

    async def bulk_ours(self, first: bool) -> Balancer:
        ipvsadm("-C")
        balancer = self.balancer()
        balancer.configure(self.base)
        sample = await self.timed_sync(balancer)
        expected = len(self.want) + self.out["destinations"]
        if sample["ops"] != expected:
            self.fail(f"bulk load: {sample['ops']} ops, expected {expected}")
        self.out["bulk_ours"].append(sample)
        if first:
            self.check_table("ours", self.want)
        return balancer

    def bulk_ipvsadm(self, first: bool) -> None:
        ipvsadm("-C")
        cpu0, t0 = children_cpu(), time.perf_counter()
        ipvsadm("-R", stdin=self.rules)
        wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
        self.out["bulk_ipvsadm"].append({"wall": wall, "cpu": cpu})
        if first:
            self.check_table("ipvsadm -R", self.want)

    async def warm_up(self) -> None:
        """Load the scheduler module and start the Balancer's thread pool, untimed: both
        implementations would otherwise pay the first ``modprobe ip_vs_wrr`` over 9p."""
        ipvsadm("-A", "-t", "10.200.255.1:80", "-s", SCHEDULER)
        ipvsadm("-C")
        small = self.balancer()
        small.configure(self.base[:1])
        await small.sync()
        ipvsadm("-C")

    async def run(self) -> None:
        args = self.args
        # What a NAT director has (the Balancer's prerequisite check logs it otherwise); this is
        # the throwaway VM's own kernel.
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        self.kernel.open()
        await self.warm_up()
        # Before the plan functions are wrapped: the host runs the same pass unwrapped.
        self.out["pure_pass"] = [pure_pass(self.base) for _ in range(args.calibration)]
        time_plan_functions(self.kernel)
        balancer: Balancer | None = None
        for i in range(args.repeats):
            if self.over_budget("bulk load", i):
                break
            # Alternate the order, so that a drift of the machine hits both alike.
            if i % 2 == 0:
                self.bulk_ipvsadm(first=i == 0)
                balancer = await self.bulk_ours(first=i == 0)
            else:
                balancer = await self.bulk_ours(first=False)
                self.bulk_ipvsadm(first=False)
            print(f"bulk {i + 1}/{args.repeats} done", flush=True)
        assert balancer is not None  # repeats >= 1; the table now holds the whole set
        for i in range(args.noop):
            if self.over_budget("no-op resync", i):
                break
            sample = await self.timed_sync(balancer)
            if sample["ops"] != 0:
                self.fail(f"no-op resync made {sample['ops']} ops")
            self.out["noop"].append(sample)
        # What the no-op read would cost without the counters the Balancer keeps for its status.
        for _ in range(min(3, args.noop)):
            t0 = time.perf_counter()
            self.kernel.inner.read()
            self.out["read_no_stats"].append({"wall": time.perf_counter() - t0})
        bumped = False
        for i in range(args.changes):
            if self.over_budget("single change", i):
                break
            bumped = not bumped
            balancer.configure(self.bumped if bumped else self.base)
            # A reload or a check result: the Balancer's triggered sync (the periodic full
            # resync is the no-op case above).
            sample = await self.timed_sync(balancer, full=False)
            if sample["ops"] != 1 or sample["op_kinds"] != ["EditDest"]:
                self.fail(f"one weight change made {sample['ops']} ops {sample['op_kinds']}")
            self.out["change"].append(sample)
        last = self.bumped if bumped else self.base
        self.check_table("after the changes", plan.desired(last, {}, self.names))
        ipvsadm("-C")


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The sizes ``vip()`` and ``real()`` can address, and at least one run of each part."""
    if not 1 <= args.real_servers <= MAX_REAL_SERVERS or not 1 <= args.services <= MAX_SERVICES:
        parser.error(f"--real-servers must be 1-{MAX_REAL_SERVERS}, --services 1-{MAX_SERVICES}")
    if min(args.repeats, args.noop, args.changes) < 1:
        parser.error("--repeats, --noop and --changes must be at least 1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="IPVS benchmark, inside the VM (see bench/ipvs.py)"
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON file of raw samples")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--real-servers", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--noop", type=int, default=7)
    parser.add_argument("--changes", type=int, default=11)
    parser.add_argument("--calibration", type=int, default=3, help="pure passes (>= 1)")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds; then cut repeats")
    args = parser.parse_args(argv)
    if os.environ.get("VIPKEEPER_IN_VM") != "1":
        print(
            "refusing to run: this flushes the IPVS table (set VIPKEEPER_IN_VM=1)", file=sys.stderr
        )
        return 2
    check_counts(parser, args)
    args.calibration = max(args.calibration, 1)
    bench = Bench(args)
    try:
        asyncio.run(bench.run())
    except Exception as exc:  # reported to the host as a functional failure, with the cause
        bench.fail(f"{type(exc).__name__}: {exc}")
    bench.out["failures"] = bench.failures
    bench.out["cut_short"] = bench.cut_short
    bench.out["inside_seconds"] = time.monotonic() - bench.started
    args.out.write_text(json.dumps(bench.out, indent=1))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
