"""Measures one artifact in a fresh process (so library load, cold start and peak RSS are real).

Usage: python -m deploypipe.bench.worker ARTIFACT CONFIG_JSON  -> one JSON BenchResult on stdout.
"""

from __future__ import annotations

import importlib
import resource
import sys
import time
from pathlib import Path

import numpy as np

from deploypipe.artifact import Artifact
from deploypipe.bench.context import run_context
from deploypipe.bench.results import BenchConfig, BenchResult, ColdStart
from deploypipe.bench.stats import latency
from deploypipe.fidelity import compare
from deploypipe.runtime import RunOptions, runner_class


def measure(path: Path, cfg: BenchConfig) -> BenchResult:
    art = Artifact(path)
    m = art.manifest
    cls = runner_class(m.kind)
    t0 = time.perf_counter()
    importlib.import_module(cls.library)
    t_lib = time.perf_counter() - t0
    inputs, reference, _ = art.golden()
    runner = cls(art, RunOptions(threads=cfg.threads, profile=cfg.profile, rpc=cfg.rpc, tracker=cfg.tracker,
                                 key=cfg.key))
    t0 = time.perf_counter()
    runner.activate()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = runner.infer(inputs)
    t_first = (time.perf_counter() - t0) * 1000
    for _ in range(cfg.warmup):
        runner.infer(inputs, check=False)
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runner.infer(inputs, check=False)
        samples.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - start
        if (len(samples) >= cfg.iterations and elapsed >= cfg.min_seconds) or elapsed >= cfg.max_seconds:
            break
    layers = runner.layer_profile() or []
    remote_where = runner.where()
    runner.deactivate()
    fid = compare([reference], [first], m.precision, {})
    model_bytes = sum(e.bytes for role, e in m.files.items() if role != "golden")
    ctx = run_context()
    return BenchResult(
        artifact=str(path), name=m.name, model=m.model.name, target=m.target, compiler=m.compiler,
        precision=m.precision, kind=m.kind, ran=True,
        where=remote_where or f"measured on {ctx['host']} ({ctx['cpu']})", threads=cfg.threads,
        latency_ms=latency(samples),
        cold_start=ColdStart(library_load_s=t_lib, model_load_s=t_load, first_inference_ms=t_first),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        size_mb=model_bytes / 1e6,
        fidelity={"max_abs_err": fid.max_abs_err, "cosine": fid.cosine, "top1_agreement": fid.top1_agreement},
        layers=[lt.model_dump() for lt in layers], context=ctx,
    )


def main() -> None:
    path, cfg_json = sys.argv[1], sys.argv[2]
    np.seterr(all="ignore")
    result = measure(Path(path), BenchConfig.model_validate_json(cfg_json))
    sys.stdout.write(result.model_dump_json())


if __name__ == "__main__":
    main()
