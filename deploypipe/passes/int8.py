"""INT8 post-training static quantization (ONNX Runtime's quantizer) with an accuracy gate.

Calibration data come from `model.calibration` (real data for models trained here, synthetic
N(0,1) otherwise, and labelled so). The gate runs the FP32 input and the INT8 result on held-out
data (`model.evaluation` when present, else calibration-distribution data with another seed) and
fails the build when the recipe's tolerance is exceeded. With `mixed_precision`, the layers that
add the most error (from a per-layer diff) are kept in FP32 until the gate passes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.artifact import Fidelity
from deploypipe.errors import BuildError, FidelityError, UnsupportedError
from deploypipe.model import Model
from deploypipe.passes import _ort
from deploypipe.passes.base import Pass, PassContext, PassResult
from deploypipe.progress import Progress, Step

_EVAL_SEED = 10_000  # apart from the calibration seeds, so the gate sees data the calibration did not

# ORT quantizes these op types; anything else stays FP32 between Q/DQ pairs.
_QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "MaxPool", "AveragePool",
                "GlobalAveragePool", "Relu", "Clip", "Concat", "Resize", "Sigmoid", "LeakyRelu", "Softmax"}


class Int8Config(BaseModel):
    """Quantizer choices. Defaults are what measured fastest here at equal fidelity
    (QDQ, uint8 activations, int8 per-channel weights; see docs/passes.md)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["qdq", "qoperator"] = "qdq"
    activations: Literal["uint8", "int8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights: only for CPUs without VNNI where u8s8 may saturate
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90, le=100)
    calibration_samples: int = Field(default=32, ge=1)
    eval_samples: int = Field(default=100, ge=1)  # held-out synthetic samples when no real data
    tolerance: dict[str, float] = Field(default_factory=lambda: {"min_cosine": 0.95, "min_top1_agreement": 0.90,
                                                                 "max_accuracy_drop": 0.5})
    mixed_precision: bool = False  # keep the most harmful layers in FP32 until the gate passes
    max_fp32_layers: int = Field(default=8, ge=1)
    gate: bool = True  # False: report the gate's figures but never fail (benchmarks, exploration)


