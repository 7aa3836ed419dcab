"""Runs OpenVINO IR artifacts: performance hint, thread count, per-layer counters (PERF_COUNT).

An NCS2 (MYRIAD) artifact runs on the device only where an OpenVINO with the MYRIAD plugin
(2022.3 LTS) is installed; elsewhere its IR runs on the CPU plugin as a correctness stand-in,
which is never a Myriad measurement.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from deploypipe.backends.runner import LayerTime, Runner, RunOptions

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact

Hint = Literal["LATENCY", "THROUGHPUT"]


def _core() -> Any:
    try:
        from openvino import Core
    except ImportError:  # the 2022.3 LTS runtime (the one with MYRIAD) exposes it here
        from openvino.runtime import Core
    return Core()


class OpenVinoRunner(Runner):
    kind = "openvino"
    library = "openvino"

    def __init__(self, artifact: Artifact, options: RunOptions, model_file: str | None = None,
                 performance_hint: Hint | None = None) -> None:
        super().__init__(artifact, options, model_file)
        info = artifact.manifest.compiler_info
        # a host stand-in always runs on the CPU plugin, whatever device the artifact is for
        self.device: str = "CPU" if model_file is not None else info.get("device", "CPU")
        self.hint: Hint = performance_hint or info.get("performance_hint", "LATENCY")
        self._layers: dict[tuple[str, str], list[float]] = {}
        self._exec_types: dict[str, str] = {}

    @classmethod
    def why_not_runnable(cls, artifact: Artifact) -> str | None:
        try:
            core = _core()
        except ImportError:
            return "openvino is not installed (pip install 'deploypipe[openvino]')"
        device = artifact.manifest.compiler_info.get("device", "CPU")
        if device not in core.available_devices:
            from importlib.metadata import version

            hc = artifact.manifest.host_check
            stand_in = f"; its host stand-in ({hc.file} on the CPU plugin) checks correctness only" if hc else ""
            if device == "MYRIAD":
                return (f"MYRIAD is not available in this OpenVINO ({version('openvino')}): the plugin "
                        f"ended with the 2022.3 LTS line{stand_in}")
            return f"OpenVINO device {device} is not available here (have: {', '.join(core.available_devices)})"
        return None

    def config(self) -> dict[str, Any]:
        """The plugin configuration this runner compiles with (recorded by the benchmarks)."""
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        precision = self.artifact.manifest.compiler_info.get("inference_precision")
        if self.device == "CPU":
            if precision:  # fp32/int8 artifacts and stand-ins: f32, not the bf16 some CPUs default to
                cfg["INFERENCE_PRECISION_HINT"] = precision
            if self.options.threads:
                cfg["INFERENCE_NUM_THREADS"] = self.options.threads
        if self.options.profile:
            cfg["PERF_COUNT"] = True
        return cfg

    def activate(self) -> None:
        core = _core()
        model = core.read_model(str(self.model_path))
        self.compiled = core.compile_model(model, self.device, self.config())
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self._layers.clear()

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(feeds)
        if self.options.profile:
            self._collect()
        return {name: np.array(results[out]) for name, out in zip(self.output_names, self.compiled.outputs, strict=True)}

    def _collect(self) -> None:
        for p in self.request.get_profiling_info():
            if p.real_time.total_seconds() <= 0:  # NOT_RUN / optimized-out layers
                continue
            self._layers.setdefault((p.node_name, p.node_type), []).append(p.real_time.total_seconds() * 1000)
            self._exec_types[p.node_name] = p.exec_type

    def layer_profile(self) -> list[LayerTime] | None:
        """Mean per-layer time over the profiled runs, from the plugin's PERF_COUNT counters."""
        if not self.options.profile or not self._layers:
            return None
        return [LayerTime(name=n, op=op, ms=float(np.mean(v))) for (n, op), v in self._layers.items()]

    def exec_types(self) -> dict[str, str]:
        """Kernel chosen per layer (e.g. jit_avx2_I8 shows real int8 kernels); needs profile=True."""
        return dict(self._exec_types)

    def throughput(self, feeds: dict[str, np.ndarray], seconds: float = 2.0) -> tuple[float, int]:
        """(inferences/s, parallel requests) with an async queue sized by the plugin's
        OPTIMAL_NUMBER_OF_INFER_REQUESTS; what the THROUGHPUT hint is for."""
        from openvino import AsyncInferQueue

        n = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        queue = AsyncInferQueue(self.compiled, n)
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(n):
                queue.start_async(feeds)
            queue.wait_all()
            done += n
        return done / (time.perf_counter() - start), n

    def deactivate(self) -> None:
        self.request = None
        self.compiled = None
        super().deactivate()
