"""Benchmarking on another machine that has only deploypipe's runtime installed.

`deploypipe serve-runtime --port P` listens on a TCP socket; `deploypipe bench --remote host:port`
ships each artifact folder (tar) with the bench config, the server measures it with the same
worker process as a local bench, and the result comes back labelled with the remote host.

Wire format, both ways: 8-byte big-endian length + payload. Request: JSON header, then the tar.
Reply: JSON {"ok": true, "result": BenchResult} or {"ok": false, "error": "..."}.
The server is for a trusted network (a lab bench): it runs only deploypipe's worker on what it
receives, unpacks it refusing absolute paths, "..", links and devices (plus tarfile's "data"
filter where Python has it), and caps the upload size.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from deploypipe.bench.results import BenchConfig, BenchResult
from deploypipe.errors import InputFileError, UserError

_LEN = struct.Struct(">Q")


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket, limit: int) -> bytes:
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if n > limit:
        raise InputFileError(f"message of {n} bytes exceeds the server's limit of {limit} bytes")
    return _recv_exact(sock, n)


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def parse_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise UserError(f"--remote '{addr}': expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def bench_remote(addr: str, path: Path, cfg: BenchConfig, timeout_s: float | None = None) -> BenchResult:
    """Ship one artifact folder to a `serve-runtime` server and return its labelled result."""
    host, port = parse_address(addr)
    header = json.dumps({"config": cfg.model_dump(), "name": path.name}).encode()
    try:
        with socket.create_connection((host, port), timeout=timeout_s or cfg.timeout_s + 60) as sock:
            _send(sock, header)
            _send(sock, _pack(path))
            reply = json.loads(_recv(sock, 1 << 30))
    except OSError as exc:
        raise UserError(f"remote {addr}: {exc}") from exc
    if not reply.get("ok"):
        raise UserError(f"remote {addr}: {reply.get('error', 'unknown error')}")
    result = BenchResult.model_validate(reply["result"])
    result.artifact, result.remote = str(path), addr
    return result


def _handle(conn: socket.socket, max_bytes: int) -> None:
    from deploypipe.bench.context import run_context
    from deploypipe.bench.run import bench_one

    try:
        header = json.loads(_recv(conn, 1 << 20))
        cfg = BenchConfig.model_validate(header["config"])
        data = _recv(conn, max_bytes)
        with tempfile.TemporaryDirectory(prefix="deploypipe-remote-") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                safe_extract(tar, Path(tmp))
            folders = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(folders) != 1:
                raise InputFileError("upload must hold exactly one artifact folder")
            result = bench_one(folders[0], cfg)
        ctx = run_context()
        if result.ran:
            result.where = f"measured on {ctx['host']} ({ctx['cpu']}) by serve-runtime"
        reply = {"ok": True, "result": result.model_dump()}
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the client as one line
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    _send(conn, json.dumps(reply).encode())


def safe_extract(tar: tarfile.TarFile, dest: Path, use_filter: bool | None = None) -> None:
    """Unpack an uploaded artifact without letting it write outside `dest`: plain files and folders
    only, no absolute paths, no "..", no links; then tarfile's "data" filter on top where this
    Python has it (3.11.4+; Debian 12's Python is 3.11.2, where `filter=` is a TypeError)."""
    if use_filter is None:
        use_filter = hasattr(tarfile, "data_filter")
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or not (member.isfile() or member.isdir()):
            raise InputFileError(f"upload refused: unsafe archive member {member.name!r}")
        member.mode &= 0o755  # no set-uid/set-gid bits, as the data filter does
    if use_filter:
        tar.extractall(dest, filter="data")
    else:
        tar.extractall(dest)


def serve(host: str = "127.0.0.1", port: int = 0, max_requests: int | None = None,
          idle_timeout_s: float | None = None, max_upload_mb: float = 2048,
          on_ready: Callable[[str, int], None] | None = None) -> int:
    """Serve bench requests one at a time; stops after `max_requests` or `idle_timeout_s` without
    a connection. Returns the number of requests served."""
    served = 0
    with socket.create_server((host, port)) as srv:
        srv.settimeout(idle_timeout_s)
        if on_ready:
            on_ready(*srv.getsockname()[:2])
        while max_requests is None or served < max_requests:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                break
            with conn:
                conn.settimeout(None)
                _handle(conn, int(max_upload_mb * 2**20))
            served += 1
    return served
