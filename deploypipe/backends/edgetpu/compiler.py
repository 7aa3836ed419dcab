"""Coral Edge TPU compiler: a full-integer int8 TFLite model, a per-node compatibility report,
then `edgetpu_compiler` when it is on PATH.

The report exists because users' top complaint is silent CPU fallback: before compiling, every
operator of the int8 model is checked offline against the Edge TPU's documented requirements, and
each node is reported as mapped to the TPU or falling back to the CPU, with the reason.

Sources for the rules (compiler 16.0, the last release):
- Supported operations and their limits: https://coral.ai/docs/edgetpu/models-intro/#supported-operations
  (also the requirements there: 8-bit tensors, static shapes, compile-time-constant parameters,
  at most 3 non-unit dimensions, and "the compiler cannot partition the model more than once":
  from the first unsupported op on, everything runs on the CPU).
- Op versions edgetpu_compiler 16.0 rejects ("Didn't find op for builtin opcode ... version"):
  CONV_2D v6 (github.com/google-coral/edgetpu/issues/631), TRANSPOSE_CONV v4 (issues/845).
- On-chip parameter cache: 8 MiB; parameters beyond it are streamed from host memory each
  inference (https://coral.ai/docs/edgetpu/compiler/#parameter-data-caching).

`edgetpu_compiler` is x86-64 Linux only and not installable from Debian or PyPI here; without it
the artifact keeps the compiler-ready model, a `compile_edgetpu.sh` with the exact command, and
says so. The int8 model is fidelity-checked on the LiteRT CPU interpreter, labelled as such.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploypipe.artifact import HostCheck
from deploypipe.backends.compiler import CompileContext, Compiler, CompileResult
from deploypipe.errors import BuildError, UnsupportedError
from deploypipe.litert.convert import (
    TfliteOptions,
    convert,
    io_specs,
    io_summary,
    toolchain_python,
)
from deploypipe.model import Model
from deploypipe.toolchains import toolchain_versions

# TFLite builtin op -> limitation checked here ("" = none beyond the general rules), from the
# Coral table (compiler/runtime 16). Ops whose table entry needs runtime >= 13/14 are included:
# compiler 16 targets runtime 16 by default.
SUPPORTED: dict[str, str] = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation", "CONCATENATION": "no fused activation",
    "CONV_2D": "", "DEPTHWISE_CONV_2D": "", "EXPAND_DIMS": "", "FULLY_CONNECTED": "",
    "L2_NORMALIZATION": "", "LOGISTIC": "", "UNIDIRECTIONAL_SEQUENCE_LSTM": "", "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation", "MEAN": "no reduction over the batch dimension", "MINIMUM": "",
    "MUL": "", "PACK": "", "PAD": "no padding of the batch dimension", "PRELU": "", "QUANTIZE": "",
    "REDUCE_MAX": "", "REDUCE_MIN": "", "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "",
    "RESIZE_BILINEAR": "", "RESIZE_NEAREST_NEIGHBOR": "", "RSQRT": "", "SLICE": "",
    "SOFTMAX": "1-D input of at most 16,000 elements", "SPACE_TO_DEPTH": "", "SPLIT": "", "SQUEEZE": "",
    "STRIDED_SLICE": "", "SUB": "", "SUM": "", "SQUARED_DIFFERENCE": "", "TANH": "", "TRANSPOSE": "",
    "TRANSPOSE_CONV": "", "HARD_SWISH": "",
}
# Highest op version edgetpu_compiler 16.0 parses (higher ones abort the whole compile).
MAX_VERSION: dict[str, int] = {"CONV_2D": 5, "TRANSPOSE_CONV": 3}
_NO_FUSED_ACT = {"AVERAGE_POOL_2D", "CONCATENATION", "MAX_POOL_2D"}


class EdgeTpuOptions(BaseModel):
    """`[compilers.edgetpu] options` of a target file."""

    model_config = ConfigDict(extra="forbid")
    onchip_memory_mib: float = Field(default=8.0, gt=0)
    io_dtype: Literal["int8", "uint8"] = "int8"
    calibration_samples: int = Field(default=100, ge=1, le=2000)
    allow_cpu_fallback: bool = True  # False: refuse (naming the nodes) when any op would run on the CPU
    timeout_s: int = Field(default=1800, ge=60)


class NodeReport(BaseModel):
    index: int
    name: str  # the op's first output tensor (onnx2tf names it after the ONNX node)
    op: str
    version: int
    where: Literal["tpu", "cpu"]
    reason: str = ""


class EdgeTpuReport(BaseModel):
    """Offline prediction of what edgetpu_compiler will map; the compiler's own log decides."""

    model_config = ConfigDict(extra="forbid")
    source: str
    nodes: list[NodeReport]
    tpu_ops: int
    cpu_ops: int
    model_issues: list[str] = Field(default_factory=list)  # whole-model reasons (subgraphs, ...)
    parameter_bytes: int
    onchip_memory_bytes: int
    offchip_parameter_bytes: int

    def fallback(self) -> list[NodeReport]:
        return [n for n in self.nodes if n.where == "cpu"]

    def summary(self) -> str:
        head = f"Edge TPU (offline check): {self.tpu_ops} of {len(self.nodes)} ops on the TPU, {self.cpu_ops} on the CPU"
        first = next((n for n in self.nodes if n.where == "cpu"), None)
        if first is not None:
            head += f"; first CPU op #{first.index} {first.op} '{first.name}': {first.reason}"
        return head


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def compatibility_report(tflite: Path, onchip_memory_mib: float = 8.0) -> EdgeTpuReport:
    """Check every operator of a .tflite against the Edge TPU rules (see the module docstring)."""
    schema = _schema()
    data = tflite.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    act_none = schema.ActivationFunctionType.NONE
    issues: list[str] = []
    if len(model.subgraphs) > 1:
        issues.append(f"{len(model.subgraphs)} subgraphs: edgetpu_compiler maps only a model with one subgraph")
    graph = model.subgraphs[0]

    def tname(i: int) -> str:
        n = graph.tensors[i].name
        return n.decode() if isinstance(n, bytes) else str(n)

    def is_const(i: int) -> bool:
        buf = graph.tensors[i].buffer
        return buf > 0 and model.buffers[buf].data is not None and len(model.buffers[buf].data) > 0

    nodes: list[NodeReport] = []
    blocked: NodeReport | None = None
    param_bytes = 0
    for idx, op in enumerate(graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, str(builtin))
        if name == "CUSTOM":
            cc = code.customCode
            name = f"CUSTOM:{cc.decode() if isinstance(cc, bytes) else cc}"
        reasons = _op_reasons(name, code.version, op, graph, is_const, type_names, tname, act_none)
        reason = "; ".join(reasons)
        if not reasons and blocked is not None:
            reason = (f"supported, but after the first unsupported op #{blocked.index} {blocked.op} "
                      "(the compiler partitions the model only once)")
        where: Literal["tpu", "cpu"] = "cpu" if reason or issues else "tpu"
        if issues and not reason:
            reason = issues[0]
        node = NodeReport(index=idx, name=tname(op.outputs[0]) if len(op.outputs) else "", op=name,
                          version=code.version, where=where, reason=reason)
        if reasons and blocked is None:
            blocked = node
        if where == "tpu":
            param_bytes += sum(len(model.buffers[graph.tensors[i].buffer].data) for i in op.inputs
                               if i >= 0 and is_const(i))
        nodes.append(node)
    onchip = int(onchip_memory_mib * 1024 * 1024)
    tpu = sum(n.where == "tpu" for n in nodes)
    return EdgeTpuReport(source=str(tflite), nodes=nodes, tpu_ops=tpu, cpu_ops=len(nodes) - tpu, model_issues=issues,
                         parameter_bytes=param_bytes, onchip_memory_bytes=onchip,
                         offchip_parameter_bytes=max(0, param_bytes - onchip))


