"""Fitting the cost model's efficiencies to latencies measured on this host (least squares on log
ratios of model totals and, where given, per-layer times), and leave-one-out validation."""

from __future__ import annotations

import math
import platform

import numpy as np
import onnx

from deploypipe.costmodel.host import with_host_figures
from deploypipe.costmodel.model import (
    COMPUTE_CLASSES,
    PRIOR_EFFICIENCY,
    PRIOR_HALF_DIM,
    PRIOR_OVERHEAD_US,
    Calibration,
    CostModel,
    Layer,
    Machine,
    cores_of,
    layer_time,
    layers_of,
    levels_of,
    weights_gbs,
)
from deploypipe.errors import InputFileError
from deploypipe.targets import TargetSpec

_PRIOR_WEIGHT = 0.3
_LAYER_WEIGHT = 1.0  # total weight of one model's per-layer residuals, vs 1 for its model-level one


_PARAMS = (*COMPUTE_CLASSES, "memory")
Measurement = tuple[onnx.ModelProto, float]


def _layer_targets(layers: tuple[Layer, ...], measured: dict[str, float]) -> list[tuple[int, float]]:
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
    cores = cores_of(spec)
    used = min(threads, cores) if threads else cores
    peak = spec.figures["peak_gflops_fp32"].value * used / cores
    levels = levels_of(spec)
    layer_sets = [layers_of(p) for p, _ in measurements]
    measured = np.array([ms for _, ms in measurements], dtype=np.float64)
    per_layer = [_layer_targets(ls, lt) if lt else [] for ls, lt in
                 zip(layer_sets, layer_times or [None] * len(measurements), strict=True)]
    prior = np.log([*(PRIOR_EFFICIENCY[k] for k in _PARAMS), PRIOR_OVERHEAD_US, PRIOR_HALF_DIM])

    def unpack(x: np.ndarray) -> tuple[dict[str, float], float, float]:
        eff = {k: float(math.exp(v)) for k, v in zip(_PARAMS, x[:len(_PARAMS)], strict=True)}
        return eff, float(math.exp(x[-2])), float(math.exp(x[-1]))

    def times(x: np.ndarray) -> list[np.ndarray]:
        eff, ovh, half = unpack(x)
        m = Machine(peak, levels, ovh)
        return [np.array([layer_time(layer, m, eff, half, 4.0, weights_gbs(m, ls, 4.0))[0] * 1000.0 for layer in ls])
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
