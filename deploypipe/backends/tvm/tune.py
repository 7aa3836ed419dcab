"""MetaSchedule tuning for the TVM compiler, resumable and bounded in time.

Each kernel's default-rule variants are measured first (`search.py`), then MetaSchedule's
evolutionary search gets the trials that are left; the database keeps every kernel's fastest.

The database is MetaSchedule's JSON database in `tuning_logs/<model>/<target>/`; MetaSchedule
appends every measured schedule to it as it goes. Tuning runs in a child process (its own
process group) that the parent watches: progress is the record count of the database, a time
budget is enforced by stopping the child, and a run that was stopped or interrupted resumes
from the database: a request for N trials tunes only N minus what is already recorded.

Usage of the child: python -m deploypipe.backends.tvm.tune JOB_JSON
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import deploypipe
from deploypipe.backends.compiler import TuningReport
from deploypipe.backends.runner import physical_cores
from deploypipe.backends.tvm import evaluate, integer, schedules, search
from deploypipe.backends.tvm.facts import TvmOptions
from deploypipe.backends.tvm.relax import (
    MEASURED_ON,
    import_relax,
    lower,
    mean_seconds,
    record_measured_on,
    repair_database,
    target_string,
    tuning_records,
    tvm_target,
)
from deploypipe.backends.tvm.rpc import RemoteSpec
from deploypipe.errors import BuildError, UserError
from deploypipe.model import Model
from deploypipe.progress import Step

if TYPE_CHECKING:
    import tvm

_MODEL_FILE = ".tune_model.onnx"
_RETIMING = ".retiming"  # the re-timed database while it is written
_RETIMED = ".retimed"  # how many records the child re-timed, once the database is replaced
_LOG = "deploypipe_tune.log"


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_file: str
    options: TvmOptions
    work_dir: str
    trials: int
    trials_per_iter: int
    remote: RemoteSpec = Field(default_factory=RemoteSpec)
    retime: bool = False


def tune(model: Model, opts: TvmOptions, work_dir: Path, trials: int, *,
         remote: RemoteSpec | None = None, budget_s: float | None = None, trials_per_iter: int = 16,
         retime: bool = False, progress: Callable[[str], None] = lambda _m: None) -> TuningReport:
    """Bring the database in `work_dir` to `trials` measured schedules (resuming), within `budget_s`.
    With `retime`, every record it holds is first timed again where this run measures (a database
    from another host, or timed by an older evaluator: see evaluate.py); the database is replaced
    only once all are timed, so a run stopped before that leaves it as it was."""
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    check_measurable(opts, remote)
    work_dir.mkdir(parents=True, exist_ok=True)
    repair_database(work_dir)
    before = tuning_records(work_dir)
    env = dict(os.environ)
    if remote and remote.enabled:
        where = remote.describe()
        machine = {"device": where}
    else:
        # measure with the threads the artifact runs with: MetaSchedule's runner processes inherit
        # TVM_NUM_THREADS, and without it TVM's x86 runtime takes half the logical CPUs (one thread
        # on a 2-vCPU VM), so schedules for num-cores=2 were ranked single-threaded
        env.setdefault("TVM_NUM_THREADS", str(measuring_threads(opts)))
        where = f"this host (MetaSchedule LocalRunner, {env['TVM_NUM_THREADS']} threads)"
        from tvm.target import codegen

        machine = {"host_cpu": str(codegen.llvm_get_system_cpu())}
    target = target_string(tvm_target(opts))
    if before >= trials and not (retime and before):
        return TuningReport(work_dir=str(work_dir), target=target, requested_trials=trials, records_before=before,
                            records_after=before, seconds=0.0, stopped="already tuned", measured_on=where)
    model_file = work_dir / _MODEL_FILE
    model.save(model_file)
    job = _Job(model_file=str(model_file), options=opts, work_dir=str(work_dir), trials=max(trials - before, 0),
               trials_per_iter=trials_per_iter, remote=remote or RemoteSpec(), retime=retime)
    # The child and MetaSchedule's worker processes must import this same deploypipe. They need no
    # torch, but tvm_ffi imports it eagerly when it can (seconds per worker process): hide it.
    root = str(Path(deploypipe.__file__).resolve().parent.parent)
    no_torch = Path(tempfile.mkdtemp(prefix="deploypipe-tune-"))
    (no_torch / "torch.py").write_text('raise ImportError("hidden from TVM tuning processes by deploypipe")\n')
    env["PYTHONPATH"] = os.pathsep.join([str(no_torch), root, *filter(None, [env.get("PYTHONPATH")])])
    log = (work_dir / "logs")
    log.mkdir(exist_ok=True)
    start = time.monotonic()
    stopped: Literal["done", "budget"] = "done"
    with (log / _LOG).open("a") as log_fh:
        proc = subprocess.Popen([sys.executable, "-m", "deploypipe.backends.tvm.tune", job.model_dump_json()],
                                stdout=log_fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                elapsed = time.monotonic() - start
                done = tuning_records(work_dir)
                budget = f" of {budget_s:.0f} s budget" if budget_s else ""
                doing = ("re-timing the database's records" if retime and not (work_dir / _RETIMED).is_file()
                         else f"{done}/{trials} trials")
                progress(Step(f"TVM tuning on {where}: {doing}, {elapsed:.0f} s{budget}", done, trials))
                if budget_s is not None and elapsed > budget_s:
                    stopped = "budget"
                    stop_process_group(proc)
        except BaseException:  # Ctrl-C: stop the child, keep what it measured, let the interrupt through
            stop_process_group(proc)
            raise
        finally:
            model_file.unlink(missing_ok=True)
            shutil.rmtree(no_torch, ignore_errors=True)
            shutil.rmtree(work_dir / _RETIMING, ignore_errors=True)
    repair_database(work_dir)
    retimed = None
    if (work_dir / _RETIMED).is_file():
        retimed = int((work_dir / _RETIMED).read_text())
        (work_dir / _RETIMED).unlink()
        (work_dir / MEASURED_ON).unlink(missing_ok=True)  # every record is now this run's
    if retimed is not None or tuning_records(work_dir) > before:
        record_measured_on(work_dir, machine)
    if stopped == "done" and proc.returncode != 0:
        tail = (log / _LOG).read_text().strip().splitlines()[-1:] or ["no output"]
        raise BuildError(f"MetaSchedule tuning failed (exit {proc.returncode}): {tail[0]} (log: {log / _LOG})")
    return TuningReport(work_dir=str(work_dir), target=target, requested_trials=trials, records_before=before,
                        records_after=tuning_records(work_dir), seconds=time.monotonic() - start,
                        stopped="already tuned" if stopped == "done" and before >= trials else stopped,
                        measured_on=where, retimed=retimed)


def measuring_threads(opts: TvmOptions) -> int:
    """Threads for measuring on this host: the target's cores, at most this host's physical ones."""
    cores, here = tvm_target(opts).attrs.get("num-cores"), physical_cores()
    return max(1, min(int(cores) if cores else here, here))


def check_measurable(opts: TvmOptions, remote: RemoteSpec | None) -> None:
    if opts.arch() != platform.machine() and not (remote and remote.enabled):
        raise UserError(f"tuning for {opts.arch()} measures candidates on the device: give --device rpc://HOST:PORT "
                        "or --device tracker://HOST:PORT/KEY")


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop a child started with start_new_session=True and every worker it started (its process
    group): SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- the child process ---------------------------------------------------------------------------

def fast_build(mod: tvm.IRModule, target: tvm.target.Target, _params: dict[str, Any] | None) -> Any:
    """MetaSchedule's default build minus `import tvm.s_tir.tensor_intrin` (tens of seconds per
    worker process on a small machine, and not needed for LLVM CPU kernels)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(schedules.partition_tails(mod), target=target)  # as the model's build does


