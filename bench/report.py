"""One Markdown report of every benchmark's latest results, with a plot of failover distributions.

    .venv/bin/python bench/report.py [--results bench/results] [--out docs/benchmarks] [--since EPOCH]

`make bench` runs the benchmarks (each writes ``bench/results/<name>.json`` and a text or Markdown
rendering of its tables) and then this. The report measures nothing itself: it gathers what the
benchmarks measured, puts every target (MET/MISSED) and every ratio against a reference measured in
the same run in two tables at the top, embeds each benchmark's own tables, and draws the failover
takeover times of both implementations (``failover.png``). A result written before ``--since`` (an
earlier run, because this run's benchmark failed or was not run) is marked stale, never passed off
as fresh; a benchmark with no result at all is listed as not run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

import failover

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEFAULT_RESULTS = BENCH_DIR / "results"
DEFAULT_OUT = ROOT / "docs" / "benchmarks"
PLOT_NAME = "failover.png"


@dataclass(frozen=True)
class Source:
    """One benchmark: where its results are and how it is run."""

    key: str
    title: str
    command: str
    #: Its tables as written by the benchmark: Markdown (embedded as is) or text (fenced).
    tables: str | None


SOURCES = (
    Source("failover", "Failover: ours vs keepalived", "bench/failover.py", "failover.md"),
    Source("checks", "Health checks: ours vs keepalived", "bench/checks.py", "checks.md"),
    Source("ipvs", "IPVS programming: ours vs ipvsadm (in the VM)", "bench/ipvs.py", "ipvs.txt"),
    Source("operator", "Operator at scale", "bench/operator_bench.py", "operator.txt"),
    Source("chaos", "Chaos cycles", "bench/chaos.py", "chaos.txt"),
    Source("fuzz", "Fuzzing", "bench/fuzz.py", "fuzz.txt"),
)


@dataclass(frozen=True)
class Result:
    source: Source
    document: dict[str, Any] | None
    tables: str | None
    written: dt.datetime | None
    error: str | None = None

    def freshness(self, since: dt.datetime | None) -> str:
        if self.document is None:
            return "not run" if self.error is None else f"unreadable: {self.error}"
        assert self.written is not None
        when = stamp(self.written)
        if since is not None and self.written < since:
            return f"**stale**: from an earlier run ({when}); this run did not produce it"
        partial = " (partial: the benchmark stopped early)" if self.document.get("partial") else ""
        return f"measured {when}{partial}"


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load(results: Path, source: Source) -> Result:
    path = results / f"{source.key}.json"
    if not path.exists():
        return Result(source, None, None, None)
    written = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return Result(source, None, None, written, error=f"{path}: {exc}")
    if not isinstance(document, dict):
        return Result(source, None, None, written, error=f"{path}: not a JSON object")
    tables = None
    if source.tables is not None and (results / source.tables).exists():
        tables = (results / source.tables).read_text()
    return Result(source, document, tables, written)


# --- pure composition -------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return failover.Table(list(headers), [[_cell(c) for c in row] for row in rows]).markdown()


def target_rows(results: Sequence[Result]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for result in results:
        if result.document is None:
            continue
        for found in result.document.get("targets") or []:
            unit = found.get("unit", "")
            limit = found.get("limit")
            native = found.get("estimated_native")
            rows.append(
                [
                    result.source.key,
                    found.get("target", "?"),
                    found.get("value"),
                    "" if limit is None else f"{_cell(limit)} {unit}".strip(),
                    f"**{found.get('status', 'n/a')}**",
                    "" if native is None else f"estimated native: {_cell(native)} {unit}".strip(),
                ]
            )
    return rows


def failover_ratio_rows(document: Mapping[str, Any]) -> list[list[Any]]:
    """Client-visible takeover, ours against keepalived in the same lab and run."""
    rows: list[list[Any]] = []
    for cell, impls in (document.get("summary") or {}).items():
        ours = (impls.get("vipkeeper") or {}).get("arp_takeover")
        theirs = (impls.get("keepalived") or {}).get("arp_takeover")
        if not ours or not theirs:
            continue
        for q in ("p50", "p99"):
            mine, ref = ours[q], theirs[q]
            rows.append(
                [
                    "failover",
                    f"{cell}: takeover (first ARP reply) {q}",
                    f"{mine * 1000:.1f} ms",
                    f"keepalived {ref * 1000:.1f} ms",
                    None if not ref else mine / ref,
                ]
            )
    return rows


def ipvs_ratio_rows(document: Mapping[str, Any]) -> list[list[Any]]:
    return [
        ["ipvs", f"bulk load 10,000 destinations, {name}", "", "ipvsadm -R", value]
        for name, value in (document.get("ratios") or {}).items()
    ]


def _demote(markdown: str) -> str:
    """The benchmark's own headings become sub-headings of its section."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", markdown, flags=re.M)


