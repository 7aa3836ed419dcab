"""What the TensorRT backend knows without TensorRT installed: the local GPU (CUDA driver API through
ctypes), the installed TensorRT version, and whether an engine fits them."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76  # CUdevice_attribute values in cuda.h

@dataclass(frozen=True)
class GpuInfo:
    name: str
    sm: str  # compute capability "major.minor"


class GoldenCheck(BaseModel):
    """The engine's outputs on the artifact's golden input against the FP32 reference."""

    max_abs_err: float
    cosine: float
    where: str


class EngineFacts(BaseModel):
    """Where and how an engine was built (the manifest's `compiler_info.engine`): engines load only
    on the GPU architecture and TensorRT release that built them."""

    gpu: str
    sm: str
    tensorrt: str
    built_with: str
    built_on: str
    precision: str
    int8_mode: str | None = None
    golden_check: GoldenCheck | None = None


def local_gpu() -> GpuInfo | None:
    """GPU 0 of this machine through the CUDA driver API, or None (no driver, no device)."""
    for lib in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    dev, count = ctypes.c_int(), ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    if cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
        return None
    major, minor = ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
    return GpuInfo(name=name.value.decode(errors="replace"), sm=f"{major.value}.{minor.value}")


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def same_release(a: str, b: str) -> bool:
    """Engines load only in the TensorRT that built them: compare major.minor.patch."""
    return a.split(".")[:3] == b.split(".")[:3]


def engine_mismatch(engine: dict[str, Any], gpu: GpuInfo, trt_version: str) -> str | None:
    """Why an engine recorded in a manifest cannot run on this GPU / TensorRT, or None."""
    built_sm, built_trt = str(engine.get("sm")), str(engine.get("tensorrt"))
    reasons = []
    if built_sm != gpu.sm:
        reasons.append(f"it was built for GPU SM {built_sm} ({engine.get('gpu', '?')}) and this machine has "
                       f"SM {gpu.sm} ({gpu.name})")
    if not same_release(built_trt, trt_version):
        reasons.append(f"it was built with TensorRT {built_trt} and this machine has TensorRT {trt_version}")
    if not reasons:
        return None
    return ("TensorRT engine refused: " + "; ".join(reasons) + ". Engines are tied to the GPU architecture "
            "and TensorRT version that built them: rebuild it here with `deploypipe tensorrt build-engine ARTIFACT`.")
