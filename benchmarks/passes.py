"""What each pass buys, per zoo model, on this host's CPU with ONNX Runtime.

For every model: the unoptimized ONNX (baseline), simplify with each tool, FP16, INT8 (the
recipe's config) and 30 % channel pruning; latency is the median of interleaved single-thread runs
(so load on a shared machine hits all variants alike) and is reported as a ratio to the baseline
measured in the same run. Fidelity is measured against the baseline on held-out inputs (real
digits for the trained model, synthetic N(0,1) otherwise, labelled). `--sweep` adds the INT8
quantizer configurations tried for speed (format, signedness, granularity, reduce_range, threads).

    python benchmarks/passes.py [--models resnet50 mobilenet-v2 ...] [--sweep] [--reps 30]

Writes benchmarks/results/passes.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from deploypipe import passes, zoo
from deploypipe.importers import ImportOptions, import_model
from deploypipe.importers.common import finish
from deploypipe.model import ArrayProvider, Model
from deploypipe.passes import PassContext

RESULTS = Path(__file__).parent / "results" / "passes.json"
DEFAULT_MODELS = ["resnet50", "mobilenet-v2", "resnet18", "cifarnet", "digits-cnn"]
CTX = PassContext(target="host-cpu", precision="int8")


def load(name: str) -> Model:
    """A zoo model through the importer; until the zoo's data providers exist, the digits model
    gets its real split attached here (other models are synthetic either way)."""
    if hasattr(zoo, "data_providers"):
        return import_model(name)
    from deploypipe.importers.pytorch import export_module
    from deploypipe.zoo.datasets import digits

    entry = zoo.get(name)
    calibration = evaluation = None
    if name == "digits-cnn":
        sp = digits()
        calibration = ArrayProvider("input", sp.x_train, sp.y_train, "scikit-learn digits training split (real)")
        evaluation = ArrayProvider("input", sp.x_test, sp.y_test, "scikit-learn digits held-out split (real)")
    import torch

    torch.manual_seed(0)
    return finish(export_module(entry.module(), entry.inputs, entry.input_dtypes), name=name, source=name,
                  importer="zoo", options=ImportOptions(), torch_source=entry, calibration=calibration,
                  evaluation=evaluation)


def session(proto: onnx.ModelProto, threads: int, level: str = "all") -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def timings(variants: dict[str, tuple[onnx.ModelProto, int, str]], feed: dict[str, np.ndarray],
            reps: int) -> dict[str, dict[str, float]]:
    """Median wall ms and median CPU ms of the calling thread per variant, rounds interleaved across
    variants after a warm-up. With one intra-op thread ORT computes on the calling thread, so its
    CPU time is what the model costs, undisturbed by other processes on a shared machine."""
    sessions = {k: session(p, t, lvl) for k, (p, t, lvl) in variants.items()}
    wall: dict[str, list[float]] = {k: [] for k in sessions}
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feed)
    for _ in range(reps):
        for k, s in sessions.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            s.run(None, feed)
            cpu[k].append((time.thread_time() - c0) * 1e3)
            wall[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"wall_ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])} for k in sessions}


def logit_margin(out: np.ndarray) -> float | None:
    """Median gap between the two largest logits in units of the logits' std: how close to a tie
    the FP32 model's top-1 is (random-weight nets are nearly tied, so any noise flips them)."""
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    top = np.sort(out, axis=1)
    return float(np.median((top[:, -1] - top[:, -2]) / (out.std(axis=1) + 1e-12)))


