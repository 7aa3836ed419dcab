"""The compiler contract: `compile(model, ctx) -> CompileResult`, writing into a staging folder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from deploypipe.artifact import HostCheck
from deploypipe.data.metrics import UserMetric
from deploypipe.errors import UnsupportedError
from deploypipe.model import Model, TensorSpec
from deploypipe.targets import Precision, TargetSpec


@dataclass
class CompileContext:
    """What a compiler gets besides the model."""

    workdir: Path  # the staging artifact folder: write files here, relative paths in the result
    target: TargetSpec
    precision: Precision
    options: Any  # the target file's options for this compiler, validated into the compiler's `Options`
    tuning_dir: Path  # tuning_logs/<model>/<target>/ for compilers that tune
    progress: Callable[[str], None] = lambda _msg: None
    tune_trials: int = 0  # compilers that tune: reach this many trials in tuning_dir first (0: use it as is)
    # compilers that quantize themselves (OpenVINO's NNCF) judge by the build's gate and the user's metric
    tolerance: dict[str, float] = field(default_factory=dict)
    metric: tuple[str, UserMetric] | None = None


@dataclass
class CompileResult:
    """What a compiler produced. `kind` names the runner that loads it."""

    kind: str
    files: dict[str, str]  # role -> path relative to workdir ('model' is the main one)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    toolchain: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    host_check: HostCheck | None = None  # set when `kind` cannot run on the build host


class TuneRequest(BaseModel):
    """What a tuning compiler is asked for: reach `trials` measured schedules in the context's
    tuning folder (resuming), within `budget_s`, measuring on `device` (None: this host)."""

    model_config = ConfigDict(extra="forbid")
    trials: int = Field(ge=1)
    budget_s: float | None = Field(default=None, gt=0)
    trials_per_iter: int = Field(default=16, ge=1)
    device: str | None = None  # e.g. rpc://HOST:PORT or tracker://HOST:PORT/KEY for TVM
    retime: bool = False  # first time every record already in the database again, here and now


class TuningReport(BaseModel):
    """What one `tune` call did to a database."""

    work_dir: str
    target: str
    requested_trials: int
    records_before: int
    records_after: int
    seconds: float
    stopped: Literal["done", "budget", "already tuned"]
    measured_on: str  # where the candidates ran: this host, or the device
    retimed: int | None = None  # records timed again (--retime), None when not asked

    def summary(self) -> str:
        again = (f"re-timed {self.retimed} of {self.records_before} records on {self.measured_on}; "
                 if self.retimed is not None else "")
        if self.stopped == "already tuned":
            return again + (f"{self.work_dir}: holds {self.records_after} trials (>= {self.requested_trials} asked); "
                            "nothing tuned")
        new = self.records_after - (self.records_before if self.retimed is None else self.retimed)
        head = again + (f"tuned {new} trials in {self.seconds:.0f} s on {self.measured_on} "
                        f"for {self.target}: {self.work_dir} now holds {self.records_after}/{self.requested_trials}")
        if self.stopped == "budget":
            head += " (stopped by the time budget: run the same command again to resume)"
        return head



class NoOptions(BaseModel):
    """Options of a compiler that takes none: any key in the target file is an error."""

    model_config = ConfigDict(extra="forbid")


class Compiler(ABC):
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions  # `[compilers.<name>] options` of a target file
    # what input shapes an artifact can take: "dynamic" (any within the bounds), "profiles"
    # (min/opt/max ranges chosen at build), "set" (a listed set of fixed batch sizes, one compiled
    # model each, in one artifact), "fixed" (one static shape); `fixed_why` says why not dynamic
    shapes: ClassVar[Literal["dynamic", "profiles", "set", "fixed"]] = "fixed"
    fixed_why: ClassVar[str] = "this compiler builds static shapes only"
    extra: ClassVar[str]  # pip extra that installs the toolchain
    # precisions this compiler quantizes itself; others arrive already converted by generic passes
    native_precisions: ClassVar[frozenset[str]] = frozenset()

    def check(self, model: Model, ctx: CompileContext) -> None:
        """Raise UnsupportedError naming nodes and ops the target cannot run, before any work."""

    @abstractmethod
    def compile(self, model: Model, ctx: CompileContext) -> CompileResult: ...

    def tune(self, model: Model, ctx: CompileContext, request: TuneRequest) -> TuningReport:
        """Search schedules for this model into `ctx.tuning_dir` (compilers that tune override this)."""
        raise UnsupportedError(f"compiler {self.name} does not tune: only compilers with a schedule search do (tvm)")

    def versions(self) -> dict[str, str]:
        """Toolchain versions that make a build reproducible (part of the cache key)."""
        return {}
