"""The compiler contract: `compile(model, ctx) -> CompileResult`, writing into a staging folder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deploypipe.artifact import HostCheck
from deploypipe.model import Model, TensorSpec
from deploypipe.targets import Precision, TargetSpec


@dataclass
class CompileContext:
    """What a compiler gets besides the model."""

    workdir: Path  # the staging artifact folder: write files here, relative paths in the result
    target: TargetSpec
    precision: Precision
    options: dict[str, Any]  # the target file's options for this compiler (validate them)
    tuning_dir: Path  # tuning_logs/<model>/<target>/ for compilers that tune
    progress: Callable[[str], None] = lambda _msg: None
    tune_trials: int = 0  # compilers that tune: reach this many trials in tuning_dir first (0: use it as is)


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


class Compiler(ABC):
    name: ClassVar[str]
    extra: ClassVar[str]  # pip extra that installs the toolchain
    # precisions this compiler quantizes itself; others arrive already converted by generic passes
    native_precisions: ClassVar[frozenset[str]] = frozenset()

    def check(self, model: Model, ctx: CompileContext) -> None:
        """Raise UnsupportedError naming nodes and ops the target cannot run, before any work."""

    @abstractmethod
    def compile(self, model: Model, ctx: CompileContext) -> CompileResult: ...

    def versions(self) -> dict[str, str]:
        """Toolchain versions that make a build reproducible (part of the cache key)."""
        return {}