class _Reader:
    """ORT CalibrationDataReader over a DataProvider (duck-typed: ORT only calls get_next)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], progress: Progress) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)
        self._done, self._total, self._progress = 0, len(feeds), progress

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._it, None)
        if feed is not None:  # ORT runs each sample as soon as it has it: the count is the calibration's
            self._progress(Step(f"int8: calibrating, sample {self._done + 1}/{self._total}", self._done, self._total))
            self._done += 1
        return feed


class Int8(Pass):
    name = "int8"
    Config = Int8Config

    def requires(self, model: Model) -> None:
        int_inputs = [i.name for i in model.inputs if not i.dtype.startswith("float")]
        ops = {n.op_type for n in model.proto.graph.node}
        if not ops & _QUANTIZABLE:
            raise UnsupportedError(
                f"int8: model {model.name} has no quantizable op ({', '.join(sorted(_QUANTIZABLE))}); "
                f"its ops are {', '.join(sorted(ops))}"
            )
        if int_inputs and not ops & {"Conv", "Gemm", "MatMul"}:
            raise UnsupportedError(f"int8: integer inputs {int_inputs} and no Conv/Gemm/MatMul to quantize")

    def call(self, model: Model, ctx: PassContext) -> PassResult:
        cfg: Int8Config = self.config  # type: ignore[assignment]
        ctx.progress(f"int8: calibrating on {cfg.calibration_samples} samples ({model.calibration.description})")
        calib = list(model.calibration.samples(cfg.calibration_samples, seed=0))
        feeds, labels, data = _gate_data(model, cfg)
        fp32 = _prepare(model.proto)
        refs = _ort.run(fp32, feeds)
        excluded: list[str] = []  # layers (as the diff names them) kept in FP32
        exclude_nodes: list[str] = []  # those layers with the nodes fused into them
        ranking: list[dict[str, object]] = []
        while True:
            proto = _quantize(fp32, calib, cfg, exclude_nodes, ctx.progress)
            fid = _gate(refs, _ort.run(proto, feeds), cfg, labels)
            if fid.passed or not cfg.mixed_precision or len(excluded) >= cfg.max_fp32_layers:
                break
            if not ranking:
                ctx.progress("int8: gate failed; ranking layers by the error they add")
                ranking = _rank_layers(fp32, proto, feeds[: min(len(feeds), 16)])
            candidates = [r for r in ranking if r["node"] not in excluded]
            if not candidates:
                break
            step = max(1, len(excluded))  # 1, 1, 2, 4, ... layers: few re-quantizations
            for r in candidates[: min(step, cfg.max_fp32_layers - len(excluded))]:
                excluded.append(str(r["node"]))
                exclude_nodes += [n for n in r["nodes"] if n not in exclude_nodes]  # type: ignore[union-attr]
            ctx.progress(f"int8: keeping {len(excluded)} layer(s) in FP32: {', '.join(excluded)}")
        details = {
            "calibration": {"method": cfg.calibration, "samples": len(calib), "data": model.calibration.description,
                            "real": model.calibration.real},
            "gate": {"data": data, "samples": len(feeds), "tolerance": cfg.tolerance, "passed": fid.passed,
                     "reasons": fid.reasons, "top1_agreement": fid.top1_agreement, "cosine": fid.cosine,
                     "max_abs_err": fid.max_abs_err, "accuracy_fp32": fid.accuracy_fp32, "accuracy": fid.accuracy,
                     "fp32_logit_gap": _logit_gap(refs)},
            "fp32_layers": excluded,
            "fp32_nodes": exclude_nodes,
            "layer_ranking": ranking[:10],
            "io_quant": io_quant_params(proto),
            "nodes": {"fp32": len(fp32.graph.node), "int8": len(proto.graph.node)},
        }
        if cfg.gate and not fid.passed:
            kept = f" even with {len(excluded)} layer(s) kept in FP32" if excluded else ""
            hint = "" if cfg.mixed_precision else "; try --passes int8-mixed or relax it with --tolerance KEY=VALUE"
            gap = details["gate"]["fp32_logit_gap"]
            if gap is not None and gap < 0.5 and any("top-1" in r for r in fid.reasons):
                hint += (f"; note the FP32 top-1 is nearly tied on this data (median top-1/top-2 gap {gap:.2f} "
                         "logit std, typical of random weights), so small errors flip it")
            raise FidelityError(
                f"int8 accuracy gate failed on {data}{kept}: {'; '.join(fid.reasons)}{hint}"
            )
        return PassResult(model.with_proto(proto), modified=True, details=details)


def _gate_data(model: Model, cfg: Int8Config) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None, str]:
    ev = model.evaluation
    if ev is not None:
        return list(ev.samples(len(ev.x))), ev.labels, f"held-out real data: {ev.description}"
    provider = model.calibration
    if provider.real:
        return list(provider.samples(cfg.eval_samples, seed=_EVAL_SEED)), None, (
            f"calibration data (no held-out set): {provider.description}")
    feeds = list(provider.samples(cfg.eval_samples, seed=_EVAL_SEED))
    return feeds, None, f"{provider.description}, held-out seed {_EVAL_SEED}"


def _logit_gap(refs: list[dict[str, np.ndarray]]) -> float | None:
    """Median gap between the FP32 top-1 and top-2 logits, in logit std: near 0 means near ties."""
    out = np.concatenate([next(iter(r.values())) for r in refs])
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    top = np.sort(out, axis=1)
    return float(np.median((top[:, -1] - top[:, -2]) / (out.std(axis=1) + 1e-12)))


def _gate(refs: list[dict[str, np.ndarray]], outs: list[dict[str, np.ndarray]], cfg: Int8Config,
          labels: np.ndarray | None) -> Fidelity:
    from deploypipe.fidelity import compare

    return compare(refs, outs, "int8", cfg.tolerance, labels)


def _prepare(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Shape-inferred, named-node FP32 graph: what ORT's quantizer expects (its quant_pre_process
    without the ORT-specific graph rewrites, which would tie the ONNX to ORT)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="deploypipe-int8-") as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "pre.onnx")
        onnx.save_model(_ort.name_nodes(proto), str(src))
        try:
            quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - ORT's pre-processing raises untyped errors
            raise BuildError(f"int8: shape inference before quantization failed: {exc}") from exc
        return onnx.load_model(str(dst))


def _quantize(proto: onnx.ModelProto, calib: list[dict[str, np.ndarray]], cfg: Int8Config,
              exclude: list[str], progress: Progress) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibration]
    extra = {"CalibPercentile": cfg.percentile} if cfg.calibration == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="deploypipe-int8-") as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(proto, str(src))
        try:
            quantize_static(
                str(src), str(dst), _Reader(calib, progress),  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ if cfg.format == "qdq" else QuantFormat.QOperator,
                activation_type=types[cfg.activations], weight_type=types[cfg.weights],
                per_channel=cfg.per_channel, reduce_range=cfg.reduce_range, calibrate_method=method,
                nodes_to_exclude=exclude, extra_options=extra,
            )
        except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises untyped errors
            raise BuildError(f"int8: ONNX Runtime's quantizer failed: {exc}") from exc
        return onnx.load_model(str(dst))


def _rank_layers(fp32: onnx.ModelProto, int8: onnx.ModelProto,
                 feeds: list[dict[str, np.ndarray]]) -> list[dict[str, object]]:
    """Quantizable nodes ordered by the relative error their output adds over their inputs'."""
    from deploypipe.layerdiff import compare_layers

    report = compare_layers(fp32, int8, feeds)
    ranked = [layer for layer in report.most_harmful(len(report.layers)) if layer.op in _QUANTIZABLE]
    return [{"node": x.node, "op": x.op, "added_err": round(x.added_err, 5), "rel_err": round(x.rel_err, 5),
             "nodes": x.covers} for x in ranked]


def io_quant_params(proto: onnx.ModelProto) -> dict[str, dict[str, float | int]]:
    """Scale/zero-point where the graph's FP32 inputs are quantized and its outputs dequantized:
    what a device with integer I/O would use (real = (q - zero_point) * scale)."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    ios = {i.name for i in proto.graph.input} | {o.name for o in proto.graph.output}
    found: dict[str, dict[str, float | int]] = {}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in ios:
            tensor = node.input[0]
        elif node.op_type == "DequantizeLinear" and node.output[0] in ios:
            tensor = node.output[0]
        else:
            continue
        scale, zp = inits.get(node.input[1]), inits.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        found.setdefault(tensor, {"scale": float(scale), "zero_point": int(zp) if zp is not None else 0,
                                  "dtype": str(zp.dtype) if zp is not None else "uint8"})
    return found
