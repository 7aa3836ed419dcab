"""PYNQ-Z1 fabric through hls4ml: which zoo models fit the XC7Z020 (estimated resources vs the
board), and, for those built, FP32 ONNX Runtime accuracy vs the fixed-point design's accuracy in its
bit-accurate C simulation, on the real held-out digits.

    PYTHONPATH=$PWD python benchmarks/fpga.py [--build digits-mlp digits-cnn] [--check NAMES...] [--output artifacts] [--json out.json]

Accuracies are measured on this host (FP32: ONNX Runtime; fixed point: the g++-compiled HLS C++).
Resources and FPGA latency are estimated by deploypipe's pre-synthesis model, never measured:
no bitstream is built here (no Vivado).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from deploypipe import api, backends, targets
from deploypipe.backends.compiler import CompileContext
from deploypipe.errors import DeployPipeError
from deploypipe.importers import import_model

CHECK = ["digits-mlp", "digits-cnn", "mlp-mnist", "cifarnet", "squeezenet1.1", "mobilenet-v1", "resnet18"]


def fits(name: str) -> dict[str, object]:
    """The compiler's own check (resource plan first, then graph support) without building."""
    spec = targets.get("pynq-z1")
    comp = backends.get_compiler("hls4ml")
    try:
        model = import_model(name)
    except DeployPipeError as exc:
        return {"model": name, "fits": None, "reason": f"not imported: {exc}"}
    ctx = CompileContext(workdir=Path(tempfile.gettempdir()), target=spec, precision="int8",
                         options=backends.compiler_options("hls4ml", spec), tuning_dir=Path("."))
    row: dict[str, object] = {"model": name, "params": sum(w.weights for w in _layers(model))}
    try:
        est = comp._plan(model, ctx)  # noqa: SLF001 - the same plan build() uses
        row |= {"fits": True, "estimated": est.totals, "reuse": max(w.reuse for w in est.layers)}
        comp.check(model, ctx)
    except DeployPipeError as exc:
        row |= {"fits": False, "reason": str(exc)}
    return row


def _layers(model: object) -> list:
    from deploypipe.backends.hls4ml.graph import weight_layers

    return weight_layers(model.proto)  # type: ignore[attr-defined]


def build(name: str, out: Path) -> dict[str, object]:
    t0 = time.perf_counter()
    rep = api.build(api.BuildConfig(model=name, target="pynq-z1", output=out))
    m, f = rep.manifest, rep.manifest.fidelity
    res = m.compiler_info["resources"]
    return {
        "model": name, "cached": rep.cached, "build_s": round(time.perf_counter() - t0, 1), "samples": f.samples, "data": f.data,
        "accuracy_fp32_ort": f.accuracy_fp32, "accuracy_csim": f.accuracy,
        "accuracy_ratio": (f.accuracy / f.accuracy_fp32) if f.accuracy and f.accuracy_fp32 else None,
        "top1_agreement": f.top1_agreement, "max_abs_err": f.max_abs_err, "cosine": f.cosine,
        "where": f.where, "estimated": res["estimated"], "board": res["board"], "utilization": res["utilization"],
        "reuse_factors": [w["reuse_factor"] for w in res["layers"]],
        "estimated_latency_us": m.compiler_info["latency"]["us_at_clock"],
        "precisions": m.compiler_info["precisions"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build", nargs="*", default=["digits-mlp", "digits-cnn"])
    ap.add_argument("--check", nargs="*", default=CHECK)
    ap.add_argument("--output", type=Path, default=Path("artifacts"), help="artifacts folder (cache hits reused)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/fpga.json"))
    args = ap.parse_args()
    host = f"{platform.node()} ({platform.machine()}, shared and noisy)"

    checks = [fits(n) for n in args.check]
    print("\nFits the PYNQ-Z1 fabric? (resources estimated by deploypipe's pre-synthesis model; board figures: XC7Z020)")
    print(f"{'model':<14}{'params':>11}  {'DSP':>9}{'BRAM18K':>9}{'LUT':>8}  reuse  verdict")
    for c in checks:
        e = c.get("estimated") or {}
        verdict = "fits" if c.get("fits") else f"refused: {c.get('reason')}"
        print(f"{c['model']:<14}{c.get('params', 0):>11,}  {e.get('DSP48E1', '-'):>9}{e.get('BRAM18K', '-'):>9}"
              f"{e.get('LUT', '-'):>8}  {c.get('reuse', '-'):>5}  {verdict}")

    builds = []
    for name in args.build:
        try:
            builds.append(build(name, args.output))
        except DeployPipeError as exc:
            builds.append({"model": name, "error": str(exc)})
    print(f"\nAccuracy on the real held-out digits, measured on {host}:")
    print("FP32 = ONNX Runtime on the imported model; fixed point = hls4ml bit-accurate C simulation "
          "(g++), not an FPGA measurement")
    print(f"{'model':<12}{'FP32 acc':>9}{'fixed acc':>10}{'ratio':>7}{'top-1 agr':>10}{'max err':>9}"
          f"{'DSP est':>9}{'BRAM est':>9}{'est. us':>8}")
    for b in builds:
        if "error" in b:
            print(f"{b['model']:<12} failed: {b['error']}")
            continue
        e = b["estimated"]
        print(f"{b['model']:<12}{b['accuracy_fp32_ort']:>8.2f}%{b['accuracy_csim']:>9.2f}%{b['accuracy_ratio']:>7.3f}"
              f"{b['top1_agreement']:>10.3f}{b['max_abs_err']:>9.3f}{e['DSP48E1']:>9}{e['BRAM18K']:>9}"
              f"{b['estimated_latency_us']:>8}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"host": host, "fits": checks, "builds": builds}, indent=2, default=str))
    print(f"\nsaved {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
