"""Small statistics helpers shared by the benchmarks (no numpy: the stdlib is enough)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rate(count: int, seconds: float) -> float:
    """Items per second, rounded for the report."""
    return round(count / seconds, 1) if seconds > 0 else float("nan")
