"""Predicts per-layer and model latency on devices that are not here: a roofline per layer from the
target's figures (peak GFLOP/s per precision, memory bandwidth), with efficiency factors per op class
calibrated on what was measured on this host.

Why a roofline plus calibration: the datasheet peak is never reached, and how far each kind of layer
falls short (dense conv vs depthwise vs elementwise vs per-node dispatch overhead) is a property of
kernels, not of one device, so factors fitted on host measurements transfer better than raw peaks.
Every figure this module produces is an estimate and its `label` says so.

The host's own peak figures are not in `targets/host-cpu.toml`; `host_figures()` measures them with a
GEMM and a memory-copy micro-benchmark and labels them as measured.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from deploypipe.errors import InputFileError, UnsupportedError
from deploypipe.targets import Figure, TargetSpec

OpClass = str  # "conv" | "depthwise" | "gemm" | "recurrent" | "elementwise" | "free"
COMPUTE_CLASSES = ("conv", "depthwise", "gemm", "recurrent")
# Ops that move no data in an optimized runtime (views, shape arithmetic): dispatch cost only, if any.
_FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity",
             "ConstantOfShape", "Dropout"}
_GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum"}
_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}
_RNN_OPS = {"LSTM", "GRU", "RNN"}
# Bytes per element moved at each precision (weights and activations alike).
_ELEM_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}

# Starting points (and regularization priors) of the fit: typical fractions of peak reached by
# optimized CPU kernels; the fit moves them only as far as the measurements demand.
PRIOR_EFFICIENCY: dict[str, float] = {"conv": 0.5, "depthwise": 0.1, "gemm": 0.4, "recurrent": 0.2, "memory": 0.5}
PRIOR_OVERHEAD_US = 5.0
_PRIOR_WEIGHT = 0.3


@dataclass(frozen=True)
class LayerEstimate:
    """One layer's predicted time and what bounds it."""

    name: str
    op: str
    macs: int
    bytes: int
    ms: float
    bound: str  # "compute" | "memory" | "overhead"


@dataclass
class Calibration:
    """Efficiency per op class fitted on host measurements (saved/loaded as JSON)."""

    host: str
    host_peak_gflops: float
    host_bandwidth_gbs: float
    efficiency: dict[str, float] = field(default_factory=lambda: dict(PRIOR_EFFICIENCY))
    overhead_us: float = PRIOR_OVERHEAD_US
    fitted_on: list[str] = field(default_factory=list)
    fit_errors: list[float] = field(default_factory=list)  # in-sample relative errors, for the record
    source: str = ""

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise InputFileError(f"calibration file {path}: {exc}") from exc


@dataclass(frozen=True)
class _Layer:
    name: str
    op: str
    cls: OpClass
    macs: int
    elems: int  # activation + weight elements moved (precision-independent)


def _attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(onnx.helper.get_attribute_value(a))
    return default


def _op_class(node: onnx.NodeProto) -> OpClass:
    op = node.op_type
    if op in _CONV_OPS:
        return "depthwise" if _attr_int(node, "group", 1) > 1 else "conv"
    if op in _GEMM_OPS:
        return "gemm"
    if op in _RNN_OPS:
        return "recurrent"
    if op in _FREE_OPS:
        return "free"
    return "elementwise"


