"""The runner contract (activate / infer / deactivate, a context manager), as Polygraphy has it.

The bench talks only to this interface, whatever the backend.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from deploypipe.model import check_feeds

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threads: int | None = None  # None: the runtime's default
    profile: bool = False  # collect per-layer timings where the backend can
    # where to run instead of this host, for runners that can reach a device themselves:
    # "rpc://HOST:PORT", "tracker://HOST:PORT/KEY" (TVM RPC), or "qemu" (a library for another CPU
    # run here under user-mode emulation: correctness only, never a device timing)
    device: str | None = None


def physical_cores() -> int:
    """The physical cores this process may run on (SMT siblings counted once): what ONNX Runtime
    and OpenVINO use by default, so a runtime whose own default differs is given this."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("", str(cpu)))
    return max(len(cores), 1)


class LayerTime(BaseModel):
    """One layer's time in a per-layer profile."""

    name: str
    op: str
    ms: float


class Runner(ABC):
    kind: ClassVar[str]
    library: ClassVar[str]  # the runtime's Python module, imported alone to time library load

    def __init__(self, artifact: Artifact, options: RunOptions, model_file: str | None = None) -> None:
        self.artifact = artifact
        self.options = options
        # the file to run: the artifact's own model, or a host stand-in named by the manifest
        self.model_path: Path = artifact.path / model_file if model_file else artifact.file("model")
        self.active = False

    @classmethod
    def why_not_runnable(cls, artifact: Artifact) -> str | None:
        """None if this host can run the artifact (runtime importable, hardware present)."""
        return None

    @classmethod
    def on_gpu(cls, artifact: Artifact) -> bool:
        """Whether runs of this artifact happen on a GPU (the bench then reads GPU power)."""
        return False

    @classmethod
    def runs_elsewhere(cls, options: RunOptions) -> bool:
        """Whether `options.device` moves the runs off this host's own execution (runners that
        reach devices or emulators themselves say so)."""
        return False

    @abstractmethod
    def activate(self) -> None: ...

    @abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, feeds: dict[str, np.ndarray], check: bool = True) -> dict[str, np.ndarray]:
        """Run once. Feeds are checked against the manifest so shape errors read as one line."""
        if check:
            check_feeds(self.artifact.manifest.inputs, feeds)
        return self._infer(feeds)

    def deactivate(self) -> None:
        self.active = False

    def where(self) -> str | None:
        """Where the runs happen when not on this host (a remote device), for the results' label."""
        return None

    def under_emulation(self) -> bool:
        """True when the runs are emulated (qemu): their timings describe no device at all."""
        return False

    def layer_profile(self) -> list[LayerTime] | None:
        """Per-layer times of the runs since activation, if the backend gives them."""
        return None

    def trace_events(self) -> list[dict[str, Any]] | None:
        """The backend's own Chrome trace events of the profiled runs, if it writes them (read
        after `layer_profile`); otherwise a trace is laid out from the per-layer times."""
        return None

    def __enter__(self) -> Runner:
        self.activate()
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()
