"""TVM Relax helpers shared by the compiler and the tuner: ONNX import, lowering, tuning
databases, compilation and export."""

from __future__ import annotations

import json
import platform
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploypipe.backends.tvm import integer, schedules, winograd
from deploypipe.backends.tvm.facts import TvmOptions
from deploypipe.errors import UnsupportedError
from deploypipe.model import Model

if TYPE_CHECKING:
    import tvm

def tvm_target(opts: TvmOptions) -> tvm.target.Target:
    import tvm

    return tvm.target.Target(opts.resolved_target())


def import_relax(model: Model) -> tvm.IRModule:
    """ONNX -> Relax with the weights bound as constants. Static inputs get their shapes; a dynamic
    dim stays symbolic (the frontend names it after the ONNX dim_param), so one library takes
    every batch size."""
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {s.name: list(s.shape) for s in model.inputs if None not in s.shape}
    dtypes = {s.name: s.dtype for s in model.inputs}
    try:
        return from_onnx(model.proto, shape_dict=shapes, dtype_dict=dtypes)
    except Exception as exc:  # the frontend raises bare Python errors naming the op
        raise UnsupportedError(f"TVM's ONNX frontend could not import {model.name}: {type(exc).__name__}: {exc}") from exc


def lower(mod: tvm.IRModule, target: tvm.target.Target, integer_kernels: bool = True,
          winograd_convs: bool = True) -> tvm.IRModule:
    """The graph-level passes that come before tuning: inference decompositions, QDQ layers as
    integer ones where the CPU has a dot product (`integer_kernels` False keeps them
    float-simulated: benchmarks/tvm_int8_isa.py compares the two), convolutions to NHWC/HWIO
    (weights repacked at build time), strided 1x1 ones on a strided slice of their input, the
    large stride-1 3x3 ones in Winograd form (`winograd_convs`: TvmOptions.use_winograd), the
    "zero" pipeline (legalize, fold constants, fuse). Tuning tasks are extracted from this module."""
    import tvm
    from tvm import relax

    with target, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
        ])(mod)
        if integer_kernels:
            mod = integer.layers(mod, target)  # QDQ models: integer kernels where the CPU has them
        mod = schedules.pad_dense_outputs(schedules.convert_layout(mod), schedules.float_lanes(target))
        mod = schedules.subsample_pointwise(mod)
        if winograd_convs:
            mod = winograd.rewrite(mod)
        mod = relax.get_pipeline("zero")(integer.nhwc_padding(mod))
        return relax.transform.AttachAttrLayoutFreeBuffers()(mod)  # weights may be prepacked


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


MEASURED_ON = "measured_on.json"  # beside a database: the machines its candidates were timed on


def measured_on(work_dir: Path) -> list[dict[str, str]]:
    """The machines `tvm tune` timed this database's candidates on: {"host_cpu": LLVM's name for
    the build host's CPU} for local runs, {"device": "rpc://..."} for a board. A record's target
    says which -mcpu its code is for, not where it ran, and an x86 target's candidates run on any
    x86 build host that has its ISA. [] if unknown (databases tuned before this was recorded)."""
    path = work_dir / MEASURED_ON
    try:
        found = json.loads(path.read_text()) if path.is_file() else []
    except ValueError:
        return []
    return [m for m in found if isinstance(m, dict)] if isinstance(found, list) else []


def record_measured_on(work_dir: Path, machine: dict[str, str]) -> None:
    known = measured_on(work_dir)
    if machine not in known:
        (work_dir / MEASURED_ON).write_text(json.dumps([*known, machine], indent=1) + "\n")


def timed_elsewhere(entries: list[dict[str, str]], cpus: list[str]) -> list[str]:
    """The build hosts that timed code for other CPUs (`cpus`: the -mcpu the records are for)."""
    return [m["host_cpu"] for m in entries if m.get("host_cpu") and m["host_cpu"] not in cpus]


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


def mean_seconds(run_secs: Any) -> float:
    """A measured candidate's time: the mean of its runs (what MetaSchedule ranks records by)."""
    return sum(float(t) for t in run_secs) / len(run_secs)


