"""The edge side of the split runtime: run the edge half, ship the crossing tensors, get the result.

The link is emulated on the sending side: a token bucket paces the bytes at the uplink rate and a
one-way delay of RTT/2 is added each way (no root or network namespace needed, so it works on any
host). On a refused connection, a dropped one or a timeout the edge runs the *whole* model locally
(the fallback), so every request is answered; counters say how often that happened. The client
authenticates with the server's token (deploypipe.net: `token_file`, else DEPLOYPIPE_TOKEN_FILE,
else the default path a server on this machine writes); a persistent connection the server closed
while idle is reopened once before a request falls back.

An edge device slower than this host can be emulated with `edge_slowdown`: each local compute is
padded with sleep to `slowdown x` its measured time (the edge half and the fallback alike).
"""

from __future__ import annotations

import itertools
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploypipe import net
from deploypipe.partition import wire
from deploypipe.partition.plan import load_plan
from deploypipe.partition.server import Executor

_CHUNK = 16 * 1024


class TokenBucket:
    """Paces a byte stream at `rate_bps` bits/s with a burst of one chunk."""

    def __init__(self, rate_mbps: float, burst: int = _CHUNK) -> None:
        self.rate = rate_mbps * 1e6 / 8  # bytes per second
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.perf_counter()

    def take(self, n: int) -> None:
        now = time.perf_counter()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < n:
            time.sleep((n - self.tokens) / self.rate)
            self.stamp = time.perf_counter()
            self.tokens = 0.0
        else:
            self.tokens -= n


@dataclass(frozen=True)
class Link:
    """An emulated uplink: bandwidth in Mbit/s and round-trip time in ms."""

    uplink_mbps: float
    rtt_ms: float

    def send(self, sock: socket.socket, data: bytes) -> None:
        time.sleep(self.rtt_ms / 2e3)
        bucket = TokenBucket(self.uplink_mbps)
        view = memoryview(data)
        for i in range(0, len(data), _CHUNK):
            chunk = view[i:i + _CHUNK]
            bucket.take(len(chunk))
            sock.sendall(chunk)

    def delay_reply(self) -> None:
        time.sleep(self.rtt_ms / 2e3)


@dataclass
class RequestRecord:
    """How one request was served, with its measured times (ms)."""

    id: int
    path: str  # "split" | "edge-only" | "fallback"
    edge_ms: float
    remote_ms: float  # send + cloud + reply, as seen by the edge
    total_ms: float
    sent_bytes: int
    error: str | None = None


@dataclass
class ClientStats:
    requests: int = 0
    split: int = 0
    fallbacks: int = 0
    errors: list[str] = field(default_factory=list)


class EdgeClient:
    """Runs `edge` here, sends its outputs to the cloud model `model` at host:port over `link`.

    `edge=None` is cloud-only (the raw inputs are sent); `full` is the whole model for fallback.
    """

    def __init__(self, full: Executor, edge: Executor | None, link: Link, host: str = "127.0.0.1",
                 port: int = 0, model: str | None = None, codec: str = "none", timeout_s: float = 5.0,
                 edge_slowdown: float = 1.0, remote: bool = True, token_file: Path | None = None,
                 max_reply_bytes: int = 1 << 30) -> None:
        self.full, self.edge, self.link = full, edge, link
        self.addr = (host, port)
        self.model, self.codec, self.timeout = model, codec, timeout_s
        self.slowdown = edge_slowdown
        self.remote = remote  # False: edge-only, nothing is sent
        self.channel: net.Channel | None = None
        self.token_file, self.max_reply = token_file, max_reply_bytes
        self.ids = itertools.count()
        self.stats = ClientStats()
        self.resources: ExitStack | None = None  # runners kept active for the client's lifetime

    def _local(self, ex: Executor, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        t0 = time.perf_counter()
        out = ex(feeds)
        spent = time.perf_counter() - t0
        if self.slowdown > 1.0:
            time.sleep(spent * (self.slowdown - 1.0))
        return out, (time.perf_counter() - t0) * 1e3

    def _connect(self) -> net.Channel:
        if self.channel is None:
            token = net.client_token(self.token_file)  # read at connect: the server may have created it just now
            self.channel = net.connect(*self.addr, token, timeout=self.timeout, connect_timeout=self.timeout)
        return self.channel

    def _drop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def _exchange(self, payload: bytes, rid: int) -> dict[str, np.ndarray]:
        """Send one request and read its reply; a reused connection found closed is reopened once."""
        retry = self.channel is not None
        while True:
            channel = self._connect()
            try:
                self.link.send(channel.sock, channel.seal(payload))
                reply = channel.recv(self.max_reply + wire.MAX_HEADER)
                break
            except (net.Closed, ConnectionResetError, BrokenPipeError):
                self._drop()
                if not retry:
                    raise
                retry = False  # the server closed an idle connection: not a failure of this request
        header, outputs = wire.unpack(reply, self.max_reply)
        self.link.delay_reply()
        if header.get("id") != rid:
            raise net.ProtocolError(f"reply for request {header.get('id')}, expected {rid}")
        if "error" in header:
            raise RuntimeError(f"cloud error: {header['error']}")
        return outputs

    def infer(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], RequestRecord]:
        """Answer one request: split if the server answers in time, else the whole model here."""
        rid = next(self.ids)
        self.stats.requests += 1
        t0 = time.perf_counter()
        if not self.remote:
            out, ms = self._local(self.full, feeds)
            return out, RequestRecord(rid, "edge-only", ms, 0.0, ms, 0)
        mid, edge_ms = self._local(self.edge, feeds) if self.edge is not None else (feeds, 0.0)
        t1 = time.perf_counter()
        frame = wire.pack({"id": rid, "model": self.model}, mid, self.codec)
        try:
            outputs = self._exchange(frame, rid)
        except (OSError, RuntimeError) as exc:  # refused, reset, timeout, protocol, cloud-side error
            wasted = (time.perf_counter() - t1) * 1e3
            self._drop()
            self.stats.fallbacks += 1
            self.stats.errors.append(f"request {rid}: {type(exc).__name__}: {exc}")
            out, ms = self._local(self.full, feeds)
            total = (time.perf_counter() - t0) * 1e3
            return out, RequestRecord(rid, "fallback", edge_ms + ms, wasted, total, 0, error=str(exc))
        remote_ms = (time.perf_counter() - t1) * 1e3
        self.stats.split += 1
        return outputs, RequestRecord(rid, "split", edge_ms, remote_ms, (time.perf_counter() - t0) * 1e3, len(frame))

    def close(self) -> None:
        self._drop()
        if self.resources is not None:
            self.resources.close()


def plan_client(path: Path, link: Link, host: str = "127.0.0.1", port: int = 0, codec: str = "none",
                timeout_s: float = 5.0, threads: int | None = None, token_file: Path | None = None) -> EdgeClient:
    """An edge client for a split build folder: its edge half and its whole-model fallback."""
    from deploypipe.backends.runner import RunOptions
    from deploypipe.backends import load as load_runner

    plan = load_plan(path)
    stack = ExitStack()

    def executor(role: str) -> Executor:
        runner = stack.enter_context(load_runner(Path(path) / role, RunOptions(threads=threads), host_check=True))
        return lambda feeds: runner.infer(feeds, check=False)

    try:
        full = executor(plan.edge_full)
        edge = executor(plan.edge) if plan.edge else None
    except BaseException:
        stack.close()
        raise
    client = EdgeClient(full, edge, link, host, port, model=plan.cloud, codec=codec, timeout_s=timeout_s,
                        remote=plan.cloud is not None, token_file=token_file)
    client.resources = stack
    return client
