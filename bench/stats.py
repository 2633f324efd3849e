"""Pure statistics for the failover benchmark: percentiles, summaries and ratios.

No I/O and no third-party imports, so that it can be unit-tested anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks.

    This is Hyndman & Fan's definition 7, the default of numpy.percentile and of
    ``statistics.quantiles(method="inclusive")``: p0 is the minimum, p100 the maximum, p50 the
    usual median. With 20 samples, p99 lies 81 % of the way from the second worst to the worst.
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0-100")
    if any(math.isnan(v) for v in data):
        raise ValueError("percentile of a NaN")
    position = (len(data) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(data) - 1)
    fraction = position - lower
    return data[lower] + (data[upper] - data[lower]) * fraction


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p99: float
    minimum: float
    maximum: float
    mean: float


def summarize(values: Iterable[float | None]) -> Summary | None:
    """p50/p99/min/max/mean of the values that are not None; None if there are none."""
    data = [float(v) for v in values if v is not None]
    if not data:
        return None
    return Summary(
        n=len(data),
        p50=percentile(data, 50),
        p99=percentile(data, 99),
        minimum=min(data),
        maximum=max(data),
        mean=sum(data) / len(data),
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator
