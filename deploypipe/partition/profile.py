"""Per-layer costs of a model on one side of the link: measured where the target is this host,
predicted by `deploypipe.costmodel.model` where it is not. Every vector carries the label that says which.

Host measurement: ONNX Runtime's profiler at the *basic* optimization level, where every ONNX node
keeps its name (at the full level, fusions and the NCHWc layout rename nodes after their output
tensors, so times could not be mapped back to cut points); the per-node times are then scaled to
the fully optimized model's wall time, measured in the same call, so they add up to what runs.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import onnx

from deploypipe import targets
from deploypipe.analysis import reference
from deploypipe.partition.graph import node_names


@dataclass(frozen=True)
class LayerCosts:
    """Milliseconds per ONNX node, in graph order, with where the figures come from."""

    ms: tuple[float, ...]
    label: str
    measured: bool
    target: str

    @property
    def total_ms(self) -> float:
        return sum(self.ms)

    def prefix_ms(self, k: int) -> float:
        return sum(self.ms[:k])

    def suffix_ms(self, k: int) -> float:
        return sum(self.ms[k:])

    def scaled(self, factor: float, why: str) -> LayerCosts:
        """These costs slowed down by `factor` (an emulated slower edge), saying so in the label."""
        return LayerCosts(tuple(m * factor for m in self.ms), f"{self.label}, x{factor:.3g} ({why})",
                          self.measured, self.target)


def _session(proto: onnx.ModelProto, threads: int, basic: bool, profile_dir: Path | None = None):  # noqa: ANN202
    return reference.session(proto, threads, level="basic" if basic else "all",
                             profile_prefix=profile_dir / "prof" if profile_dir is not None else None)


def time_model(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1, runs: int = 10,
               warmup: int = 2) -> float:
    """Median wall time (ms) of the fully optimized model on this host."""
    sess = _session(proto, threads, basic=False)
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_host(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1, runs: int = 10) -> LayerCosts:
    """Per-node times measured here (ORT profiler, basic optimization), scaled to the optimized total."""
    names = node_names(proto)
    with TemporaryDirectory(prefix="dp-profile-") as tmp:
        sess = _session(proto, threads, basic=True, profile_dir=Path(tmp))
        for _ in range(2 + runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per.setdefault(ev["name"][: -len("_kernel_time")], []).append(ev["dur"] / 1000.0)
    # drop the warm-up runs: keep each node's last `runs` samples
    raw = [statistics.median(per[n][-runs:]) if n in per else 0.0 for n in names]
    total = time_model(proto, feeds, threads, runs)
    scale = total / sum(raw) if sum(raw) > 0 else 1.0
    host = f"{platform.node()} ({platform.machine()})"
    label = (f"measured on {host}, ONNX Runtime {threads} thread(s): per-node profile scaled to the "
             f"optimized model's {total:.2f} ms")
    return LayerCosts(tuple(r * scale for r in raw), label, measured=True, target="host-cpu")


def predict(proto: onnx.ModelProto, target: str, precision: str = "fp32") -> LayerCosts:
    """Per-node times estimated by the cost model for a target that is not here."""
    from deploypipe.costmodel import CostModel

    model = CostModel(targets.get(target), precision)
    by_name = {e.name: e.ms for e in model.layers(proto)}
    return LayerCosts(tuple(by_name.get(n, 0.0) for n in node_names(proto)), model.label,
                      measured=False, target=target)


def costs_for(target: str, proto: onnx.ModelProto, feeds: dict[str, np.ndarray], precision: str = "fp32",
              threads: int = 1) -> LayerCosts:
    """Measured if the target's artifacts run natively here, else predicted."""
    spec = targets.get(target)
    if spec.runs_here:
        return measure_host(proto, feeds, threads)
    return predict(proto, target, precision)
