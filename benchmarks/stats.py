"""Summaries of timing samples and the ratios against the baseline, in one place.

Percentiles use linear interpolation between order statistics (numpy's
default; the same as ``statistics.quantiles(method="inclusive")``), so anyone
can recompute every figure of a results file from its raw samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RATIOS", "ratio", "summarize", "vs_baseline"]


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """{p50, p95, mean, min, max, n} of ``samples`` (same unit as the samples)."""
    if not samples:
        raise ValueError("no samples to summarize")
    arr = np.asarray(samples, dtype=np.float64)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _p50(row: dict[str, Any], key: str) -> float | None:
    summary = row.get(key)
    return summary["p50"] if summary else None


# name -> (how it is computed from a row and the baseline row of the same batch size, meaning)
RATIOS: dict[str, str] = {
    "latency_speedup": "baseline latency p50 / latency p50 (model only; > 1 is faster than the baseline)",
    "e2e_speedup": "baseline e2e p50 / e2e p50 (decode + preprocess + model)",
    "preprocess_speedup": "baseline preprocess p50 / preprocess p50 (decode + preprocess of the 12 MP JPEG)",
    "throughput_ratio": "throughput / baseline throughput",
    "cold_start_speedup": "baseline cold start / cold start",
    "rss_ratio": "peak RSS / baseline peak RSS (< 1 uses less memory)",
}


def vs_baseline(row: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """Every ratio of :data:`RATIOS` for ``row`` against ``base`` (None where either lacks the metric)."""
    return {
        "latency_speedup": ratio(_p50(base, "latency_ms"), _p50(row, "latency_ms")),
        "e2e_speedup": ratio(_p50(base, "e2e_ms"), _p50(row, "e2e_ms")),
        "preprocess_speedup": ratio(_p50(base, "preprocess_ms"), _p50(row, "preprocess_ms")),
        "throughput_ratio": ratio(row.get("throughput_ips"), base.get("throughput_ips")),
        "cold_start_speedup": ratio(base.get("cold_start_s"), row.get("cold_start_s")),
        "rss_ratio": ratio(row.get("peak_rss_mb"), base.get("peak_rss_mb")),
    }
