"""bench/report.py: the benchmark report gathers results honestly (stale and missing ones say so)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load_report() -> ModuleType:
    # bench/ is a directory of scripts, not an installed package: load the module by path.
    path = Path(__file__).resolve().parents[2] / "bench" / "report.py"
    # It imports its sibling scripts (failover.py), as it does when run from bench/.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("bench_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


report = _load_report()

T0 = dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)


def _summary(p50: float, p99: float) -> dict[str, float]:
    return {"n": 3, "p50": p50, "p99": p99, "minimum": p50, "maximum": p99, "mean": p50}


def _trial(impl: str, value: float | None, error: str | None = None) -> dict[str, Any]:
    return {
        "impl": impl,
        "scenario": "unplanned",
        "interval": "v3-100ms",
        "arp_takeover": value,
        "error": error,
    }


FAILOVER = {
    "partial": False,
    "summary": {
        "unplanned/v3-100ms": {
            "vipkeeper": {"arp_takeover": _summary(0.36, 0.40)},
            "keepalived": {"arp_takeover": _summary(0.40, 0.50)},
        }
    },
    "trials": [
        _trial("vipkeeper", 0.36),
        _trial("vipkeeper", 0.38),
        _trial("vipkeeper", None),
        _trial("vipkeeper", 0.1, error="lab broke"),
        _trial("keepalived", 0.40),
    ],
    "targets": [
        {"target": "unplanned takeover p99 ratio", "value": 0.8, "limit": 1.1, "status": "MET"}
    ],
}
IPVS = {
    "ratios": {"Balancer.sync(), wall": 0.83},
    "targets": [
        {
            "target": "no-op resync",
            "value": 3.2,
            "limit": 1.0,
            "unit": "s",
            "status": "MISSED",
            "estimated_native": 0.19,
        }
    ],
}


def _write(results: Path, key: str, document: object, moment: dt.datetime) -> None:
    path = results / f"{key}.json"
    path.write_text(json.dumps(document))
    os.utime(path, (moment.timestamp(), moment.timestamp()))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    _write(tmp_path, "failover", FAILOVER, T0 + dt.timedelta(minutes=5))
    (tmp_path / "failover.md").write_text("# Failover\n\n## Targets\n- MET x\n")
    _write(tmp_path, "ipvs", IPVS, T0 - dt.timedelta(days=1))
    (tmp_path / "ipvs.txt").write_text("bulk  0.83x\n")
    (tmp_path / "checks.json").write_text("{not json")
    return tmp_path


def _compose(results: Path) -> str:
    loaded = [report.load(results, s) for s in report.SOURCES]
    text: str = report.compose(loaded, {"CPU": "test"}, now=T0, since=T0, plot="failover.png")
    return text


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("failover", "| failover | `bench/failover.py` | measured 2026-12-04 08:05 UTC |"),
        ("ipvs", "**stale**: from an earlier run (2026-12-03 08:00 UTC)"),
        ("checks", "unreadable:"),
        ("operator", "| operator | `bench/operator_bench.py` | not run |"),
    ],
)
def test_every_benchmark_says_where_its_figures_come_from(
    results: Path, key: str, expected: str
) -> None:
    assert expected in _compose(results)


def test_targets_and_ratios_are_gathered_from_every_result(results: Path) -> None:
    text = _compose(results)
    assert "| failover | unplanned takeover p99 ratio | 0.8 | 1.1 | **MET** |  |" in text
    assert "| ipvs | no-op resync | 3.2 | 1 s | **MISSED** | estimated native: 0.19 s |" in text
    # Ratio = ours / keepalived at the same percentile, from the same run's summary.
    assert "| failover | unplanned/v3-100ms: takeover (first ARP reply) p50 | 360.0 ms |" in text
    assert "keepalived 400.0 ms | 0.9 |" in text
    assert "keepalived 500.0 ms | 0.8 |" in text
    assert "| ipvs | bulk load 10,000 destinations, Balancer.sync(), wall |" in text


def test_sections_embed_each_benchmarks_own_tables(results: Path) -> None:
    text = _compose(results)
    assert "### Failover\n" in text and "#### Targets\n" in text  # demoted under its section
    assert "```text\nbulk  0.83x\n```" in text
    assert "![failover takeover distributions](failover.png)" in text


def test_takeover_samples_keep_only_good_trials() -> None:
    cells = report.takeover_samples(FAILOVER)
    assert cells == {"unplanned/v3-100ms": {"vipkeeper": [360.0, 380.0], "keepalived": [400.0]}}


def test_main_writes_the_report_and_a_png(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert (out / "failover.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Failover time distributions" in (out / "report.md").read_text()


def test_no_plot_without_failover_trials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert not (out / "failover.png").exists()
    assert "time distributions" not in (out / "report.md").read_text()


def test_a_note_says_how_the_results_were_produced(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert report.main(["--results", str(results), "--out", str(out), "--note", "By hand."]) == 0
    assert "\nBy hand.\n" in (out / "report.md").read_text()
