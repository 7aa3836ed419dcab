"""OpenVINO as a compiler: ONNX -> OpenVINO IR (.xml/.bin) for Intel CPUs and the NCS2.

- CPU targets (xeon, host-cpu): FP32, FP16-compressed weights, or INT8 by NNCF post-training
  quantization with the model's calibration provider; when the plain INT8 result misses the
  fidelity gate, NNCF's accuracy-controlled mode is tried (real labels when the model has them).
- NCS2 (device MYRIAD): FP16 IR with static shapes, every ONNX node and IR layer checked against
  the documented MYRIAD support list and the IR's layer opsets capped at what the OpenVINO 2022.3
  LTS runtime (the last with the MYRIAD plugin) reads. The OpenVINO installed here has no MYRIAD
  plugin, so the same IR is fidelity-checked on the CPU plugin and labelled a stand-in.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.analysis.fidelity import DEFAULT_TOLERANCE, METRIC_TOLERANCE, compare, evidence_of, judge_metric
from deploypipe.artifact import Fidelity, HostCheck
from deploypipe.backends.compiler import CompileContext, Compiler, CompileResult
from deploypipe.data.metrics import UserMetric, run_metric
from deploypipe.backends.openvino.myriad import (
    Finding,
    check_ir_layers,
    check_onnx_nodes,
)
from deploypipe.errors import (
    BuildError,
    MissingBackendError,
    UnsupportedError,
)
from deploypipe.model import Model

if TYPE_CHECKING:
    import openvino as ov

MYRIAD_RUNTIME = "2022.3"  # the last OpenVINO LTS line with the MYRIAD plugin
STAND_IN = "CPU plugin stand-in, not a Myriad measurement"
XML, BIN = "model.xml", "model.bin"


class OpenVinoOptions(BaseModel):
    """`[compilers.openvino] options` of a target file."""

    model_config = ConfigDict(extra="forbid")
    device: Literal["CPU", "MYRIAD"] = "CPU"
    max_opset: int | None = Field(default=None, ge=1)  # newest IR layer opset the device runtime reads
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"  # runner default, kept in the manifest
    calibration_samples: int = Field(default=64, ge=1)
    validation_samples: int = Field(default=32, ge=2)  # held-out inputs for the INT8 gate (no labels)
    preset: Literal["performance", "mixed"] = "performance"  # NNCF: symmetric / asymmetric activations
    accuracy_control: bool = True  # retry with quantize_with_accuracy_control when the gate fails


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise MissingBackendError("openvino", "openvino", str(exc)) from exc
    return openvino


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as exc:
        raise MissingBackendError(dist, "openvino") from exc


def _refuse(target: str, findings: list[Finding], what: str) -> None:
    if findings:
        shown = "; ".join(str(f) for f in findings[:10])
        more = f" (and {len(findings) - 10} more)" if len(findings) > 10 else ""
        raise UnsupportedError(f"{target}: {len(findings)} {what} the MYRIAD plugin cannot run: {shown}{more}")


class OpenVinoCompiler(Compiler):
    shapes = "dynamic"
    name = "openvino"
    extra = "openvino"
    Options = OpenVinoOptions
    native_precisions = frozenset({"int8", "fp16"})

    def __init__(self) -> None:
        self._converted: tuple[str, ov.Model] | None = None  # (model hash, converted) from check()


    def versions(self) -> dict[str, str]:
        return {"openvino": _version("openvino"), "nncf": _version("nncf")}

    # -- checks, before any file is written ------------------------------------------------

    def check(self, model: Model, ctx: CompileContext) -> None:
        opts: OpenVinoOptions = ctx.options
        _ov()
        if opts.device != "MYRIAD":
            return
        if ctx.precision != "fp16":
            raise UnsupportedError(
                f"{ctx.target.name}: {ctx.precision} is not possible: the MYRIAD plugin runs FP16 only "
                "(no FP32, and FakeQuantize/INT8 layers are rejected)"
            )
        dynamic = [f"{s.name}{s.shape}" for s in model.inputs if any(d is None for d in s.shape)]
        if dynamic:
            raise UnsupportedError(
                f"{ctx.target.name}: the MYRIAD plugin needs static shapes; dynamic inputs: "
                f"{', '.join(dynamic)} (give them with --input-shape)"
            )
        refused, _ = check_onnx_nodes(_onnx_nodes(model.proto))
        _refuse(ctx.target.name, refused, "ONNX nodes")
        _refuse(ctx.target.name, check_ir_layers(_ov_layers(self._convert(model)), opts.max_opset),
                "IR layers")

    def _convert(self, model: Model) -> ov.Model:
        """ONNX -> in-memory ov.Model (cached between check and compile of one build)."""
        key = model.content_hash()
        if self._converted is None or self._converted[0] != key:
            import io

            ov = _ov()
            try:
                converted = ov.convert_model(io.BytesIO(model.proto.SerializeToString()))
            except Exception as exc:  # noqa: BLE001 - the converter's own message is the useful part
                raise BuildError(f"OpenVINO could not convert {model.name}: {exc}") from exc
            bounded = {s.name: ov.PartialShape([ov.Dimension(*b) if b else ov.Dimension(d if d is not None else -1)
                                                for d, b in zip(s.shape, s.bounds, strict=True)])
                       for s in model.inputs if s.bounds}
            if bounded:  # dynamic dims with the bounds the build was asked for (OpenVINO plans memory by them)
                converted.reshape(bounded)
            self._converted = (key, converted)
        return self._converted[1].clone()

    # -- build ----------------------------------------------------------------------------

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        ov = _ov()
        opts: OpenVinoOptions = ctx.options
        ov_model = self._convert(model)
        info: dict[str, Any] = {"device": opts.device, "performance_hint": opts.performance_hint}
        notes: list[str] = []
        host_check = None
        if opts.device == "MYRIAD":
            downgraded = _maxpool8_to_v1(ov_model)
            if downgraded:
                info["maxpool_v8_to_v1"] = downgraded
        if ctx.precision == "int8":
            if _has_qdq(model.proto):
                info["quantization"] = {"method": "QDQ ONNX loaded as is (already quantized)"}
            else:
                ctx.progress("quantizing with NNCF")
                ov_model, info["quantization"] = _quantize(ov_model, model, opts, ctx)
                notes.extend(info["quantization"].pop("notes"))
        ov.save_model(ov_model, str(ctx.workdir / XML), compress_to_fp16=ctx.precision == "fp16")
        layers = _xml_layers(ctx.workdir / XML)
        opsets = Counter(v for _, _, v, _ in layers)
        info |= {
            "ir_version": _xml_ir_version(ctx.workdir / XML),
            "layer_opsets": dict(sorted(opsets.items())),
            "max_layer_opset": max((int(v[5:]) for v in opsets if v.startswith("opset")), default=None),
            "layer_types": dict(sorted(Counter(t for _, t, _, _ in layers).items())),
            "weights": "fp16 (compressed; Convert layers decompress)" if ctx.precision == "fp16" else
                       ("int8 (FakeQuantize)" if ctx.precision == "int8" else "fp32"),
        }
        if opts.device == "MYRIAD":
            # the IR as written, read back as a runtime reads it (XML type names are legacy aliases)
            shipped = ov.Core().read_model(str(ctx.workdir / XML))
            _refuse(ctx.target.name, check_ir_layers(_ov_layers(shipped), opts.max_opset), "IR layers")
            info["inference_precision"] = "f32"  # for the CPU stand-in: no bf16 error on top of FP16
            _, limited = check_onnx_nodes(_onnx_nodes(model.proto))
            notes.extend(f"{f}: verify on the device" for f in limited[:10])
            info["device_runtime"] = f"OpenVINO {MYRIAD_RUNTIME} LTS (MYRIAD plugin)"
            here = _version("openvino")
            notes.append(
                f"the NCS2 needs the OpenVINO {MYRIAD_RUNTIME} LTS runtime: OpenVINO {here} (used here) has no "
                f"MYRIAD plugin. This IR v{info['ir_version']} uses layer opsets up to "
                f"opset{info['max_layer_opset']} (cap opset{opts.max_opset}), which that runtime loads; "
                "see docs/openvino.md for the device-side install"
            )
            notes.append(f"build-time fidelity runs this IR on the CPU plugin: a {STAND_IN}")
            host_check = HostCheck(
                kind="openvino", file=XML,
                why=f"{STAND_IN}: OpenVINO {here} has no MYRIAD plugin; the IR runs on the CPU plugin "
                    "(FP16 weights decompressed, FP32 compute) for correctness only",
            )
        else:
            core = ov.Core()
            default = core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
            info["cpu"] = {
                "name": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
                "capabilities": [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")],
                "default_inference_precision": default,
            }
            if ctx.precision == "fp16":
                gain = " (a size gain only)" if default == "f32" else ""
                notes.append(
                    "FP16-compressed weights, decompressed at load: the CPU plugin computes in its default "
                    f"precision, {default} on the build host{gain}"
                )
            else:
                # FP32, and the unquantized layers of INT8: the CPU plugin would otherwise pick bf16
                # on hosts that have it, which is not what an fp32 artifact promises
                info["inference_precision"] = "f32"
        return CompileResult(
            kind="openvino", files={"model": XML, "weights": BIN},
            inputs=model.inputs, outputs=model.outputs, toolchain=self.versions(),
            info=info, notes=notes, host_check=host_check,
        )


# -- helpers ----------------------------------------------------------------------------------

def _maxpool8_to_v1(ov_model: ov.Model) -> int:
    """Replace MaxPool-8 (which ONNX MaxPool becomes) by the opset1 MaxPool when its indices
    output is unused and dilations are 1: the same computation, in the oldest opset, which is
    the form the MYRIAD plugin's own layer list was written for. Returns how many were replaced."""
    from openvino import opset1

    count = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "MaxPool" or op.get_type_info().version_id != "opset8":
            continue
        a = op.get_attributes()
        if any(d != 1 for d in a["dilations"]) or op.get_output_size() > 1 and op.output(1).get_target_inputs():
            continue
        v1 = opset1.max_pool(op.input_value(0), a["strides"], a["pads_begin"], a["pads_end"], a["kernel"],
                             a["rounding_type"], a["auto_pad"])
        v1.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(v1.output(0))
        count += 1
    if count:
        ov_model.validate_nodes_and_infer_types()
    return count


