"""The tflite backend's compiler: ONNX -> .tflite with onnx2tf in the converter venv (see
deploypipe.litert.convert for the layout and quantization contract)."""

from __future__ import annotations

from deploypipe.backends.compiler import CompileContext, Compiler, CompileResult
from deploypipe.litert.convert import (
    TfliteOptions,
    convert,
    io_specs,
    io_summary,
    toolchain_python,
)
from deploypipe.model import Model
from deploypipe.toolchains import toolchain_versions


class TfliteCompiler(Compiler):
    shapes = "fixed"
    fixed_why = "onnx2tf writes one static signature: build one artifact per shape (--input-shape NAME=8x3x224x224)"
    name = "tflite"
    Options = TfliteOptions
    extra = "tflite"
    native_precisions = frozenset({"fp16", "int8"})  # onnx2tf converts/quantizes itself, with our calibration data

    def check(self, model: Model, ctx: CompileContext) -> None:
        toolchain_python()

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        opts: TfliteOptions = ctx.options
        ctx.progress(f"converting to TFLite {ctx.precision} with onnx2tf (TensorFlow in .venv-tflite)")
        res = convert(model, [ctx.precision], ctx.workdir, opts, f"tflite {ctx.precision}", ctx.progress)
        out = res["results"][ctx.precision]
        inputs, outputs = io_specs(model, out["io"])
        notes = [f"TFLite tensors are channel-last where the ONNX ones are channel-first: {io_summary(out['io'])}; "
                 "the deploypipe runner transposes and quantizes feeds given in the source form."]
        if ctx.precision == "fp16":
            notes.append("fp16 = float16 weights dequantized to float32 at load; XNNPACK computes in fp32 on CPUs "
                         "without native fp16 arithmetic (this x86-64 host, Cortex-A53/A72)")
        info = {
            "converter": "onnx2tf", "precision_variant": ctx.precision, "io": out["io"], "ops": out["ops"],
            "delegate": "XNNPACK (LiteRT's default CPU delegate)",
            "calibration": res["calibration"], "quant_type": opts.quant_type if ctx.precision == "int8" else None,
        }
        return CompileResult(kind="tflite", files={"model": out["file"]}, inputs=inputs, outputs=outputs,
                             toolchain=self.versions(), info=info, notes=notes)

    def versions(self) -> dict[str, str]:
        return toolchain_versions()
