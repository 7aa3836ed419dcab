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
# Elementwise ops that optimizing runtimes (ORT, TFLite, TensorRT, TVM) fuse into the conv/GEMM that
# produces their input: they cost no separate pass over memory and no dispatch.
_FUSIBLE_OPS = {"BatchNormalization", "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "Tanh",
                "HardSwish", "Add", "Mul"}
# Bytes per element moved at each precision (weights and activations alike).
_ELEM_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0}
# FP32 FLOP per cycle per core by vector ISA (two FMA pipes on x86; the target files' convention of
# one 128-bit FMA per cycle on Arm NEON), for the host's theoretical peak.
_FLOP_PER_CYCLE = (("avx512f", 64), ("avx2", 32), ("avx", 16), ("sse2", 8), ("asimd", 8), ("neon", 8))

# Parameters of the fit and their starting points / regularization priors: fractions of the
# theoretical peak reached by optimized kernels, of the memory bandwidth of the level the working set
# fits in, per-node dispatch overhead (us), and the GEMM dimension at which a kernel runs at half its
# best efficiency (small channel counts, small spatial sizes). The fit moves them only as far as the
# measurements demand.
PRIOR_EFFICIENCY: dict[str, float] = {"conv": 0.5, "depthwise": 0.1, "gemm": 0.4, "recurrent": 0.2, "memory": 0.5}
PRIOR_OVERHEAD_US = 2.0
PRIOR_HALF_DIM = 8.0
_PRIOR_WEIGHT = 0.3
_LAYER_WEIGHT = 1.0  # total weight of one model's per-layer residuals, vs 1 for its model-level one


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
class _Layer:
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
def _layers_cached(serialized: bytes) -> tuple[_Layer, ...]:
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


def _extract(proto: onnx.ModelProto) -> list[_Layer]:
    """Per-node MACs (from `deploypipe.analysis`), elements moved (inputs + weights + outputs), the
    GEMM shape of compute nodes, and which elementwise nodes a runtime fuses into their producer."""
    from deploypipe.analysis import analyze

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
        out.append(_Layer(layer.name, layer.op_type, cls, int(layer.macs or 0), int(moved), int(weights), dims, fused))
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


def _cores(target: TargetSpec) -> int:
    cores = target.figure("cores")
    return int(cores.value) if cores and cores.value else 1


@dataclass(frozen=True)
class _Machine:
    """What the roofline needs of one machine: peak of the cores used, memory levels, overhead."""

    peak_gflops: float
    levels: tuple[tuple[float, float], ...]  # (capacity bytes, GB/s), smallest first; last = DRAM (inf)
    overhead_us: float


def _levels(target: TargetSpec) -> tuple[tuple[float, float], ...]:
    """Cache levels from `cache_l2_kb`/`cache_l2_gbs` (and l3) figures where the target has them."""
    out = []
    for lvl in ("l2", "l3"):
        size, bw = target.figure(f"cache_{lvl}_kb"), target.figure(f"cache_{lvl}_gbs")
        if size and bw:
            out.append((size.value * 1024.0, bw.value))
    return (*out, (math.inf, _bandwidth(target)))


def _level_gbs(m: _Machine, nbytes: float) -> float:
    return next(gbs for cap, gbs in m.levels if nbytes <= cap)


def _weights_gbs(m: _Machine, layers: tuple[_Layer, ...], elem_bytes: float) -> float:
    return _level_gbs(m, sum(layer.weight_elems for layer in layers) * elem_bytes)


