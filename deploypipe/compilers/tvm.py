"""Apache TVM (Relax + MetaSchedule) as a compiler: ONNX -> Relax -> one shared library.

The ONNX graph is imported with `tvm.relax.frontend.onnx` with the weights bound as constants (so
BatchNorm and other constant work folds at compile time and the weights travel inside the
library), lowered with Relax's "zero" pipeline, given the tuned schedules of the MetaSchedule
database in `tuning_logs/<model>/<target>/` when there are any, and compiled to `model.so` for the
target's LLVM triple (cross-linked with Debian's cross g++ for ARM boards).

An artifact whose library is not for this host's CPU also carries `host_stand_in.so`, the same
Relax module compiled for the host, so its fidelity can be checked here; the ARM library itself is
checked under qemu by the tests (`tests/test_tvm_qemu.py`) or on a board over RPC.

QDQ models (the generic int8 pass's output) import as `relax.op.quantize`/`dequantize` pairs
around FP32 operators: TVM's CPU path keeps them as simulated quantization in float arithmetic,
so an int8 build is as accurate as the QDQ graph but brings no int8 kernels and no speed-up.
"""

from __future__ import annotations

import json
import platform
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from deploypipe.artifact import HostCheck
from deploypipe.compilers.base import CompileContext, CompileResult, Compiler
from deploypipe.errors import BuildError, MissingBackendError, UnsupportedError
from deploypipe.model import Model

if TYPE_CHECKING:
    import tvm

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


def tvm_target(opts: TvmOptions) -> tvm.target.Target:
    import tvm

    return tvm.target.Target(opts.resolved_target())


def host_target() -> dict[str, Any]:
    """The stand-in's target: plain x86-64 LLVM, so it runs on any build host."""
    import os

    return {"kind": "llvm", "num-cores": os.cpu_count() or 1}


def import_relax(model: Model) -> tvm.IRModule:
    """ONNX -> Relax with static input shapes and the weights bound as constants."""
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {s.name: list(s.concrete_shape()) for s in model.inputs}
    dtypes = {s.name: s.dtype for s in model.inputs}
    try:
        return from_onnx(model.proto, shape_dict=shapes, dtype_dict=dtypes)
    except Exception as exc:  # the frontend raises bare Python errors naming the op
        raise UnsupportedError(f"TVM's ONNX frontend could not import {model.name}: {type(exc).__name__}: {exc}") from exc


def lower(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """The graph-level passes that come before tuning: inference decompositions, the "zero"
    pipeline (legalize, fold constants, fuse). Tuning tasks are extracted from this module."""
    import tvm
    from tvm import relax

    with target, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.get_pipeline("zero"),
        ])
        return seq(mod)


def tuning_records(work_dir: Path) -> int:
    """Number of measured schedules in a MetaSchedule JSON database (0 if none)."""
    path = work_dir / "database_tuning_record.json"
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def tuned_for(work_dir: Path) -> list[str]:
    """The distinct `mcpu`s the database's schedules were measured for (the target each record
    carries), so a build for another CPU can say its schedules were tuned elsewhere."""
    path = work_dir / "database_tuning_record.json"
    if not path.is_file():
        return []
    cpus: set[str] = set()
    with path.open() as fh:
        for line in fh:
            try:
                target = json.loads(line)[1][2]
            except (ValueError, IndexError, TypeError):
                continue
            cpus.add(str(target.get("mcpu", "generic")) if isinstance(target, dict) else "unknown")
    return sorted(cpus)


def repair_database(work_dir: Path) -> None:
    """Drop a half-written last line left by a stopped run, so the JSON database loads again."""
    for name in ("database_workload.json", "database_tuning_record.json"):
        path = work_dir / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        good = []
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                continue
            good.append(line)
        if len(good) != len(lines) or (lines and not path.read_text().endswith("\n")):
            path.write_text("".join(f"{line}\n" for line in good))