def _op_reasons(name: str, version: int, op: Any, graph: Any, is_const: Any, type_names: dict[int, str],
                tname: Any, act_none: int) -> list[str]:
    """Why this op cannot run on the Edge TPU (empty: it can)."""
    if name not in SUPPORTED:
        return [f"{name} is not in the Edge TPU's supported operations"]
    reasons = []
    if version > MAX_VERSION.get(name, version):
        reasons.append(f"{name} version {version} is newer than edgetpu_compiler 16 accepts (max {MAX_VERSION[name]})")
    for pos, i in enumerate([*op.inputs, *op.outputs]):
        if i < 0:
            continue
        t = graph.tensors[i]
        ttype = type_names.get(t.type, str(t.type))
        # int32 biases and integer constants (axes, shapes, paddings, permutations) are parameters
        param = ttype in ("int32", "int64") and is_const(i)
        if ttype not in ("int8", "uint8") and not param:
            reasons.append(f"tensor '{tname(i)}' is {ttype}, not 8-bit")
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        if sig is not None and any(d < 0 for d in sig):
            reasons.append(f"tensor '{tname(i)}' has a dynamic shape {list(sig)}")
        shape = list(t.shape) if t.shape is not None else []
        if sum(d > 1 for d in shape) > 3 and not is_const(i):
            reasons.append(f"tensor '{tname(i)}' {shape} has more than 3 non-unit dimensions")
    if name in _NO_FUSED_ACT and op.builtinOptions is not None:
        act = getattr(op.builtinOptions, "fusedActivationFunction", act_none)
        if act != act_none:
            reasons.append(f"{name} with a fused activation")
    if name == "SOFTMAX" and op.inputs is not None:
        shape = list(graph.tensors[op.inputs[0]].shape)
        n = 1
        for d in shape:
            n *= d
        if sum(d > 1 for d in shape) > 1 or n > 16000:
            reasons.append(f"SOFTMAX input {shape}: only 1-D inputs of at most 16,000 elements")
    return list(dict.fromkeys(reasons))