def cross_export(cross_compiler: str, mod: Any) -> str:
    """Export a candidate as a shared library linked for the device (for the RPC runner)."""
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(), "candidate.so")
    mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    return path


# How a candidate is timed: one run after flushing its weights from the caches (evaluate.py: on a
# board, every argument but the first), five times. Timed hot (3 runs back to back, 50 ms at least),
# a kernel kept its weights in cache across runs, unlike in the model: records that won hot lost in
# the model (ResNet-50's 14x14 Winograd matmuls took 9.3 ms per inference on their record against
# 7.6 on the default schedule, AVX2 EPYC, session 10).
EVALUATOR = {"number": 1, "repeat": 5, "min_repeat_ms": 0, "enable_cpu_cache_flush": True}


def direct_session(host: str, port: int, timeout: int, _config: Any) -> Any:
    """RPCRunner session straight to one server, for `--rpc host:port` without a tracker."""
    from tvm import rpc

    return rpc.connect(host, port, session_timeout=timeout)


def _runner(job: _Job, weights: dict[str, list[int]]) -> Any:
    """This host's runner times a candidate as the model runs it (weights cold, activations warm:
    evaluate.py); a board's (RPC) flushes every argument but the first, MetaSchedule's own way
    (the pre-run hook is looked up on the device, which has only TVM's)."""
    import functools

    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(**EVALUATOR)
    if not job.remote.enabled:
        return ms.runner.LocalRunner(evaluator_config=evaluator,
                                     f_run_evaluator=functools.partial(evaluate.run_evaluator, weights))
    from deploypipe.backends.tvm.rpc import parse_addr

    if job.remote.rpc:
        host, port = parse_addr(job.remote.rpc, "--rpc")
        return ms.runner.RPCRunner(
            rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key="direct",
                                           session_timeout_sec=job.remote.timeout_s),
            evaluator_config=evaluator, max_workers=1,
            f_create_session=functools.partial(direct_session, host, port, job.remote.timeout_s))
    host, port = parse_addr(job.remote.tracker or "", "--tracker")
    return ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=job.remote.key,
                                       session_timeout_sec=job.remote.timeout_s),
        evaluator_config=evaluator)


