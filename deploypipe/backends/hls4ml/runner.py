"""Runs an hls4ml artifact's bit-accurate C simulation: the HLS C++ compiled with g++ into
`csim/lib<project>.so`, loaded with ctypes (no hls4ml needed, like hls4ml's own `predict`).

Its outputs are the fixed-point design's outputs, bit for bit; its timings are host timings of a
C++ simulation, never FPGA timings.
"""

from __future__ import annotations

import ctypes
import platform
import sys

import numpy as np
import numpy.ctypeslib as npc

from deploypipe.backends.runner import Runner

WHERE = "bit-accurate C simulation on {host}, not an FPGA measurement"


class Hls4mlCsimRunner(Runner):
    kind = "hls4ml-csim"
    library = "ctypes"

    @classmethod
    def why_not_runnable(cls, artifact: object) -> str | None:
        if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
            return f"the C simulation library was compiled for x86_64 Linux, this is {sys.platform} {platform.machine()}"
        return None

    def activate(self) -> None:
        info = self.artifact.manifest.compiler_info
        self.lib = ctypes.CDLL(str(self.model_path.resolve()))
        self.fn = getattr(self.lib, f"{info['project']}_float")
        self.fn.restype = None
        self.fn.argtypes = [npc.ndpointer(ctypes.c_float, flags="C_CONTIGUOUS")] * 2
        self.nhwc = info["input_layout"] == "NHWC"
        self.out_size = int(info["output_size"])
        (self.out_spec,) = self.artifact.manifest.outputs

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = feeds.values()
        x = np.asarray(x, dtype=np.float32)
        if self.nhwc:  # hls4ml's streaming convolutions take channels-last
            x = x.transpose(0, 2, 3, 1)
        outs = []
        for sample in x:
            y = np.zeros(self.out_size, dtype=np.float32)
            self.fn(np.ascontiguousarray(sample).reshape(-1), y)
            outs.append(y)
        shape = (len(outs), *self.out_spec.shape[1:])
        return {self.out_spec.name: np.stack(outs).reshape(shape)}

    def deactivate(self) -> None:
        # the library stays mapped (ctypes has no portable unload); dropping our handles is enough
        self.fn = None
        self.lib = None
        super().deactivate()
