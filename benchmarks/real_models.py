"""Real-weight zoo models (deploypipe.zoo.real) through `deploypipe build`, judged by their tasks.

For each model: FP32 / FP16 / INT8 on ONNX Runtime for host-cpu via `deploypipe.api.build`, each
artifact run on the held-out split of the model's shipped real data and scored with its task
metric (deploypipe.zoo.real_metrics) against the FP32 model and against ground truth; latency is
the median CPU time of interleaved single-thread runs, as a ratio to FP32 from the same run (ISA
recorded). A build that is refused is recorded with its exact error; an INT8 build refused by
its gate is then rebuilt with the gate relaxed, so the figures say what the refused artifact
would have done. Then OpenVINO and TFLite at FP32: built (with the task metric) or refused, why.

    python benchmarks/real_models.py [--models minilm-l6-v2 ppocr-rec ...] [--reps 20] [--only-ort]

Writes benchmarks/results/real_models.json (TFLite needs DEPLOYPIPE_TFLITE_VENV).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

# Run as `python benchmarks/real_models.py`, this folder is sys.path[0], and its openvino.py and
# tflite.py would shadow the packages of those names.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

from deploypipe.api import BuildConfig, build  # noqa: E402
from deploypipe.api import load as load_artifact  # noqa: E402
from deploypipe.bench.context import run_context  # noqa: E402
from deploypipe.errors import DeployPipeError  # noqa: E402
from deploypipe.importers import import_model  # noqa: E402
from deploypipe.backends.runner import RunOptions  # noqa: E402
from deploypipe.zoo import real  # noqa: E402
from deploypipe.zoo.real_metrics import task_metrics  # noqa: E402
from deploypipe.zoo.real_sets import rec_charset  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "real_models.json"
MODELS = ["minilm-l6-v2", "ppocr-cls", "ppocr-rec", "ppocr-det"]
RELAXED = {"min_cosine": -1.0, "min_top1_agreement": 0.0, "max_accuracy_drop": 100.0, "rel_max_abs_err": 1e9}


def isa() -> dict[str, bool]:
    """The x86 features INT8 speed and exactness depend on (u8s8 dot products: VNNI or not)."""
    flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split(":")[1].split())
    return {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}


def try_build(name: str, out: Path, compiler: str | None, quantize: str | None,
              tolerance: dict[str, float] | None = None) -> tuple[dict[str, Any], Path | None]:
    """One `deploypipe build`; the outcome as recorded, and the artifact when one was written."""
    label = f"{name}-{compiler or 'onnxruntime'}-{quantize or 'fp32'}" + ("-relaxed" if tolerance else "")
    cfg = BuildConfig(model=name, target="host-cpu", compiler=compiler, quantize=quantize, output=out,
                      name=label, force=True, tolerance=tolerance or {})
    t0 = time.perf_counter()
    try:
        report = build(cfg)
    except DeployPipeError as exc:
        return {"outcome": "refused", "exit_code": exc.exit_code, "error": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.perf_counter() - t0, 1)}, None
    except Exception as exc:  # noqa: BLE001 - a crash is a finding: recorded, as `deploypipe` would exit 70
        return {"outcome": "crashed", "exit_code": 70, "error": f"{type(exc).__name__}: {exc}",
                "where": traceback.format_exc(limit=-3)}, None
    fid = report.manifest.fidelity
    return {"outcome": "built", "seconds": round(time.perf_counter() - t0, 1), "precision": report.manifest.precision,
            "fidelity": fid.model_dump(include={"samples", "data", "evidence", "certified", "verdict", "cosine",
                                                "top1_agreement", "max_abs_err", "accuracy", "passed", "reasons"}),
            "passes": [p.name for p in report.manifest.passes]}, report.path


def outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The artifact's first output on each feed (inputs cast to the artifact's own dtypes)."""
    with load_artifact(path, RunOptions(threads=1)) as runner:
        dtypes = {s.name: s.dtype for s in runner.artifact.manifest.inputs}
        return [next(iter(runner.infer({k: v.astype(dtypes[k]) for k, v in f.items()}).values()))
                for f in feeds]