def outputs(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    s = session(proto, 1)
    return np.concatenate([s.run(None, f)[0] for f in feeds]).astype(np.float64)


def fidelity(ref: np.ndarray, proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
             labels: np.ndarray | None) -> dict[str, float | None]:
    """Figures of `proto` against the baseline's outputs `ref` on the same feeds."""
    s = session(proto, 1)
    out = np.concatenate([o[0] for o in (s.run(None, f) for f in feeds)]).astype(np.float64)
    cos = float(np.dot(ref.ravel(), out.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(out)))
    res: dict[str, float | None] = {"max_abs_err": float(np.max(np.abs(ref - out))), "cosine": cos,
                                    "top1_agreement": None, "accuracy": None}
    if ref.ndim == 2 and ref.shape[1] > 1:
        res["top1_agreement"] = float(np.mean(ref.argmax(1) == out.argmax(1)))
        if labels is not None:
            res["accuracy"] = float(np.mean(out.argmax(1) == labels) * 100)
    return res


def run_pass(model: Model, steps: list[tuple[str, dict[str, Any]]]) -> tuple[Model, dict[str, Any], float]:
    """The build's own pass runner on an ad-hoc recipe, timed."""
    t0 = time.perf_counter()
    recipe = passes.Recipe(name="bench", passes=[passes.PassStep(name=n, params=p) for n, p in steps])
    model, records = passes.run(recipe, model, CTX)
    return model, {r.name: r.details for r in records}, time.perf_counter() - t0


def bench_model(name: str, reps: int, sweep: bool, say: Any) -> dict[str, Any]:
    model = load(name)
    ev = model.evaluation
    if ev is not None:
        feeds, labels, data = list(ev.samples(len(ev.x))), ev.labels, ev.description
    else:
        feeds, labels = list(model.calibration.samples(50, seed=10_000)), None
        data = f"{model.calibration.description}, held-out seed 10000"
    base = model.proto
    plans: dict[str, list[tuple[str, dict[str, Any]]]] = {
        **{f"simplify:{t}": [("simplify", {"tool": t})] for t in ("onnxslim", "onnxsim", "ort-basic", "ort-extended")},
        "fp16": [("simplify", {}), ("fp16", {})],
        "int8": [("simplify", {}), ("int8", {**passes.load_recipe("int8").passes[1].params, "gate": False})],
        "int8-mixed": [("simplify", {}), ("int8", {**passes.load_recipe("int8-mixed").passes[1].params, "gate": False})],
        "prune30": [("prune", {"ratio": 0.3}), ("simplify", {})],
        "prune30+int8": [("prune", {"ratio": 0.3}), ("simplify", {}),
                         ("int8", {**passes.load_recipe("int8").passes[1].params, "gate": False})],
    }
    if sweep:
        for label, params in {
            "int8:qoperator-u8s8-pc": {"format": "qoperator"},
            "int8:qdq-u8u8-pt": {"weights": "uint8", "per_channel": False},
            "int8:qdq-s8s8-pc": {"activations": "int8"},
            "int8:qdq-u8s8-pc-reduce_range": {"reduce_range": True},
            "int8:percentile": {"calibration": "percentile"},
        }.items():
            plans[label] = [("simplify", {}), ("int8", {"gate": False, **params})]
    rows: dict[str, dict[str, Any]] = {"onnx": {"nodes": len(base.graph.node), "bytes": base.ByteSize(),
                                                 "pass_s": 0.0, "details": {}}}
    protos = {"onnx": base}
    for label, steps in plans.items():
        say(f"{name}: {label}")
        try:
            out, details, secs = run_pass(model, steps)
        except Exception as exc:  # noqa: BLE001 - a failing variant is a result to report, not a crash
            rows[label] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        protos[label] = out.proto
        rows[label] = {"nodes": len(out.proto.graph.node), "bytes": out.proto.ByteSize(), "pass_s": secs,
                       "details": details}
    variants = {k: (p, 1, "all") for k, p in protos.items()}
    if sweep and "int8" in protos:
        variants |= {"int8@threads2": (protos["int8"], 2, "all"), "onnx@threads2": (base, 2, "all"),
                     "int8@ort-extended": (protos["int8"], 1, "extended"),
                     "int8@ort-basic": (protos["int8"], 1, "basic")}
    say(f"{name}: timing {len(variants)} variants x {reps} interleaved rounds")
    ms = timings(variants, feeds[0], reps)
    ref = outputs(base, feeds)
    for k in variants:
        row = rows.setdefault(k, {"nodes": rows[k.split("@")[0]]["nodes"], "bytes": rows[k.split("@")[0]]["bytes"]})
        row.update(ms[k])
        if k.endswith("@threads2"):  # two threads: CPU time of one thread says nothing, compare wall time
            row["speedup"], row["speedup_of"] = ms["onnx@threads2"]["wall_ms"] / ms[k]["wall_ms"], "wall"
        else:
            row["speedup"], row["speedup_of"] = ms["onnx"]["cpu_ms"] / ms[k]["cpu_ms"], "cpu"
            row["speedup_wall"] = ms["onnx"]["wall_ms"] / ms[k]["wall_ms"]
        row["fidelity"] = fidelity(ref, protos[k.split("@")[0]], feeds, labels)
    return {"model": name, "data": data, "real_data": ev is not None, "fp32_logit_margin": logit_margin(ref),
            "variants": rows}


def host() -> dict[str, Any]:
    import onnxruntime

    flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0] if Path("/proc/cpuinfo").exists() else ""
    model_name = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"], capture_output=True,
                                text=True, check=False).stdout.split(":")[-1].strip()
    load1 = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    return {"node": platform.node(), "cpu": model_name, "cores": __import__("os").cpu_count(),
            "vnni": "avx512_vnni" in flags or "avx_vnni" in flags, "avx512": "avx512f" in flags,
            "onnxruntime": onnxruntime.__version__, "load_at_start": load1}


