"""Predicts per-layer and model latency on devices that are not here: a roofline per layer from the
target's figures (peak GFLOP/s per precision, memory bandwidth, cache levels where given), with
efficiency factors per op class calibrated on what was measured on this host.

Why a roofline plus calibration: the datasheet peak is never reached, and how far each kind of layer
falls short (dense conv vs depthwise vs GEMV vs per-node dispatch, small vs large channel counts) is a
property of kernels, not of one device, so factors fitted on host measurements transfer better than
raw peaks. Elementwise nodes that runtimes fuse into the conv/GEMM before them cost nothing; weights
are charged at the bandwidth of the memory level the whole model's weights fit in. Every figure this
module produces is an estimate and its `label` says so.

The host's own figures are not in `targets/host-cpu.toml`; `host_figures()` derives/measures them
(peak, cache sizes, bandwidth per level) and says how in each figure's source.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from deploypipe.costmodel.host import host_cores
from deploypipe.errors import InputFileError, UnsupportedError
from deploypipe.targets import TargetSpec

OpClass = str  # "conv" | "depthwise" | "gemm" | "recurrent" | "elementwise" | "free"
COMPUTE_CLASSES = ("conv", "depthwise", "gemm", "recurrent")
# Ops that move no data in an optimized runtime (views, shape arithmetic): dispatch cost only, if any.
_FREE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant", "Identity",
             "ConstantOfShape", "Dropout"}
_GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum"}
_CONV_OPS = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}
_RNN_OPS = {"LSTM", "GRU", "RNN"}
# Elementwise ops that optimizing runtimes (ORT, TFLite, TensorRT, TVM) fuse into the conv/GEMM that
# produces their input: they cost no separate pass over memory and no dispatch.
_FUSIBLE_OPS = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh",
                "HardSwish", "Add", "Mul"}
# Bytes per element moved at each precision (weights and activations alike).
_ELEM_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}
# FP32 FLOP per cycle per core by vector ISA (two FMA pipes on x86; the target files' convention of
# one 128-bit FMA per cycle on Arm NEON), for the host's theoretical peak.


# Parameters of the fit and their starting points / regularization priors: fractions of the
# theoretical peak reached by optimized kernels, of the memory bandwidth of the level the working set
# fits in, per-node dispatch overhead (us), and the GEMM dimension at which a kernel runs at half its
# best efficiency (small channel counts, small spatial sizes). The fit moves them only as far as the
# measurements demand.
PRIOR_EFFICIENCY: dict[str, float] = {"conv": 0.5, "depthwise": 0.1, "gemm": 0.4, "recurrent": 0.2, "memory": 0.5}
PRIOR_OVERHEAD_US = 2.0
PRIOR_HALF_DIM = 8.0


@dataclass(frozen=True)
class LayerEstimate:
    """One layer's predicted time and what bounds it."""

    name: str
    op: str
    macs: int
    bytes: int
    ms: float
    bound: str  # "compute" | "memory" | "overhead" | "fused"


@dataclass
class Calibration:
    """Efficiencies fitted on host measurements (saved/loaded as JSON)."""

    host: str
    host_peak_gflops: float  # theoretical peak of the cores the measurements used
    host_bandwidth_gbs: float
    efficiency: dict[str, float] = field(default_factory=lambda: dict(PRIOR_EFFICIENCY))
    overhead_us: float = PRIOR_OVERHEAD_US
    fitted_on: list[str] = field(default_factory=list)
    fit_errors: list[float] = field(default_factory=list)  # in-sample relative errors, for the record
    source: str = ""
    half_dim: float = PRIOR_HALF_DIM
    threads: int = 0  # cores the host measurements used (0: all of the host's)
    layer_points: int = 0  # per-layer measurements the fit used, besides the model totals

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise InputFileError(f"calibration file {path}: {exc}") from exc


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    cls: OpClass
    macs: int
    elems: int  # activation + weight elements moved (precision-independent)
    weight_elems: int  # of which initializers (weights), re-read every inference
    dims: tuple[int, int, int]  # GEMM view (M, N, K) of a conv/GEMM, (1, N, 1) for depthwise
    fused_into: str | None  # the conv/GEMM an optimizing runtime fuses this elementwise node into


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


@functools.lru_cache(maxsize=64)
def _layers_cached(serialized: bytes) -> tuple[Layer, ...]:
    proto = onnx.ModelProto()
    proto.ParseFromString(serialized)
    return tuple(_extract(proto))


