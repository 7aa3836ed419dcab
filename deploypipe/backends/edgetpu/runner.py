"""Runs Edge TPU artifacts on a Coral device: the compiled `_edgetpu.tflite` through the
libedgetpu delegate of the LiteRT interpreter. On a host without a Coral, the build's fidelity
check uses the artifact's host stand-in instead (the same int8 model on the CPU interpreter)."""

from __future__ import annotations

import ctypes.util
from typing import TYPE_CHECKING, Any

from deploypipe.litert.interpreter import LiteRtRunner

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact

_LIB = "libedgetpu.so.1"


class EdgeTpuRunner(LiteRtRunner):
    kind = "edgetpu"
    library = "ai_edge_litert.interpreter"

    @classmethod
    def why_not_runnable(cls, artifact: Artifact) -> str | None:
        base = super().why_not_runnable(artifact)
        if base:
            return base
        if "compile_script" in artifact.manifest.files:
            return ("the model was not compiled for the Edge TPU (edgetpu_compiler was not on PATH at build time): "
                    "run compile_edgetpu.sh on an x86-64 Linux host")
        if ctypes.util.find_library("edgetpu") is None:
            return f"no Edge TPU runtime ({_LIB}) on this machine"
        return None

    def _delegates(self) -> list[Any]:
        from ai_edge_litert.interpreter import load_delegate

        return [load_delegate(_LIB)]