def _elem_size(dtype: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize
    except (KeyError, TypeError):
        return 4


@functools.lru_cache(maxsize=64)
def _layers_cached(serialized: bytes) -> tuple[_Layer, ...]:
    proto = onnx.ModelProto()
    proto.ParseFromString(serialized)
    return tuple(_extract(proto))


def _extract(proto: onnx.ModelProto) -> list[_Layer]:
    """Per-node MACs (from `deploypipe.analysis`) and elements moved: inputs + weights + outputs."""
    from deploypipe.analysis import analyze

    stats = analyze(proto)
    graph = proto.graph
    elems: dict[str, int] = {}
    for vi in graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        elems[vi.name] = math.prod(dims)
    for init in graph.initializer:
        elems[init.name] = math.prod(init.dims)
    for layer in stats.layers:
        if layer.output_shape is not None and layer.output_bytes is not None:
            elems[layer.output_name] = math.prod(d or 1 for d in layer.output_shape)
    nodes = {n.name or f"{n.op_type}_{i}": n for i, n in enumerate(graph.node)}
    out = []
    for layer in stats.layers:
        node = nodes.get(layer.name)
        if node is None:
            continue
        cls = _op_class(node)
        moved = sum(elems.get(t, 0) for t in node.input if t) + elems.get(layer.output_name, 0)
        out.append(_Layer(layer.name, layer.op_type, cls, int(layer.macs or 0), int(moved)))
    return out


def _layers(proto: onnx.ModelProto) -> tuple[_Layer, ...]:
    return _layers_cached(proto.SerializeToString())


def _peak(target: TargetSpec, precision: str) -> tuple[float, str]:
    """Peak GFLOP/s at the precision, falling back to FP32 when the target gives no separate figure."""
    fig = target.figure(f"peak_gflops_{precision}") or target.figure("peak_gflops_fp32")
    if fig is None:
        raise UnsupportedError(f"target {target.name} has no peak_gflops figure: the cost model cannot estimate it")
    used = f"peak_gflops_{precision}" if target.figure(f"peak_gflops_{precision}") else "peak_gflops_fp32"
    return fig.value, used


def _bandwidth(target: TargetSpec) -> float:
    fig = target.figure("mem_bandwidth_gbs")
    if fig is None:
        raise UnsupportedError(f"target {target.name} has no mem_bandwidth_gbs figure: the cost model cannot estimate it")
    return fig.value


def _per_core(target: TargetSpec, peak: float) -> float:
    cores = target.figure("cores")
    return peak / cores.value if cores and cores.value else peak


class CostModel:
    """Roofline per layer: max(compute, memory) time at calibrated efficiency, plus dispatch overhead."""

    def __init__(self, target: TargetSpec, precision: str = "fp32", calibration: Calibration | None = None) -> None:
        self.target = target
        self.precision = precision
        self.calibration = calibration
        self.peak_gflops, self._peak_key = _peak(target, precision)
        self.bandwidth_gbs = _bandwidth(target)
        self.efficiency = dict(calibration.efficiency if calibration else PRIOR_EFFICIENCY)
        overhead = calibration.overhead_us if calibration else PRIOR_OVERHEAD_US
        if calibration:
            # Dispatch overhead is per-core work: scale it by the host's vs the target's per-core speed.
            host_core = calibration.host_peak_gflops / max(1, _host_cores())
            overhead *= host_core / _per_core(target, self.peak_gflops)
        self.overhead_us = overhead
        self.elem_bytes = _ELEM_BYTES.get(precision, 4.0)
        cal = f"calibrated on {calibration.host} ({len(calibration.fitted_on)} models)" if calibration else "uncalibrated (prior efficiencies)"
        fallback = "" if self._peak_key == f"peak_gflops_{precision}" else f", {precision} at the fp32 peak (no {precision} figure)"
        self.label = f"estimated by roofline({target.name} figures{fallback}), {cal}"

    def _time(self, layer: _Layer) -> tuple[float, str]:
        if layer.cls == "free":
            return 0.0, "overhead"
        compute = (2.0 * layer.macs / (self.peak_gflops * 1e9 * self.efficiency[layer.cls])
                   if layer.cls in COMPUTE_CLASSES else 0.0)
        memory = layer.elems * self.elem_bytes / (self.bandwidth_gbs * 1e9 * self.efficiency["memory"])
        overhead = self.overhead_us * 1e-6
        bound = max((compute, "compute"), (memory, "memory"), (overhead, "overhead"))[1]
        return (max(compute, memory) + overhead) * 1000.0, bound

    def layers(self, proto: onnx.ModelProto) -> list[LayerEstimate]:
        """Per-layer roofline estimates in topological order."""
        out = []
        for layer in _layers(proto):
            ms, bound = self._time(layer)
            out.append(LayerEstimate(layer.name, layer.op, layer.macs, int(layer.elems * self.elem_bytes), ms, bound))
        return out

    def model_ms(self, proto: onnx.ModelProto) -> float:
        return sum(self._time(layer)[0] for layer in _layers(proto))


# ---- the host's figures, measured ----------------------------------------------------------------

def _host_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def host_figures(seconds: float = 0.5) -> dict[str, Figure]:
    """Peak FP32 GFLOP/s (numpy/BLAS SGEMM 1024³, best of several) and memory bandwidth (copy of
    a 64 MB array, read + write, best of several), measured on this host; cached per process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 1024), dtype=np.float32)
    a @ b
    best_gemm = math.inf
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best_gemm = min(best_gemm, time.perf_counter() - t0)
    src = np.ones(16 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best_copy = math.inf
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best_copy = min(best_copy, time.perf_counter() - t0)
    where = f"measured on {platform.node()} by deploypipe.costmodel.host_figures"
    return {
        "peak_gflops_fp32": Figure(value=2 * 1024**3 / best_gemm / 1e9, unit="GFLOP/s",
                                   source=f"{where} (numpy SGEMM 1024x1024, {_host_cores()} cores)"),
        "mem_bandwidth_gbs": Figure(value=2 * src.nbytes / best_copy / 1e9, unit="GB/s",
                                    source=f"{where} (64 MB copy, read+write)"),
        "cores": Figure(value=_host_cores(), unit="cores", source=f"{where} (sched_getaffinity)"),
    }


def with_host_figures(host: TargetSpec) -> TargetSpec:
    """The host spec with measured peak and bandwidth where its file gives none."""
    figs = dict(host.figures)
    if "peak_gflops_fp32" not in figs or "mem_bandwidth_gbs" not in figs:
        for k, v in host_figures().items():
            figs.setdefault(k, v)
    return host.model_copy(update={"figures": figs})


# ---- calibration ---------------------------------------------------------------------------------

_PARAMS = (*COMPUTE_CLASSES, "memory")


def _predict(layers: tuple[_Layer, ...], eff: dict[str, float], overhead_us: float, peak: float, bw: float) -> float:
    total = 0.0
    for layer in layers:
        if layer.cls == "free":
            continue
        compute = 2.0 * layer.macs / (peak * 1e9 * eff[layer.cls]) if layer.cls in COMPUTE_CLASSES else 0.0
        memory = layer.elems * 4.0 / (bw * 1e9 * eff["memory"])
        total += max(compute, memory) + overhead_us * 1e-6
    return total * 1000.0


def calibrate(measurements: list[tuple[onnx.ModelProto, float]], host: TargetSpec,
              names: list[str] | None = None) -> Calibration:
    """Fit efficiency per op class and per-node overhead to host FP32 model latencies (ms).

    Least squares on log(predicted / measured) with a weak pull towards the priors, so an op class
    that the measured models barely use keeps a sensible value instead of an arbitrary one.
    """
    from scipy.optimize import least_squares

    if not measurements:
        raise InputFileError("calibration needs at least one host measurement")
    spec = with_host_figures(host)
    peak, bw = spec.figures["peak_gflops_fp32"].value, spec.figures["mem_bandwidth_gbs"].value
    layer_sets = [_layers(p) for p, _ in measurements]
    measured = np.array([ms for _, ms in measurements], dtype=np.float64)
    prior = np.log([*(PRIOR_EFFICIENCY[k] for k in _PARAMS), PRIOR_OVERHEAD_US])

    def unpack(x: np.ndarray) -> tuple[dict[str, float], float]:
        eff = {k: float(min(1.0, math.exp(v))) for k, v in zip(_PARAMS, x[:-1], strict=True)}
        return eff, float(math.exp(x[-1]))

    def residuals(x: np.ndarray) -> np.ndarray:
        eff, ovh = unpack(x)
        pred = np.array([_predict(ls, eff, ovh, peak, bw) for ls in layer_sets])
        return np.concatenate([np.log(pred / measured), _PRIOR_WEIGHT * (x - prior)])

    upper = np.log([1.0] * len(_PARAMS) + [1e4])
    lower = np.log([1e-4] * len(_PARAMS) + [1e-2])
    fit = least_squares(residuals, prior, bounds=(lower, upper))
    eff, ovh = unpack(fit.x)
    preds = [_predict(ls, eff, ovh, peak, bw) for ls in layer_sets]
    return Calibration(
        host=platform.node(), host_peak_gflops=peak, host_bandwidth_gbs=bw, efficiency=eff, overhead_us=ovh,
        fitted_on=names or [p.graph.name for p, _ in measurements],
        fit_errors=[float(abs(p - m) / m) for p, m in zip(preds, measured, strict=True)],
        source=f"fitted on FP32 latencies measured on {platform.node()}; host peaks: "
               f"{spec.figures['peak_gflops_fp32'].source}",
    )


def leave_one_out(measurements: list[tuple[onnx.ModelProto, float]], host: TargetSpec) -> list[float]:
    """Relative model-level error of each model predicted by a calibration fitted on the others."""
    spec = with_host_figures(host)
    errors = []
    for i, (proto, ms) in enumerate(measurements):
        rest = measurements[:i] + measurements[i + 1:]
        cal = calibrate(rest, spec) if rest else None
        errors.append(abs(CostModel(spec, "fp32", cal).model_ms(proto) - ms) / ms)
    return errors
