"""The Pareto front of candidates whose objectives are all minimized (latency, energy or size
against accuracy drop, or any other tuple): the ones no other candidate beats on every count, which
is what a frontier plot shows and what a choice under a budget is made from."""

from __future__ import annotations

import math
from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """`a` is no worse than `b` in every objective and better in at least one (all minimized)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices, in input order, of the points no other point dominates. Equal points are all
    kept (neither dominates the other); a point with a NaN objective is refused, since it compares
    as neither better nor worse and would silently sit on the front."""
    if not points:
        return []
    width = len(points[0])
    for i, p in enumerate(points):
        if len(p) != width:
            raise ValueError(f"point {i} has {len(p)} objectives, point 0 has {width}")
        if any(math.isnan(x) for x in p):
            raise ValueError(f"point {i} has a NaN objective: {tuple(p)}")
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]