def section(result: Result, since: dt.datetime | None) -> str:
    source = result.source
    parts = [f"## {source.title}", "", f"`{source.command}` — {result.freshness(since)}", ""]
    if result.tables is not None:
        if result.source.tables and result.source.tables.endswith(".md"):
            parts.append(_demote(result.tables.strip()))
        else:
            parts += ["```text", result.tables.rstrip(), "```"]
    elif result.document is not None:
        parts.append("(the benchmark wrote no tables; figures are in its JSON)")
    return "\n".join(parts) + "\n"


def compose(
    results: Sequence[Result],
    machine: Mapping[str, Any],
    *,
    now: dt.datetime,
    since: dt.datetime | None,
    plot: str | None,
    note: str | None = None,
) -> str:
    by_key = {r.source.key: r for r in results}
    parts = [
        "# vipkeeper benchmark report",
        "",
        f"Written {stamp(now)} by `bench/report.py` from the results in `bench/results/`. "
        "Every ratio compares ours with a reference (keepalived, ipvsadm) measured in the same run "
        "on the same machine. Nothing here is asserted by a test: these are measurements.",
        "",
        *([note, ""] if note else []),
        "## Machine",
        "",
        table(["", ""], [[k, v] for k, v in machine.items()]),
        "",
        "## Benchmarks in this report",
        "",
        table(
            ["benchmark", "command", "result"],
            [[r.source.key, f"`{r.source.command}`", r.freshness(since)] for r in results],
        ),
        "",
        "## Targets",
        "",
    ]
    rows = target_rows(results)
    parts.append(
        table(["benchmark", "target", "value", "limit", "status", "note"], rows) if rows else "none"
    )
    ratios: list[list[Any]] = []
    failover, ipvs = by_key.get("failover"), by_key.get("ipvs")
    if failover and failover.document:
        ratios += failover_ratio_rows(failover.document)
    if ipvs and ipvs.document:
        ratios += ipvs_ratio_rows(ipvs.document)
    parts += ["", "## Ratios against the references (ours / reference; < 1 is faster)", ""]
    parts.append(
        table(["benchmark", "figure", "ours", "reference", "ratio"], ratios) if ratios else "none"
    )
    if plot:
        parts += [
            "",
            "## Failover time distributions",
            "",
            "Every trial of the failover benchmark, ours and keepalived side by side. Left: the "
            "client-visible takeover (first ARP reply for the VIP from the new master after the "
            "fault), which the fault's random phase against the advert clock spreads. Right: what "
            "each implementation adds to the RFC's timer (ARP reply minus the expiry of the "
            "runner-up's Master_Down or Skew timer, from the advert sniffer).",
            "",
            f"![failover takeover distributions]({plot})",
        ]
    parts.append("")
    parts += [section(r, since) for r in results]
    return "\n".join(parts)


# --- the plot ---------------------------------------------------------------------------------


