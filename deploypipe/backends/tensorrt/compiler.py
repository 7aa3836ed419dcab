"""TensorRT for Jetson (Nano, TX2) and server GPUs.

TensorRT engines are built on the GPU that runs them, with the TensorRT version that runs them.
So a build here produces what that build needs, prepared and checked: an ONNX file the target's
TensorRT parser accepts (opset capped, simplified, static shapes, every operator checked), the
exact `trtexec` line in `build_engine.sh` and the manifest, and for INT8 an explicit Q/DQ model
plus a TensorRT calibration cache. `deploypipe tensorrt build-engine ARTIFACT` on the device builds the
engine. Where this host has TensorRT and a GPU of the target's architecture, the engine is built
right away. FP16 is a builder flag (the ONNX stays FP32; TensorRT picks FP16 kernels); INT8 is
quantized here (`native_precisions`), so the generic passes do not quantize twice.
"""

from __future__ import annotations

import platform

from pydantic import BaseModel, ConfigDict, Field

from deploypipe.artifact import HostCheck
from deploypipe.backends.compiler import CompileContext, Compiler, CompileResult
from deploypipe.backends.tensorrt import engine as trt_engine
from deploypipe.backends.tensorrt import int8 as trt_int8
from deploypipe.backends.tensorrt import ops as trt_ops
from deploypipe.backends.tensorrt import prepare as trt_prepare
from deploypipe.backends.tensorrt.facts import local_gpu, tensorrt_version
from deploypipe.errors import BuildError, InputFileError
from deploypipe.model import Model


class TrtOptions(BaseModel):
    """`[compilers.tensorrt] options` of a target file."""

    model_config = ConfigDict(extra="forbid")
    sm: str = Field(pattern=r"^\d+\.\d+$")  # GPU compute capability the engine is for
    tensorrt_version: str = Field(pattern=r"^\d+(\.\d+){0,3}$")  # the device's TensorRT
    jetpack: str | None = None
    opset_max: int = Field(ge=7)
    workspace_mib: int = Field(default=1024, gt=0)
    calibration_samples: int = Field(default=32, gt=0)
    providers: list[str] = ["CPUExecutionProvider"]  # ONNX Runtime providers for the prepared-ONNX path


