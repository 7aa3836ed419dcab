"""The split runtime's payload format, carried in `deploypipe.net` frames (which add length,
authentication and timeouts).

A payload is `!I` header length, a JSON header, then the tensor payloads back to back. The header
names each tensor with its dtype, shape, codec and payload length, so the receiver needs nothing
else to rebuild it. Requests carry an id and the name of the cloud model to run; replies carry
the same id and either outputs or an error string. The receiver checks every declared figure
before decoding: dtypes are plain numeric ones, the sizes add up, a tensor may not inflate past
what its shape says, and the server holds each tensor to the shape its model expects.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from deploypipe.net import ProtocolError
from deploypipe.partition import compress

_LEN = struct.Struct("!I")
MAX_HEADER = 1 << 20
MAX_RANK = 8
DTYPES = frozenset({"float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                    "int64", "uint64", "bool"})
# name -> (shape with None for a dynamic dim, dtype): what a model accepts
Expect = dict[str, tuple[tuple[int | None, ...], str]]

__all__ = ["MAX_HEADER", "ProtocolError", "decoded_bytes", "pack", "parse", "unpack"]


def pack(header: dict[str, Any], tensors: dict[str, np.ndarray], codec: str = "none") -> bytes:
    """One payload holding `tensors` (encoded with `codec`) and `header`."""
    payloads = [compress.encode(a, codec) for a in tensors.values()]
    header = {**header, "tensors": [
        {"name": n, "dtype": a.dtype.name, "shape": list(a.shape), "codec": codec, "nbytes": len(p)}
        for (n, a), p in zip(tensors.items(), payloads, strict=True)
    ]}
    head = json.dumps(header).encode()
    return _LEN.pack(len(head)) + head + b"".join(payloads)


def decoded_bytes(meta: dict[str, Any]) -> int:
    return math.prod(meta["shape"]) * np.dtype(meta["dtype"]).itemsize


def _check_meta(t: Any) -> dict[str, Any]:
    if not isinstance(t, dict):
        raise ProtocolError("malformed frame: a tensor entry is not an object")
    name, dtype, shape, codec, nbytes = (t.get(k) for k in ("name", "dtype", "shape", "codec", "nbytes"))
    if not (isinstance(name, str) and isinstance(dtype, str) and isinstance(codec, str)) or dtype not in DTYPES \
            or codec not in compress.CODECS:
        raise ProtocolError(f"malformed frame: tensor {str(name)[:40]!r} has dtype {str(dtype)[:20]!r}, "
                            f"codec {str(codec)[:20]!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_RANK
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape)):
        raise ProtocolError(f"malformed frame: tensor {name!r} has an invalid shape")
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise ProtocolError(f"malformed frame: tensor {name!r} has an invalid payload length")
    return t


def parse(payload: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the checked tensor entries of a payload (nothing decoded yet)."""
    if len(payload) < _LEN.size:
        raise ProtocolError("malformed frame: shorter than its header length")
    (n,) = _LEN.unpack_from(payload)
    if n > MAX_HEADER or _LEN.size + n > len(payload):
        raise ProtocolError(f"malformed frame: header of {n} bytes")
    try:
        header = json.loads(payload[_LEN.size:_LEN.size + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed frame: header is not JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors", []), list):
        raise ProtocolError("malformed frame: header is not a JSON object with a tensor list")
    metas = [_check_meta(t) for t in header.get("tensors", [])]
    if _LEN.size + n + sum(t["nbytes"] for t in metas) != len(payload):
        raise ProtocolError("malformed frame: tensor payload lengths do not add up to the frame")
    return header, metas


def _matches(shape: list[int], want: tuple[int | None, ...]) -> bool:
    return len(shape) == len(want) and all(w is None or w == d for d, w in zip(shape, want, strict=True))


def unpack(payload: bytes, max_bytes: int, expect: Expect | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Header and decoded tensors of a payload. Tensors must fit `expect` when given (names, dtypes,
    shapes) and decode to at most `max_bytes` in all; each payload is inflated to exactly its shape."""
    header, metas = parse(payload)
    if expect is not None:
        got = {t["name"] for t in metas}
        if got != set(expect):
            raise ProtocolError(f"frame carries tensors {sorted(got)[:8]}, the model takes {sorted(expect)}")
        for t in metas:
            shape, dtype = expect[t["name"]]
            if t["dtype"] != dtype or not _matches(t["shape"], shape):
                raise ProtocolError(f"tensor {t['name']!r}: {t['dtype']} {t['shape']}, the model takes "
                                    f"{dtype} {list(shape)}")
    total = sum(decoded_bytes(t) for t in metas)
    if total > max_bytes:
        raise ProtocolError(f"frame would decode to {total} bytes, over the limit of {max_bytes}")
    tensors: dict[str, np.ndarray] = {}
    pos = _LEN.size + _LEN.unpack_from(payload)[0]
    for t in metas:
        chunk = payload[pos:pos + t["nbytes"]]
        pos += t["nbytes"]
        try:
            tensors[t["name"]] = compress.decode(chunk, t["codec"], tuple(t["shape"]), t["dtype"])
        except (ValueError, struct.error) as exc:
            raise ProtocolError(f"tensor {t['name']!r}: payload does not decode to its shape ({exc})") from None
    return header, tensors
