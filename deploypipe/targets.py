"""Device specs loaded from `targets/*.toml`, and the capability checks done before any work.

A target file says which compilers can build for the device, which precisions the hardware really
runs with each compiler (the capability matrix), why a precision is impossible there, and the
device figures (each with its source) that the cost model and the bench's per-watt/per-dollar
columns need. Adding a device is adding a file.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploypipe.errors import InputFileError, UnknownNameError, UnsupportedError
from deploypipe.isa import Isa, host_isa, saturates_u8s8

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")
# Automatic adaptation only ever moves towards *more* numeric precision: never silently lower it.
_SAFER: dict[str, Precision] = {"int8": "fp16", "fp16": "fp32"}


class Figure(BaseModel):
    """A device figure with its unit and where it comes from."""

    model_config = ConfigDict(extra="forbid")
    value: float
    unit: str
    source: str


class CompilerSupport(BaseModel):
    """What one compiler can produce for this device."""

    model_config = ConfigDict(extra="forbid")
    precisions: list[Precision]
    options: dict[str, Any] = Field(default_factory=dict)  # validated by the backend's own model


class TargetSpec(BaseModel):
    """One device."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    category: Literal["host", "cpu-edge", "gpu-edge", "asic-edge", "fpga", "server"]
    arch: str
    runs_here: bool = False  # artifacts for it execute natively on this x86-64 build host
    default_compiler: str
    default_precision: Precision = "fp32"
    compilers: dict[str, CompilerSupport]
    unsupported: dict[str, str] = Field(default_factory=dict)  # precision -> why the hardware can't
    int8_isa: Isa | None = None  # what runs its INT8 dot products (deploypipe.isa); None: this host's
    figures: dict[str, Figure] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    def figure(self, key: str) -> Figure | None:
        return self.figures.get(key)

    def resolve(
        self, compiler: str | None, precision: Precision | None, strict: bool = False
    ) -> Resolution:
        """Pick compiler and precision, adapting or refusing impossible combinations up front."""
        name = compiler or self.default_compiler
        if name not in self.compilers:
            raise UnsupportedError(
                f"target {self.name} cannot be built with compiler '{name}'; "
                f"its compilers are: {', '.join(self.compilers)}"
            )
        wanted: Precision = precision or self.default_precision
        supported = self.compilers[name].precisions
        notes: list[str] = []
        chosen: Precision | None = wanted
        while chosen is not None and chosen not in supported:
            chosen = _SAFER.get(chosen)
        if chosen != wanted:
            why = self.unsupported.get(
                wanted, f"compiler {name} supports only {', '.join(supported)} for {self.name}"
            )
            if strict or chosen is None:
                raise UnsupportedError(f"{wanted} is not possible on {self.name}: {why}")
            notes.append(f"requested {wanted}, built {chosen} instead: {why}")
        assert chosen is not None
        return Resolution(compiler=name, precision=chosen, requested=wanted, notes=notes)


class Resolution(BaseModel):
    """The compiler/precision a build will really use, and why it differs from the request."""

    compiler: str
    precision: Precision
    requested: Precision
    notes: list[str]


def _targets_dir() -> Path:
    """`targets/` beside the package in a checkout, else the copy shipped inside the wheel."""
    checkout = Path(__file__).resolve().parent.parent / "targets"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("deploypipe._targets")))


def load_file(path: Path) -> TargetSpec:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputFileError(f"target file {path}: {exc}") from exc
    try:
        return TargetSpec(**data)
    except ValidationError as exc:
        raise InputFileError(f"target file {path} is invalid: {exc}") from exc


@functools.cache
def all_targets() -> dict[str, TargetSpec]:
    specs = {}
    for path in sorted(_targets_dir().glob("*.toml")):
        spec = load_file(path)
        if spec.name != path.stem:
            raise InputFileError(f"target file {path} declares name '{spec.name}'")
        specs[spec.name] = spec
    return specs


def get(name: str) -> TargetSpec:
    specs = all_targets()
    if name not in specs:
        raise UnknownNameError("target", name, specs)
    return specs[name]


def target_isa(target: str) -> Isa:
    """The INT8 ISA of a target: its `int8_isa` field, or this host's for targets that run here."""
    spec = get(target)
    if spec.int8_isa is not None:
        return spec.int8_isa  # type: ignore[return-value]
    return host_isa() if spec.runs_here else "unknown"


def unfused_on_host(target: str | None) -> bool:
    """Run a QDQ graph with ONNX Runtime's fusions off on this host: true where this host's fused
    u8 x s8 kernels saturate and the graph was not quantized for such kernels (made for another
    target's ISA, or of unknown origin when `target` is None). Unfused, each DequantizeLinear feeds
    a float kernel: the graph's exact semantics, slower."""
    if not saturates_u8s8(host_isa()):
        return False
    return target is None or not saturates_u8s8(target_isa(target))