class TensorRTCompiler(Compiler):
    shapes = "profiles"
    name = "tensorrt"
    Options = TrtOptions
    extra = "tensorrt"
    native_precisions = frozenset({"int8", "fp16"})

    def _options(self, ctx: CompileContext) -> tuple[TrtOptions, trt_ops.OpTable]:
        opts: TrtOptions = ctx.options
        table = trt_ops.table_for(opts.tensorrt_version)
        if table is None:
            raise InputFileError(
                f"target {ctx.target.name}: no ONNX-parser operator table for TensorRT {opts.tensorrt_version} "
                f"(known: {', '.join(trt_ops.known_releases())})"
            )
        return opts, table

    def check(self, model: Model, ctx: CompileContext) -> None:
        opts, table = self._options(ctx)
        trt_prepare.check_operators(model.proto, table, opts.tensorrt_version)

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        opts, table = self._options(ctx)
        ver, work = opts.tensorrt_version, ctx.workdir
        ctx.progress(f"preparing ONNX for TensorRT {ver}")
        prep = trt_prepare.prepare(model.proto, table, ver, opts.opset_max,
                                   frozenset(s.name for s in model.inputs if s.bounds))
        prepared = model.with_proto(prep.proto)
        files = {"model": "model.onnx", "build_script": "build_engine.sh"}
        info: dict[str, object] = {
            "tensorrt_version": ver, "sm": opts.sm, "jetpack": opts.jetpack, "opset": prep.opset,
            "opset_from": prep.opset_from, "opset_conversion": prep.conversion, "ir_version": prep.proto.ir_version,
            "operator_table": table.source, "workspace_mib": opts.workspace_mib, "providers": opts.providers,
            "prepare": prep.details,
        }
        notes = []
        profiles = _profiles(model)
        if profiles:
            info["profiles"] = profiles
            notes.append("dynamic inputs: one TensorRT optimization profile, "
                         + "; ".join(f"{n} min {'x'.join(map(str, s[0]))} opt {'x'.join(map(str, s[1]))} "
                                     f"max {'x'.join(map(str, s[2]))}" for n, s in profiles.items()))
        if prep.opset != prep.opset_from:
            notes.append(f"ONNX opset {prep.opset_from} -> {prep.opset} for TensorRT {ver}'s parser ({prep.conversion})")
        implicit = None
        if ctx.precision == "int8":
            ctx.progress("INT8: explicit Q/DQ with onnxruntime")
            feeds = list(model.calibration.samples(opts.calibration_samples, seed=0))
            qdq, ranges = trt_int8.quantize_qdq(prep.proto, feeds)
            problems = trt_int8.qdq_problems(qdq)
            if problems:
                raise BuildError("the Q/DQ model is not in the form TensorRT takes: " + "; ".join(problems[:5]))
            trt_prepare.check_operators(qdq, table, ver)
            if trt_prepare.opset_of(qdq) > table.opset_max:
                raise BuildError(f"the Q/DQ model needs opset {trt_prepare.opset_of(qdq)}; TensorRT {ver} parses up to {table.opset_max}")
            model.with_proto(qdq).save(work / "model.onnx")
            prepared.save(work / "model_fp32.onnx")
            n = trt_int8.write_calibration_cache(work / "calibration.cache", ranges, ver)
            files |= {"onnx_fp32": "model_fp32.onnx", "calibration_cache": "calibration.cache"}
            implicit = trt_engine.trtexec_args("model_fp32.onnx", "int8", ver, opts.workspace_mib, "calibration.cache",
                                               profiles=profiles)
            info |= {
                "int8": {"mode": "explicit Q/DQ (onnxruntime quantize_static: symmetric int8, per-channel weights)",
                         "calibration": f"{len(feeds)} samples, {model.calibration.description}",
                         "calibration_cache_tensors": n, "calibration_cache_header": trt_int8.cache_header(ver)},
                "trtexec_implicit_int8": " ".join(implicit),
            }
        else:
            prepared.save(work / "model.onnx")
        explicit = trt_engine.trtexec_args("model.onnx", ctx.precision, ver, opts.workspace_mib, profiles=profiles)
        info["trtexec"] = " ".join(explicit)
        script = work / "build_engine.sh"
        script.write_text(trt_engine.build_script(explicit, implicit, ctx.target.name, ver))
        script.chmod(0o755)

        host_check = None

        have, gpu = tensorrt_version(), local_gpu()
        if have is not None and gpu is not None and gpu.sm == opts.sm:
            ctx.progress(f"building the engine on this {gpu.name}")
            info["engine"] = trt_engine.build_engine(work, "model.onnx", ctx.precision, ver, opts.workspace_mib).model_dump()
            files["engine"] = trt_engine.ENGINE
            notes.append(f"engine built on {platform.node()}: {gpu.name} (SM {gpu.sm}), TensorRT {have}")
        else:
            why = "TensorRT not installed" if have is None else "TensorRT installed"
            why += " / no CUDA GPU" if gpu is None else f" / GPU SM {gpu.sm}, not the target's SM {opts.sm}"
            notes.append(
                f"no engine built here ({why}): the artifact holds the prepared ONNX and build_engine.sh; "
                f"on the {ctx.target.name} run `deploypipe tensorrt build-engine ARTIFACT` (or ./build_engine.sh)"
            )
            host_check = HostCheck(kind="onnxruntime", file="model.onnx", why=_host_check_why(ctx.precision))
            notes.append(_host_check_why(ctx.precision) + _provider_note(opts.providers))
        return CompileResult(
            kind="tensorrt", files=files, inputs=prepared.inputs, outputs=prepared.outputs,
            toolchain=self.versions(), info=info, notes=notes, host_check=host_check,
        )

    def versions(self) -> dict[str, str]:
        import onnx
        import onnxruntime as ort
        import onnxslim


        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "onnxslim": onnxslim.__version__,
                "tensorrt": tensorrt_version() or "not installed"}


def _host_check_why(precision: str) -> str:
    if precision == "int8":
        return ("fidelity is that of the INT8 Q/DQ ONNX run by ONNX Runtime on this host; "
                "TensorRT's own INT8 kernels are not measured here")
    if precision == "fp16":
        return ("FP16 is a TensorRT builder flag and the ONNX stays FP32, so the fidelity check here runs the "
                "FP32 prepared ONNX with ONNX Runtime: FP16 rounding is not measured here")
    return "fidelity is that of the prepared ONNX run by ONNX Runtime on this host, not of a TensorRT engine"


def _provider_note(providers: list[str]) -> str:
    """Which ONNX Runtime provider the prepared-ONNX path gets on this host."""
    if "CUDAExecutionProvider" not in providers:
        return ""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return " (ONNX Runtime CUDAExecutionProvider)"
    return " (CUDAExecutionProvider not available in this onnxruntime: CPU)"


__all__ = ["TensorRTCompiler", "TrtOptions"]


def _profiles(model: Model) -> trt_engine.Profiles:
    """One optimization profile for the dynamic inputs: min and max from the build's bounds, opt at
    the middle of the batch sizes asked for (else the max), the way trtexec takes them."""
    out: trt_engine.Profiles = {}
    for spec in model.inputs:
        if not spec.bounds:
            continue
        low = [d if d is not None else (b[0] if b else 1) for d, b in zip(spec.shape, spec.bounds, strict=True)]
        high = [d if d is not None else (b[1] if b else 1) for d, b in zip(spec.shape, spec.bounds, strict=True)]
        opt = list(high)
        if model.batches and spec.shape[0] is None:
            opt[0] = sorted(model.batches)[len(model.batches) // 2]
        out[spec.name] = (low, opt, high)
    return out