def _gemm_dims(node: onnx.NodeProto, cls: OpClass, shapes: dict[str, tuple[int, ...]],
               out_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(M, N, K) of the matrix product a conv/GEMM node runs as: M output channels per group,
    N output positions, K reduction length; depthwise convs are per-channel stencils over N."""
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    out = [d or 1 for d in out_shape]
    if cls in ("conv", "depthwise") and w and len(w) >= 3 and len(out) >= 3:
        groups = _attr_int(node, "group", 1)
        n = math.prod(out[2:])
        if cls == "depthwise" and groups == out[1]:
            return 1, n, math.prod(w[1:])
        return max(1, w[0] // groups), n, math.prod(w[1:])
    if cls == "gemm" and w and out:
        trans_b = _attr_int(node, "transB", 0) if node.op_type == "Gemm" else 0
        k = w[-1] if trans_b else (w[-2] if len(w) >= 2 else w[0])
        return max(1, math.prod(out[:-1])), out[-1], k
    return 1, 1, 1


def _extract(proto: onnx.ModelProto) -> list[Layer]:
    """Per-node MACs (from `deploypipe.analysis.stats`), elements moved (inputs + weights + outputs), the
    GEMM shape of compute nodes, and which elementwise nodes a runtime fuses into their producer."""
    from deploypipe.analysis.stats import analyze

    stats = analyze(proto)
    graph = proto.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in graph.input:
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for layer in stats.layers:
        if layer.output_shape is not None:
            shapes[layer.output_name] = tuple(d or 1 for d in layer.output_shape)
    inits = {i.name for i in graph.initializer}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for t in n.input:
            consumers[t] = consumers.get(t, 0) + 1
    nodes = {n.name or f"{n.op_type}_{i}": n for i, n in enumerate(graph.node)}
    producer: dict[str, str] = {}  # tensor -> the compute node it (transitively, through fusions) comes from
    out = []
    for layer in stats.layers:
        node = nodes.get(layer.name)
        if node is None:
            continue
        cls = _op_class(node)
        moved = sum(math.prod(shapes.get(t, ())) for t in node.input if t) + math.prod(shapes.get(layer.output_name, ()))
        weights = sum(math.prod(shapes.get(t, ())) for t in node.input if t in inits)
        fused = None
        if cls in ("conv", "depthwise", "gemm"):
            producer[layer.output_name] = layer.name
        elif node.op_type in _FUSIBLE_OPS and node.input and node.input[0] in producer \
                and consumers.get(node.input[0], 0) == 1:
            fused = producer[node.input[0]]
            producer[layer.output_name] = fused
        dims = _gemm_dims(node, cls, shapes, shapes.get(layer.output_name, ())) if cls in COMPUTE_CLASSES else (1, 1, 1)
        out.append(Layer(layer.name, layer.op_type, cls, int(layer.macs or 0), int(moved), int(weights), dims, fused))
    return out


def layers_of(proto: onnx.ModelProto) -> tuple[Layer, ...]:
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


def cores_of(target: TargetSpec) -> int:
    cores = target.figure("cores")
    return int(cores.value) if cores and cores.value else 1


@dataclass(frozen=True)
class Machine:
    """What the roofline needs of one machine: peak of the cores used, memory levels, overhead."""

    peak_gflops: float
    levels: tuple[tuple[float, float], ...]  # (capacity bytes, GB/s), smallest first; last = DRAM (inf)
    overhead_us: float


def levels_of(target: TargetSpec) -> tuple[tuple[float, float], ...]:
    """Cache levels from `cache_l2_kb`/`cache_l2_gbs` (and l3) figures where the target has them."""
    out = []
    for lvl in ("l2", "l3"):
        size, bw = target.figure(f"cache_{lvl}_kb"), target.figure(f"cache_{lvl}_gbs")
        if size and bw:
            out.append((size.value * 1024.0, bw.value))
    return (*out, (math.inf, _bandwidth(target)))


def level_gbs(m: Machine, nbytes: float) -> float:
    return next(gbs for cap, gbs in m.levels if nbytes <= cap)


def weights_gbs(m: Machine, layers: tuple[Layer, ...], elem_bytes: float) -> float:
    return level_gbs(m, sum(layer.weight_elems for layer in layers) * elem_bytes)


def layer_time(layer: Layer, m: Machine, eff: dict[str, float], half: float, elem_bytes: float,
                weight_gbs: float) -> tuple[float, str]:
    """Seconds of one node: max(compute, memory) + dispatch; fused and view nodes cost nothing.
    Activations move at the bandwidth of the cache level the layer's traffic fits in; weights at
    `weight_gbs`, that of the level the whole model's weights fit in (between two inferences the
    other layers' weights evict them unless all fit)."""
    if layer.cls == "free" or layer.fused_into is not None:
        return 0.0, "fused" if layer.fused_into else "overhead"
    compute = 0.0
    if layer.cls in COMPUTE_CLASSES:
        mm, nn, kk = layer.dims
        shape_eff = (1.0 / (1.0 + half / mm + half / nn + half / kk) if layer.cls in ("conv", "gemm")
                     else 1.0 / (1.0 + half / nn) if layer.cls == "depthwise" else 1.0)
        compute = 2.0 * layer.macs / (m.peak_gflops * 1e9 * eff[layer.cls] * shape_eff)
    act = (layer.elems - layer.weight_elems) * elem_bytes
    memory = (act / level_gbs(m, layer.elems * elem_bytes) + layer.weight_elems * elem_bytes / weight_gbs) / (1e9 * eff["memory"])
    overhead = m.overhead_us * 1e-6
    bound = max((compute, "compute"), (memory, "memory"), (overhead, "overhead"))[1]
    return max(compute, memory) + overhead, bound


class CostModel:
    """Roofline per layer: max(compute, memory) time at calibrated efficiency, plus dispatch overhead.

    `threads` limits the cores the estimate assumes (default: all the target's cores, each at the
    efficiency fitted on the host's cores)."""

    def __init__(self, target: TargetSpec, precision: str = "fp32", calibration: Calibration | None = None,
                 threads: int | None = None) -> None:
        self.target = target
        self.precision = precision
        self.calibration = calibration
        peak, self._peak_key = _peak(target, precision)
        cores = cores_of(target)
        used = min(threads, cores) if threads else cores
        self.peak_gflops = peak * used / cores
        self.bandwidth_gbs = _bandwidth(target)
        self.efficiency = dict(calibration.efficiency if calibration else PRIOR_EFFICIENCY)
        self.half_dim = calibration.half_dim if calibration else PRIOR_HALF_DIM
        overhead = calibration.overhead_us if calibration else PRIOR_OVERHEAD_US
        if calibration:
            # Dispatch overhead is per-core work: scale it by the host's vs the target's per-core speed.
            host_core = calibration.host_peak_gflops / max(1, calibration.threads or host_cores())
            overhead *= host_core / (peak / cores)
        self.overhead_us = overhead
        self.elem_bytes = _ELEM_BYTES.get(precision, 4.0)
        self._machine = Machine(self.peak_gflops, levels_of(target), overhead)
        cal = f"calibrated on {calibration.host} ({len(calibration.fitted_on)} models)" if calibration else "uncalibrated (prior efficiencies)"
        fallback = "" if self._peak_key == f"peak_gflops_{precision}" else f", {precision} at the fp32 peak (no {precision} figure)"
        cache = "" if len(self._machine.levels) > 1 else "; no cache figures: all traffic at DRAM bandwidth"
        threads_note = f", {used} of {cores} cores" if used != cores else ""
        self.label = f"estimated by roofline({target.name} figures{fallback}{threads_note}), {cal}{cache}"

    def _times(self, proto: onnx.ModelProto) -> list[tuple[Layer, float, str]]:
        layers = layers_of(proto)
        wgbs = weights_gbs(self._machine, layers, self.elem_bytes)
        out = []
        for layer in layers:
            s, bound = layer_time(layer, self._machine, self.efficiency, self.half_dim, self.elem_bytes, wgbs)
            out.append((layer, s * 1000.0, bound))
        return out

    def layers(self, proto: onnx.ModelProto) -> list[LayerEstimate]:
        """Per-layer roofline estimates in topological order (fused elementwise nodes: 0 ms)."""
        return [LayerEstimate(layer.name, layer.op, layer.macs, int(layer.elems * self.elem_bytes), ms, bound)
                for layer, ms, bound in self._times(proto)]

    def model_ms(self, proto: onnx.ModelProto) -> float:
        return sum(ms for _, ms, _ in self._times(proto))
