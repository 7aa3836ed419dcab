"""ONNX Runtime as a compiler: the (already optimized/quantized) ONNX plus its execution settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from deploypipe.backends.compiler import CompileContext, Compiler, CompileResult
from deploypipe.errors import UnsupportedError
from deploypipe.model import Model


class OrtOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    providers: list[str] = ["CPUExecutionProvider"]


class OnnxRuntimeCompiler(Compiler):
    shapes = "dynamic"
    name = "onnxruntime"
    Options = OrtOptions
    extra = "all"

    def check(self, model: Model, ctx: CompileContext) -> None:
        import onnxruntime as ort

        opts: OrtOptions = ctx.options
        missing = [p for p in opts.providers if p not in ort.get_all_providers()]
        if missing:
            raise UnsupportedError(f"onnxruntime has no execution provider {', '.join(missing)}")

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        opts: OrtOptions = ctx.options
        model.save(ctx.workdir / "model.onnx")
        return CompileResult(
            kind="onnxruntime",
            files={"model": "model.onnx"},
            inputs=model.inputs,
            outputs=model.outputs,
            toolchain=self.versions(),
            info={"providers": opts.providers, "opset": _opset(model)},
        )

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}


def _opset(model: Model) -> int:
    return next(o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx"))
