"""Dynamic shapes, measured on this host: batch sizes, sequence lengths, and the split server's
dynamic batching. Every figure is a ratio against a baseline from the same run.

1. ResNet-50 (random weights: speed only) built once with `--batch 1,8,32` for ONNX Runtime and
   OpenVINO; `bench --batch 1,8,32` measures each size; samples/s at 8 and 32 against batch 1.
2. transformer-small built with `--seq-len 16..256`; latency at 16/64/256 tokens against 16.
3. `serve` with and without `--max-batch 16`: 16 concurrent edge connections each sending
   requests of one sample to a cloud model with a dynamic batch; requests/s against unbatched.

    python benchmarks/shapes.py [--quick]          # writes benchmarks/results/shapes.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this folder's openvino.py and tflite.py would shadow the packages of those names
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

from deploypipe.api import BuildConfig, build  # noqa: E402
from deploypipe.bench import BenchConfig, SweepConfig, run_bench  # noqa: E402
from deploypipe.bench.context import run_context  # noqa: E402
from deploypipe.importers import ImportOptions  # noqa: E402


def batches(out: Path, model: str, sizes: tuple[int, ...], cfg: BenchConfig) -> list[dict]:
    rows = []
    for compiler in ("onnxruntime", "openvino"):
        t0 = time.perf_counter()
        rep = build(BuildConfig(model=model, compiler=compiler, output=out, import_options=ImportOptions(batch=sizes)))
        built_s = time.perf_counter() - t0
        results = run_bench([rep.path], cfg, sweep=SweepConfig(batches=list(sizes), threads=[2]))
        base = next(r for r in results if r.batch_size == sizes[0])
        base_ips = base.samples_per_s
        for r in results:
            ips = r.samples_per_s
            rows.append({"model": model, "compiler": compiler, "batch": r.batch_size, "p50_ms": r.latency_ms.p50,
                         "samples_per_s": ips, "vs_batch1": ips / base_ips, "build_s": built_s,
                         "fidelity_checked": rep.manifest.fidelity.shapes_checked})
            print(f"{model} {compiler} batch {r.batch_size}: p50 {r.latency_ms.p50:.1f} ms, "
                  f"{ips:.1f} samples/s ({ips / base_ips:.2f}x batch 1)", flush=True)
    return rows


def seq_lens(out: Path, lens: list[int], cfg: BenchConfig) -> list[dict]:
    rep = build(BuildConfig(model="transformer-small", output=out,
                            import_options=ImportOptions(seq_len=(min(lens), max(lens)))))
    results = run_bench([rep.path], cfg, sweep=SweepConfig(seq_lens=lens, threads=[2]))
    base = next(r for r in results if r.seq_len == lens[0])
    rows = []
    for r in results:
        rows.append({"model": "transformer-small", "compiler": "onnxruntime", "seq_len": r.seq_len,
                     "p50_ms": r.latency_ms.p50, "vs_seq_min": r.latency_ms.p50 / base.latency_ms.p50})
        print(f"transformer-small seq {r.seq_len}: p50 {r.latency_ms.p50:.2f} ms "
              f"({r.latency_ms.p50 / base.latency_ms.p50:.2f}x seq {lens[0]})", flush=True)
    return rows


def serve(model: str, edges: int, requests: int) -> list[dict]:
    """requests/s of the split server's cloud model with and without dynamic batching."""
    from deploypipe import net
    from deploypipe.importers import import_model
    from deploypipe.partition import wire
    from deploypipe.partition.server import CloudServer, Served, onnx_inputs, ort_executor

    tmp = Path(tempfile.mkdtemp(prefix="dp-serve-"))
    imported = import_model(model, ImportOptions(batch=(1, edges)))
    imported.save(tmp / "cloud.onnx")
    x = {s.name: np.random.default_rng(0).standard_normal(s.concrete_shape()).astype(np.float32) for s in imported.inputs}
    rows = []
    for max_batch in (1, edges):
        server = CloudServer({"m": Served(ort_executor(tmp / "cloud.onnx", threads=2), onnx_inputs(tmp / "cloud.onnx"))},
                             insecure_no_auth=True, max_clients=edges, max_batch=max_batch, max_wait_ms=5.0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()

        def edge(n: int) -> None:
            ch = net.connect("127.0.0.1", server.port, None, timeout=60)
            try:
                for i in range(n):
                    ch.send(wire.pack({"id": i, "model": "m"}, x))
                    header, _ = wire.unpack(ch.recv(1 << 26), 1 << 26)
                    assert "error" not in header, header
            finally:
                ch.close()

        per_edge = requests // edges
        edge(2)  # warm-up
        t0 = time.perf_counter()
        with ThreadPoolExecutor(edges) as pool:
            list(pool.map(edge, [per_edge] * edges))
        dt = time.perf_counter() - t0
        batcher = server.batchers.get("m")
        rows.append({"model": model, "edges": edges, "max_batch": max_batch, "requests": per_edge * edges,
                     "requests_per_s": per_edge * edges / dt,
                     "mean_rows_per_run": batcher.rows / batcher.runs if batcher and batcher.runs else 1.0})
        server.shutdown()
        thread.join(5)
        print(f"serve {model}, {edges} edges, max-batch {max_batch}: {per_edge * edges / dt:.1f} requests/s "
              f"(mean rows per run {rows[-1]['mean_rows_per_run']:.1f})", flush=True)
    rows[-1]["vs_unbatched"] = rows[-1]["requests_per_s"] / rows[0]["requests_per_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="resnet18 instead of resnet50, fewer requests")
    args = ap.parse_args()
    cfg = BenchConfig(iterations=10, warmup=2, min_seconds=2.0, energy="off")
    out = Path(tempfile.mkdtemp(prefix="dp-shapes-"))
    ctx = run_context()
    result = {
        "where": f"measured on {platform.node()} ({ctx['cpu']}), 2 threads, random weights (speed only)",
        "context": ctx,
        "batches": batches(out, "resnet18" if args.quick else "resnet50", (1, 8, 32), cfg),
        "seq_lens": seq_lens(out, [16, 64, 256], cfg),
        "serve": serve("resnet18", 16, 160 if args.quick else 480),
    }
    dest = ROOT / "benchmarks" / "results" / "shapes.json"
    dest.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