def refuse_fallback(report: EdgeTpuReport, allowed: bool, kept: Path | None = None) -> None:
    """With `allow_cpu_fallback = false`, any CPU op stops the build, naming the nodes (and the
    file where the whole compatibility report was left)."""
    fallback = report.fallback()
    if fallback and not allowed:
        listing = ", ".join(f"#{n.index} {n.op} '{n.name}' ({n.reason})" for n in fallback[:8])
        raise UnsupportedError(f"{len(fallback)} op(s) would run on the CPU, not the Edge TPU: {listing}"
                               + (" ..." if len(fallback) > 8 else "")
                               + (f"; full compatibility report: {kept}" if kept else ""))


def report_table(report: EdgeTpuReport) -> list[tuple[str, ...]]:
    """Rows (index, op, version, where, node, reason) for the CLI."""
    return [(str(n.index), n.op, str(n.version), n.where.upper(), n.name, n.reason) for n in report.nodes]


class EdgeTpuCompiler(Compiler):
    shapes = "fixed"
    fixed_why = "the Edge TPU compiler needs static shapes"
    name = "edgetpu"
    Options = EdgeTpuOptions
    extra = "tflite"
    native_precisions = frozenset({"int8"})

    def check(self, model: Model, ctx: CompileContext) -> None:
        if ctx.precision != "int8":
            raise UnsupportedError(f"the Edge TPU runs only full-integer int8 models, not {ctx.precision}")
        for spec in model.inputs:
            if any(d is None for d in spec.shape):
                raise UnsupportedError(f"input '{spec.name}' has a dynamic shape {spec.shape}; the Edge TPU needs static shapes")
        toolchain_python()

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        opts: EdgeTpuOptions = ctx.options
        ctx.progress("converting to a full-integer int8 TFLite model with onnx2tf")
        topts = TfliteOptions(calibration_samples=opts.calibration_samples, io_dtype=opts.io_dtype,
                              timeout_s=opts.timeout_s)
        res = convert(model, ["int8"], ctx.workdir, topts, "edgetpu int8", ctx.progress)
        out = res["results"]["int8"]
        int8_file = out["file"]
        report = compatibility_report(ctx.workdir / int8_file, opts.onchip_memory_mib)
        ctx.progress(report.summary())
        kept = None
        if report.fallback() and not opts.allow_cpu_fallback:  # most useful exactly when the build stops
            kept = ctx.workdir.parent / f"{model.name}-{ctx.target.name}-edgetpu-report.json"
            kept.write_text(report.model_dump_json(indent=2))
        refuse_fallback(report, opts.allow_cpu_fallback, kept)
        fallback = report.fallback()
        inputs, outputs = io_specs(model, out["io"])
        notes = [report.summary(), f"TFLite tensors: {io_summary(out['io'])}"]
        if fallback:
            notes.append("CPU fallback: " + ", ".join(f"{n.op} '{n.name}'" for n in fallback[:6])
                         + (f" and {len(fallback) - 6} more" if len(fallback) > 6 else "")
                         + " (see compiler_info.edgetpu_report or `deploypipe edgetpu report`)")
        if report.offchip_parameter_bytes:
            notes.append(f"{report.parameter_bytes / 2**20:.2f} MiB of TPU parameters exceed the "
                         f"{opts.onchip_memory_mib:g} MiB on-chip cache: {report.offchip_parameter_bytes / 2**20:.2f} MiB "
                         "are streamed from host memory every inference")
        (ctx.workdir / "edgetpu_report.json").write_text(report.model_dump_json(indent=2))
        files = {"int8_model": int8_file, "edgetpu_report": "edgetpu_report.json"}  # kept if the build's gate fails
        info: dict[str, Any] = {
            "converter": "onnx2tf", "io": out["io"], "ops": out["ops"], "calibration": res["calibration"],
            "edgetpu_report": report.model_dump(), "compile_command": f"edgetpu_compiler -s -o . {int8_file}",
        }
        compiler = shutil.which("edgetpu_compiler")
        toolchain = dict(toolchain_versions())
        if compiler:
            ctx.progress("compiling with edgetpu_compiler")
            compiled, log, version = _run_compiler(compiler, ctx.workdir, int8_file, opts.timeout_s)
            files |= {"model": compiled, "compiler_log": log}
            toolchain["edgetpu_compiler"] = version
            info["edgetpu_compiler_summary"] = _parse_log(ctx.workdir / log)
        else:
            script = ctx.workdir / "compile_edgetpu.sh"
            script.write_text(_SCRIPT.format(model=int8_file))
            script.chmod(0o755)
            files |= {"model": int8_file, "compile_script": "compile_edgetpu.sh"}
            notes.append("edgetpu_compiler is not on PATH (x86-64 Linux only; not on Debian or PyPI): the artifact holds "
                         f"the compiler-ready {int8_file}; run ./compile_edgetpu.sh on an x86-64 Linux host with "
                         f"edgetpu-compiler installed (command: {info['compile_command']})")
        return CompileResult(
            kind="edgetpu", files=files, inputs=inputs, outputs=outputs, toolchain=toolchain, info=info, notes=notes,
            host_check=HostCheck(kind="tflite", file=int8_file,
                                 why="no Edge TPU here: the same full-integer model on the LiteRT CPU interpreter "
                                     "(checks the int8 quantization, not the TPU's execution)"),
        )

    def versions(self) -> dict[str, str]:
        out = toolchain_versions()
        compiler = shutil.which("edgetpu_compiler")
        if compiler:
            out["edgetpu_compiler"] = _compiler_version(compiler)
        return out