def apply_databases(mod: tvm.IRModule, target: tvm.target.Target, own: Path) -> tuple[tvm.IRModule, list[dict[str, Any]]]:
    """Apply this model's database and every other one under the same tuning_logs root measured on
    this build's CPU class (`same_class`; a workload is matched by its structural hash, so
    ResNet-18's convolutions serve ResNet-50), each kernel getting the fastest record any of them
    holds. Own-first let a handful of MetaSchedule samples for a kernel shadow another database's
    better record (ResNet-50's 128-channel 3x3 convolution: 16.4 ms against 3.5 ms in the model).
    Times from different machines do not compare, though: where a database timed on the target's
    own CPU (`measured_on`) holds a kernel, only such databases' records compete for it (an AVX2
    host's own tuning beats the shipped AVX2 records that this build host timed faster).
    Returns the module and, per database that gave a kernel, its path, the -mcpu it was measured
    for and the kernels it scheduled."""
    import tvm_ffi
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    dirs = ([own] if tuning_records(own) and same_class(target, tuned_for(own)) else []) + class_databases(own, target)
    if not dirs:
        return mod, []
    integer.register_intrinsics()  # tuned integer kernels' traces tensorize with it
    mcpu = str(target.attrs.get("mcpu", ""))
    timed = {d: measured_on(d) for d in dirs}
    found: dict[int, list[tuple[int, float, Path, Any]]] = {}  # workload hash -> (tier, mean run time, database, record)
    for work_dir in dirs:
        tier = 0 if any(m.get("host_cpu") == mcpu for m in timed[work_dir]) else 1  # 0: timed on this CPU
        for record in ms.database.JSONDatabase(work_dir=str(work_dir)).get_all_tuning_records():
            if record.run_secs:
                found.setdefault(tvm_ffi.structural_hash(record.workload.mod), []).append(
                    (tier, mean_seconds(record.run_secs), work_dir, record))
    merged = ms.database.MemoryDatabase()
    fastest: dict[int, tuple[float, Path]] = {}  # workload hash -> (best mean run time, its database)
    for key, candidates in found.items():
        best_tier = min(c[0] for c in candidates)
        for tier, secs, work_dir, record in candidates:
            if tier != best_tier:
                continue
            if key not in fastest or secs < fastest[key][0]:
                fastest[key] = (secs, work_dir)
            merged.commit_tuning_record(ms.database.TuningRecord(
                record.trace, merged.commit_workload(record.workload.mod), record.run_secs, record.target,
                record.args_info))
    names = {task.task_name: tvm_ffi.structural_hash(task.dispatched[0])
             for task in ms.relax_integration.extract_tasks(mod, target)}
    before = scheduled(mod)
    with target, merged:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    by_dir: dict[Path, list[str]] = {}
    for kernel in sorted(scheduled(mod) - before):
        if names.get(kernel) in fastest:
            by_dir.setdefault(fastest[names[kernel]][1], []).append(kernel)
    return mod, [{"database": str(d), "tuned_for_mcpu": tuned_for(d), "measured_on": timed[d], "kernels": k}
                 for d, k in by_dir.items()]


def cpu_class(target: tvm.target.Target, mcpu: str | None = None) -> str:
    """The class a measured schedule's speed carries over within: the architecture and LLVM's
    vector width for the CPU (x86_64 with 512-bit vectors, x86_64 with 256, aarch64 with 128, ...).
    A schedule tuned for AVX-512 tiles 16-float vectors: on an AVX2 CPU it is still correct but
    spills registers, so it is not applied there."""
    import tvm

    spec = {k: v for k, v in dict(target.export()).items() if k in ("kind", "mtriple", "mattr", "mcpu", "num-cores")}
    if mcpu is not None:
        spec["mcpu"] = mcpu
    arch = str(spec.get("mtriple") or platform.machine()).split("-")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f"{arch} {schedules.vector_bits(tvm.target.Target(spec))}-bit vectors"


def same_class(target: tvm.target.Target, cpus: list[str]) -> bool:
    """Every CPU a database was measured for is in this target's class (see cpu_class)."""
    own = cpu_class(target)
    return bool(cpus) and all(cpu_class(target, c) == own for c in cpus if c not in ("unknown", "generic"))


def class_databases(own: Path, target: tvm.target.Target) -> list[Path]:
    """The other models' databases under the same tuning_logs root measured on this CPU class."""
    return sorted(d for d in own.parent.parent.glob("*/*") if d != own and d.is_dir() and tuning_records(d)
                  and same_class(target, tuned_for(d)))


def export(executable: Any, path: Path, cross_compiler: str | None) -> None:
    """Write the executable as a shared library, linked by the cross g++ when there is one."""
    if cross_compiler:
        from tvm.support import cc

        executable.export_library(str(path), fcompile=cc.cross_compiler(cross_compiler))
    else:
        executable.export_library(str(path))


def compile_module(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """Give every kernel without a tuned schedule the default CPU schedule (integer convolutions:
    the dot-product one, vpdpbusd or sdot), then compile."""
    import tvm

    with target, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduled = schedules.default_schedule(integer.integer_rule(), winograd.rule())(mod)
        return tvm.compile(schedules.partition_tails(fold_prepacking(scheduled)), target=target)


def fold_prepacking(mod: tvm.IRModule) -> tvm.IRModule:
    """Weight prepacking, done once at build time: the weight-repacking blocks the schedules put
    in kernels (default and tuned alike) move out of them and fold into the model's constants."""
    from tvm import relax

    return relax.transform.FoldConstant()(relax.transform.SplitLayoutRewritePreproc()(mod))


def scheduled(mod: tvm.IRModule) -> set[str]:
    """Names of the kernels that already carry a schedule (a tuned one, after apply_databases)."""
    from tvm import tirx

    return {gv.name_hint for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and bool(f.attrs.get("tirx.is_scheduled", False))}


def target_string(target: tvm.target.Target) -> str:
    return str(target)