def latencies(paths: dict[str, Path], feed: dict[str, np.ndarray], reps: int) -> dict[str, dict[str, float]]:
    """Median wall and calling-thread CPU ms per artifact, rounds interleaved after a warm-up
    (single intra-op thread: ORT computes on the calling thread, so CPU time is the model's cost)."""
    wall: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    with contextlib.ExitStack() as stack:
        runners = {k: stack.enter_context(load_artifact(p, RunOptions(threads=1))) for k, p in paths.items()}
        casts = {}
        for k, r in runners.items():
            dtypes = {s.name: s.dtype for s in r.artifact.manifest.inputs}
            casts[k] = {n: v.astype(dtypes[n]) for n, v in feed.items()}
            for _ in range(3):
                r.infer(casts[k])
        for _ in range(reps):
            for k, r in runners.items():
                t0, c0 = time.perf_counter(), time.thread_time()
                r.infer(casts[k])
                cpu[k].append((time.thread_time() - c0) * 1e3)
                wall[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"wall_ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])} for k in runners}


def reference(name: str) -> tuple[Any, list[dict[str, np.ndarray]], list[np.ndarray], list[Any]]:
    """(entry, held-out feeds, FP32 outputs of the imported model on ORT, ground truth)."""
    import onnxruntime as ort

    model = import_model(name)
    data = model.calibration.data
    sess = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return real.get(name), data.held_out, [sess.run(None, f)[0] for f in data.held_out], data.truth


def run_model(name: str, out: Path, reps: int, only_ort: bool) -> dict[str, Any]:
    entry, feeds, ref, truth = reference(name)
    charset = rec_charset() if entry.task == "text-recognition" else None

    def score(outs: list[np.ndarray]) -> dict[str, float]:
        return task_metrics(entry.task, outs, ref, truth, charset)

    row: dict[str, Any] = {"model": name, "task": entry.task, "package": entry.package,
                           "held_out_samples": len(feeds), "fp32_reference": score(ref), "onnxruntime": {}}
    built: dict[str, Path] = {}
    for quantize in (None, "fp16", "int8"):
        key = quantize or "fp32"
        print(f"[{name}] onnxruntime {key}", flush=True)
        rec, path = try_build(name, out, None, quantize)
        if path is None and quantize == "int8" and rec.get("exit_code") == 5:
            relaxed, path = try_build(name, out, None, quantize, RELAXED)
            rec["relaxed_rebuild"] = {k: relaxed[k] for k in ("outcome", "error") if k in relaxed}
        if path is not None:
            rec["metrics"] = score(outputs(path, feeds))
            built[key] = path
        row["onnxruntime"][key] = rec
    if "fp32" in built:
        ms = latencies(built, feeds[0], reps)
        for key, t in ms.items():
            row["onnxruntime"][key]["latency"] = {**t, "cpu_ratio_vs_fp32": t["cpu_ms"] / ms["fp32"]["cpu_ms"]}
    if not only_ort:
        for compiler in ("openvino", "tflite"):
            print(f"[{name}] {compiler} fp32", flush=True)
            rec, path = try_build(name, out, compiler, None)
            if path is not None:
                rec["metrics"] = score(outputs(path, feeds))
            row[compiler] = {"fp32": rec}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only-ort", action="store_true", help="skip the OpenVINO and TFLite FP32 builds")
    args = ap.parse_args()
    info = {**run_context(), "isa": isa()}
    # rows of models not re-run this time are kept, each with the host it was measured on
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    kept = [{**r, "host": r.get("host", saved.get("host"))} for r in saved.get("rows", []) if r["model"] not in args.models]
    extra = {k: v for k, v in saved.items() if k not in ("host", "reps", "rows")}
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploypipe-real-") as tmp:
        for name in args.models:
            rows.append({**run_model(name, Path(tmp), args.reps, args.only_ort), "host": info})
            RESULTS.write_text(json.dumps({**extra, "host": info, "reps": args.reps, "rows": kept + rows}, indent=1) + "\n")
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
