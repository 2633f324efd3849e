"""bench/stats.py: the percentile arithmetic behind the failover benchmark's table."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st


def _load_stats() -> ModuleType:
    # bench/ is a directory of scripts, not an installed package: load the module by path.
    path = Path(__file__).resolve().parents[2] / "bench" / "stats.py"
    spec = importlib.util.spec_from_file_location("bench_stats", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


bench_stats = _load_stats()
percentile = bench_stats.percentile
summarize = bench_stats.summarize
ratio = bench_stats.ratio


def test_median_of_odd_and_even_counts() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5


def test_extremes_are_min_and_max() -> None:
    data = [5.0, 1.0, 9.0, 7.0]
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 9.0


def test_p99_of_twenty_interpolates_between_the_two_worst() -> None:
    data = [float(i) for i in range(1, 21)]  # 1..20
    # position = 19 * 0.99 = 18.81 -> 19 + 0.81 * (20 - 19)
    assert percentile(data, 99) == pytest.approx(19.81)


def test_single_value() -> None:
    assert percentile([0.25], 99) == 0.25


@pytest.mark.parametrize("bad", [-1, 100.5])
def test_rejects_out_of_range_q(bad: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], bad)


def test_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0, float("nan")], 50)


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60))
def test_agrees_with_statistics_inclusive_quantiles(data: list[float]) -> None:
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    assert percentile(data, 50) == pytest.approx(cuts[49], rel=1e-9, abs=1e-6)
    assert percentile(data, 99) == pytest.approx(cuts[98], rel=1e-9, abs=1e-6)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.floats(0, 100))
def test_within_range_and_monotonic(data: list[float], q: float) -> None:
    value = percentile(data, q)
    assert min(data) <= value <= max(data)
    assert percentile(data, min(q + 1, 100)) >= value


def test_summarize_skips_missing_values() -> None:
    summary = summarize([None, 1.0, 3.0, None, 2.0])
    assert summary is not None
    assert (summary.n, summary.p50, summary.minimum, summary.maximum) == (3, 2.0, 1.0, 3.0)
    assert summary.mean == pytest.approx(2.0)
    assert summarize([None, None]) is None
    assert summarize([]) is None


def test_ratio() -> None:
    assert ratio(1.0, 2.0) == 0.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None
