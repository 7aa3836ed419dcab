"""Runs the worker for every artifact found and gathers results; unrunnable ones are listed with the
reason (and, where the target file has figures, the cost model's labelled estimate).

A sweep point (threads x affinity) is one fresh worker process per repeat; `repeats` > 1 reports
the spread of the medians (run-to-run variation). `concurrency` K runs K artifacts' workers at
once, within a memory bound taken from their solo peak RSS (seed 003's concurrent models).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deploypipe.artifact import Artifact, find_artifacts
from deploypipe.backends import runs_elsewhere, why_not_runnable
from deploypipe.backends.runner import RunOptions
from deploypipe.bench.results import BenchConfig, BenchResult, RunToRun, SweepConfig
from deploypipe.errors import DeployPipeError
from deploypipe.analysis.fidelity import accuracy_label
from deploypipe.progress import Step

Progress = Callable[[str], None]


def not_run(path: Path, art: Artifact | None, reason: str) -> BenchResult:
    """The result row of an artifact that was not measured, with its reason and the manifest's figures."""
    m = art.manifest if art else None
    return BenchResult(
        artifact=str(path), name=m.name if m else path.name, model=m.model.name if m else "?",
        target=m.target if m else "?", compiler=m.compiler if m else "?",
        precision=m.precision if m else "?", kind=m.kind if m else "?", ran=False, reason=reason,
        size_mb=sum(e.bytes for r, e in m.files.items() if r != "golden") / 1e6 if m else 0.0,
        model_stats=dict(m.model.stats) if m else {}, passes=m.changed_passes() if m else [],
        accuracy=accuracy_label(m.fidelity) if m else "",
    )


def _worker_cmd(path: Path, cfg: BenchConfig) -> list[str]:
    return [sys.executable, "-m", "deploypipe.bench.worker", str(path), cfg.model_dump_json()]


def _parse(path: Path, art: Artifact, rc: int, stdout: str, stderr: str) -> BenchResult:
    if rc != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return not_run(path, art, f"runner failed: {last}")
    return BenchResult.model_validate_json(stdout)


def open_runnable(path: Path, cfg: BenchConfig) -> tuple[Artifact | None, BenchResult | None]:
    """The artifact, or the 'not run' result saying why it cannot run here (or on the RPC device)."""
    try:
        art = Artifact(path)
    except DeployPipeError as exc:
        return None, not_run(path, None, str(exc))
    elsewhere = runs_elsewhere(art.manifest.kind, RunOptions(device=cfg.device))  # a bad --device: one error
    reason = why_not_runnable(art)
    if reason is not None and not elsewhere:
        return art, not_run(path, art, reason)
    return art, None


def _batch_refused(art: Artifact, batch: int | None) -> str | None:
    """Why the artifact cannot run at `batch` (its inputs' dim 0 fixed elsewhere or out of its
    bounds), else None."""
    if batch is None:
        return None
    for spec in art.manifest.inputs:
        if spec.shape and not spec.takes(0, batch):
            return f"batch {batch}: input '{spec.name}' takes batch {spec.dim_text(0)} (build with --batch)"
    return None


def _seq_refused(art: Artifact, seq: int | None) -> str | None:
    """Why the artifact's token inputs cannot take length `seq`, else None."""
    if seq is None:
        return None
    tokens = [s for s in art.manifest.inputs if s.dtype.startswith(("int", "uint")) and len(s.shape) == 2]
    if not tokens:
        return f"seq {seq}: the artifact has no token input (an integer input of rank 2)"
    for spec in tokens:
        if not spec.takes(1, seq):
            return f"seq {seq}: input '{spec.name}' takes {spec.accepts()} (build with --seq-len)"
    return None


