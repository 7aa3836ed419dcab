"""Latency statistics."""

from __future__ import annotations

import numpy as np

from deploypipe.bench.results import Latency


def latency(samples_ms: list[float]) -> Latency:
    a = np.asarray(samples_ms, dtype=np.float64)
    return Latency(
        n=len(a), mean=float(a.mean()), std=float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        p50=float(np.percentile(a, 50)), p90=float(np.percentile(a, 90)),
        p99=float(np.percentile(a, 99)), min=float(a.min()),
    )
