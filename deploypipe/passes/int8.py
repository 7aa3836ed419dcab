"""INT8 post-training static quantization (ONNX Runtime's quantizer) with an accuracy gate.

Calibration data come from `model.calibration` (the user's --data, real data for models trained
here, stand-in photos for zoo image models, synthetic N(0,1) otherwise, and labelled so). The gate
runs the FP32 input and the INT8 result on held-out data (`model.evaluation` when present, else
calibration-distribution data with another seed) and fails the build when the recipe's tolerance
is exceeded, judged at the evidence level of that data (deploypipe.analysis.fidelity: synthetic
inputs refuse only a catastrophe), and by the user's --metric when one is given.

Accuracy-aware: when a build judged on real data misses its budget (or `mixed_precision = true`
asks for it on any data), the search tries the other calibration methods and then keeps layers in
FP32, greedily in the order of the error they add (a per-layer diff), each only where it helps,
until the gate passes, printing each step's figure and latency (`_Search`; every step is in the
pass details).

Three choices are made from the graph and the target, and recorded in the pass details:
- the scheme: transformer graphs (LayerNorm/Softmax/GELU/Erf with MatMul-heavy compute) quantize
  only the MatMul/Gemm weights per channel and keep LayerNorm/Softmax/GELU in float; activations
  are quantized dynamically (at run time) where the compiler runs that (ONNX Runtime), statically
  otherwise. Everything else gets static QDQ on every quantizable op.
- the opset: per-channel Q/DQ needs opset 13; older graphs are converted with onnx's version
  converter, or quantized per tensor where that fails.
- 7-bit weights (`reduce_range`) where the target's INT8 kernels saturate (x86 without VNNI,
  see deploypipe/isa.py); the gate then also runs the QDQ graph unfused when this host saturates
  and the model was not made for it, so its figures are the graph's, not the host's.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.artifact import Fidelity
from deploypipe.analysis.fidelity import UNCERTIFYING, compare, evidence_of, judge_metric
from deploypipe.errors import FidelityError, UnsupportedError
from deploypipe.model import Model
from deploypipe.analysis import reference as _ort
from deploypipe.passes.base import Pass, PassContext, PassResult, refusal
from deploypipe.progress import Note, Progress, Step

_EVAL_SEED = 10_000  # apart from the calibration seeds, so the gate sees data the calibration did not

# ORT quantizes these op types; anything else stays FP32 between Q/DQ pairs.
_QUANTIZABLE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "MaxPool", "AveragePool",
                "GlobalAveragePool", "Relu", "Clip", "Concat", "Resize", "Sigmoid", "LeakyRelu", "Softmax"}
# Ops that mark a transformer block (LayerNorm may be decomposed, Softmax and GELU rarely are).
_TRANSFORMER_OPS = {"LayerNormalization", "Softmax", "Erf", "Gelu", "FastGelu", "SkipLayerNormalization"}
_PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` attribute
_DYNAMIC_COMPILERS = {"onnxruntime"}  # run DynamicQuantizeLinear/MatMulInteger graphs


class Int8Config(BaseModel):
    """Quantizer choices. Defaults are what measured fastest here at equal fidelity
    (QDQ, uint8 activations, int8 per-channel weights; see docs/passes.md)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["qdq", "qoperator"] = "qdq"
    activations: Literal["uint8", "int8"] = "uint8"
    weights: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    # 7-bit weights: "auto" where the target's INT8 kernels saturate u8 x s8 (x86 without VNNI)
    reduce_range: bool | Literal["auto"] = "auto"
    # "auto": "transformer" for transformer graphs (see module doc), else "static"
    scheme: Literal["auto", "static", "transformer"] = "auto"
    # "auto": minmax, and on a real-data miss the best of minmax/entropy/percentile by the judged figure
    calibration: Literal["auto", "minmax", "entropy", "percentile"] = "auto"
    percentile: float = Field(default=99.999, gt=90, le=100)
    calibration_samples: int = Field(default=32, ge=1)
    eval_samples: int = Field(default=100, ge=1)  # held-out synthetic samples when no real data
    tolerance: dict[str, float] = Field(default_factory=lambda: {"min_cosine": 0.95, "min_top1_agreement": 0.90,
                                                                 "max_accuracy_drop": 0.5, "synthetic_min_cosine": 0.90,
                                                                 "min_samples": 200})
    # keep the most harmful layers in FP32 until the gate passes; "auto": when judged on real data
    mixed_precision: bool | Literal["auto"] = "auto"
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
        fp32, opset = _prepare(model.proto, cfg.per_channel)
        plan = _plan(fp32, cfg, ctx, per_channel=cfg.per_channel and opset["per_channel"])
        feeds, labels, data, evidence = _gate_data(model, cfg)
        search = _Search(fp32, model, cfg, plan, feeds, labels, evidence, ctx)
        best = search.run()
        fid = best.fidelity
        details = {
            "scheme": plan.details(), "opset": opset,
            "calibration": {"method": best.method, "samples": len(search.calib), "data": model.calibration.description,
                            "real": model.calibration.real} if not plan.dynamic else {"method": "none: dynamic activations"},
            "gate": {"data": data, "evidence": evidence, "verdict": fid.verdict, "samples": len(feeds),
                     "tolerance": cfg.tolerance, "passed": fid.passed,
                     "reasons": fid.reasons, "top1_agreement": fid.top1_agreement, "cosine": fid.cosine,
                     "max_abs_err": fid.max_abs_err, "accuracy_fp32": fid.accuracy_fp32, "accuracy": fid.accuracy,
                     "metrics": fid.metrics, "metrics_fp32": fid.metrics_fp32,
                     "fp32_logit_gap": _logit_gap(search.refs)},
            "search": {"judged_by": search.judged_by, "fp32_latency_ms": search.fp32_ms,
                       "latency_where": search.latency_where, "steps": [st.record() for st in search.steps]},
            "fp32_layers": best.excluded,
            "fp32_nodes": [n for n in best.exclude_nodes if n not in plan.float_nodes],
            "layer_ranking": search.ranking[:10],
            "io_quant": io_quant_params(best.proto),
            "nodes": {"fp32": len(fp32.graph.node), "int8": len(best.proto.graph.node)},
        }
        if cfg.gate and not fid.passed:
            kept = f" even with {len(best.excluded)} layer(s) kept in FP32" if best.excluded else ""
            hint = "" if search.searching else "; try --passes int8-mixed or relax it with --tolerance KEY=VALUE"
            if evidence in UNCERTIFYING:
                hint += f"; judged on {UNCERTIFYING[evidence]}: give real data with --data PATH to judge on it"
            gap = details["gate"]["fp32_logit_gap"]
            if gap is not None and gap < 0.5 and any("top-1" in r for r in fid.reasons):
                hint += (f"; note the FP32 top-1 is nearly tied on this data (median top-1/top-2 gap {gap:.2f} "
                         "logit std, typical of random weights), so small errors flip it")
            raise FidelityError(
                f"int8 accuracy gate failed on {data}{kept}: {'; '.join(fid.reasons)}{hint}"
            )
        return PassResult(model.with_proto(best.proto), modified=True, details=details)


