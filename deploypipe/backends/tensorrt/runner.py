"""Runs TensorRT engines, and refuses an engine built for another GPU architecture or TensorRT.

An engine is tied to the GPU's compute capability (SM) and to the exact TensorRT version that
built it; the manifest records both (`compiler_info["engine"]`), and the runner compares them with
this machine before deserializing anything, so a mismatch reads as one clear sentence instead of
a deserialization error. CUDA is reached through ctypes (driver API for the device facts, runtime
API for buffers), so the runner needs only TensorRT's own Python package and the CUDA libraries a
JetPack or driver install already has.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import numpy as np

from deploypipe.backends.runner import Runner
from deploypipe.backends.tensorrt.facts import (
    engine_mismatch,
    local_gpu,
    tensorrt_version,
)
from deploypipe.errors import UnsupportedError

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact

_H2D, _D2H = 1, 2  # cudaMemcpyKind


class _CudaRuntime:
    """The few CUDA runtime calls the runner needs (device buffers and copies)."""

    def __init__(self) -> None:
        for lib in ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2",
                    "/usr/local/cuda/lib64/libcudart.so"):
            try:
                self.lib = ctypes.CDLL(lib)
                return
            except OSError:
                continue
        raise UnsupportedError("the CUDA runtime library (libcudart) cannot be loaded")

    def _ok(self, code: int, what: str) -> None:
        if code != 0:
            raise UnsupportedError(f"CUDA {what} failed with error {code}")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return int(ptr.value or 0)

    def to_device(self, dst: int, src: np.ndarray) -> None:
        self._ok(self.lib.cudaMemcpy(ctypes.c_void_p(dst), src.ctypes.data_as(ctypes.c_void_p),
                                     ctypes.c_size_t(src.nbytes), _H2D), "cudaMemcpy H2D")

    def to_host(self, dst: np.ndarray, src: int) -> None:
        self._ok(self.lib.cudaMemcpy(dst.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(src),
                                     ctypes.c_size_t(dst.nbytes), _D2H), "cudaMemcpy D2H")

    def synchronize(self) -> None:
        self._ok(self.lib.cudaDeviceSynchronize(), "cudaDeviceSynchronize")

    def free(self, ptr: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(ptr))


class TensorRTRunner(Runner):
    kind = "tensorrt"

    @classmethod
    def on_gpu(cls, artifact: Artifact) -> bool:
        return True
    library = "tensorrt"

    @classmethod
    def why_not_runnable(cls, artifact: Artifact) -> str | None:
        version, gpu = tensorrt_version(), local_gpu()
        missing = [what for what, ok in (("TensorRT not installed", version), ("no CUDA GPU", gpu)) if not ok]
        if missing:
            return " / ".join(missing) + " on this machine"
        assert version is not None and gpu is not None
        engine = artifact.manifest.compiler_info.get("engine")
        if "engine" not in artifact.manifest.files or not engine:
            return ("the artifact holds no engine yet: build it on the device with "
                    f"`deploypipe tensorrt build-engine {artifact.path}`")
        return engine_mismatch(engine, gpu, version)

    def activate(self) -> None:
        reason = self.why_not_runnable(self.artifact)
        if reason is not None:
            raise UnsupportedError(f"{self.artifact.path}: {reason}")
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        self._trt = trt
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.artifact.file("engine").read_bytes())
        if self.engine is None:
            raise UnsupportedError(f"{self.artifact.path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.cuda = _CudaRuntime()
        self.tensors: list[tuple[str, bool, tuple[int, ...], np.dtype[Any]]] = []
        if hasattr(self.engine, "num_io_tensors"):  # TensorRT >= 8.5: named tensor API
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                self.tensors.append((name, is_in, tuple(self.engine.get_tensor_shape(name)),
                                     np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))))
        else:  # TensorRT 8.2 (JetPack 4.6): bindings
            for i in range(self.engine.num_bindings):
                self.tensors.append((self.engine.get_binding_name(i), self.engine.binding_is_input(i),
                                     tuple(self.engine.get_binding_shape(i)),
                                     np.dtype(trt.nptype(self.engine.get_binding_dtype(i)))))
        self.ptrs = [self.cuda.malloc(int(np.prod(shape)) * dt.itemsize) for _, _, shape, dt in self.tensors]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for (name, is_in, _shape, dt), ptr in zip(self.tensors, self.ptrs, strict=True):
            if is_in:
                self.cuda.to_device(ptr, np.ascontiguousarray(feeds[name], dtype=dt))
        if hasattr(self.context, "execute_async_v3"):
            for (name, _, _, _), ptr in zip(self.tensors, self.ptrs, strict=True):
                self.context.set_tensor_address(name, ptr)
            ok = self.context.execute_async_v3(0)
            self.cuda.synchronize()
        else:
            ok = self.context.execute_v2(self.ptrs)
        if not ok:
            raise UnsupportedError(f"{self.artifact.path}: TensorRT execution failed")
        outs = {}
        for (name, is_in, shape, dt), ptr in zip(self.tensors, self.ptrs, strict=True):
            if not is_in:
                arr = np.empty(shape, dtype=dt)
                self.cuda.to_host(arr, ptr)
                outs[name] = arr
        return outs

    def deactivate(self) -> None:
        for ptr in getattr(self, "ptrs", []):
            self.cuda.free(ptr)
        self.ptrs = []
        super().deactivate()