def _child(job: _Job) -> None:
    import functools

    from tvm.s_tir import meta_schedule as ms

    target = tvm_target(job.options)
    import onnx

    from deploypipe.model import Provenance, SyntheticProvider

    proto = onnx.load(job.model_file)
    model = Model(proto=proto, name=Path(job.model_file).stem, provenance=Provenance(job.model_file, "onnx", ""),
                  calibration=SyntheticProvider([]))
    lowered = lower(import_relax(model), target, winograd_convs=job.options.use_winograd())
    export = (functools.partial(cross_export, job.options.cross_compiler)
              if job.options.cross_compiler and job.remote.enabled else None)
    builder = ms.builder.LocalBuilder(f_build=fast_build, f_export=export, max_workers=os.cpu_count() or 1)
    tasks = ms.relax_integration.extract_tasks(lowered, target)  # seconds for a ResNet: once
    runner = _runner(job, evaluate.weight_positions(tasks))
    if not job.remote.enabled:
        import tvm

        print(f"measuring with {tvm.get_global_func('runtime.NumThreads')()} TVM threads", flush=True)
    added = _retime(Path(job.work_dir), builder, runner, job.trials) if job.retime else 0
    left = job.trials - added
    left -= search.seed_database(tasks, target, job.work_dir, builder, runner, left, log=lambda m: print(m, flush=True))
    if left <= 0:
        return
    strategy, cost_model = job.options.search()
    if strategy == "evolutionary":
        # its population starts from random samples only: replaying the seeded records as a
        # starting population runs MetaSchedule's postprocessors over traces that already
        # rewrote the weight layout, which fails
        strategy = ms.search_strategy.EvolutionarySearch(init_measured_ratio=0.0)
    ms.relax_integration.tune_relax(
        lowered, {}, target, job.work_dir, max_trials_global=left,
        num_trials_per_iter=min(job.trials_per_iter, left),
        builder=builder, runner=runner, cost_model=cost_model,
        # round-robin commits each task's results as they come; the gradient scheduler holds them
        # all until every task has had a first round, so a stopped run would lose them
        task_scheduler="round-robin",
        strategy=strategy,
    )


def _retime(work_dir: Path, builder: Any, runner: Any, limit: int) -> int:
    """Time every record of the database in `work_dir` again with this run's builder and runner,
    into a new database that replaces it once all are timed, with up to `limit` (the trials asked
    for beyond the records) default-rule variants it lacks for its kernels: one added since it was
    tuned, such as `tails`. A record whose schedule no longer builds or runs is dropped (a build
    could not apply it either). Returns the number of variants timed."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    integer.register_intrinsics()  # integer kernels' traces tensorize with it
    records = ms.database.JSONDatabase(work_dir=str(work_dir)).get_all_tuning_records()
    print(f"re-timing {len(records)} records", flush=True)
    if not records:  # a new database: nothing to time again, and nothing to replace
        return 0
    new_dir = work_dir / _RETIMING
    shutil.rmtree(new_dir, ignore_errors=True)
    new_dir.mkdir()
    new = ms.database.JSONDatabase(work_dir=str(new_dir))
    kept = 0
    kernels: dict[int, tuple[Any, Any, set[int]]] = {}  # workload -> (it, its target, its records' schedules)
    for start in range(0, len(records), 32):  # in batches: a stopped run has its progress in the log
        batch = records[start:start + 32]
        candidates = []
        for record in batch:
            mod = search.replayed(record)
            candidates.append(search.Candidate(mod, record.trace, record.workload.mod, record.target, record.args_info))
            kernels.setdefault(tvm_ffi.structural_hash(record.workload.mod), (record.workload.mod, record.target, set())
                               )[2].add(tvm_ffi.structural_hash(mod))
        secs, _errors = search.measure(new, builder, runner, candidates)
        for record, now in zip(batch, secs, strict=True):
            if now is not None:
                kept += 1
                print(f"a record timed {mean_seconds(record.run_secs) * 1e3:.3f} ms before, {now * 1e3:.3f} ms now",
                      flush=True)
        print(f"re-timed {kept} of {start + len(batch)} records", flush=True)
    missing: list[search.Candidate] = []
    for mod, target, known in kernels.values():  # only as many kernels as the trials left need
        if len(missing) >= limit:
            break
        missing += search.default_candidates(mod, target, frozenset(known))
    missing = missing[:max(limit, 0)]
    print(f"timing {len(missing)} default-rule variants the database lacks", flush=True)
    for start in range(0, len(missing), 32):
        secs, _errors = search.measure(new, builder, runner, missing[start:start + 32])
        print(f"timed {sum(t is not None for t in secs)} of them", flush=True)
    # a record names its workload by line number: both files are replaced, or neither
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    for name in ("database_workload.json", "database_tuning_record.json"):
        (new_dir / name).replace(work_dir / name)
    (work_dir / _RETIMED).write_text(str(kept))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    return len(missing)


if __name__ == "__main__":
    _child(_Job.model_validate_json(sys.argv[1]))
