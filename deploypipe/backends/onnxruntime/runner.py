"""Runs ONNX artifacts with ONNX Runtime; per-layer times from ORT's profiler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deploypipe.backends.runner import LayerTime, Runner
from deploypipe.targets import unfused_on_host

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact


class OnnxRuntimeRunner(Runner):
    kind = "onnxruntime"

    @classmethod
    def on_gpu(cls, artifact: Artifact) -> bool:
        providers = artifact.manifest.compiler_info.get("providers", [])
        return any("CUDA" in p or "Tensorrt" in p for p in providers)
    library = "onnxruntime"

    def activate(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
            so.inter_op_num_threads = 1
        so.enable_profiling = self.options.profile
        if self.options.profile:
            so.profile_file_prefix = str(Path(self.artifact.path.parent, ".ort_profile"))
        so.log_severity_level = 3
        if self.artifact.manifest.precision == "int8" and unfused_on_host(self.artifact.manifest.target):
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # see deploypipe.isa
        providers = self.artifact.manifest.compiler_info.get("providers", ["CPUExecutionProvider"])
        available = set(ort.get_available_providers())
        providers = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(self.model_path), so, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def layer_profile(self) -> list[LayerTime] | None:
        if not self.options.profile:
            return None
        path = Path(self.session.end_profiling())
        events = json.loads(path.read_text())
        path.unlink(missing_ok=True)
        self._trace: list[dict[str, Any]] = events  # kept for `bench --trace-dir`
        totals: dict[tuple[str, str], list[float]] = {}
        for ev in events:
            if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
                key = (ev["name"][: -len("_kernel_time")], ev.get("args", {}).get("op_name", "?"))
                totals.setdefault(key, []).append(ev["dur"] / 1000.0)
        return [LayerTime(name=n, op=op, ms=float(np.mean(v))) for (n, op), v in totals.items()]

    def trace_events(self) -> list[dict[str, Any]] | None:
        return getattr(self, "_trace", None)
