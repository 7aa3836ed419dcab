"""Beyond the split point: Edgent's deadline mode and seed 003's edge/cloud cascade.

Deadline mode (Edgent's "right-sizing"): among model variants (e.g. full, pruned, quantized, a
smaller net), each with its accuracy *measured* on labelled data, pick the most accurate one whose
best split meets the latency deadline; the split of each variant comes from the analyzer.

Cascade (seed 003): a compact model answers on the edge; inputs it is not confident about (max
softmax below a threshold) are sent whole to the full model in the cloud over the split runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deploypipe.partition.analyzer import PartitionReport
from deploypipe.partition.client import EdgeClient, RequestRecord
from deploypipe.partition.server import Executor


@dataclass(frozen=True)
class Variant:
    """A model variant with its analysis (best split) and measured accuracy."""

    name: str
    accuracy: float
    accuracy_source: str
    report: PartitionReport


@dataclass(frozen=True)
class DeadlineChoice:
    deadline_ms: float
    chosen: Variant | None  # None: no variant meets the deadline
    feasible: list[str]


def choose(variants: list[Variant], deadline_ms: float) -> DeadlineChoice:
    """The most accurate variant whose best predicted latency meets the deadline (ties: faster)."""
    ok = [v for v in variants if v.report.best_cut.total_ms <= deadline_ms]
    best = max(ok, key=lambda v: (v.accuracy, -v.report.best_cut.total_ms), default=None)
    return DeadlineChoice(deadline_ms, best, [v.name for v in ok])


def softmax_confidence(logits: np.ndarray) -> float:
    z = logits.reshape(-1).astype(np.float64)
    e = np.exp(z - z.max())
    return float((e / e.sum()).max())


@dataclass
class CascadeRecord:
    offloaded: bool
    confidence: float
    total_ms: float
    sent_bytes: int
    remote: RequestRecord | None


class Cascade:
    """Compact model here; below `threshold` confidence, the input goes to the cloud model."""

    def __init__(self, compact: Executor, output: str, cloud: EdgeClient, threshold: float,
                 timer: Callable[[], float]) -> None:
        self.compact, self.output, self.cloud, self.threshold = compact, output, cloud, threshold
        self.timer = timer

    def infer(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, CascadeRecord]:
        t0 = self.timer()
        local = self.compact(feeds)[self.output]
        conf = softmax_confidence(local)
        if conf >= self.threshold:
            return local, CascadeRecord(False, conf, (self.timer() - t0) * 1e3, 0, None)
        outs, rec = self.cloud.infer(feeds)
        return next(iter(outs.values())), CascadeRecord(True, conf, (self.timer() - t0) * 1e3, rec.sent_bytes, rec)