def _onnx_nodes(proto: onnx.ModelProto) -> list[tuple[str, str, int | None]]:
    """(name, op, rank of the first input) per node; ranks from ONNX shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - ranks only refine the 3-D rows; names and ops still checked
        inferred = proto
    g = inferred.graph
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in [*g.input, *g.value_info, *g.output]
             if vi.type.tensor_type.HasField("shape")}
    ranks |= {i.name: len(i.dims) for i in g.initializer}
    return [(n.name or f"#{i}({n.op_type})", n.op_type, ranks.get(n.input[0]) if n.input else None)
            for i, n in enumerate(g.node)]


def _ov_layers(ov_model: ov.Model) -> list[tuple[str, str, str, int | None]]:
    out = []
    for op in ov_model.get_ordered_ops():
        rank = op.get_output_partial_shape(0).rank if op.get_output_size() else None
        out.append((op.get_friendly_name(), op.get_type_name(), op.get_type_info().version_id,
                    rank.get_length() if rank is not None and rank.is_static else None))
    return out


def _xml_layers(xml: Path) -> list[tuple[str, str, str, int | None]]:
    """(name, type, version, rank of first output) of every layer of the written IR."""
    out = []
    for layer in ET.parse(xml).getroot().iter("layer"):
        port = layer.find("output/port")
        rank = len(port.findall("dim")) if port is not None else None
        out.append((layer.get("name", "?"), layer.get("type", "?"), layer.get("version", "?"), rank))
    return out


def _xml_ir_version(xml: Path) -> int:
    return int(ET.parse(xml).getroot().get("version", "0"))


def _has_qdq(proto: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def _infer(compiled: Any, feed: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(compiled(feed)[compiled.output(0)])


def _quantize(ov_model: ov.Model, model: Model, opts: OpenVinoOptions,
              ctx: CompileContext) -> tuple[ov.Model, dict[str, Any]]:
    """NNCF post-training INT8, judged by the build's gate (and the user's --metric) on held-out
    data; accuracy-controlled retry, with that same metric, when the plain result misses it."""
    with contextlib.redirect_stderr(io.StringIO()):  # importing nncf imports torch, which warns
        import nncf

    core = _ov().Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    calib = list(model.calibration.samples(opts.calibration_samples, seed=0))
    if not calib:
        raise BuildError(f"{model.name}: the calibration provider gave no samples")
    ev = model.evaluation
    if ev is not None:
        val_feeds, labels, val_data = list(ev.samples(len(ev.x))), ev.labels, ev.description
        evidence = evidence_of(ev.labels, ev.evidence)
    else:
        # seeded apart from calibration (0) and the build's own fidelity check (10_000)
        val_feeds = list(model.calibration.samples(opts.validation_samples, seed=20_000))
        labels, val_data, evidence = None, model.calibration.description, model.calibration.evidence
    fp32 = core.compile_model(ov_model, "CPU", f32)
    refs = [_infer(fp32, f) for f in val_feeds]
    out = model.outputs[0].name
    tolerance = ctx.tolerance or DEFAULT_TOLERANCE["int8"]
    preset = nncf.QuantizationPreset.MIXED if opts.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE

    def gate(q: ov.Model) -> Fidelity:
        compiled = core.compile_model(q, "CPU", f32)
        outs = [{out: _infer(compiled, f)} for f in val_feeds]
        fid = compare([{out: r} for r in refs], outs, "int8", tolerance, labels, evidence=evidence)
        if ctx.metric is not None:
            judge_metric(fid, *ctx.metric, [{out: r} for r in refs], outs, labels, tolerance)
        return fid

    record: dict[str, Any] = {
        "method": "nncf.quantize (post-training)", "preset": opts.preset,
        "calibration_samples": len(calib), "calibration_data": model.calibration.description,
        "validation_samples": len(val_feeds), "validation_data": val_data, "evidence": evidence, "notes": [],
    }
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.ERROR)
    # NNCF draws rich progress bars on stdout, which would corrupt `--json` output
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            quantized = nncf.quantize(ov_model, nncf.Dataset(calib), preset=preset, subset_size=len(calib))
            first = gate(quantized)
            record["plain"] = _fig(first)
            if first.passed or not opts.accuracy_control:
                return quantized, record
            metric, max_drop, what = _metric(out, refs, labels, tolerance, ctx.metric)
            targets = list(labels) if labels is not None else refs
            try:
                controlled = nncf.quantize_with_accuracy_control(
                    ov_model, nncf.Dataset(calib), nncf.Dataset(list(zip(val_feeds, targets, range(len(refs)), strict=True))),
                    metric, max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=preset,
                    subset_size=len(calib),
                )
            except Exception as exc:  # noqa: BLE001 - re-raised as a build error with NNCF's reason
                raise BuildError(
                    f"{model.name}: plain INT8 missed the gate ({'; '.join(first.reasons)}) and NNCF "
                    f"accuracy-controlled quantization failed: {exc}"
                ) from exc
        finally:
            nncf_log.setLevel(level)
    second = gate(controlled)
    record |= {"method": "nncf.quantize_with_accuracy_control", "accuracy_control_metric": what,
               "max_drop": max_drop, "controlled": _fig(second)}
    record["notes"].append(
        f"plain INT8 missed the gate ({'; '.join(first.reasons)}); NNCF accuracy control "
        f"(metric: {what}, max drop {max_drop:.3g}) reverted layers to FP32 until it held"
    )
    return controlled, record


def _fig(f: Any) -> dict[str, Any]:
    return {"cosine": f.cosine, "top1_agreement": f.top1_agreement, "accuracy": f.accuracy,
            "accuracy_fp32": f.accuracy_fp32, "passed": f.passed, "reasons": f.reasons}


def _metric(out: str, refs: list[np.ndarray], labels: np.ndarray | None, tol: dict[str, float],
            user: tuple[str, UserMetric] | None) -> tuple[Any, float, str]:
    """NNCF validation function over (feed, target, index) items, the allowed absolute drop and
    its name: the user's --metric with max_metric_drop when given (its first figure, over the
    items NNCF asks for), else real accuracy with labels, else top-1 agreement with FP32 for
    classifiers, else cosine similarity with FP32."""
    classifier = refs[0].ndim == 2 and refs[0].shape[-1] > 1
    if user is not None and METRIC_TOLERANCE in tol:
        spec, fn = user

        def user_metric(compiled: Any, items: Any) -> tuple[float, None]:
            items = list(items)
            outs = [{out: _infer(compiled, feed)} for feed, _, _ in items]
            picked = [i for _, _, i in items]
            sub_labels = None if labels is None else np.asarray(labels)[picked]
            figs = run_metric(fn, spec, [{out: refs[i]} for i in picked], outs, sub_labels)
            return next(iter(figs.values())), None

        return user_metric, tol[METRIC_TOLERANCE], f"the user's metric {spec}"

    def per_sample(compiled: Any, items: Any) -> tuple[float, list[float]]:
        values = []
        for feed, target, _ in items:
            y = _infer(compiled, feed)
            if labels is not None:
                values.append(float(y.argmax(-1).ravel()[0] == int(np.ravel(target)[0])))
            elif classifier:
                values.append(float(y.argmax(-1).ravel()[0] == target.argmax(-1).ravel()[0]))
            else:
                a, b = y.ravel().astype(np.float64), np.asarray(target).ravel().astype(np.float64)
                denom = float(np.linalg.norm(a) * np.linalg.norm(b))
                values.append(float(a @ b / denom) if denom > 0 else 1.0)
        return float(np.mean(values)), values

    if labels is not None:
        return per_sample, tol["max_accuracy_drop"] / 100.0, "accuracy on labelled held-out data"
    if classifier:
        return per_sample, 1.0 - tol["min_top1_agreement"], "top-1 agreement with FP32"
    return per_sample, 1.0 - tol["min_cosine"], "cosine similarity with FP32"
