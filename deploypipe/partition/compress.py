"""Compression of the tensors that cross a cut (seed 003: lossless compression vs splitting).

`int8` is affine per-tensor quantization (scale, zero point; lossy, ~4x on FP32); `zlib` is
lossless; `int8+zlib` chains them. lz4 is used when it is installed. Sizes are always measured on
real crossing tensors, never assumed from the ratio of dtypes.
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

Codec = Literal["none", "int8", "zlib", "lz4", "int8+zlib", "int8+lz4"]
CODECS: tuple[str, ...] = ("none", "int8", "zlib", "lz4", "int8+zlib", "int8+lz4")


def lz4_available() -> bool:
    try:
        import lz4.frame  # noqa: F401
    except ImportError:
        return False
    return True


def available() -> list[str]:
    return [c for c in CODECS if "lz4" not in c or lz4_available()]


def _lossless(codec: str, data: bytes) -> bytes:
    if codec.endswith("zlib"):
        return zlib.compress(data, 1)
    if codec.endswith("lz4"):
        import lz4.frame

        return lz4.frame.compress(data)
    return data


def _lossless_part(codec: str) -> str:
    return "zlib" if codec.endswith("zlib") else "lz4" if codec.endswith("lz4") else "none"


def encode(arr: np.ndarray, codec: str) -> bytes:
    """Payload bytes for one tensor (quantization parameters included)."""
    if codec.startswith("int8") and arr.dtype.kind == "f":
        lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
        scale = (hi - lo) / 255.0 or 1.0
        zero = int(round(-lo / scale))
        q = np.clip(np.round(arr / scale) + zero, 0, 255).astype(np.uint8)
        return b"Q" + struct.pack("<fi", scale, zero) + _lossless(codec, q.tobytes())
    return b"R" + _lossless(codec, np.ascontiguousarray(arr).tobytes())


def decode(payload: bytes, codec: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The tensor back; a payload may not inflate past what `shape` and `dtype` say (it came
    off the network: see deploypipe.net.inflate)."""
    from deploypipe.net import inflate

    n = math.prod(shape)
    if payload[:1] == b"Q":
        scale, zero = struct.unpack("<fi", payload[1:9])
        q = np.frombuffer(inflate(payload[9:], _lossless_part(codec), n), dtype=np.uint8).reshape(shape)
        return ((q.astype(np.float32) - zero) * scale).astype(dtype)
    if payload[:1] != b"R":
        raise ValueError(f"unknown tensor encoding {payload[:1]!r}")
    raw = inflate(payload[1:], _lossless_part(codec), n * np.dtype(dtype).itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


@dataclass(frozen=True)
class CodecFigures:
    """Measured on one real sample of the crossing tensors."""

    codec: str
    nbytes: int  # payload bytes actually sent
    encode_ms: float
    decode_ms: float
    max_abs_err: float


def measure(tensors: dict[str, np.ndarray], codec: str) -> CodecFigures:
    """Compressed size, codec time and round-trip error of the tensors under `codec`."""
    t0 = time.perf_counter()
    payloads = {n: encode(a, codec) for n, a in tensors.items()}
    t1 = time.perf_counter()
    err = 0.0
    for n, a in tensors.items():
        back = decode(payloads[n], codec, a.shape, a.dtype.name)
        if a.size:
            err = max(err, float(np.abs(back.astype(np.float64) - a).max()))
    t2 = time.perf_counter()
    return CodecFigures(codec, sum(len(p) for p in payloads.values()), (t1 - t0) * 1e3, (t2 - t1) * 1e3, err)
