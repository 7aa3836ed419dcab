"""The cloud half as a real TCP server (`deploypipe serve CLOUD_ARTIFACT`).

One thread per connection; each request names the cloud model to run (a server may hold several,
e.g. the cloud halves of every cut in a sweep) and carries the crossing tensors. Inference is
serialized per model with a lock, as one accelerator would serialize it. Binds 127.0.0.1 unless
told otherwise: the protocol has no authentication.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from deploypipe.analysis import reference
from deploypipe.errors import InputFileError
from deploypipe.partition import wire

Executor = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def ort_executor(model: str | Path | bytes, threads: int = 1) -> Executor:
    """Run an ONNX file (or serialized model) with ONNX Runtime, fully optimized."""
    sess = reference.session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds), strict=True))


def load_executors(paths: list[Path], threads: int | None, stack: ExitStack) -> dict[str, Executor]:
    """Executors keyed by name: an artifact folder runs with its own runner, an .onnx file with ORT,
    a split build folder serves its cloud artifact (as 'cloud', the name its plan gives edges)."""
    from deploypipe.backends.runner import RunOptions
    from deploypipe.backends import load as load_runner

    out: dict[str, Executor] = {}
    for path in paths:
        key = path.stem if path.suffix == ".onnx" else path.name
        if (path / "plan.json").is_file():
            from deploypipe.partition.build import load_plan

            cloud = load_plan(path)["cloud"]
            if cloud is None:
                raise InputFileError(f"{path}: this split runs entirely on the edge; there is nothing to serve")
            key, path = cloud, path / cloud
        if path.is_dir():
            runner = stack.enter_context(load_runner(path, RunOptions(threads=threads), host_check=True))
            out[key] = lambda feeds, r=runner: r.infer(feeds)
        elif path.suffix == ".onnx" and path.is_file():
            out[key] = ort_executor(path, threads or 0)
        else:
            raise InputFileError(f"{path}: not an artifact folder or .onnx file")
    return out


class _Handler(socketserver.BaseRequestHandler):
    server: CloudServer

    def handle(self) -> None:
        while True:
            try:
                header, tensors = wire.recv(self.request)
            except (ConnectionError, OSError):
                return
            reply: dict[str, object] = {"id": header.get("id")}
            outputs: dict[str, np.ndarray] = {}
            name = header.get("model") or self.server.default
            ex = self.server.executors.get(name)
            if ex is None:
                reply["error"] = f"no model '{name}' on this server; it holds {', '.join(self.server.executors)}"
            else:
                try:
                    with self.server.locks[name]:
                        outputs = ex(tensors)
                except Exception as exc:  # noqa: BLE001 - the error goes back to the client, the server lives on
                    reply["error"] = f"{type(exc).__name__}: {exc}"
            with self.server.stats_lock:
                self.server.served += 1
            try:
                self.request.sendall(wire.pack(reply, outputs))
            except OSError:
                return


class CloudServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, executors: dict[str, Executor], host: str = "127.0.0.1", port: int = 0) -> None:
        if not executors:
            raise InputFileError("serve needs at least one cloud model")
        self.executors = executors
        self.default = next(iter(executors))
        self.locks = {k: threading.Lock() for k in executors}
        self.stats_lock = threading.Lock()
        self.served = 0
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]
