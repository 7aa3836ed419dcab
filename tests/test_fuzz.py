"""Fuzzing (hypothesis, bounded) of what the servers read from the network: the split runtime's
payloads, deploypipe.net frames and handshakes, the bench server's request header and the upload
unpacker. Whatever arrives, the only outcome besides success is the protocol's own error."""

from __future__ import annotations

import io
import json
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploypipe import net
from deploypipe.bench.serve import RuntimeServer, unpack_upload
from deploypipe.errors import InputFileError, UserError
from deploypipe.net.channel import server_hello
from deploypipe.partition import compress, wire

BOUND = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EXPECT: wire.Expect = {"x": ((1, 4, None), "float32")}


def _valid_payload() -> bytes:
    return wire.pack({"id": 7, "model": "m"}, {"x": np.arange(12, dtype=np.float32).reshape(1, 4, 3)}, "zlib")


@BOUND
@given(st.binary(max_size=2048))
def test_wire_unpack_arbitrary_bytes(data: bytes) -> None:
    try:
        wire.unpack(data, 1 << 16, EXPECT)
    except net.ProtocolError:
        pass


@BOUND
@given(st.data())
def test_wire_unpack_mutated_payloads(data: st.DataObject) -> None:
    payload = bytearray(_valid_payload())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        _, tensors = wire.unpack(bytes(payload[:cut] if data.draw(st.booleans()) else payload), 1 << 16, EXPECT)
    except net.ProtocolError:
        return
    assert set(tensors) == {"x"} and tensors["x"].dtype == np.float32 and tensors["x"].shape[:2] == (1, 4)


@BOUND
@given(st.dictionaries(st.sampled_from(["name", "dtype", "shape", "codec", "nbytes", "extra"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), st.text(max_size=12),
                                 st.lists(st.integers(-5, 2**41), max_size=10)), max_size=6))
def test_wire_header_fields_are_checked(meta: dict) -> None:
    head = json.dumps({"id": 1, "tensors": [meta]}).encode()
    try:
        wire.unpack(len(head).to_bytes(4, "big") + head + bytes(64), 1 << 20)
    except net.ProtocolError:
        pass


@BOUND
@given(st.sampled_from(["float32", "float16", "int8", "uint8", "int64", "bool"]), st.sampled_from(compress.available()),
       st.lists(st.integers(1, 5), min_size=0, max_size=4))
def test_wire_round_trip(dtype: str, codec: str, shape: list[int]) -> None:
    rng = np.random.default_rng(len(shape))
    a = (rng.standard_normal(shape) * 10).astype(dtype)
    header, tensors = wire.unpack(wire.pack({"id": 3}, {"t": a}, codec), 1 << 20)
    assert header["id"] == 3 and tensors["t"].shape == a.shape and tensors["t"].dtype == a.dtype
    if not codec.startswith("int8") or a.dtype.kind != "f":
        np.testing.assert_array_equal(tensors["t"], a)


def _server_side(data: bytes, token: bytes | None) -> None:
    """Feed `data` to a server-side channel as if a client had sent it."""
    srv, cli = socket.socketpair()
    with srv, cli:
        cli.settimeout(1.0)
        done = threading.Event()

        def client() -> None:
            try:
                cli.recv(64)  # the hello
                cli.sendall(data)
                cli.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            done.set()

        threading.Thread(target=client, daemon=True).start()
        try:
            ch = server_hello(srv, token, timeout=0.5)
            while True:
                ch.recv(1 << 16)
        except (net.ProtocolError, TimeoutError):
            pass
        done.wait(2)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_frames_and_handshakes_from_anyone(data: bytes, with_token: bool) -> None:
    _server_side(data, b"k" * 32 if with_token else None)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.data())
def test_tampered_frames_fail_their_tag(payloads: list[bytes], data: st.DataObject) -> None:
    key = b"s" * 32
    srv, cli = socket.socketpair()
    with srv, cli:
        sender = net.Channel(cli, key, b"C", 1.0)
        receiver = net.Channel(srv, key, b"S", 1.0)
        frames = [bytearray(sender.seal(p)) for p in payloads]
        victim = data.draw(st.integers(0, len(frames) - 1))
        i = data.draw(st.integers(8, len(frames[victim]) - 1))
        frames[victim][i] ^= data.draw(st.integers(1, 255))
        cli.sendall(b"".join(frames))
        for n, p in enumerate(payloads):
            if n == victim:
                with pytest.raises(net.AuthError):
                    receiver.recv(1 << 16)
                break
            assert receiver.recv(1 << 16) == p


@BOUND
@given(header=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.sampled_from(["config", "iterations", "device",
                                                                             "loadgen_dir", "timeout_s", "scenario",
                                                                             "warmup", "energy", "bytes"]),
                                                            inner, max_size=5)),
                    max_leaves=12))
def test_bench_request_header(header: object, tmp_path_factory: pytest.TempPathFactory) -> None:
    rt = RuntimeServer(tmp_path_factory.getbasetemp() / "rt", 1 << 20, 1 << 20, trust_uploads=False)
    try:
        cfg = rt.config(header)
    except (UserError, InputFileError, ValueError):  # pydantic's ValidationError is a ValueError
        return
    assert Path(cfg.loadgen_dir).is_relative_to(rt.workdir) and cfg.device is None


def _tar(members: list[tuple[str, bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, kind, body in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                info.linkname = "../../etc/passwd"
            else:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE) else None)
    return buf.getvalue()


_NAMES = st.one_of(st.sampled_from(["art/m.json", "art/../x", "/abs", "art/sub/f", "art", "..", "art/./f", "a\\b",
                                    "other/f", "art/" + "n" * 200]), st.text(min_size=1, max_size=20))
_KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
                          tarfile.CHRTYPE])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=st.lists(st.tuples(_NAMES, _KINDS, st.binary(max_size=64)), min_size=1, max_size=5), data=st.data())
def test_upload_unpacker(members: list, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("u")
    dest = root / "dest"
    dest.mkdir()
    blob = bytearray(_tar(members))
    if data.draw(st.booleans()):  # and damaged archives
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    try:
        unpack_upload(bytes(blob), dest, max_bytes=1024)
    except InputFileError:
        pass
    outside = [p for p in root.rglob("*") if not p.is_relative_to(dest) and p != dest]
    assert outside == []
    assert not any(p.is_symlink() or not (p.is_file() or p.is_dir()) for p in dest.rglob("*"))
