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
    shapes = "set"
    fixed_why = ("onnx2tf writes one static signature per model, so each batch size of --batch 1,8,32 is its own "
                 ".tflite inside the artifact; other dims are fixed (one artifact per --input-shape NAME=1x3x320x320)")
    name = "tflite"
    Options = TfliteOptions
    extra = "tflite"
    native_precisions = frozenset({"fp16", "int8"})  # onnx2tf converts/quantizes itself, with our calibration data

    def check(self, model: Model, ctx: CompileContext) -> None:
        toolchain_python()

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        opts: TfliteOptions = ctx.options
        sizes = model.batches if len(model.batches) > 1 else ()
        made = []
        for batch in sizes or (None,):
            at = f" at batch {batch}" if batch else ""
            ctx.progress(f"converting to TFLite {ctx.precision}{at} with onnx2tf (TensorFlow in .venv-tflite)")
            sub = model.at_batch(batch) if batch else model
            folder = ctx.workdir / f"batch{batch}" if batch else ctx.workdir
            folder.mkdir(exist_ok=True)
            res = convert(sub, [ctx.precision], folder, opts, f"tflite {ctx.precision}{at}")
            out = res["results"][ctx.precision]
            made.append((batch, str((folder / out["file"]).relative_to(ctx.workdir)), out, res["calibration"], sub))
        _, first_file, first, calibration, first_model = made[0]
        inputs, outputs = io_specs(first_model, first["io"])
        if sizes:  # one artifact, a set of fixed shapes: the manifest lists the batch sizes it takes
            inputs, outputs = ([s.model_copy(update={"shape": (None, *s.shape[1:]), "sizes": (sizes, *[None] * (len(s.shape) - 1)),
                                                     "bounds": ((sizes[0], sizes[-1]), *[None] * (len(s.shape) - 1))})
                                for s in specs] for specs in (inputs, outputs))
        notes = [f"TFLite tensors are channel-last where the ONNX ones are channel-first: {io_summary(first['io'])}; "
                 "the deploypipe runner transposes and quantizes feeds given in the source form."]
        if sizes:
            notes.append(f"one .tflite per batch size {', '.join(map(str, sizes))} (onnx2tf writes static shapes); "
                         "the runner picks the one matching the input's batch")
        if ctx.precision == "fp16":
            notes.append("fp16 = float16 weights dequantized to float32 at load; XNNPACK computes in fp32 on CPUs "
                         "without native fp16 arithmetic (this x86-64 host, Cortex-A53/A72)")
        info = {
            "converter": "onnx2tf", "precision_variant": ctx.precision, "io": first["io"], "ops": first["ops"],
            "delegate": "XNNPACK (LiteRT's default CPU delegate)",
            "calibration": calibration, "quant_type": opts.quant_type if ctx.precision == "int8" else None,
        }
        if sizes:
            info["batches"] = [{"batch": b, "file": f, "io": o["io"]} for b, f, o, _, _ in made]
        files = {"model": first_file, **{f"model_batch{b}": f for b, f, _, _, _ in made[1:]}}
        return CompileResult(kind="tflite", files=files, inputs=inputs, outputs=outputs,
                             toolchain=self.versions(), info=info, notes=notes)

    def versions(self) -> dict[str, str]:
        return toolchain_versions()
