"""Where a campaign's builds run: one after another (`serial`), a local process pool (`pool`, the
default), or a Ray cluster (`ray` starts a local one, `ray://HOST:PORT` joins one).

Only builds fan out. Measurements are never handed to an executor: the campaign runs them one at a
time, after the builds, in its own process, so no two measurements (and no build) share the cores
while a latency is timed. Workers get the build function by reference (`module:function`), so a Ray
worker imports the same deploypipe as the driver (its folder is put on the workers' PYTHONPATH).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deploypipe.errors import MissingBackendError, UserError

Task = Callable[[dict[str, Any]], dict[str, Any]]


class Executor(ABC):
    """Runs a task on many inputs and yields (input, output) as each finishes."""

    name: str

    def __init__(self, workers: int) -> None:
        self.workers = workers

    @abstractmethod
    def map_unordered(self, task: Task, items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]: ...

    def close(self) -> None:
        """Release what the executor started."""

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class Serial(Executor):
    name = "serial"

    def map_unordered(self, task: Task, items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for item in items:
            yield item, task(item)


def _share_cores(threads: int) -> None:
    """Runs first in each pool worker, before torch or NumPy load: their thread pools get the
    worker's share of the cores (as Ray does for a task of one CPU), so N workers do not each start
    a thread per core and fight over them."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)


class Pool(Executor):
    """A local process pool (spawned processes: a forked copy of a process that has loaded ONNX
    Runtime or torch threads is not safe), each worker with its share of the cores."""

    name = "pool"

    def map_unordered(self, task: Task, items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        share = max(1, _cores() // self.workers)
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_share_cores, initargs=(share,)) as pool:
            futures = {pool.submit(task, item): item for item in items}
            try:
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
            finally:
                for fut in futures:
                    fut.cancel()


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


class Ray(Executor):
    """Ray tasks, one CPU each. Joins the Ray instance already running in this process if there is
    one, else starts a local one (`ray`) or connects to `ray://HOST:PORT`. On a cluster the output
    folder must be storage every node sees: Ray moves task results, not the files a task writes."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None) -> None:
        super().__init__(workers)
        self.address = address
        self._started = False

    def _ray(self) -> Any:
        try:
            import ray
        except ImportError:
            raise MissingBackendError("ray", "cluster", "needed by --executor ray") from None
        if not ray.is_initialized():
            env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, (_package_root(), os.environ.get("PYTHONPATH"))))}}
            kwargs: dict[str, Any] = {"address": self.address} if self.address else {"num_cpus": self.workers}
            ray.init(runtime_env=env, include_dashboard=False, log_to_driver=False, **kwargs)
            self._started = True
        return ray

    def map_unordered(self, task: Task, items: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        ray = self._ray()
        remote = ray.remote(num_cpus=1, max_retries=0)(task)
        pending = {remote.remote(item): item for item in items}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                yield pending.pop(done[0]), ray.get(done[0])
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def describe(self) -> str:
        return f"ray {self.address or 'local'} ({self.workers} CPUs)" if not self.address else f"ray {self.address}"


def _cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def make(spec: str, workers: int | None = None) -> Executor:
    """`serial`, `pool` or `ray[://HOST:PORT]`; workers default to the cores this process may use."""
    n = workers or _cores()
    if n < 1:
        raise UserError(f"--workers {n}: must be at least 1")
    if spec == "serial":
        return Serial(1)
    if spec == "pool":
        return Pool(n)
    if spec == "ray":
        return Ray(n)
    if spec.startswith("ray://") and len(spec) > len("ray://"):
        return Ray(n, spec)
    raise UserError(f"--executor '{spec}': expected serial, pool, ray or ray://HOST:PORT")