@dataclass
class _Step:
    """One quantization tried by the accuracy-aware search: how, and what it measured."""

    method: str
    excluded: list[str]  # layers kept in FP32, as the layer diff names them
    exclude_nodes: list[str]  # those layers with the nodes fused into them (and the scheme's float nodes)
    proto: onnx.ModelProto
    fidelity: Fidelity
    score: float  # the figure the search maximises (Search.judged_by)
    latency_ms: float

    def record(self) -> dict[str, Any]:
        return {"calibration": self.method, "fp32_layers": list(self.excluded), "score": round(self.score, 5),
                "latency_ms": round(self.latency_ms, 3), "passed": self.fidelity.passed}


class _Search:
    """Accuracy-aware INT8: quantize, judge on the gate data, and when a build judged on real data
    (or asked to with `mixed_precision = true`) misses its budget, first try the other calibration
    methods (keeping the best by the judged figure), then keep layers in FP32 in the order of the
    error they add, each only if it improves the judged figure, until the gate passes. Every step
    prints its figure and its latency on this host's ONNX Runtime."""

    def __init__(self, fp32: onnx.ModelProto, model: Model, cfg: Int8Config, plan: _Plan,
                 feeds: list[dict[str, np.ndarray]], labels: np.ndarray | None, evidence: str, ctx: PassContext) -> None:
        from deploypipe.isa import host_isa

        self.fp32, self.cfg, self.plan = fp32, cfg, plan
        self.feeds, self.labels, self.evidence, self.ctx = feeds, labels, evidence, ctx
        auto = cfg.mixed_precision == "auto"
        self.searching = cfg.mixed_precision is True or (auto and evidence in ("labelled", "real-unlabelled"))
        self.calib: list[dict[str, np.ndarray]] = []
        if not plan.dynamic:
            ctx.progress(f"int8: calibrating on {cfg.calibration_samples} samples ({model.calibration.description})")
            self.calib = list(model.calibration.samples(cfg.calibration_samples, seed=0))
        self.refs = _ort.run(fp32, feeds)
        self.judged_by = (f"metric {ctx.metric[0]}" if ctx.metric else "accuracy" if labels is not None
                          else "weakest output cosine")
        self.latency_where = f"ONNX Runtime on this host ({host_isa()}), batch 1, median"
        self.fp32_ms = _latency_ms(fp32, feeds[0])
        self.steps: list[_Step] = []
        self.ranking: list[dict[str, object]] = []

    def run(self) -> _Step:
        first = self.cfg.calibration if self.cfg.calibration != "auto" else "minmax"
        best = self._try(first, [], list(self.plan.float_nodes))
        if best.fidelity.passed or not self.searching:
            return best
        if self.cfg.calibration == "auto" and not self.plan.dynamic:
            for method in ("entropy", "percentile"):
                step = self._try(method, [], list(self.plan.float_nodes))
                if _rank(step) > _rank(best):
                    best = step
            if best.fidelity.passed:
                return best
        return self._keep_fp32(best)

    def _keep_fp32(self, base: _Step) -> _Step:
        """Greedy: the ranked layers one at a time, each kept in FP32 only when it improves the
        judged figure (the ranking measures added error, the gate may judge a task metric that
        does not follow it), until the gate passes; at most `max_fp32_layers` kept, twice as many
        tried. A layer that did not help is tried again after another one was kept: a conv whose
        activation is still quantized gains nothing alone, and does once its neighbours are in
        FP32 (the tiny classifier on an AVX2 host needed that to pass at all)."""
        self.ctx.progress(f"int8: gate missed with {base.method} calibration; ranking layers by the error they add")
        self.ranking = _rank_layers(self.fp32, base.proto, self.feeds[: min(len(self.feeds), 16)])
        best, kept, rejected = base, [], []
        queue = list(self.ranking)
        for _ in range(2 * self.cfg.max_fp32_layers):
            if not queue or len(kept) >= self.cfg.max_fp32_layers:
                break
            layer = queue.pop(0)
            step = self._with_layers(base.method, [*kept, layer])
            if _rank(step) > _rank(best):
                best, kept = step, [*kept, layer]
                queue, rejected = queue + rejected, []
            else:
                rejected.append(layer)
            if best.fidelity.passed:
                break
        return best

    def _with_layers(self, method: str, layers: list[dict[str, object]]) -> _Step:
        nodes = list(self.plan.float_nodes)
        for r in layers:
            nodes += [n for n in r["nodes"] if n not in nodes]  # type: ignore[union-attr]
        return self._try(method, [str(r["node"]) for r in layers], nodes)

    def _try(self, method: str, excluded: list[str], exclude_nodes: list[str]) -> _Step:
        proto = _quantize(self.fp32, self.calib, self.cfg, method, exclude_nodes, self.plan, self.ctx.progress)
        outs = _ort.run(proto, self.feeds, optimize=not self.plan.unfused_gate)
        fid = compare(self.refs, outs, "int8", self.cfg.tolerance, self.labels, evidence=self.evidence)
        if self.ctx.metric is not None:
            judge_metric(fid, *self.ctx.metric, self.refs, outs, self.labels, self.cfg.tolerance)
        step = _Step(method, excluded, exclude_nodes, proto, fid, self._score(fid), _latency_ms(proto, self.feeds[0]))
        self.steps.append(step)
        self.ctx.progress(Note(self._describe(len(self.steps), step)))
        return step

    def _score(self, fid: Fidelity) -> float:
        if self.ctx.metric is not None:
            return float(next(iter(fid.metrics.values())))
        if fid.accuracy is not None:
            return float(fid.accuracy)
        return float(fid.cosine) if fid.cosine is not None and np.isfinite(fid.cosine) else -1.0

    def _describe(self, n: int, step: _Step) -> str:
        layers = f"{len(step.excluded)} layer(s) in FP32" if step.excluded else "all layers INT8"
        fid, fig = step.fidelity, f"{self.judged_by} {step.score:.4g}"
        if fid.accuracy_fp32 is not None and self.ctx.metric is None:
            fig += f" (FP32 {fid.accuracy_fp32:.4g})"
        elif self.ctx.metric is not None and fid.metrics_fp32:
            fig += f" (FP32 {next(iter(fid.metrics_fp32.values())):.4g})"
        verdict = "passes" if fid.passed else "misses: " + "; ".join(fid.reasons)[:160]
        where = "" if self.plan.dynamic else f"{step.method} calibration, "
        return (f"int8: step {n}: {where}{layers}: {fig}, {step.latency_ms:.2f} ms "
                f"({self.fp32_ms / step.latency_ms:.2f}x FP32's speed): {verdict}")


