"""Measures one artifact in a fresh process (so library load, cold start and peak RSS are real).

Usage: python -m deploypipe.bench.worker ARTIFACT CONFIG_JSON  -> one JSON BenchResult on stdout.
"""

from __future__ import annotations

import importlib
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploypipe.analysis.fidelity import accuracy_label, compare
from deploypipe.artifact import Artifact
from deploypipe.backends import runner_class
from deploypipe.backends.runner import LayerTime, Runner, RunOptions
from deploypipe.bench import energy as en
from deploypipe.bench.context import run_context, temperatures
from deploypipe.bench.results import BenchConfig, BenchResult, ColdStart, Throughput
from deploypipe.bench.stats import latency
from deploypipe.model import stack_rows


def _throughput(cls: type[Runner], art: Artifact, cfg: BenchConfig, runner: Runner,
                inputs: dict[str, np.ndarray]) -> Throughput:
    """Samples per second over `throughput_runs` back-to-back runs; with `workers` > 1, that many runner instances
    (one thread each, the runtime releases the GIL) share the runs."""
    batch = next(iter(inputs.values())).shape[0]
    if cfg.workers <= 1:
        t0 = time.perf_counter()
        for _ in range(cfg.throughput_runs):
            runner.infer(inputs, check=False)
        dt = time.perf_counter() - t0
        return Throughput(ips=cfg.throughput_runs * batch / dt, runs=cfg.throughput_runs, workers=1,
                          method=f"{cfg.throughput_runs} back-to-back runs at batch {batch}, one runner")
    runners = [cls(art, RunOptions(threads=cfg.threads)) for _ in range(cfg.workers)]
    for r in runners:
        r.activate()
        r.infer(inputs, check=False)
    share = [cfg.throughput_runs // cfg.workers + (i < cfg.throughput_runs % cfg.workers) for i in range(cfg.workers)]
    barrier = threading.Barrier(cfg.workers + 1)

    def go(r: Runner, n: int) -> None:
        barrier.wait()
        for _ in range(n):
            r.infer(inputs, check=False)

    threads = [threading.Thread(target=go, args=(r, n)) for r, n in zip(runners, share, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    for r in runners:
        r.deactivate()
    return Throughput(ips=cfg.throughput_runs * batch / dt, runs=cfg.throughput_runs, workers=cfg.workers,
                      method=f"{cfg.throughput_runs} runs at batch {batch} shared by {cfg.workers} concurrent runner instances")


def _write_trace(trace_dir: Path, art: Artifact, runner: Runner, layers: list[LayerTime],
                 ctx: dict[str, Any]) -> Path:
    from deploypipe.bench import trace  # onnx: only when traces are asked for

    m = art.manifest
    return trace.write(trace_dir, m.name, m.kind, layers, runner.trace_events(), trace.artifact_onnx(art),
                       {"where": runner.where() or f"measured on {ctx['host']} ({ctx['cpu']})",
                        "model": m.model.name, "target": m.target, "precision": m.precision})


def measure(path: Path, cfg: BenchConfig) -> BenchResult:
    if cfg.affinity is not None:
        os.sched_setaffinity(0, cfg.affinity)
    art = Artifact(path)
    m = art.manifest
    cls = runner_class(m.kind)
    t0 = time.perf_counter()
    importlib.import_module(cls.library)
    t_lib = time.perf_counter() - t0
    inputs, reference, _ = art.golden()
    golden_rows = next(iter(inputs.values())).shape[0]
    if cfg.batch_size is not None:  # the golden sample stacked to the batch asked for
        inputs = stack_rows([inputs], cfg.batch_size)
    if cfg.seq_len is not None:  # token ids tiled to the length asked for
        inputs = {k: np.concatenate([v] * (cfg.seq_len // v.shape[1] + 1), axis=1)[:, :cfg.seq_len]
                  if v.dtype.kind in "iu" and v.ndim == 2 else v for k, v in inputs.items()}
    batch = next(iter(inputs.values())).shape[0]
    runner = cls(art, RunOptions(threads=cfg.threads, profile=cfg.profile, device=cfg.device))
    t0 = time.perf_counter()
    runner.activate()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = runner.infer(inputs)
    t_first = (time.perf_counter() - t0) * 1000
    for _ in range(cfg.warmup):
        runner.infer(inputs, check=False)
    ctx = run_context()
    temp_start = temperatures()
    meter = en.find_meter(cfg.energy, cls.on_gpu(art))
    if meter:
        meter.start()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runner.infer(inputs, check=False)
        samples.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - start
        if (len(samples) >= cfg.iterations and elapsed >= cfg.min_seconds) or elapsed >= cfg.max_seconds:
            break
    lat = latency(samples)
    remote_where = runner.where()
    energy = None
    if meter:
        energy = en.measured(meter.stop(), elapsed, len(samples), meter, ctx["host"])
    elif cfg.energy != "off" and not runner.under_emulation():  # emulated time x any power is no energy
        from deploypipe import targets

        # latency measured here costs this host's power; measured on the device (RPC), the device's
        energy = en.estimated(lat.mean, targets.get(m.target if remote_where else "host-cpu"))
    temp_end = temperatures()
    layers = runner.layer_profile() or []
    trace = _write_trace(Path(cfg.trace_dir), art, runner, layers, ctx) if cfg.trace_dir and layers else None
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before extra runners
    throughput = _throughput(cls, art, cfg, runner, inputs) if cfg.throughput_runs > 0 else None
    loadgen = {}
    if cfg.scenario:
        from deploypipe.bench import loadgen as lgen

        outdir = Path(cfg.loadgen_dir or "loadgen") / m.name / cfg.scenario
        loadgen = lgen.run(runner, inputs, cfg.scenario, outdir, min_queries=cfg.iterations,
                           min_seconds=cfg.min_seconds, expected_ms=lat.p50, server_qps=cfg.server_qps)
    runner.deactivate()
    same_shape = cfg.seq_len is None  # at another length the outputs are another computation
    fid = compare([reference], [{k: v[:golden_rows] for k, v in first.items()}], m.precision, {}) if same_shape else None
    model_bytes = sum(e.bytes for role, e in m.files.items() if role != "golden")
    return BenchResult(
        artifact=str(path), name=m.name, model=m.model.name, target=m.target, compiler=m.compiler,
        precision=m.precision, kind=m.kind, ran=True,
        where=remote_where or f"measured on {ctx['host']} ({ctx['cpu']})", threads=cfg.threads, affinity=cfg.affinity,
        batch_size=batch, seq_len=cfg.seq_len, latency_ms=lat,
        cold_start=ColdStart(library_load_s=t_lib, model_load_s=t_load, first_inference_ms=t_first),
        peak_rss_mb=peak_rss_mb,
        size_mb=model_bytes / 1e6, model_stats=dict(m.model.stats), passes=m.changed_passes(), throughput=throughput, energy=energy,
        temperature_c={k: [v, temp_end[k]] for k, v in temp_start.items() if k in temp_end},
        loadgen=loadgen,
        fidelity={"max_abs_err": fid.max_abs_err, "cosine": fid.cosine, "top1_agreement": fid.top1_agreement} if fid else {},
        accuracy=accuracy_label(m.fidelity),
        layers=[lt.model_dump() for lt in layers], context=ctx, trace=str(trace) if trace else None,
    )


def main() -> None:
    path, cfg_json = sys.argv[1], sys.argv[2]
    np.seterr(all="ignore")
    result = measure(Path(path), BenchConfig.model_validate_json(cfg_json))
    sys.stdout.write(result.model_dump_json())


if __name__ == "__main__":
    main()
