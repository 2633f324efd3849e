#!/usr/bin/env python3
"""Chaos cycles: one random fault per cycle on three agents, dual/no-master intervals judged.

    sudo .venv/bin/python bench/chaos.py --cycles 1000 --seed 1 [--json bench/results/chaos.json]

Prints the seed (the same seed replays the same schedule), a line per cycle, then a table per
fault kind and the targets MET/MISSED; writes JSON (every cycle) and the table as text for
bench/report.py. Nothing is asserted: tests/netns/test_chaos.py is the short run that asserts
the invariants. See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from stats import percentile
from vipkeeper_lab.chaos import faults
from vipkeeper_lab.chaos.runner import ChaosRunner, ChaosSettings, CycleResult
from vipkeeper_lab.chaos.timeline import DUAL_SLACK, NONE_SLACK, Judged
from vipkeeper_lab.nodes import Lab

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "chaos.json"
TABLE_NAME = "chaos.txt"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _stats(judged: Sequence[Judged]) -> dict[str, Any]:
    durations = [j.duration for j in judged]
    measured = [j.measured for j in judged]
    return {
        "count": len(judged),
        "max": max(durations) if durations else None,
        "p99": percentile(durations, 99) if durations else None,
        "max_judged": max(measured) if measured else None,
        "violations": sum(j.violation for j in judged),
        "unended": sum(j.unended for j in judged),
    }


def summarize(results: Sequence[CycleResult]) -> dict[str, dict[str, Any]]:
    """Per fault kind (in schedule order of KINDS) and "total"."""
    groups: dict[str, list[CycleResult]] = {k: [] for k in faults.KINDS}
    for r in results:
        groups[r.fault.kind].append(r)
    groups["total"] = list(results)
    out = {}
    for kind, members in groups.items():
        duals = [j for r in members if r.verdict for j in r.verdict.duals]
        nones = [j for r in members if r.verdict for j in r.verdict.nones]
        out[kind] = {
            "cycles": len(members),
            "unsettled": sum(not r.settled for r in members),
            "dual": _stats(duals),
            "none": _stats(nones),
        }
    return out


def render(summary: dict[str, dict[str, Any]], settings: ChaosSettings, secs: float) -> str:
    head = (
        f"{'fault':<15}{'cycles':>7} | {'dual n':>6}{'max ms':>9}{'p99 ms':>9}{'judged':>9}"
        f"{'viol':>5} | {'none n':>6}{'max ms':>9}{'p99 ms':>9}{'viol':>5} | {'unended':>7}"
        f"{'unsettled':>10}"
    )
    lines = [head, "-" * len(head)]
    for kind, row in summary.items():
        d, n = row["dual"], row["none"]
        if kind == "total":
            lines.append("-" * len(head))
        lines.append(
            f"{kind:<15}{row['cycles']:>7} | {d['count']:>6}{ms(d['max']):>9}{ms(d['p99']):>9}"
            f"{ms(d['max_judged']):>9}{d['violations']:>5} | {n['count']:>6}{ms(n['max']):>9}"
            f"{ms(n['p99']):>9}{n['violations']:>5} | {d['unended'] + n['unended']:>7}"
            f"{row['unsettled']:>10}"
        )
    t = settings.timing
    lines += [
        "",
        f"seed {settings.seed}, {summary['total']['cycles']} cycles in {secs:.0f} s; "
        f"VRRPv{t.version}, advert {t.advert * 1000:.0f} ms, priorities {t.priorities}",
        "dual: two VIP holders or two MACs answering ARP; 'judged' = longest part after the "
        f"faults cleared, bound advert + {DUAL_SLACK * 1000:.0f} ms",
        "none: no connected VIP holder; bound Master_Down_Interval of the taking-over backup "
        f"+ {NONE_SLACK * 1000:.0f} ms "
        f"(runner-up: {(t.runner_up_down + NONE_SLACK) * 1000:.0f} ms)",
    ]
    return "\n".join(lines)


def targets(summary: dict[str, dict[str, Any]], settings: ChaosSettings) -> list[dict[str, Any]]:
    total = summary["total"]
    dual_bound = settings.timing.advert + DUAL_SLACK
    rows = [
        (
            f"dual-master intervals longer than {dual_bound * 1000:.0f} ms after the fault clears",
            total["dual"]["violations"],
        ),
        (
            "no-master intervals longer than Master_Down_Interval + 50 ms",
            total["none"]["violations"],
        ),
        ("cycles not back to one master reachable by the client", total["unsettled"]),
    ]
    return [
        {
            "target": name,
            "value": value,
            "limit": 0,
            "unit": "",
            "status": "MET" if value == 0 else "MISSED",
        }
        for name, value in rows
    ]


def cycle_line(result: CycleResult) -> str:
    verdict = result.verdict
    worst = ""
    if verdict is not None:
        duals = [j.measured for j in verdict.duals]
        nones = [j.duration for j in verdict.nones]
        worst = (
            f"dual {len(duals)} (judged max {ms(max(duals, default=None))} ms) "
            f"none {len(nones)} (max {ms(max(nones, default=None))} ms) "
            f"viol {verdict.dual_violations + verdict.none_violations}"
        )
    state = "ok" if result.settled else f"NOT SETTLED {result.error or result.holders}"
    return f"#{result.index:<5} {faults.describe(result.fault):<48} {worst} {state}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--interval", type=Decimal, default=Decimal("0.1"), help="advert interval, seconds"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--kinds", default=",".join(faults.KINDS), help="comma-separated fault kinds"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = ChaosSettings(
        seed=args.seed, cycles=args.cycles, interval_cs=int(args.interval * 100)
    )
    kinds = tuple(k for k in args.kinds.split(",") if k)
    plan = faults.schedule(args.seed, args.cycles, settings.timing, kinds)
    print(f"chaos: seed {args.seed}, {args.cycles} cycles (repeat with --seed {args.seed})")
    started = time.monotonic()
    results: list[CycleResult] = []
    partial = True
    with Lab(nodes=len(settings.priorities)) as lab:
        runner = ChaosRunner(lab, settings, say=lambda m: print(m, flush=True))
        try:
            runner.setup()
            for index, fault in enumerate(plan, start=1):
                results.append(runner.cycle(index, fault))
                print(cycle_line(results[-1]), flush=True)
                for node, log in results[-1].logs.items():
                    print(f"--- {node} agent log ---\n{log}", flush=True)
            partial = False
        except KeyboardInterrupt:
            print("interrupted: reporting the cycles run so far", file=sys.stderr)
        except Exception as exc:  # the lab could not be reset: report what was measured
            print(f"stopped early: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            runner.close()
    secs = time.monotonic() - started
    summary = summarize(results)
    text = render(summary, settings, secs)
    found = targets(summary, settings)
    print()
    print(text)
    for row in found:
        print(f"target: {row['target']}: {row['value']} -> {row['status']}")
    document = {
        "seed": args.seed,
        "cycles": len(results),
        "requested_cycles": args.cycles,
        "partial": partial,
        "seconds": round(secs, 1),
        "settings": {
            "version": settings.version,
            "interval_cs": settings.interval_cs,
            "priorities": list(settings.priorities),
        },
        "command": f"bench/chaos.py --cycles {args.cycles} --seed {args.seed}",
        "kinds": summary,
        "targets": found,
        "results": [r.to_json() for r in results],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1) + "\n")
    (args.json.parent / TABLE_NAME).write_text(text + "\n")
    print(f"written: {args.json}, {args.json.parent / TABLE_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
