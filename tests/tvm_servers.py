"""Starts real TVM RPC servers/trackers on loopback for the TVM tests, and stops what it started."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploypipe.backends.tvm.tune import stop_process_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


@contextmanager
def started(cmd: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 60,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group; on exit stop that group (the server's workers too)."""
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_listening(port, proc, timeout)
        yield proc
    finally:
        stop_process_group(proc)
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def started_together(servers: list[tuple[list[str], int, Path]], timeout: float = 60) -> Iterator[None]:
    """Several servers started at once (their imports overlap), each in its own process group, all
    stopped on exit; `servers` holds (command, port, log file)."""
    logs = [log.open("wb") for _, _, log in servers]
    procs = [subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
             for (cmd, _, _), out in zip(servers, logs, strict=True)]
    try:
        for (_, port, _), proc in zip(servers, procs, strict=True):
            wait_listening(port, proc, timeout)
        yield
    finally:
        for proc in procs:
            stop_process_group(proc)
        for out in logs:
            out.close()


def host_server(port: int, tracker: str | None = None, key: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
           "--port-end", str(port + 1)]
    return cmd + (["--tracker", tracker, "--key", key] if tracker and key else [])


def tracker(port: int) -> list[str]:
    return [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port),
            "--port-end", str(port + 1)]
