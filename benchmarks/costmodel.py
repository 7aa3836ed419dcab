"""How good is the cost model? Builds several zoo models for the host (ORT FP32), measures them with
`deploypipe bench`, and reports the cost model's leave-one-out model-level error on each (goal:
median <= 20%), then its calibrated estimates for devices that are not here.

Usage: nice -n 10 python benchmarks/costmodel.py [--models a,b,c] [--out benchmarks/costmodel.json]
Everything printed says whether it was measured on this host or estimated by the cost model.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from deploypipe import costmodel as cm
from deploypipe import targets
from deploypipe.api import BuildConfig, build
from deploypipe.bench import BenchConfig, run_bench
from deploypipe.bench.derived import artifact_proto

DEFAULT = "digits-cnn,cifarnet,mlp-mnist,squeezenet1.1,shufflenet-v2-0.5,mobilenet-v1,mobilenet-v2,resnet18"
OTHERS = ("rpi4", "jetson-nano", "snapdragon-835")


def _export(name: str, folder: Path) -> Path:
    """The zoo model as an .onnx file (random weights: latency does not depend on them). Built from a
    file because the zoo importer needs `zoo.data_providers`, which is not merged yet."""
    import torch

    from deploypipe import zoo

    path = folder / f"{name}.onnx"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        entry = zoo.get(name)
        module = entry.module(weights=None).eval()
        dtypes = getattr(entry, "input_dtypes", {}) or {}
        args = tuple(torch.zeros(shape, dtype=getattr(torch, str(dtypes.get(k, "float32")).replace("torch.", "")))
                     for k, shape in entry.inputs.items())
        torch.onnx.export(module, args, str(path), input_names=list(entry.inputs), dynamo=False, opset_version=17)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts/costmodel-bench"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/costmodel.json"))
    args = ap.parse_args()
    console = Console(width=160)
    paths = []
    for name in args.models.split(","):
        console.print(f"building {name}")
        paths.append(build(BuildConfig(model=str(_export(name, args.artifacts / "onnx")), output=args.artifacts)).path)
    results = run_bench(paths, BenchConfig(iterations=30, warmup=5, min_seconds=2.0, energy="estimate"))
    host = cm.with_host_figures(targets.get("host-cpu"))
    meas = [(artifact_proto(Path(r.artifact)), r.latency_ms.p50) for r in results]  # type: ignore[union-attr]
    cal = cm.calibrate(meas, host, [r.model for r in results])  # type: ignore[arg-type]
    t = Table(title=f"cost model vs measurement — {results[0].where}; host peaks {host.figures['peak_gflops_fp32'].value:.1f} "
                    f"GFLOP/s, {host.figures['mem_bandwidth_gbs'].value:.1f} GB/s (measured)")
    for col in ("model", "MACs M", "measured p50 ms", "estimated ms (LOO)", "error",
                *(f"{o} est. ms" for o in OTHERS)):
        t.add_column(col, justify="left" if col == "model" else "right")
    rows = []
    for r, (proto, _) in zip(results, meas, strict=True):
        other = {o: cm.CostModel(targets.get(o), "fp32", cal).model_ms(proto) for o in OTHERS}  # type: ignore[arg-type]
        rows.append({"model": r.model, "macs": r.model_stats.get("macs"), "measured_ms": r.latency_ms.p50,  # type: ignore[union-attr]
                     "estimated_ms": r.estimated_ms, "error": r.estimate_error, "others_estimated_ms": other})
        t.add_row(r.model, f"{(r.model_stats.get('macs') or 0) / 1e6:.1f}", f"{r.latency_ms.p50:.3g}",  # type: ignore[union-attr]
                  f"{r.estimated_ms:.3g}", f"{r.estimate_error:.0%}", *(f"{v:.3g}" for v in other.values()))
    console.print(t)
    errs = [x["error"] for x in rows]
    console.print(f"median leave-one-out model-level error on this host: {statistics.median(errs):.0%} "
                  f"(max {max(errs):.0%}, {len(errs)} models); goal <= 20%. Other devices: estimated, "
                  f"calibrated on all {len(rows)} host measurements. Machine shared with other jobs: noisy.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"where": results[0].where, "host_figures": {k: v.model_dump() for k, v in host.figures.items()},
                                    "calibration": cal.__dict__, "rows": rows,
                                    "median_error": statistics.median(errs)}, indent=2, default=str))


if __name__ == "__main__":
    main()
