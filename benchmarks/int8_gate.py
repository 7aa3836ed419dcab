"""The INT8 gate on the zoo, as a new user meets it, and the accuracy-aware search on real data.

1. Zoo models x {host-cpu (ONNX Runtime), edgetpu, host-cpu with TFLite} at `--quantize int8`
   without data: each cell is built and labelled with what its figures rest on (stand-in photos
   for image models, synthetic inputs otherwise: "accuracy unverified"), or refused, with why.
   Random weights: these figures judge the gate, not the models.
2. The PP-OCR recognizer (real weights) for the Edge TPU with its real text lines: refused, with
   the figures; and for host-cpu judged by decoded-text agreement with FP32 (`--metric
   deploypipe.zoo.real_metrics:ocr_text_agreement --tolerance max_metric_drop=X`), where the
   accuracy-aware search runs: every step's figure and latency.

    python benchmarks/int8_gate.py [--models a b ...] [--targets host-cpu edgetpu tflite] [--skip-ocr]

Resumable: writes benchmarks/results/int8_gate.json after every cell and skips cells it has.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# this folder's openvino.py and tflite.py would shadow the packages of those names
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from deploypipe.api import BuildConfig, build  # noqa: E402
from deploypipe.bench.context import run_context  # noqa: E402
from deploypipe.errors import DeployPipeError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "int8_gate.json"
MODELS = ["cifarnet", "digits-cnn", "mobilenet-v1", "mobilenet-v2", "resnet18", "squeezenet1.1",
          "shufflenet-v2-0.5", "tiny-yolo", "ssd-mobilenet-v1", "transformer-small", "lstm-ptb-small"]
TARGETS = {"host-cpu": ("host-cpu", None), "edgetpu": ("edgetpu", None), "tflite": ("host-cpu", "tflite")}
OCR_METRIC = "deploypipe.zoo.real_metrics:ocr_text_agreement"


def cell(model: str, target: str, compiler: str | None, out: Path, **extra: Any) -> dict[str, Any]:
    """One build: what it decided, or the one-line refusal and its exit code."""
    steps: list[str] = []
    cfg = BuildConfig(model=model, target=target, compiler=compiler, quantize="int8", output=out, force=True, **extra)
    t0 = time.perf_counter()
    try:
        report = build(cfg, progress=lambda m: steps.append(str(m)) if str(m).startswith("int8: step") else None)
    except DeployPipeError as exc:
        return {"outcome": "refused", "exit_code": exc.exit_code, "why": str(exc), "steps": steps,
                "seconds": round(time.perf_counter() - t0, 1)}
    m = report.manifest
    f = m.fidelity
    int8 = next((p.details for p in m.passes if p.name == "int8"), {})
    return {"outcome": "built", "seconds": round(time.perf_counter() - t0, 1), "compiler": m.compiler,
            "evidence": f.evidence, "verdict": f.verdict, "certified": f.certified, "cosine": f.cosine,
            "fidelity_data": f.data, "metrics": f.metrics, "metrics_fp32": f.metrics_fp32,
            "calibration": int8.get("calibration", m.compiler_info.get("quantization", {}).get("calibration_data")),
            "search": int8.get("search"), "fp32_layers": int8.get("fp32_layers"), "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    ap.add_argument("--skip-ocr", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["context"] = run_context()
    table = results.setdefault("zoo", {})

    def save() -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, default=str))

    with tempfile.TemporaryDirectory(prefix="dp-int8-gate-") as tmp:
        for model in args.models:
            for name in args.targets:
                if name in table.get(model, {}):
                    continue
                target, compiler = TARGETS[name]
                print(f"{model} x {name} ...", flush=True)
                table.setdefault(model, {})[name] = row = cell(model, target, compiler, Path(tmp))
                print(f"  {row['outcome']} in {row['seconds']} s: {row.get('verdict') or row.get('why', '')[:200]}", flush=True)
                save()
        if not args.skip_ocr:
            ocr = results.setdefault("ppocr_rec", {})
            for key, target, extra in (
                ("edgetpu_real_data", "edgetpu", {"metric": OCR_METRIC, "tolerance": {"max_metric_drop": 0.02}}),
                ("host_cpu_metric_search", "host-cpu", {"metric": OCR_METRIC, "tolerance": {"max_metric_drop": 0.02}}),
            ):
                if key not in ocr:
                    print(f"ppocr-rec: {key} ...", flush=True)
                    ocr[key] = cell("ppocr-rec", target, None, Path(tmp), **extra)
                    print(f"  {ocr[key]['outcome']}: {ocr[key].get('verdict') or ocr[key].get('why', '')[:300]}", flush=True)
                    for s in ocr[key]["steps"]:
                        print(f"    {s}", flush=True)
                    save()
    save()


if __name__ == "__main__":
    main()
