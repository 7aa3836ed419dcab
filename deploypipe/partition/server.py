"""The cloud half as a real TCP server (`deploypipe serve CLOUD_ARTIFACT`).

One thread per connection, up to `max_clients`; each request names the cloud model to run (a server
may hold several, e.g. the cloud halves of every cut in a sweep) and carries the crossing tensors.
Inference is serialized per model with a lock, as one accelerator would serialize it. Clients
authenticate with the shared token (deploypipe.net) unless the server runs `--insecure-no-auth` on
loopback; each tensor must have the shape and dtype its model takes, so a frame can never inflate
past the size the model's inputs fix (dynamic dims are bounded by `max_frame_bytes`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploypipe import net
from deploypipe.analysis import reference
from deploypipe.errors import InputFileError
from deploypipe.partition import wire
from deploypipe.partition.plan import load_plan

Executor = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def ort_executor(model: str | Path | bytes, threads: int = 1) -> Executor:
    """Run an ONNX file (or serialized model) with ONNX Runtime, fully optimized."""
    sess = reference.session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds), strict=True))


@dataclass(frozen=True)
class Served:
    """A model the server runs, with the inputs it takes (None: not known, only the byte cap holds)."""

    run: Executor
    inputs: wire.Expect | None = None


def _expect(specs: list) -> wire.Expect:  # list[TensorSpec]
    return {s.name: (tuple(s.shape), s.dtype) for s in specs}


def onnx_inputs(model: str | Path | bytes) -> wire.Expect:
    """The graph inputs (initializers excluded) of an ONNX model, as the server checks them."""
    import onnx

    from deploypipe.model import specs_of

    proto = onnx.load_model_from_string(model) if isinstance(model, bytes) else onnx.load_model(str(model), load_external_data=False)
    return _expect(specs_of(list(proto.graph.input), skip={i.name for i in proto.graph.initializer}))


def _static_bytes(inputs: wire.Expect | None) -> int | None:
    """Bytes the inputs take when every dim is fixed, else None."""
    if inputs is None or any(d is None for shape, _ in inputs.values() for d in shape):
        return None
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt in inputs.values())


def load_executors(paths: list[Path], threads: int | None, stack: ExitStack) -> dict[str, Served]:
    """Models keyed by name: an artifact folder runs with its own runner, an .onnx file with ORT,
    a split build folder serves its cloud artifact (as 'cloud', the name its plan gives edges)."""
    from deploypipe.backends import load as load_runner
    from deploypipe.backends.runner import RunOptions

    out: dict[str, Served] = {}
    for path in paths:
        key = path.stem if path.suffix == ".onnx" else path.name
        if (path / "plan.json").is_file():

            cloud = load_plan(path).cloud
            if cloud is None:
                raise InputFileError(f"{path}: this split runs entirely on the edge; there is nothing to serve")
            key, path = cloud, path / cloud
        if path.is_dir():
            runner = stack.enter_context(load_runner(path, RunOptions(threads=threads), host_check=True))
            out[key] = Served(lambda feeds, r=runner: r.infer(feeds), _expect(runner.artifact.manifest.inputs))
        elif path.suffix == ".onnx" and path.is_file():
            out[key] = Served(ort_executor(path, threads or 0), onnx_inputs(path))
        else:
            raise InputFileError(f"{path}: not an artifact folder or .onnx file")
    return out


class Batcher:
    """Dynamic batching of one model: concurrent requests wait up to `max_wait_ms` for others,
    up to `max_batch` rows are stacked along dim 0, run once, and the outputs split back. The
    model must take a dynamic batch (its inputs' dim 0); each request keeps its own rows."""

    def __init__(self, run: Executor, max_batch: int, max_wait_ms: float) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self.queue: queue.Queue[tuple[dict[str, np.ndarray], Future[dict[str, np.ndarray]]]] = queue.Queue()
        self.runs = self.rows = 0  # inferences run and rows they held (a long-lived server keeps no list)
        threading.Thread(target=self._loop, daemon=True, name="serve-batcher").start()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        done: Future[dict[str, np.ndarray]] = Future()
        self.queue.put((feeds, done))
        return done.result()

    def _loop(self) -> None:
        while True:
            group = [self.queue.get()]
            rows = len(next(iter(group[0][0].values())))
            deadline = time.monotonic() + self.max_wait
            while rows < self.max_batch:
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                group.append(item)
                rows += len(next(iter(item[0].values())))
            self._run(group)

    def _run(self, group: list[tuple[dict[str, np.ndarray], Future[dict[str, np.ndarray]]]]) -> None:
        try:
            stacked = {k: np.concatenate([feeds[k] for feeds, _ in group]) for k in group[0][0]}
            outs = self.run(stacked)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error back
            for _, done in group:
                done.set_exception(exc)
            return
        self.runs += 1
        self.rows += len(next(iter(stacked.values())))
        start = 0
        for feeds, done in group:
            n = len(next(iter(feeds.values())))
            done.set_result({k: v[start:start + n] for k, v in outs.items()})
            start += n


class CloudServer:
    """Serves `models` on host:port; `serve_forever()` until `shutdown()` (from another thread).
    With `max_batch` > 1, requests to a model that takes a dynamic batch are batched."""

    def __init__(self, models: dict[str, Served | Executor], host: str = "127.0.0.1", port: int = 0, *,
                 token_file: Path | None = None, insecure_no_auth: bool = False, max_clients: int = 16,
                 client_timeout: float = 60.0, max_batch: int = 1, max_wait_ms: float = 2.0,
                 max_frame_bytes: int = 256 << 20, log: Callable[[str], None] | None = None) -> None:
        if not models:
            raise InputFileError("serve needs at least one cloud model")
        self.models = {k: m if isinstance(m, Served) else Served(m) for k, m in models.items()}
        self.batchers = {k: Batcher(m.run, max_batch, max_wait_ms) for k, m in self.models.items()
                         if max_batch > 1 and m.inputs and all(shape[0] is None for shape, _ in m.inputs.values())}
        self.executors = {k: m.run for k, m in self.models.items()}
        self.default = next(iter(models))
        self.locks = {k: threading.Lock() for k in models}
        self.stats_lock = threading.Lock()
        self.served = self.rejected = 0
        # what each model's inputs decode to at most: fixed by their shapes, else the option's cap
        self.max_decoded = {k: _static_bytes(m.inputs) or max_frame_bytes for k, m in self.models.items()}
        top = max(self.max_decoded.values())
        self.frame_limit = top + top // 100 + (64 << 10) + wire.MAX_HEADER  # + codec and header overhead
        self.server = net.BoundedServer(host, port, self._handle, token_file=token_file,
                                        insecure_no_auth=insecure_no_auth, max_clients=max_clients,
                                        client_timeout=client_timeout, name="serve", log=log)

    @property
    def port(self) -> int:
        return self.server.port

    def _handle(self, channel: net.Channel, peer: str) -> int:
        """Requests of one connection until it closes; a bad frame gets an error reply (the edge
        falls back) and one log line; a broken connection ends the loop."""
        n = 0
        while True:
            try:
                payload = channel.recv(self.frame_limit, wait=self.server.client_timeout)
            except net.Closed:
                return n
            header, outputs, error = self._answer(payload)
            if error is not None:
                with self.stats_lock:
                    self.rejected += 1
                self.server.log(f"serve: {peer}: request refused: {error}")
            with self.stats_lock:
                self.served += 1
            n += 1
            channel.send(wire.pack({"id": header.get("id"), **({"error": error} if error else {})}, outputs))

    def _answer(self, payload: bytes) -> tuple[dict, dict[str, np.ndarray], str | None]:
        header: dict = {}
        try:
            header, _ = wire.parse(payload)
            name = header.get("model") or self.default
            model = self.models.get(name) if isinstance(name, str) else None
            if model is None:
                return header, {}, f"no model '{str(name)[:60]}' on this server; it holds {', '.join(self.models)}"
            _, tensors = wire.unpack(payload, self.max_decoded[name], model.inputs)
        except net.ProtocolError as exc:
            return header, {}, str(exc)
        try:
            if name in self.batchers:
                return header, self.batchers[name](tensors), None
            with self.locks[name]:
                return header, model.run(tensors), None
        except Exception as exc:  # noqa: BLE001 - the error goes back to the client, the server lives on
            return header, {}, f"{type(exc).__name__}: {exc}"

    def serve_forever(self) -> None:
        self.server.serve()

    def shutdown(self) -> None:
        self.server.shutdown()

    def server_close(self) -> None:
        self.server.shutdown()
