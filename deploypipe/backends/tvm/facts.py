"""What the TVM backend knows without TVM installed: the target-file options, artifact file names
and a library's CPU architecture. The runner and the device app use these; no compiler imports."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

LIBRARY = "model.so"


STAND_IN = "host_stand_in.so"


# ELF e_machine -> platform.machine() spelling
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "armv7l"}


_TRIPLE_ARCH = {"aarch64": "aarch64", "arm64": "aarch64", "armv7": "armv7l", "arm": "armv7l", "x86_64": "x86_64"}


class TvmOptions(BaseModel):
    """`[compilers.tvm] options` of a target file."""

    model_config = ConfigDict(extra="forbid")
    # a TVM target as a dict: {kind = "llvm", mtriple = ..., mcpu = ...}; for the build host itself,
    # mcpu = "host" / num-cores = "host" are resolved when the build runs (see `resolved_target`)
    target: dict[str, Any]
    cross_compiler: str | None = None  # g++ that links the library for the device, e.g. aarch64-linux-gnu-g++
    # MetaSchedule search: "auto" is evolutionary search guided by the XGBoost cost model when
    # xgboost is importable, else replay-trace (evolutionary search with a random model is no better)
    strategy: Literal["auto", "replay-trace", "evolutionary"] = "auto"
    # Winograd F(4x4 / 2x2, 3x3) for the stride-1 3x3 convolutions that are large enough
    # (backends/tvm/winograd.py): "auto" is on for x86 CPUs, where it was measured faster
    # (benchmarks/winograd.py), and off for ARM ones, where no core has timed it yet
    winograd: Literal["auto", "on", "off"] = "auto"

    @field_validator("target")
    @classmethod
    def _llvm_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("kind") != "llvm":
            raise ValueError(f"only CPU (kind = \"llvm\") TVM targets are supported, got kind = {v.get('kind')!r}")
        if "num-cores" not in v:
            raise ValueError("the TVM target needs num-cores (the device's cores: MetaSchedule schedules for them)")
        if v.get("mcpu") == "native":
            raise ValueError("mcpu = \"native\" silently becomes a generic CPU in TVM 0.27: name the CPU, "
                             "or write \"host\" for the CPU of the machine that builds")
        if "host" in (v.get("mcpu"), v.get("num-cores")) and v.get("mtriple"):
            raise ValueError("mcpu/num-cores = \"host\" is for targets built and run on the build host, "
                             "not cross-compiled ones (mtriple is set)")
        return v

    def resolved_target(self) -> dict[str, Any]:
        """The target dict with "host" replaced by this machine's CPU (LLVM's name for it, e.g.
        znver5, which carries its vector extensions) and core count."""
        target = dict(self.target)
        if target.get("mcpu") == "host":
            from tvm.target import codegen

            target["mcpu"] = str(codegen.llvm_get_system_cpu())
        if target.get("num-cores") == "host":
            import os

            target["num-cores"] = len(os.sched_getaffinity(0)) or 1
        return target

    def search(self) -> tuple[str, str]:
        """(MetaSchedule strategy, cost model) for this machine."""
        import importlib.util

        has_xgb = importlib.util.find_spec("xgboost") is not None
        strategy = self.strategy if self.strategy != "auto" else ("evolutionary" if has_xgb else "replay-trace")
        return strategy, ("xgb" if has_xgb else "random")

    def use_winograd(self) -> bool:
        return self.winograd == "on" or (self.winograd == "auto" and self.arch() == "x86_64")

    def arch(self) -> str:
        """The CPU architecture the library runs on, in `platform.machine()` spelling."""
        triple = str(self.target.get("mtriple", ""))
        if not triple:
            return platform.machine()
        head = triple.split("-")[0]
        return next((a for p, a in _TRIPLE_ARCH.items() if head.startswith(p)), head)


def library_arch(path: Path) -> str:
    """Architecture of a shared library, from its ELF header."""
    head = path.read_bytes()[:20]
    if head[:4] != b"\x7fELF":
        return "unknown"
    machine = int.from_bytes(head[18:20], "little")
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")


def host_target() -> dict[str, Any]:
    """The stand-in's target: plain x86-64 LLVM, so it runs on any build host."""
    import os

    return {"kind": "llvm", "num-cores": os.cpu_count() or 1}
