"""Compiler registry: name -> implementation, imported only when a build needs it."""

from __future__ import annotations


from deploypipe.compilers.base import Compiler, CompileContext, CompileResult
from deploypipe.errors import UnknownNameError
from deploypipe.registry import resolve

# name -> "module:Class"; each module imports its heavy toolchain inside functions.
_REGISTRY: dict[str, str] = {
    "onnxruntime": "deploypipe.compilers.onnxruntime:OnnxRuntimeCompiler",
    "tensorrt": "deploypipe.compilers.tensorrt:TensorRTCompiler",
    "openvino": "deploypipe.compilers.openvino:OpenVinoCompiler",
    "tflite": "deploypipe.compilers.tflite:TfliteCompiler",
    "edgetpu": "deploypipe.compilers.edgetpu:EdgeTpuCompiler",
    "hls4ml": "deploypipe.compilers.fpga:Hls4mlCompiler",
    "tvm": "deploypipe.compilers.tvm:TvmCompiler",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Compiler:
    if name not in _REGISTRY:
        raise UnknownNameError("compiler", name, _REGISTRY)
    return resolve(_REGISTRY, name)()


__all__ = ["CompileContext", "CompileResult", "Compiler", "get", "names"]