def _rank(step: _Step) -> tuple[bool, float, float]:
    """Better first: passes, then the judged figure, then (breaking ties) the weakest cosine."""
    cos = step.fidelity.cosine
    return bool(step.fidelity.passed), step.score, float(cos) if cos is not None and np.isfinite(cos) else -1.0


def _latency_ms(proto: onnx.ModelProto, feed: dict[str, np.ndarray], budget_s: float = 0.3) -> float:
    """Median single-sample latency on this host's ONNX Runtime (fused kernels): what each step
    of the search costs in speed, measured the same way for FP32 and every INT8 candidate."""
    sess = _ort.session(proto)
    for _ in range(2):
        sess.run(None, feed)
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < 5 or (time.perf_counter() < end and len(times) < 50):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def _gate_data(model: Model, cfg: Int8Config) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None, str, str]:
    """(feeds, labels, what they are, evidence level for the gate)."""
    ev = model.evaluation
    if ev is not None:
        return (list(ev.samples(len(ev.x))), ev.labels, f"held-out real data: {ev.description}",
                evidence_of(ev.labels, ev.evidence))
    provider = model.calibration
    if provider.real:
        what = "held-out split" if provider.held_out else "calibration data (no held-out set)"
        return list(provider.samples(cfg.eval_samples, seed=_EVAL_SEED)), None, (
            f"{what}: {provider.description}"), "real-unlabelled"
    feeds = list(provider.samples(cfg.eval_samples, seed=_EVAL_SEED))
    return feeds, None, f"{provider.description}, held-out seed {_EVAL_SEED}", provider.evidence


