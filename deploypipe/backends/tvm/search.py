"""Tuning that starts from the default schedules: each kernel's default-rule variants, measured.

A tuned record replaces a kernel's default schedule (`schedules.py`) in every later build, and on a
small machine MetaSchedule's own space (multi-level tiling, sampled) often needs hours to find what
the default rule gives untuned: a run that only sampled that space could make a build slower. So
`tvm tune` first measures, for every kernel, the default rule and its variants (`schedules.variants`:
tile size, channel block, task size, padding; for an integer convolution on a CPU with a dot
product (VNNI, sdot), its dot-product kernel, so tuning an INT8 build keeps the integer kernels
unless a search finds faster; for a Winograd transform, its own schedule) with MetaSchedule's own
builder and runner, and commits them to the database as tuning records (their traces replay in
`MetaScheduleApplyDatabase` like any other). MetaSchedule's evolutionary search gets the trials that are left, and the database
answers each kernel with its fastest record, whichever search produced it: a tuned build is never
slower than the default one by more than the measurement's noise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from deploypipe.backends.tvm import integer, relax, schedules, winograd


def seed_database(tasks: list[Any], target: Any, work_dir: str, builder: Any, runner: Any, limit: int,
                  log: Callable[[str], None] = print) -> int:
    """Measure up to `limit` default-rule candidates for the model's `tasks` (MetaSchedule's
    extract_tasks, done once by the caller), the costliest kernels first, and commit them
    to the JSON database in `work_dir`. Kernels with records already are skipped: in this database
    (a resumed run) or in another model's under the same tuning_logs measured on this CPU class
    and not timed on another host's CPU (`timed_on_another_host`), which the build reuses by
    workload (ResNet-50's 3x3 convolutions are ResNet-18's). Returns the number of candidates
    measured."""
    from tvm.s_tir import meta_schedule as ms

    database = ms.database.JSONDatabase(work_dir=work_dir)
    measured = 0
    for task in untuned_tasks(tasks, target, Path(work_dir)):
        mod = task.dispatched[0]
        if measured >= limit:
            break
        candidates = default_candidates(mod, target)[: limit - measured]
        if not candidates:
            continue
        secs, errors = measure(database, builder, runner, candidates)
        best = min((t for t in secs if t is not None), default=None)
        measured += len(candidates)
        log(f"default-rule variants: {task.task_name}: {len(candidates)} measured, best {best * 1e3:.3f} ms"
            if best is not None else f"default-rule variants: {task.task_name}: none ran: {errors[:1]}")
    return measured


def default_candidates(workload: Any, target: Any, known: frozenset[int] = frozenset()) -> list[Candidate]:
    """A kernel's default-rule schedules, as the build makes them, to time: an integer
    convolution's dot-product kernel, a Winograd transform's own schedule, else the default rule
    and each of its variants, duplicates (by structural hash) and those whose hash is in `known`
    dropped."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    # an integer convolution's candidate is its dot-product kernel, a Winograd transform's its own, as in the build
    special = [integer.integer_rule(), winograd.rule()]
    own = next((sch for rule in special if (sch := rule.apply(workload["main"], target, False)) is not None), None)
    built = [own] if own is not None else [
        schedules.schedule_kernel(workload["main"], target, knobs) for knobs in schedules.variants()]
    candidates, seen = [], set(known)
    for sch in built:
        if sch is None or (key := tvm_ffi.structural_hash(sch.mod)) in seen:
            continue
        seen.add(key)
        # the runner passes the kernel's arguments as measured: weights already prepacked
        candidates.append(Candidate(sch.mod, sch.trace, workload, target,
                                    ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
    return candidates


def replayed(record: Any) -> Any:
    """A tuning record's scheduled kernel, its trace replayed on its workload as a build applies
    it (records come back from JSON: the module to compare default-rule candidates with)."""
    from tvm import s_tir

    sch = s_tir.Schedule(record.workload.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod


class Candidate(NamedTuple):
    """A schedule to time: the module to build and the record it becomes once timed."""

    mod: Any  # the scheduled kernel
    trace: Any
    workload: Any  # the unscheduled kernel the record is for
    target: Any
    args_info: Any


def measure(database: Any, builder: Any, runner: Any, candidates: list[Candidate]) -> tuple[list[float | None], list[str]]:
    """Build and time `candidates` with MetaSchedule's builder and runner, and commit each that ran
    to `database` as a tuning record. Returns each one's mean time in seconds (None where it did
    not build or run) and the errors."""
    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(c.mod, c.target) for c in candidates])
    errors = [b.error_msg for b in built if b.error_msg]
    ok = [i for i, b in enumerate(built) if b.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, "cpu", candidates[i].args_info) for i in ok])
    secs: list[float | None] = [None] * len(candidates)
    for i, future in zip(ok, futures, strict=True):
        result, c = future.result(), candidates[i]
        errors += [result.error_msg] if result.error_msg else []
        if result.error_msg is None and result.run_secs:
            database.commit_tuning_record(ms.database.TuningRecord(
                c.trace, database.commit_workload(c.workload), result.run_secs, c.target, c.args_info))
            secs[i] = relax.mean_seconds(result.run_secs)
    return secs, errors


def untuned_tasks(tasks: list[Any], target: Any, work_dir: Path) -> list[Any]:
    """Of the model's kernels (`tasks`: MetaSchedule's extract_tasks), costliest first, those
    without records in `work_dir`'s database or in another model's of the same CPU class under the
    same tuning_logs."""
    from tvm.s_tir import meta_schedule as ms

    known = [ms.database.JSONDatabase(work_dir=str(d)) for d in [work_dir, *relax.class_databases(work_dir, target)]
             if relax.tuning_records(d) and (d == work_dir or not timed_on_another_host(d))]
    return [t for t in sorted(tasks, key=_cost, reverse=True)
            if not any(db.has_workload(t.dispatched[0]) and db.get_top_k(db.commit_workload(t.dispatched[0]), 1)
                       for db in known)]


def timed_on_another_host(work_dir: Path) -> bool:
    """A database whose candidates were all timed on build hosts with another CPU than this one
    (the shipped AVX2 databases, timed on an AVX-512 host): its kernels are seeded again here, so
    tuning on the CPU itself measures them (the build then prefers this CPU's records)."""
    from tvm.target import codegen

    entries = relax.measured_on(work_dir)
    return bool(entries) and len(relax.timed_elsewhere(entries, [str(codegen.llvm_get_system_cpu())])) == len(entries)


def _cost(task: Any) -> float:
    """A kernel's share of the model: its floating-point work times how often the model calls it."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0])) * task.weight
    except Exception:  # noqa: BLE001 - a kernel the estimator cannot read goes last
        return 0.0
