"""The split runtime's wire format: length-prefixed frames over TCP.

A frame is `!I` header length, a JSON header, then the tensor payloads back to back. The header
names each tensor with its dtype, shape, codec and payload length, so the receiver needs nothing
else to rebuild it. Requests carry an id and the name of the cloud model to run; replies carry
the same id and either outputs or an error string.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import numpy as np

from deploypipe.partition import compress

_LEN = struct.Struct("!I")
MAX_HEADER = 1 << 20


class ProtocolError(ConnectionError):
    """The peer sent something that is not a frame (or closed mid-frame)."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed mid-frame")
        buf.extend(chunk)
    return bytes(buf)


def pack(header: dict[str, Any], tensors: dict[str, np.ndarray], codec: str = "none") -> bytes:
    """One frame holding `tensors` (encoded with `codec`) and `header`."""
    payloads = [compress.encode(a, codec) for a in tensors.values()]
    header = {**header, "tensors": [
        {"name": n, "dtype": a.dtype.name, "shape": list(a.shape), "codec": codec, "nbytes": len(p)}
        for (n, a), p in zip(tensors.items(), payloads, strict=True)
    ]}
    head = json.dumps(header).encode()
    return _LEN.pack(len(head)) + head + b"".join(payloads)


def recv(sock: socket.socket) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read one frame; returns its header and decoded tensors."""
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > MAX_HEADER:
        raise ProtocolError(f"header of {n} bytes: not a deploypipe frame")
    try:
        header = json.loads(_recv_exact(sock, n))
        tensors = {}
        for t in header.get("tensors", []):
            if t["codec"] not in compress.CODECS:
                raise ProtocolError(f"unknown codec {t['codec']!r}")
            payload = _recv_exact(sock, int(t["nbytes"]))
            tensors[t["name"]] = compress.decode(payload, t["codec"], tuple(t["shape"]), t["dtype"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed frame: {exc}") from exc
    return header, tensors