_SCRIPT = """#!/bin/sh
# Compile {model} for the Coral Edge TPU. edgetpu_compiler runs on x86-64 Debian/Ubuntu only
# (package edgetpu-compiler from Coral's apt repository, https://coral.ai/docs/edgetpu/compiler/).
# Writes {model_stem}_edgetpu.tflite and {model_stem}_edgetpu.log (the per-op mapping) here.
set -e
cd "$(dirname "$0")"
edgetpu_compiler -s -o . {model}
""".replace("{model_stem}", "model_int8")


def _compiler_version(compiler: str) -> str:
    proc = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False, timeout=60)
    m = re.search(r"version\s+([\w.]+)", proc.stdout + proc.stderr)
    return m.group(1) if m else "unknown"


def _run_compiler(compiler: str, workdir: Path, model: str, timeout_s: int) -> tuple[str, str, str]:
    proc = subprocess.run([compiler, "-s", "-o", ".", model], cwd=workdir, capture_output=True, text=True,
                          check=False, timeout=timeout_s)
    stem = Path(model).stem
    log = f"{stem}_edgetpu_compiler.txt"
    (workdir / log).write_text(proc.stdout + proc.stderr)
    compiled = f"{stem}_edgetpu.tflite"
    if proc.returncode != 0 or not (workdir / compiled).is_file():
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
        raise BuildError(f"edgetpu_compiler failed (exit {proc.returncode}): {tail}")
    return compiled, log, _compiler_version(compiler)


def _parse_log(log: Path) -> dict[str, str]:
    """The compiler's headline figures (ops on TPU/CPU, on-chip/off-chip memory)."""
    out = {}
    for line in log.read_text(errors="replace").splitlines():
        if ":" in line and any(k in line for k in ("Number of operations", "memory", "subgraphs")):
            key, _, val = line.partition(":")
            out[key.strip()] = val.strip()
    return out


def report_for(path: Path, onchip_memory_mib: float = 8.0) -> EdgeTpuReport:
    """The compatibility report of a .tflite file, or of an artifact folder's int8 model."""
    from deploypipe.errors import InputFileError

    path = Path(path)
    if path.is_dir():
        from deploypipe.artifact import Artifact

        art = Artifact(path)
        files = art.manifest.files
        role = "int8_model" if "int8_model" in files else "model"
        if role not in files or not files[role].path.endswith(".tflite"):
            raise InputFileError(f"{path}: not a TFLite/Edge TPU artifact (no .tflite model)")
        path = art.file(role)
    if path.suffix != ".tflite" or not path.is_file():
        raise InputFileError(f"{path}: expected a .tflite file or an artifact folder")
    try:
        return compatibility_report(path, onchip_memory_mib)
    except (IndexError, ValueError, AttributeError, TypeError) as exc:
        raise InputFileError(f"{path}: not a readable TFLite flatbuffer ({type(exc).__name__})") from exc