def bench_one(path: Path, cfg: BenchConfig) -> BenchResult:
    art, skipped = open_runnable(path, cfg)
    if skipped is not None:
        return skipped
    assert art is not None
    try:
        proc = subprocess.run(_worker_cmd(path, cfg), capture_output=True, text=True, timeout=cfg.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return not_run(path, art, f"runner did not finish within {cfg.timeout_s:.0f} s")
    return _parse(path, art, proc.returncode, proc.stdout, proc.stderr)


def _repeated(path: Path, cfg: BenchConfig, repeats: int) -> BenchResult:
    """`repeats` fresh-process runs; keeps the run with the median p50 and records all medians."""
    runs = [bench_one(path, cfg) for _ in range(repeats)]
    ok = [r for r in runs if r.ran and r.latency_ms]
    if len(ok) < 2:
        return ok[0] if ok else runs[0]
    ok.sort(key=lambda r: r.latency_ms.p50)  # type: ignore[union-attr]
    medians = [r.latency_ms.p50 for r in ok]  # type: ignore[union-attr]
    mid = statistics.median(medians)
    chosen = ok[len(ok) // 2]
    chosen.run_to_run = RunToRun(medians_ms=medians, spread_pct=(max(medians) - min(medians)) / mid * 100,
                                 cv_pct=statistics.stdev(medians) / statistics.mean(medians) * 100)
    return chosen


def _memory_limit_mb(sweep: SweepConfig) -> float:
    if sweep.memory_limit_mb is not None:
        return sweep.memory_limit_mb
    import psutil

    return psutil.virtual_memory().available / 2**20 * 0.8


def _concurrent(solo: list[BenchResult], cfg: BenchConfig, sweep: SweepConfig, say: Progress) -> list[BenchResult]:
    """Groups of up to K artifacts run at the same time, each group's solo peak RSS within the bound."""
    limit = _memory_limit_mb(sweep)
    groups: list[list[BenchResult]] = []
    for r in solo:
        need = r.peak_rss_mb or 0.0
        for g in groups:
            if len(g) < sweep.concurrency and sum(x.peak_rss_mb or 0.0 for x in g) + need <= limit:
                g.append(r)
                break
        else:
            groups.append([r])
    out = []
    for g in groups:
        if len(g) < 2:
            continue
        say(f"concurrent: {', '.join(r.name for r in g)}")
        procs = [(Path(r.artifact), subprocess.Popen(_worker_cmd(Path(r.artifact), cfg), stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, text=True)) for r in g]
        for path, proc in procs:
            try:
                stdout, stderr = proc.communicate(timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            res = _parse(path, Artifact(path), proc.returncode, stdout, stderr)
            res.concurrency = len(g)
            res.concurrent_with = [r.name for r in g if r.artifact != str(path)]
            out.append(res)
    return out


def run_bench(paths: list[Path], cfg: BenchConfig | None = None, progress: Progress | None = None,
              sweep: SweepConfig | None = None, remote: str | None = None,
              calibration: Path | None = None) -> list[BenchResult]:
    """Measure every artifact under `paths` at every sweep point; add estimates and efficiency."""
    from deploypipe.bench.derived import add_derived

    cfg = cfg or BenchConfig()
    sweep = sweep or SweepConfig()
    thread_points = sweep.threads if sweep.threads is not None else [cfg.threads]
    core_points = sweep.affinity if sweep.affinity is not None else [cfg.affinity]
    say = progress or (lambda _m: None)
    results: list[BenchResult] = []
    solo: list[BenchResult] = []
    found = find_artifacts(paths)
    for i, path in enumerate(found):
        if remote:
            from deploypipe.bench.remote import bench_remote

            for threads in thread_points:
                for affinity in core_points:
                    say(Step(f"bench {path.name} on {remote}", i, len(found)))
                    point = cfg.model_copy(update={"threads": threads, "affinity": affinity})
                    results.append(bench_remote(remote, path, point))
            continue
        _, skipped = open_runnable(path, cfg)
        if skipped is not None:
            results.append(skipped)
            continue
        art = Artifact(path)
        shape_points = [(b, s) for b in sweep.batches or [None] for s in sweep.seq_lens or [None]]
        for batch, seq in shape_points:
            if (why := _batch_refused(art, batch) or _seq_refused(art, seq)) is not None:
                results.append(not_run(path, art, why))
                continue
            for threads in thread_points:
                for affinity in core_points:
                    label = f"bench {path.name} threads={threads or 'default'} cores={affinity or 'all'}"
                    say(Step(label + (f" batch={batch}" if batch else "") + (f" seq={seq}" if seq else ""), i, len(found)))
                    point = cfg.model_copy(update={"threads": threads, "affinity": affinity, "batch_size": batch,
                                                   "seq_len": seq})
                    res = _repeated(path, point, sweep.repeats)
                    results.append(res)
                    if (res.ran and threads == thread_points[0] and affinity == core_points[0]
                            and (batch, seq) == shape_points[0]):
                        solo.append(res)
    if sweep.concurrency > 1 and len(solo) > 1:
        point = cfg.model_copy(update={"threads": thread_points[0], "affinity": core_points[0], "scenario": None})
        results.extend(_concurrent(solo, point, sweep, say))
    add_derived(results, calibration)
    return results
