#!/usr/bin/env python3
"""Operator benchmark: 1000 VirtualIPs on 50 nodes against the Kubernetes API emulator.

    .venv/bin/python bench/operator_bench.py      # full size, ~5 minutes (60 edits, 20 s idle window)
    .venv/bin/python bench/operator_bench.py --vips 100 --nodes 10 --edits 6 --idle-window 3  # ~20 s

The emulator is the operator tier's (tests/support/kapi.py, kmock underneath): this script puts
the repository's ``tests`` directory on ``sys.path`` to import it, and serves it from a thread of
its own process. The operator is the real one, ``python -m vipkeeper_operator.cli``, in a process
of its own (KUBECONFIG points it at the emulator), so that its memory is its own:
``/proc/PID/status`` VmHWM (peak) and VmRSS (now).

Nodes come in zones (zone N: label ``bench.vipkeeper.io/zone=zN``, its VIPs on interface
``zoneN``), so that each zone is its own VRID segment (255 VRIDs each). Measured, in order:

1. start: the operator against the 50 Ready nodes until it has written their 50 (empty)
   NodeAssignments;
2. bulk: from the first of 1000 VirtualIP creates (POSTs, one after the other) until every
   NodeAssignment holds an instance of each VIP of its zone;
3. edits: one at a time, a VIP's ``priorities.preferred`` or its address changes (PATCH); each is
   timed from the PATCH until every NodeAssignment of the zone shows it, then the operator is
   let go idle (its CPU time stops growing) before the next;
4. memory: the operator's VmHWM and VmRSS after all that, and its CPU share while nothing
   changes (its periodic resync passes).

kmock's request log is cut to the last request (:meth:`Bench.bound_request_log`): kmock's request
matching is quadratic in it, which made the emulator, not the operator, the bottleneck.

Completion is read from the emulator's object store in the emulator's own event loop (a cheap
look at the stored NodeAssignments; an HTTP list of 10,000 instances would load the emulator
with ~0.1 s of copying and JSON per poll). Figures and the issue's targets (MET/MISSED) are
printed and written as JSON; nothing is asserted on timing. The exit status is non-zero only on
a functional failure: the operator died, or something was not rendered within its bound.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "tests"))

from stats import Summary, summarize  # noqa: E402
from support.kapi import KubeAPI  # noqa: E402
from vipkeeper_api.resources import API_VERSION, instance_name  # noqa: E402

T = TypeVar("T")

DEFAULT_JSON = BENCH_DIR / "results" / "operator.json"
ZONE_LABEL = "bench.vipkeeper.io/zone"
NAMESPACE = "default"
NA_KEY = f"{API_VERSION}/nodeassignments"
#: The issue's targets.
TARGET_BULK_SECONDS = 30.0
TARGET_EDIT_P99_SECONDS = 1.0
TARGET_RSS_MB = 200.0
#: The operator counts as idle when it used less than this share of a core over IDLE_WINDOW.
IDLE_SHARE = 0.05
IDLE_WINDOW = 0.5
TOP, SECOND = 150, 100  # the priority ladder's first two rungs (planning/priorities.py)
#: An instance's priority when its spec leaves it out (specs are written without defaults).
DEFAULT_PRIORITY = 100
LOG_TAIL = 3000
#: Requests kept in kmock's log (see Bench.bound_request_log).
REQUEST_LOG = 1


class BenchError(Exception):
    """A functional failure: the run cannot go on."""


# --- the cluster's objects (pure) -------------------------------------------------------------


def node_name(index: int) -> str:
    return f"node-{index:03d}"


def zone_of_node(index: int, nodes: int, zones: int) -> int:
    return index * zones // nodes


def node_doc(index: int, zone: int) -> dict[str, Any]:
    name = node_name(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {ZONE_LABEL: f"z{zone}", "kubernetes.io/hostname": name},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [
                {"type": "InternalIP", "address": f"10.255.{index // 256}.{index % 256}"}
            ],
        },
    }


def vip_name(index: int) -> str:
    return f"vip-{index:04d}"


def address(serial: int) -> str:
    """A unique /32 per serial: VIPs from 10.0.0.1 up, edits from 10.128.0.1 up."""
    return f"{ipaddress.IPv4Address(0x0A000001 + serial)}/32"


def vip_doc(index: int, zone: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualIP",
        "metadata": {"name": vip_name(index), "namespace": NAMESPACE},
        "spec": {
            "addresses": [address(index)],
            "interface": f"zone{zone}",
            "nodeSelector": {ZONE_LABEL: f"z{zone}"},
        },
    }


Found = dict[str, dict[str, Any] | None]


def preferred_shown(first: str, second: str) -> Callable[[Found], bool]:
    """Whether the zone's instances show ``preferred: [first, second]``: the ladder's first two
    rungs there, and every other node below them."""

    def shows(found: Found) -> bool:
        prio = {n: i and i.get("priority", DEFAULT_PRIORITY) for n, i in found.items()}
        others = [p for n, p in prio.items() if n not in (first, second)]
        return (
            prio[first] == TOP
            and prio[second] == SECOND
            and all(isinstance(p, int) and p < SECOND for p in others)
        )

    return shows


def address_shown(new: str) -> Callable[[Found], bool]:
    def shows(found: Found) -> bool:
        return all(
            i is not None and list(i.get("addresses") or ()) == [new] for i in found.values()
        )

    return shows


# --- process figures --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of ``pid`` in MB (MiB, as /proc counts kB)."""
    out = {"VmHWM": 0.0, "VmRSS": 0.0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in out:
                out[key] = int(value.split()[0]) / 1024
    return out


# --- the run ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, kapi: KubeAPI, workdir: Path) -> None:
        self.args = args
        self.kapi = kapi
        self.log_path = workdir / "operator.log"
        self.kubeconfig = kapi.write_kubeconfig(workdir / "kubeconfig")
        self.proc: subprocess.Popen[bytes] | None = None
        self.zones = min(args.zones, args.nodes)
        self.zone_nodes: dict[int, list[str]] = {z: [] for z in range(self.zones)}
        for i in range(args.nodes):
            self.zone_nodes[zone_of_node(i, args.nodes, self.zones)].append(node_name(i))
        self.vip_zone = {vip_name(i): i % self.zones for i in range(args.vips)}
        self.results: dict[str, Any] = {"edits": []}

    def bound_request_log(self) -> None:
        """kmock checks each request against every request it recorded before (its DSL's filters
        iterate the whole log, once per reaction tried): O(n) per request, quadratic over a run
        of ~10,000 requests (measured here: 300 creates 6 s with the log, 0.27 s without).
        Only the request being dispatched must be in the log: it is appended just before the
        reactions are tried, without yielding to the loop in between, and the emulator's
        reactions never fall through to the next one (only a catcher or a depleted stream
        would). So the log keeps the last request only."""

        async def swap() -> None:
            log: collections.deque[Any] = collections.deque(maxlen=REQUEST_LOG)
            self.kapi.emulator._requests = log  # type: ignore[assignment]

        self.kapi._call(swap())

    # --- reading the emulator's store, in its own loop --------------------------------------

    def on_api(self, fn: Callable[[dict[Any, Any]], T]) -> T:
        async def call() -> T:
            return fn(self.kapi.emulator._store)

        result: T = self.kapi._call(call())
        return result

    def instances_of(self, vip: str) -> Found:
        """node -> the instance of ``vip`` on it (None: not there), for the VIP's zone."""
        wanted = instance_name(NAMESPACE, vip, 4)
        nodes = self.zone_nodes[self.vip_zone[vip]]

        def look(store: dict[Any, Any]) -> Found:
            out: Found = {}
            for node in nodes:
                obj = store.get((NA_KEY, None, node)) or {}
                found = [
                    i
                    for i in (obj.get("spec") or {}).get("instances") or ()
                    if i.get("name") == wanted
                ]
                out[node] = dict(found[0]) if found else None
            return out

        return self.on_api(look)

    def instance_names(self) -> dict[str, set[str]]:
        def names(store: dict[Any, Any]) -> dict[str, set[str]]:
            return {
                key[2]: {i.get("name") for i in (obj.get("spec") or {}).get("instances") or ()}
                for key, obj in store.items()
                if key[0] == NA_KEY
            }

        return self.on_api(names)

    # --- the operator -----------------------------------------------------------------------

    def start_operator(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        argv = [sys.executable, "-m", "vipkeeper_operator.cli"]
        if self.args.profile:
            argv[1:1] = ["-m", "cProfile", "-o", str(self.args.profile)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop_operator(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # kopf stops gracefully (and cProfile writes its file)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"the operator exited with {self.proc.returncode}")

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str, poll: float) -> float:
        """Poll until ``predicate``; the monotonic time it first held. Bounded."""
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            if predicate():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(f"not within {timeout:g} s: {what}")
            time.sleep(poll)

    def wait_idle(self, timeout: float) -> bool:
        """Until the operator's CPU time stops growing (no pass running); False if it never did."""
        deadline = time.monotonic() + timeout
        before = cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            time.sleep(IDLE_WINDOW)
            now = cpu_seconds(self.pid)
            if now - before < IDLE_SHARE * IDLE_WINDOW:
                return True
            before = now
        return False

    # --- phases -----------------------------------------------------------------------------

    def phase_start(self) -> None:
        for i in range(self.args.nodes):
            self.kapi.create(node_doc(i, zone_of_node(i, self.args.nodes, self.zones)))
        t0, cpu0 = time.monotonic(), time.process_time()
        self.start_operator()
        done = self.wait(
            lambda: len(self.instance_names()) >= self.args.nodes,
            self.args.timeout,
            f"{self.args.nodes} NodeAssignments after the operator's start",
            0.05,
        )
        self.wait_idle(30.0)
        self.results["start"] = {
            "seconds": done - t0,
            "operator_cpu": cpu_seconds(self.pid),
            "bench_cpu": time.process_time() - cpu0,
            "memory_mb": memory_mb(self.pid),
        }

    def phase_bulk(self) -> None:
        expected = {  # node -> the instances of its zone's VIPs
            n: {instance_name(NAMESPACE, v, 4) for v, z in self.vip_zone.items() if z == zone}
            for zone, nodes in self.zone_nodes.items()
            for n in nodes
        }
        op0, cpu0 = cpu_seconds(self.pid), time.process_time()
        t0 = time.monotonic()
        for i in range(self.args.vips):
            self.kapi.create(vip_doc(i, i % self.zones))
        created = time.monotonic()
        progress: list[tuple[float, int]] = []

        def rendered() -> bool:
            names = self.instance_names()
            total = sum(len(n) for n in names.values())
            if not progress or progress[-1][1] != total:
                progress.append((time.monotonic() - t0, total))
            return all(names.get(n) == wanted for n, wanted in expected.items())

        done = self.wait(rendered, self.args.timeout, "every NodeAssignment rendered", 0.05)
        op_rendered = cpu_seconds(self.pid)
        idle = self.wait_idle(60.0)
        self.results["bulk"] = {
            "seconds": done - t0,
            "create_seconds": created - t0,
            "instances": sum(len(n) for n in expected.values()),
            "operator_cpu_rendered": op_rendered - op0,
            "operator_cpu_until_idle": cpu_seconds(self.pid) - op0,
            "idle_after": idle,
            "bench_cpu": time.process_time() - cpu0,
            "progress": progress,
            "memory_mb": memory_mb(self.pid),
        }

    def phase_edits(self) -> None:
        rng = random.Random(self.args.seed)
        vips = sorted(self.vip_zone)
        op0 = cpu_seconds(self.pid)
        for serial in range(self.args.edits):
            vip = rng.choice(vips)
            nodes = self.zone_nodes[self.vip_zone[vip]]
            if serial % 2 == 0 and len(nodes) >= 2:
                kind = "preferred"
                # A new top node (the one at 150 now is not it), so that the edit shows.
                before = self.instances_of(vip)
                top = [n for n, i in before.items() if i and i.get("priority") == TOP]
                first = rng.choice([n for n in nodes if n not in top])
                second = rng.choice([n for n in nodes if n != first])
                patch: dict[str, Any] = {"spec": {"priorities": {"preferred": [first, second]}}}
                shows = preferred_shown(first, second)
            else:
                kind = "address"
                new = address(0x800000 + serial)
                patch = {"spec": {"addresses": [new]}}
                shows = address_shown(new)
            cpu_before = cpu_seconds(self.pid)
            t0 = time.monotonic()
            self.kapi.patch("VirtualIP", vip, patch, namespace=NAMESPACE)
            sent = time.monotonic()
            try:
                done = self.wait(
                    lambda: shows(self.instances_of(vip)),  # noqa: B023 (called in this pass)
                    self.args.edit_timeout,
                    f"edit {serial} ({kind} of {vip}) in its NodeAssignments",
                    0.005,
                )
            except BenchError as exc:
                found = {
                    n: i and (i.get("priority"), i.get("addresses"))
                    for n, i in self.instances_of(vip).items()
                }
                raise BenchError(f"{exc}; patch {patch}; found {found}") from None
            cpu_rendered = cpu_seconds(self.pid) - cpu_before
            idle = self.wait_idle(20.0)
            self.results["edits"].append(
                {
                    "vip": vip,
                    "kind": kind,
                    "seconds": done - t0,
                    "patch_seconds": sent - t0,
                    "operator_cpu": cpu_rendered,
                    "idle_after": idle,
                }
            )
        self.results["edits_operator_cpu"] = cpu_seconds(self.pid) - op0

    def phase_idle(self) -> None:
        """The operator's CPU share when nothing changes (its periodic resync passes)."""
        window = self.args.idle_window
        before = cpu_seconds(self.pid)
        time.sleep(window)
        self.results["idle"] = {
            "window": window,
            "cpu_share": (cpu_seconds(self.pid) - before) / window,
        }
        self.results["memory_mb"] = memory_mb(self.pid)

    def passes(self) -> dict[str, Any]:
        """The operator's own log: how long its passes that wrote something took."""
        pattern = r"event=reconciled .*?seconds=([0-9.]+)"
        seconds = [float(m.group(1)) for m in re.finditer(pattern, self.log_text())]
        summary = summarize(seconds)
        return {"n": len(seconds), "summary": None if summary is None else asdict(summary)}

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


# --- report -----------------------------------------------------------------------------------


def status(value: float | None, limit: float) -> str:
    return "n/a" if value is None else ("MET" if value <= limit else "MISSED")


def targets(results: dict[str, Any], edits: Summary | None) -> list[dict[str, Any]]:
    bulk = results.get("bulk", {}).get("seconds")
    p99 = None if edits is None else edits.p99
    rss = results.get("memory_mb", {}).get("VmHWM")
    rows = [
        ("all NodeAssignments rendered", bulk, TARGET_BULK_SECONDS, "s"),
        ("one edit -> NodeAssignment, p99", p99, TARGET_EDIT_P99_SECONDS, "s"),
        ("operator RSS (peak, VmHWM)", rss, TARGET_RSS_MB, "MB"),
    ]
    keys = ("target", "value", "limit", "unit")
    return [{**dict(zip(keys, row, strict=True)), "status": status(row[1], row[2])} for row in rows]


def render(report: dict[str, Any]) -> str:
    r, args, edits = report["results"], report["args"], report["edit_summary"]
    start, bulk, idle, mem = (r.get(k, {}) for k in ("start", "bulk", "idle", "memory_mb"))

    def sec(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} s"

    def row(label: str, *values: str) -> str:
        return f"{label:<48}" + "".join(f"{v:>12}" for v in values)

    lines = [
        f"operator benchmark: {args['vips']} VirtualIPs on {args['nodes']} nodes in "
        f"{report['zones']} zones ({bulk.get('instances', '-')} VRRP instances); API emulator in "
        f"this process, operator in pid {report['pid']}; load average {report['loadavg'][0]:.2f} "
        f"before, {report['loadavg'][1]:.2f} after",
        "",
        row("operator start -> every node has its assignment", sec(start.get("seconds"))),
        row(f"bulk: {args['vips']} creates (sequential POSTs)", sec(bulk.get("create_seconds"))),
        row("bulk: first create -> all rendered", sec(bulk.get("seconds"))),
        row("  operator CPU until rendered", sec(bulk.get("operator_cpu_rendered"))),
        row("  operator CPU until idle again", sec(bulk.get("operator_cpu_until_idle"))),
        row("  bench process CPU (emulator, POSTs, polls)", sec(bulk.get("bench_cpu"))),
    ]
    if edits is not None:
        lines += [
            row(f"edit -> NodeAssignments (n={edits.n}): p50, p99", sec(edits.p50), sec(edits.p99)),
            row("  min, max", sec(edits.minimum), sec(edits.maximum)),
        ]
        for kind, s in report["edit_kinds"].items():
            if s is not None:
                lines.append(row(f"  {kind} (n={s.n}): p50, max", sec(s.p50), sec(s.maximum)))
    if report["passes"]["summary"] is not None:
        n, p = report["passes"]["n"], report["passes"]["summary"]
        lines.append(
            row(f"operator passes that wrote (n={n}): p50, max", sec(p["p50"]), sec(p["maximum"]))
        )
    if idle:
        window, share = idle["window"], idle["cpu_share"] * 100
        lines.append(row(f"operator CPU while nothing changes ({window:g} s)", f"{share:.1f} %"))
    rss, hwm = mem.get("VmRSS", 0.0), mem.get("VmHWM", 0.0)
    lines.append(row("operator RSS: now (VmRSS), peak (VmHWM)", f"{rss:.1f} MB", f"{hwm:.1f} MB"))
    lines += ["", row("targets (issue)", "value", "limit") + "  status"]
    for t in report["targets"]:
        unit, value = t["unit"], t["value"]
        shown = "-" if value is None else f"{value:.3f} s" if unit == "s" else f"{value:.1f} MB"
        lines.append(
            row(f"  {t['target']}", shown, f"<= {t['limit']:g} {unit}") + f"  {t['status']}"
        )
    not_idle = sum(1 for e in r.get("edits", []) if not e["idle_after"])
    if not_idle:
        lines.append(f"note: after {not_idle} edits the operator was not idle within 20 s")
    if report.get("failure"):
        lines.append(f"FAILED: {report['failure']}")
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--vips", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--zones", type=int, default=5, help="VRID segments (default 5)")
    parser.add_argument("--edits", type=int, default=60, help="single edits (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="which VIPs and nodes edits pick")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of start and bulk")
    parser.add_argument("--edit-timeout", type=float, default=30.0, help="bound of each edit")
    parser.add_argument("--idle-window", type=float, default=20.0, help="idle CPU window (s)")
    parser.add_argument("--profile", type=Path, help="run the operator under cProfile, stats here")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.vips < 1 or args.zones < 1:
        parser.error("--vips, --nodes and --zones must be at least 1")
    if -(-args.vips // min(args.zones, args.nodes)) > 255:
        parser.error("more than 255 VIPs per zone: not enough VRIDs; add --zones")
    # SIGTERM (timeout(1), a CI runner) unwinds like Ctrl-C: the operator is stopped by its PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"operator benchmark: {args.vips} VIPs, {args.nodes} nodes, {args.zones} zones ...")
    load0 = os.getloadavg()[0]
    failure = None
    kapi = KubeAPI(history_limit=100_000).start()
    with tempfile.TemporaryDirectory(prefix="vipkeeper-bench-operator-") as tmp:
        bench = Bench(args, kapi, Path(tmp))
        try:
            bench.bound_request_log()
            for name, phase in (("start", bench.phase_start), ("bulk", bench.phase_bulk),
                                ("edits", bench.phase_edits), ("idle", bench.phase_idle)):  # fmt: skip
                print(f"  {name} ...", flush=True)
                phase()
        except Exception as exc:  # any failure: still report what was measured
            failure = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        finally:
            pid = bench.proc.pid if bench.proc else None
            bench.results.setdefault("memory_mb", memory_mb(pid) if pid else {})
            bench.stop_operator()
            with contextlib.suppress(Exception):  # a wedged emulator must not hide the report
                kapi.stop()
        passes, tail = bench.passes(), bench.log_text()[-LOG_TAIL:]
    edit_list = bench.results["edits"]
    edits = summarize(e["seconds"] for e in edit_list)
    kinds = {
        k: summarize(e["seconds"] for e in edit_list if e["kind"] == k)
        for k in ("preferred", "address")
    }
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "zones": bench.zones,
        "pid": pid,
        "loadavg": [load0, os.getloadavg()[0]],
        "results": bench.results,
        "edit_summary": edits,
        "edit_kinds": kinds,
        "passes": passes,
        "targets": targets(bench.results, edits),
        "failure": failure,
    }
    text = render(report)
    print(text)
    report["edit_summary"] = None if edits is None else asdict(edits)
    report["edit_kinds"] = {k: None if s is None else asdict(s) for k, s in kinds.items()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    # The tables as printed, for bench/report.py.
    args.json.with_suffix(".txt").write_text(text + "\n")
    print(f"\nJSON: {args.json}")
    if failure:
        print(f"--- operator log (tail) ---\n{tail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