def _logit_gap(refs: list[dict[str, np.ndarray]]) -> float | None:
    """Median gap between the FP32 top-1 and top-2 logits, in logit std: near 0 means near ties."""
    out = np.concatenate([next(iter(r.values())) for r in refs])
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    top = np.sort(out, axis=1)
    return float(np.median((top[:, -1] - top[:, -2]) / (out.std(axis=1) + 1e-12)))


def _prepare(proto: onnx.ModelProto, per_channel: bool) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Shape-inferred, named-node FP32 graph: what ORT's quantizer expects (its quant_pre_process
    without the ORT-specific graph rewrites, which would tie the ONNX to ORT), at an opset that
    has per-channel Q/DQ when asked for; says what it did with the opset."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), _PER_CHANNEL_OPSET)
    opset: dict[str, Any] = {"model": version, "quantized_at": version, "per_channel": True}
    if version < _PER_CHANNEL_OPSET and per_channel:
        try:
            proto = onnx.version_converter.convert_version(proto, _PER_CHANNEL_OPSET)
            onnx.checker.check_model(proto)
            opset.update(quantized_at=_PER_CHANNEL_OPSET, how="converted with onnx.version_converter "
                         "(per-channel Q/DQ needs opset 13)")
        except Exception as exc:  # noqa: BLE001 - the converter raises untyped errors; per-tensor still works
            opset.update(per_channel=False, how=f"per-tensor weights: the opset {version} graph could not be "
                         f"converted to {_PER_CHANNEL_OPSET} ({' '.join(str(exc).split())[:200]})")
    with tempfile.TemporaryDirectory(prefix="deploypipe-int8-") as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "pre.onnx")
        onnx.save_model(_ort.name_nodes(proto), str(src))
        try:
            quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True)
        except Exception as exc:
            raise refusal("int8: shape inference before quantization failed", proto, exc) from exc
        return onnx.load_model(str(dst)), opset


def transformer_signs(proto: onnx.ModelProto) -> list[str]:
    """Why a graph is a transformer (empty if not): transformer ops present and MatMul/Gemm
    outnumbering Conv, at least two of them (simplifiers turn 3-D Linear layers into Gemm)."""
    ops = [n.op_type for n in proto.graph.node]
    marks = sorted(_TRANSFORMER_OPS & set(ops))
    matmuls = ops.count("MatMul") + ops.count("Gemm")
    if not marks or matmuls < 2 or matmuls <= ops.count("Conv"):
        return []
    return [*marks, f"{matmuls} MatMul/Gemm vs {ops.count('Conv')} Conv"]


