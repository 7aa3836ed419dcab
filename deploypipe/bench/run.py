"""Runs the worker for every artifact found and gathers results; unrunnable ones are listed with the reason."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deploypipe.artifact import Artifact, find_artifacts
from deploypipe.bench.results import BenchConfig, BenchResult
from deploypipe.errors import DeployPipeError, UnsupportedError
from deploypipe.runtime import runner_class, why_not_runnable


def _skipped(path: Path, art: Artifact | None, reason: str) -> BenchResult:
    m = art.manifest if art else None
    return BenchResult(
        artifact=str(path), name=m.name if m else path.name, model=m.model.name if m else "?",
        target=m.target if m else "?", compiler=m.compiler if m else "?",
        precision=m.precision if m else "?", kind=m.kind if m else "?", ran=False, reason=reason,
        size_mb=sum(e.bytes for r, e in m.files.items() if r != "golden") / 1e6 if m else 0.0,
    )


def _runs_remotely(art: Artifact, cfg: BenchConfig) -> bool:
    """With --rpc/--tracker, a remote-capable runner runs the artifact on the device instead."""
    if not (cfg.rpc or cfg.tracker):
        return False
    try:
        return runner_class(art.manifest.kind).remote
    except UnsupportedError:
        return False


def bench_one(path: Path, cfg: BenchConfig) -> BenchResult:
    try:
        art = Artifact(path)
    except DeployPipeError as exc:
        return _skipped(path, None, str(exc))
    reason = why_not_runnable(art)
    if reason is not None and not _runs_remotely(art, cfg):
        return _skipped(path, art, reason)
    proc = subprocess.run(
        [sys.executable, "-m", "deploypipe.bench.worker", str(path), cfg.model_dump_json()],
        capture_output=True, text=True, timeout=cfg.timeout_s, check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return _skipped(path, art, f"runner failed: {last}")
    return BenchResult.model_validate_json(proc.stdout)


def run_bench(paths: list[Path], cfg: BenchConfig | None = None,
              progress: Callable[[str], None] | None = None) -> list[BenchResult]:
    cfg = cfg or BenchConfig()
    results = []
    for path in find_artifacts(paths):
        if progress:
            progress(f"bench {path.name}")
        results.append(bench_one(path, cfg))
    return results
