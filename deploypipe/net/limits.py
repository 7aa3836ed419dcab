"""Decompression with a hard cap: a small payload may never inflate past the size its sender
declared (a 400 KB zlib frame must not become 400 MB of server memory)."""

from __future__ import annotations

import zlib

from deploypipe.net.channel import ProtocolError


def inflate(data: bytes, codec: str, cap: int) -> bytes:
    """`data` decompressed with `codec` ("none", "zlib" or "lz4"), refused beyond `cap` bytes."""
    if codec == "none":
        if len(data) > cap:
            raise ProtocolError(f"payload of {len(data)} bytes exceeds its declared {cap} bytes")
        return data
    if codec == "zlib":
        d = zlib.decompressobj()
        try:
            out = d.decompress(data, cap + 1)
        except zlib.error as exc:
            raise ProtocolError(f"corrupt zlib payload ({exc})") from None
        if len(out) > cap or d.unconsumed_tail:
            raise ProtocolError(f"zlib payload inflates beyond its declared {cap} bytes")
        if not d.eof:
            raise ProtocolError("truncated zlib payload")
        return out
    if codec == "lz4":
        try:
            import lz4.frame
        except ImportError:
            raise ProtocolError("lz4 payload, but lz4 is not installed here (pip install lz4)") from None
        d4 = lz4.frame.LZ4FrameDecompressor()
        try:
            out = d4.decompress(data, max_length=cap + 1)
        except RuntimeError as exc:
            raise ProtocolError(f"corrupt lz4 payload ({exc})") from None
        if len(out) > cap or not d4.eof:
            raise ProtocolError(f"lz4 payload inflates beyond its declared {cap} bytes or is truncated")
        return out
    raise ProtocolError(f"unknown codec {codec!r}")