def _layer_time(layer: _Layer, m: _Machine, eff: dict[str, float], half: float, elem_bytes: float,
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
    memory = (act / _level_gbs(m, layer.elems * elem_bytes) + layer.weight_elems * elem_bytes / weight_gbs) / (1e9 * eff["memory"])
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
        cores = _cores(target)
        used = min(threads, cores) if threads else cores
        self.peak_gflops = peak * used / cores
        self.bandwidth_gbs = _bandwidth(target)
        self.efficiency = dict(calibration.efficiency if calibration else PRIOR_EFFICIENCY)
        self.half_dim = calibration.half_dim if calibration else PRIOR_HALF_DIM
        overhead = calibration.overhead_us if calibration else PRIOR_OVERHEAD_US
        if calibration:
            # Dispatch overhead is per-core work: scale it by the host's vs the target's per-core speed.
            host_core = calibration.host_peak_gflops / max(1, calibration.threads or _host_cores())
            overhead *= host_core / (peak / cores)
        self.overhead_us = overhead
        self.elem_bytes = _ELEM_BYTES.get(precision, 4.0)
        self._machine = _Machine(self.peak_gflops, _levels(target), overhead)
        cal = f"calibrated on {calibration.host} ({len(calibration.fitted_on)} models)" if calibration else "uncalibrated (prior efficiencies)"
        fallback = "" if self._peak_key == f"peak_gflops_{precision}" else f", {precision} at the fp32 peak (no {precision} figure)"
        cache = "" if len(self._machine.levels) > 1 else "; no cache figures: all traffic at DRAM bandwidth"
        threads_note = f", {used} of {cores} cores" if used != cores else ""
        self.label = f"estimated by roofline({target.name} figures{fallback}{threads_note}), {cal}{cache}"

    def _times(self, proto: onnx.ModelProto) -> list[tuple[_Layer, float, str]]:
        layers = _layers(proto)
        wgbs = _weights_gbs(self._machine, layers, self.elem_bytes)
        out = []
        for layer in layers:
            s, bound = _layer_time(layer, self._machine, self.efficiency, self.half_dim, self.elem_bytes, wgbs)
            out.append((layer, s * 1000.0, bound))
        return out

    def layers(self, proto: onnx.ModelProto) -> list[LayerEstimate]:
        """Per-layer roofline estimates in topological order (fused elementwise nodes: 0 ms)."""
        return [LayerEstimate(layer.name, layer.op, layer.macs, int(layer.elems * self.elem_bytes), ms, bound)
                for layer, ms, bound in self._times(proto)]

    def model_ms(self, proto: onnx.ModelProto) -> float:
        return sum(ms for _, ms, _ in self._times(proto))


# ---- the host's figures -------------------------------------------------------------------------

def _host_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cpuinfo() -> tuple[float | None, int | None, str]:
    """(clock MHz, FP32 FLOP/cycle/core of the widest vector ISA, ISA name) from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, None, ""
    mhz, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "cpu MHz" and mhz is None:
            mhz = float(value)
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    for isa, flop in _FLOP_PER_CYCLE:
        if isa in flags:
            return mhz, flop, isa
    return mhz, None, ""


def _cache_sizes() -> dict[int, int]:
    """Data/unified cache size in bytes per level, from /sys/devices/system/cpu/cpu0/cache."""
    out: dict[int, int] = {}
    for d in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (d / "type").read_text().strip() == "Instruction":
                continue
            size = (d / "size").read_text().strip()
            out[int((d / "level").read_text())] = int(size.rstrip("KMG")) * {"K": 1024, "M": 1 << 20}.get(size[-1], 1)
        except (OSError, ValueError):
            continue
    return out


def _copy_gbs(nbytes: int, seconds: float) -> float:
    """Best read+write rate of copying an `nbytes`/2 array into another (the pair takes `nbytes`)."""
    src = np.ones(max(1024, nbytes // 8), dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    reps = max(1, (1 << 22) // src.nbytes)  # amortize the call overhead on cache-sized arrays
    best = math.inf
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(reps):
            np.copyto(dst, src)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * src.nbytes / best / 1e9


def _gemm_gflops_one_core(seconds: float) -> tuple[float, str]:
    """Best single-thread SGEMM rate (256x256x256, many short runs so some miss the noise of a
    shared machine), through ONNX Runtime's kernels where installed, else numpy's BLAS."""
    n = 256
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
                                  [numpy_helper.from_array(b, "b")])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                    so, providers=["CPUExecutionProvider"])
        run, how = (lambda: sess.run(None, {"a": a})), f"ONNX Runtime {ort.__version__} MatMul"
    except ImportError:
        run, how = (lambda: a @ b), "numpy matmul (BLAS threads as configured)"
    run()
    best = math.inf
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9, f"{how} {n}x{n}x{n}, 1 thread, best run"


@functools.cache
def host_figures(seconds: float = 0.3) -> dict[str, Figure]:
    """The host's FP32 peak, cache sizes (sysfs) and memory bandwidth per level (copies sized for each
    level, best of several); cached per process.

    The peak is the theoretical one (cores x clock x FLOP/cycle of the vector ISA), as the devices'
    datasheet figures are, so fitted efficiencies are comparable fractions; but a VM's /proc/cpuinfo
    shows the base (TSC) clock, and a core that boosts runs a GEMM faster than that "peak". Then the
    measured single-core GEMM rate x cores is the peak (an achieved, hence slightly low, one)."""
    where = f"measured on {platform.node()} by deploypipe.costmodel.host_figures"
    cores = _host_cores()
    mhz, flop, isa = _cpuinfo()
    gemm, how = _gemm_gflops_one_core(seconds)
    theoretical = cores * mhz * flop / 1000.0 if mhz and flop else 0.0
    if theoretical >= gemm * cores:
        peak, src = theoretical, (f"theoretical for {platform.node()}: {cores} cores x {mhz:.0f} MHz (/proc/cpuinfo) x "
                                  f"{flop} FP32 FLOP/cycle ({isa}, 2 FMA pipes assumed)")
    else:
        peak = gemm * cores
        src = f"{where}: {cores} cores x {gemm:.0f} GFLOP/s ({how})"
        if theoretical:
            src += (f", above the theoretical {theoretical:.0f} at the {mhz:.0f} MHz of /proc/cpuinfo x {flop} FLOP/cycle "
                    f"({isa}): the cores boost to >= {gemm / flop:.2f} GHz")
    return {
        "cores": Figure(value=cores, unit="cores", source=f"{where} (sched_getaffinity)"),
        "peak_gflops_fp32": Figure(value=peak, unit="GFLOP/s", source=src),
        "mem_bandwidth_gbs": Figure(value=_copy_gbs(128 << 20, seconds), unit="GB/s",
                                    source=f"{where} (64 MB copy, read+write)"),
        **{k: v for level, size in _cache_sizes().items() if level in (2, 3) for k, v in (
            (f"cache_l{level}_kb", Figure(value=size / 1024, unit="KiB", source=f"{where} (/sys/devices/system/cpu/cpu0/cache)")),
            (f"cache_l{level}_gbs", Figure(value=_copy_gbs(size // 2, seconds), unit="GB/s",
                                           source=f"{where} ({size // 4096} KiB copied, read+write)")))},
    }


def with_host_figures(host: TargetSpec) -> TargetSpec:
    """The host spec with measured/derived peak, bandwidths and caches where its file gives none."""
    figs = dict(host.figures)
    if "peak_gflops_fp32" not in figs or "mem_bandwidth_gbs" not in figs:
        for k, v in host_figures().items():
            figs.setdefault(k, v)
    return host.model_copy(update={"figures": figs})


# ---- calibration ---------------------------------------------------------------------------------

_PARAMS = (*COMPUTE_CLASSES, "memory")
Measurement = tuple[onnx.ModelProto, float]


def _layer_targets(layers: tuple[_Layer, ...], measured: dict[str, float]) -> list[tuple[int, float]]:
    """(index of a costed node, its measured ms including the nodes fused into it)."""
    index = {layer.name: i for i, layer in enumerate(layers)}
    totals: dict[int, float] = {}
    for layer in layers:
        if layer.name not in measured or layer.cls == "free":
            continue
        owner = index[layer.fused_into] if layer.fused_into else index[layer.name]
        totals[owner] = totals.get(owner, 0.0) + measured[layer.name]
    return [(i, ms) for i, ms in totals.items() if ms > 0]


def calibrate(measurements: list[Measurement], host: TargetSpec, names: list[str] | None = None, *,
              layer_times: list[dict[str, float] | None] | None = None, threads: int | None = None) -> Calibration:
    """Fit efficiency per op class, the half-efficiency GEMM dimension and the per-node overhead to
    host FP32 latencies (ms) measured with `threads` cores (default: all).

    Least squares on log(predicted / measured) of each model total, plus, where `layer_times` gives
    per-node times (ms by node name, e.g. the runner's layer profile), of each costed node with the
    nodes fused into it (together weighing as much as the model's total), with a weak pull towards
    the priors so an op class the measured models barely use keeps a sensible value.
    """
    from scipy.optimize import least_squares

    if not measurements:
        raise InputFileError("calibration needs at least one host measurement")
    spec = with_host_figures(host)
    cores = _cores(spec)
    used = min(threads, cores) if threads else cores
    peak = spec.figures["peak_gflops_fp32"].value * used / cores
    levels = _levels(spec)
    layer_sets = [_layers(p) for p, _ in measurements]
    measured = np.array([ms for _, ms in measurements], dtype=np.float64)
    per_layer = [_layer_targets(ls, lt) if lt else [] for ls, lt in
                 zip(layer_sets, layer_times or [None] * len(measurements), strict=True)]
    prior = np.log([*(PRIOR_EFFICIENCY[k] for k in _PARAMS), PRIOR_OVERHEAD_US, PRIOR_HALF_DIM])

    def unpack(x: np.ndarray) -> tuple[dict[str, float], float, float]:
        eff = {k: float(math.exp(v)) for k, v in zip(_PARAMS, x[:len(_PARAMS)], strict=True)}
        return eff, float(math.exp(x[-2])), float(math.exp(x[-1]))

    def times(x: np.ndarray) -> list[np.ndarray]:
        eff, ovh, half = unpack(x)
        m = _Machine(peak, levels, ovh)
        return [np.array([_layer_time(layer, m, eff, half, 4.0, _weights_gbs(m, ls, 4.0))[0] * 1000.0 for layer in ls])
                for ls in layer_sets]

    def residuals(x: np.ndarray) -> np.ndarray:
        per_model = times(x)
        res = [np.log(np.array([t.sum() for t in per_model]) / measured)]
        for t, targets_ in zip(per_model, per_layer, strict=True):
            if targets_:
                idx = np.array([i for i, _ in targets_])
                ms = np.array([v for _, v in targets_])
                res.append(_LAYER_WEIGHT / math.sqrt(len(targets_)) * np.log(np.maximum(t[idx], 1e-9) / ms))
        res.append(_PRIOR_WEIGHT * (x - prior))
        return np.concatenate(res)

    upper = np.log([1.0] * len(_PARAMS) + [1e4, 1e3])  # fractions of a theoretical peak
    lower = np.log([1e-4] * len(_PARAMS) + [1e-2, 1e-2])
    fit = least_squares(residuals, prior, bounds=(lower, upper), loss="soft_l1", f_scale=0.3)
    eff, ovh, half = unpack(fit.x)
    preds = [float(t.sum()) for t in times(fit.x)]
    return Calibration(
        host=platform.node(), host_peak_gflops=peak, host_bandwidth_gbs=spec.figures["mem_bandwidth_gbs"].value,
        efficiency=eff, overhead_us=ovh, half_dim=half, threads=used,
        layer_points=sum(len(t) for t in per_layer),
        fitted_on=names or [p.graph.name for p, _ in measurements],
        fit_errors=[float(abs(p - m) / m) for p, m in zip(preds, measured, strict=True)],
        source=f"fitted on FP32 latencies measured on {platform.node()} with {used} core(s); host peak: "
               f"{spec.figures['peak_gflops_fp32'].source}",
    )


def leave_one_out(measurements: list[Measurement], host: TargetSpec, *,
                  layer_times: list[dict[str, float] | None] | None = None, threads: int | None = None) -> list[float]:
    """Relative model-level error of each model predicted by a calibration fitted on the others
    (their model totals and, where given, their per-layer times; never the predicted model's)."""
    spec = with_host_figures(host)
    lt = layer_times or [None] * len(measurements)
    errors = []
    for i, (proto, ms) in enumerate(measurements):
        rest = measurements[:i] + measurements[i + 1:]
        cal = calibrate(rest, spec, layer_times=lt[:i] + lt[i + 1:], threads=threads) if rest else None
        errors.append(abs(CostModel(spec, "fp32", cal, threads=threads).model_ms(proto) - ms) / ms)
    return errors
