"""The build host's own figures for the cost model: peak FLOP/s from /proc/cpuinfo, cache sizes
from /sys, and bandwidth per memory level from short copy and GEMM micro-benchmarks. Each figure
says how it was obtained."""

from __future__ import annotations

import functools
import math
import platform
import time
from pathlib import Path

import numpy as np

from deploypipe.targets import Figure, TargetSpec

_FLOP_PER_CYCLE = (("avx512f", 64), ("avx2", 32), ("avx", 16), ("sse2", 8), ("asimd", 8), ("neon", 8))


def host_cores() -> int:
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
    where = f"measured on {platform.node()} by deploypipe.costmodel.host.host_figures"
    cores = host_cores()
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