def apply_database(mod: tvm.IRModule, target: tvm.target.Target, work_dir: Path) -> tvm.IRModule:
    """Replace the fused kernels that have a tuned schedule in the database; others stay untuned."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=str(work_dir))  # opened here, the pass stays quiet
    with target, database:
        return relax.transform.MetaScheduleApplyDatabase()(mod)


def export(executable: Any, path: Path, cross_compiler: str | None) -> None:
    """Write the executable as a shared library, linked by the cross g++ when there is one."""
    if cross_compiler:
        from tvm.support import cc

        executable.export_library(str(path), fcompile=cc.cross_compiler(cross_compiler))
    else:
        executable.export_library(str(path))


def compile_module(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    import tvm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tvm.compile(mod, target=target)


def target_string(target: tvm.target.Target) -> str:
    return str(target)


class TvmCompiler(Compiler):
    name = "tvm"
    extra = "tvm"

    def _options(self, ctx: CompileContext) -> TvmOptions:
        from pydantic import ValidationError

        try:
            return TvmOptions(**ctx.options)
        except ValidationError as exc:
            raise UnsupportedError(f"target {ctx.target.name}: invalid [compilers.tvm] options: {exc}") from exc

    def check(self, model: Model, ctx: CompileContext) -> None:
        opts = self._options(ctx)
        _require_tvm()
        if opts.cross_compiler and shutil.which(opts.cross_compiler) is None:
            raise MissingBackendError(
                "tvm", self.extra,
                f"cross compiler {opts.cross_compiler} for {ctx.target.name} is not on PATH "
                "(apt-get install g++-aarch64-linux-gnu g++-arm-linux-gnueabihf, or run scripts/install.sh)",
            )
        if opts.arch() != platform.machine() and not opts.cross_compiler:
            raise UnsupportedError(f"target {ctx.target.name} is {opts.arch()}: its options need a cross_compiler")
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

        known = _get_convert_map()
        bad = [f"node {n.name or '(unnamed)'}: op {n.op_type}" for n in model.proto.graph.node
               if n.domain in ("", "ai.onnx") and n.op_type not in known]
        bad += [f"node {n.name or '(unnamed)'}: op {n.domain}.{n.op_type}" for n in model.proto.graph.node
                if n.domain not in ("", "ai.onnx")]
        if bad:
            raise UnsupportedError(f"TVM's ONNX frontend cannot import {model.name}: " + "; ".join(bad[:10]))

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        from deploypipe.compilers import tvm_tune

        opts = self._options(ctx)
        target = tvm_target(opts)
        ctx.progress("TVM: importing ONNX into Relax")
        relax_mod = import_relax(model)
        lowered = lower(relax_mod, target)
        notes: list[str] = []
        tuning: dict[str, Any] = {"database": None, "records": 0}
        if ctx.tune_trials > 0:
            report = tvm_tune.tune(model, opts, ctx.tuning_dir, ctx.tune_trials, progress=ctx.progress)
            tuning["session"] = report.model_dump()
        repair_database(ctx.tuning_dir)
        records = tuning_records(ctx.tuning_dir)
        if records:
            ctx.progress(f"TVM: applying {records} tuning records from {ctx.tuning_dir}")
            lowered = apply_database(lowered, target, ctx.tuning_dir)
            cpus = tuned_for(ctx.tuning_dir)
            tuning |= {"database": str(ctx.tuning_dir), "records": records, "tuned_for_mcpu": cpus}
            mcpu = str(target.mcpu) if target.mcpu else "generic"
            if cpus and cpus != [mcpu]:
                notes.append(f"the tuning database's schedules were measured for -mcpu={','.join(cpus)}, this build "
                             f"is for -mcpu={mcpu}: they are applied (correct either way) but their speed was "
                             f"not measured on this CPU; retune into a new tuning_logs directory for it")
        else:
            notes.append(f"untuned: no MetaSchedule database in {ctx.tuning_dir} "
                         f"(run `deploypipe tune --model {model.name} --target {ctx.target.name}`); "
                         "untuned TVM kernels are far slower than ONNX Runtime on CPUs")
        ctx.progress(f"TVM: compiling for {target_string(target)}")
        try:
            executable = compile_module(lowered, target)
            export(executable, ctx.workdir / LIBRARY, opts.cross_compiler)
        except Exception as exc:  # TVM raises its own error types from C++; keep the message
            raise BuildError(f"TVM failed to compile {model.name} for {ctx.target.name}: {type(exc).__name__}: {exc}") from exc
        arch = library_arch(ctx.workdir / LIBRARY)
        files = {"model": LIBRARY}
        host_check = None
        if arch != platform.machine():
            ctx.progress("TVM: compiling the host stand-in for the fidelity check")
            stand_in_target = tvm_target(TvmOptions(target=host_target()))
            stand_in = compile_module(lower(relax_mod, stand_in_target), stand_in_target)
            export(stand_in, ctx.workdir / STAND_IN, None)
            files["host_stand_in"] = STAND_IN
            host_check = HostCheck(
                kind="tvm", file=STAND_IN,
                why=(f"{arch} library cannot run on this {platform.machine()} host: the same Relax module "
                     f"compiled for the host ({target_string(stand_in_target)}, untuned) stands in. "
                     "The ARM library itself is checked under qemu (tests/test_tvm_qemu.py) or over --rpc."),
            )
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.proto.graph.node):
            notes.append("QDQ graph: TVM keeps quantize/dequantize as simulated quantization around FP32 "
                         "kernels on CPU (no int8 kernels): int8 accuracy, FP32 speed or slower")
        return CompileResult(
            kind="tvm", files=files, inputs=model.inputs, outputs=model.outputs,
            toolchain=self.versions() | ({"cross_compiler": _gcc_version(opts.cross_compiler)} if opts.cross_compiler else {}),
            info={"target": target_string(target), "target_dict": opts.resolved_target(),
                  "target_as_written": opts.target, "library_arch": arch,
                  "cross_compiler": opts.cross_compiler, "params": "bound as constants inside model.so",
                  "input_order": [s.name for s in model.inputs], "tuning": tuning},
            notes=notes, host_check=host_check,
        )

    def versions(self) -> dict[str, str]:
        try:
            import tvm
        except ImportError:
            return {}
        return {"apache-tvm": tvm.__version__}


def _require_tvm() -> None:
    try:
        import tvm  # noqa: F401
    except ImportError as exc:
        raise MissingBackendError("tvm", "tvm", str(exc)) from exc


def _gcc_version(compiler: str) -> str:
    import subprocess

    proc = subprocess.run([compiler, "-dumpfullversion"], capture_output=True, text=True, check=False)
    return f"{compiler} {proc.stdout.strip()}"