def render(results: list[dict[str, Any]], where: str) -> Table:
    table = Table(title=f"passes: speed-up vs the unoptimized ONNX in the same run (ORT CPU EP; 1 thread: ratio of "
                        f"median thread CPU time; @threads2: of median wall time), {where}")
    for col in ("model", "variant", "nodes", "size MB", "cpu ms", "wall ms", "speedup", "cosine", "top-1 agr",
                "accuracy", "note"):
        table.add_column(col, justify="left" if col in ("model", "variant", "note") else "right")
    for r in results:
        for k, v in r["variants"].items():
            if "error" in v:
                table.add_row(r["model"], k, "", "", "", "", "", "", "", "", v["error"][:60])
                continue
            f = v.get("fidelity", {})
            d = v.get("details", {})
            note = ""
            notes = []
            if "prune" in d:
                p = d["prune"]
                notes.append(f"MACs x{p['macs']['ratio']:.2f} params x{p['params']['ratio']:.2f}")
                if "finetune" in p:
                    notes.append(f"fine-tuned {p['finetune']['epochs']} ep")
            if "int8" in d:
                kept = len(d["int8"]["fp32_layers"])
                notes.append(f"gate {'pass' if d['int8']['gate']['passed'] else 'FAIL'}" + (f", {kept} FP32 layers" if kept else ""))
            note = "; ".join(notes)
            table.add_row(
                r["model"], k, str(v["nodes"]), f"{v['bytes'] / 1e6:.2f}", f"{v['cpu_ms']:.3g}", f"{v['wall_ms']:.3g}",
                f"{v['speedup']:.2f}x ({v['speedup_of']})",
                f"{f['cosine']:.4f}", "" if f["top1_agreement"] is None else f"{f['top1_agreement']:.3f}",
                "" if f["accuracy"] is None else f"{f['accuracy']:.2f}%", note,
            )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    console = Console(stderr=True)
    info = host()
    results = [bench_model(m, args.reps, args.sweep, lambda s: console.log(s)) for m in args.models]
    where = f"measured on {info['node']} ({info['cpu']}, {info['cores']} cores, shared and noisy)"
    console_out = Console(width=240)
    console_out.print(render(results, where))
    for r in results:
        margin = r["fp32_logit_margin"]
        console_out.print(f"{r['model']}: fidelity data: {r['data']}" + (
            "" if margin is None else f"; FP32 median top-1/top-2 logit gap = {margin:.3f} logit std"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"host": info, "where": where, "reps": args.reps, "results": results},
                                   indent=1, default=str))


if __name__ == "__main__":
    main()
