"""`deploypipe optimize` frontiers for the closing note: ResNet-50 and MobileNet-v2 (zoo, random
weights: accuracy is fidelity against FP32 on synthetic inputs, which can refuse a candidate but
never certify one) on host-cpu (measured here) and on rpi4 (absent: estimated by the roofline cost
model calibrated on one FP32 measurement of this host). Objective: latency; budget: 1 point.

ResNet-50 builds are slow on 2 shared cores, so its search is small: ONNX Runtime, FP32/INT8,
pruning 0/0.5, no FP32-layer variants (OpenVINO's INT8 build, NNCF, took 14 minutes for MobileNet-v2
alone on this loaded host, so it was left out for ResNet-50). MobileNet-v2 gets the default space
over ONNX Runtime, OpenVINO and TVM (plus INT8 with 2 layers in FP32).

    python benchmarks/optimize.py [--quick] [--only MODEL:TARGET ...] [--out FILE]
                                                   # default: writes benchmarks/results/optimize.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this folder's openvino.py and tflite.py would shadow the packages of those names
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from deploypipe.api import optimize  # noqa: E402
from deploypipe.bench.context import run_context  # noqa: E402
from deploypipe.campaign.optimize import OptimizeConfig  # noqa: E402

SEARCHES: list[dict] = [
    {"model": "mobilenet-v2", "target": "host-cpu", "compilers": ["onnxruntime", "openvino", "tvm"]},
    {"model": "mobilenet-v2", "target": "rpi4", "compilers": ["onnxruntime"], "precisions": ["fp32", "int8"]},
    {"model": "resnet50", "target": "host-cpu", "compilers": ["onnxruntime"], "precisions": ["fp32", "int8"],
     "fp32_layers": []},
    {"model": "resnet50", "target": "rpi4", "compilers": ["onnxruntime"], "precisions": ["fp32", "int8"], "fp32_layers": []},
]
QUICK: list[dict] = [
    {"model": "digits-cnn", "target": "host-cpu", "compilers": ["onnxruntime", "openvino"]},
    {"model": "digits-cnn", "target": "rpi4", "compilers": ["onnxruntime"], "precisions": ["fp32", "int8"]},
]


def run(search: dict, out: Path) -> dict:
    cfg = OptimizeConfig(output=out, max_accuracy_drop=1.0, objective="latency", **search)
    t0 = time.perf_counter()
    report = optimize(cfg, progress=lambda m: None)
    wall = time.perf_counter() - t0
    base = report.point(report.baseline).objective if report.baseline else None
    print(f"\n{cfg.model} on {cfg.target}: {len(report.points)} candidates in {wall:.0f} s; "
          f"winner {report.winner}; front {report.front}", flush=True)
    rows = []
    for p in sorted(report.points, key=lambda p: (p.objective is None, p.objective or 0)):
        ratio = base / p.objective if base and p.objective else None
        rows.append({**p.model_dump(exclude={"path"}), "speedup_vs_baseline": ratio})
        fig = (f"{p.objective:.3f} ms ({ratio:.2f}x), drop {p.accuracy_drop:.2f} pts" if p.objective is not None
               and p.accuracy_drop is not None else p.refused)
        print(f"  {p.name:34s} {fig} [{p.objective_source[:60]}]", flush=True)
    return {"model": cfg.model, "target": cfg.target, "wall_s": wall, "winner": report.winner,
            "baseline": report.baseline, "front": report.front, "notes": report.notes,
            "config": cfg.model_dump(mode="json", exclude={"output", "import_options"}), "points": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits-cnn only (a smoke run)")
    ap.add_argument("--only", nargs="*", default=None, help="searches to run, as MODEL:TARGET")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "optimize.json")
    args = ap.parse_args()
    chosen = [s for s in (QUICK if args.quick else SEARCHES)
              if args.only is None or f"{s['model']}:{s['target']}" in args.only]
    with tempfile.TemporaryDirectory(prefix="deploypipe-optimize-") as tmp:
        results = [run(s, Path(tmp)) for s in chosen]
    doc = {"context": run_context(), "searches": results}
    if not args.quick:
        args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