#: What the plot shows, per failover trial: the client's view, and what the implementation adds to
#: the RFC timer (the fault's random phase against the advert clock dominates the first).
PLOTTED = (
    ("arp_takeover", "takeover: ms from the fault to the first ARP reply"),
    ("arp_over_expected", "added to the RFC timer: ms from its expiry to the ARP reply"),
)


def takeover_samples(
    document: Mapping[str, Any], metric: str = "arp_takeover"
) -> dict[str, dict[str, list[float]]]:
    """Per cell ("unplanned/v2-1s"), per implementation: ``metric`` in ms of the good trials."""
    cells: dict[str, dict[str, list[float]]] = {}
    for trial in document.get("trials") or []:
        value = trial.get(metric)
        if value is None or trial.get("error"):
            continue
        cell = cells.setdefault(f"{trial['scenario']}/{trial['interval']}", {})
        cell.setdefault(trial["impl"], []).append(value * 1000)
    return cells


def draw(
    panels: Sequence[tuple[str, Mapping[str, Mapping[str, Sequence[float]]]]], path: Path
) -> None:
    """One row per cell, one column per panel (label, cells): box and every trial as a point."""
    names = sorted({name for _, cells in panels for name in cells}, reverse=True)
    # Figure without pyplot: no global state and no display backend to choose.
    fig = Figure(figsize=(6 * len(panels), 1.9 * len(names) + 0.6))
    axes = fig.subplots(len(names), len(panels), squeeze=False)
    for column, (label, cells) in enumerate(panels):
        for ax, name in zip(axes[:, column], names, strict=True):
            impls = [i for i in ("vipkeeper", "keepalived") if cells.get(name, {}).get(i)]
            data = [list(cells[name][i]) for i in impls]
            if not data:
                ax.set_axis_off()
                continue
            ax.boxplot(data, orientation="horizontal", widths=0.5, showfliers=False)
            for row, values in enumerate(data, start=1):
                # Every trial as a point: a box of 20 trials hides too much.
                ax.scatter(values, [row] * len(values), s=10, alpha=0.6, color="tab:blue", zorder=3)
            names_shown = ["ours" if i == "vipkeeper" else i for i in impls]
            ax.set_yticks(range(1, len(impls) + 1), names_shown)
            ax.set_title(name, fontsize=9, loc="left")
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# --- the machine ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """The failover benchmark's machine description, plus what the other benchmarks depend on."""
    found = dict(failover.machine_info())
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            found["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    release = Path("/etc/os-release")
    if release.exists():
        name = re.search(r'^PRETTY_NAME="?([^"\n]*)', release.read_text(), re.M)
        found["os"] = name.group(1) if name else "unknown"
    # `ipvsadm --version` asks the kernel, which may have no IPVS (the VM lane has one).
    found["ipvsadm"] = failover._first_line(["dpkg-query", "-W", "-f", "${Version}", "ipvsadm"])
    found["loadavg_at_report"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    del found["loadavg_at_start"]  # the report starts nothing; each benchmark records its own
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report.md and the plot")
    parser.add_argument(
        "--note", default=None, help="a line on how the results were produced, under the title"
    )
    parser.add_argument(
        "--since",
        type=float,
        default=None,
        help="epoch seconds when this bench run started: older results are marked stale",
    )
    args = parser.parse_args(argv)
    since = None if args.since is None else dt.datetime.fromtimestamp(args.since, dt.UTC)
    results = [load(args.results, s) for s in SOURCES]
    plot = None
    failover = results[0].document
    panels = [(label, takeover_samples(failover, m)) for m, label in PLOTTED] if failover else []
    if any(cells for _, cells in panels):
        draw(panels, args.out / PLOT_NAME)
        plot = PLOT_NAME
    text = compose(
        results, machine_info(), now=dt.datetime.now(dt.UTC), since=since, plot=plot, note=args.note
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(text)
    print(f"wrote {args.out / 'report.md'}" + (f" and {args.out / plot}" if plot else ""))
    for result in results:
        print(f"  {result.source.key:9} {result.freshness(since)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