@dataclass(frozen=True)
class _Plan:
    """How to quantize this graph for this target, and why."""

    scheme: str
    why: str
    dynamic: bool
    per_channel: bool
    reduce_range: bool
    isa: str
    host_isa: str
    op_types: tuple[str, ...] | None  # None: every op type ORT quantizes
    float_nodes: tuple[str, ...]  # kept in float by the scheme (activation x activation MatMuls)

    @property
    def unfused_gate(self) -> bool:
        from deploypipe.isa import saturates_u8s8

        return saturates_u8s8(self.host_isa) and not self.reduce_range

    def details(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "float_nodes"}
        d["float_matmuls"] = len(self.float_nodes)
        d["gate_kernels"] = ("unfused QDQ (this host's fused u8s8 kernels saturate)" if self.unfused_gate
                             else f"ONNX Runtime on this host ({self.host_isa})")
        return d


def _plan(proto: onnx.ModelProto, cfg: Int8Config, ctx: PassContext, per_channel: bool) -> _Plan:
    from deploypipe import targets
    from deploypipe.isa import host_isa, saturates_u8s8
    from deploypipe.targets import target_isa

    isa = target_isa(ctx.target)
    reduce = saturates_u8s8(isa) if cfg.reduce_range == "auto" else cfg.reduce_range
    signs = transformer_signs(proto)
    scheme = ("transformer" if signs else "static") if cfg.scheme == "auto" else cfg.scheme
    if scheme == "static":
        why = "configured" if cfg.scheme == "static" else "not a transformer graph"
        return _Plan(scheme, why, False, per_channel, reduce, isa, host_isa(), None, ())
    compiler = ctx.compiler or targets.get(ctx.target).default_compiler
    dynamic = compiler in _DYNAMIC_COMPILERS
    inits = {i.name for i in proto.graph.initializer}
    float_nodes = tuple(n.name for n in proto.graph.node
                        if n.op_type == "MatMul" and not any(i in inits for i in n.input))
    why = (f"transformer graph ({', '.join(signs) or 'configured'}): MatMul/Gemm weights per channel, "
           "LayerNorm/Softmax/GELU and activation x activation MatMuls in float; "
           + ("activations quantized dynamically at run time" if dynamic else
              f"activations quantized statically: compiler {compiler} runs no dynamic quantization"))
    return _Plan("transformer", why, dynamic, per_channel, reduce, isa, host_isa(), ("MatMul", "Gemm"), float_nodes)


def _quantize(proto: onnx.ModelProto, calib: list[dict[str, np.ndarray]], cfg: Int8Config, calibration: str,
              exclude: list[str], plan: _Plan, progress: Progress) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    extra = {"CalibPercentile": cfg.percentile} if calibration == "percentile" else {}
    ops = {"op_types_to_quantize": list(plan.op_types)} if plan.op_types else {}
    with tempfile.TemporaryDirectory(prefix="deploypipe-int8-") as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(proto, str(src))
        try:  # ORT's entropy/percentile calibrators print to stdout, which would corrupt --json output
            with contextlib.redirect_stdout(io.StringIO()):
                if plan.dynamic:
                    quantize_dynamic(str(src), str(dst), weight_type=types[cfg.weights], per_channel=plan.per_channel,
                                     reduce_range=plan.reduce_range, nodes_to_exclude=exclude, **ops)
                else:
                    quantize_static(
                        str(src), str(dst), _Reader(calib, progress),  # type: ignore[arg-type]
                        quant_format=QuantFormat.QDQ if cfg.format == "qdq" else QuantFormat.QOperator,
                        activation_type=types[cfg.activations], weight_type=types[cfg.weights],
                        per_channel=plan.per_channel, reduce_range=plan.reduce_range, calibrate_method=method,
                        nodes_to_exclude=exclude, extra_options=extra, **ops,
                    )
        except Exception as exc:
            raise refusal("int8: ONNX Runtime's quantizer cannot quantize this graph", proto, exc) from exc
        out = onnx.load_model(str(dst))
    try:
        _ort.session(out)
    except Exception as exc:
        raise refusal("int8: the quantized graph does not load in ONNX Runtime", proto, exc) from exc
    return out


def _rank_layers(fp32: onnx.ModelProto, int8: onnx.ModelProto,
                 feeds: list[dict[str, np.ndarray]]) -> list[dict[str, object]]:
    """Quantizable nodes ordered by the relative error their output adds over their inputs'."""
    from deploypipe.analysis.layerdiff import compare_layers

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
