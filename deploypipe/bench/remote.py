"""Benchmarking on another machine that has only deploypipe's runtime installed.

`deploypipe serve-runtime --port P` listens on a TCP socket; `deploypipe bench --remote host:port`
ships each artifact folder (tar.gz) with the bench config, the server measures it with the same
worker process as a local bench, and the result comes back labelled with the remote host.

Transport: deploypipe.net frames (shared-token handshake, HMAC-tagged frames, read deadlines, a
bound on clients). Request: a JSON header frame, then the tar frame. While it works the server
sends {"alive": true} every few seconds, so a client notices a dead or silent server within its
`--remote-timeout` instead of the whole run's timeout; then {"ok": true, "result": BenchResult}
or {"ok": false, "error": "..."}. Threat model: docs/bench.md.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from deploypipe import net
from deploypipe.bench.results import BenchConfig, BenchResult
from deploypipe.errors import UserError

HEADER_LIMIT = 1 << 20
HEARTBEAT_S = 5.0
MAX_RUN_S = 900.0  # a client cannot make the server run one artifact longer than this
MAX_MEMBERS = 10_000
TIMEOUT_ENV = "DEPLOYPIPE_REMOTE_TIMEOUT"


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder.resolve(), arcname=folder.name)  # resolve: a versioned artifact is a symlink
    return buf.getvalue()


def parse_address(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--remote '{addr}': expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def default_timeout() -> float:
    """Seconds a client waits for any sign of life from the server (DEPLOYPIPE_REMOTE_TIMEOUT, else 30)."""
    try:
        value = float(os.environ.get(TIMEOUT_ENV) or 30.0)
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: expected seconds") from None
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV}={value:g}: must be positive")
    return value


def bench_remote(addr: str, path: Path, cfg: BenchConfig, timeout_s: float | None = None,
                 token_file: Path | None = None) -> BenchResult:
    """Ship one artifact folder to a `serve-runtime` server and return its labelled result."""
    host, port = parse_address(addr)
    wait = timeout_s or default_timeout()
    upload = _pack(path)
    header = json.dumps({"config": cfg.model_dump(), "name": path.name, "bytes": len(upload)}).encode()
    token = net.client_token(token_file)
    deadline = time.monotonic() + cfg.timeout_s + 120
    try:
        channel = net.connect(host, port, token, timeout=max(wait, 60.0), connect_timeout=min(wait, 10.0))
        with channel.sock:
            channel.send(header)
            reply = json.loads(channel.recv(HEADER_LIMIT, wait=wait))  # {"ready": true} or a refusal
            if reply.get("ready"):
                channel.send(upload)
            while reply.get("ready") or reply.get("alive"):
                reply = json.loads(channel.recv(1 << 30, wait=wait))
                if time.monotonic() > deadline:
                    raise TimeoutError(f"still running after {cfg.timeout_s + 120:g} s")
    except TimeoutError as exc:
        raise UserError(f"remote {addr}: no answer ({exc}); a serve-runtime sends a heartbeat every "
                        f"{HEARTBEAT_S:g} s, so it is gone or not a deploypipe server") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"remote {addr}: {exc}") from None
    if not reply.get("ok"):
        raise UserError(f"remote {addr}: {reply.get('error', 'unknown error')}")
    result = BenchResult.model_validate(reply["result"])
    result.artifact, result.remote = str(path), addr
    return result


