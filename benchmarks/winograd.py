"""Winograd against direct 3x3 convolutions in TVM builds, per layer and in whole models against
ONNX Runtime FP32.

Layers: ResNet's stride-1 3x3 shapes (56x56x64, 28x28x128, 14x14x256, 7x7x512), each as a chain of
three conv + ReLU layers so the middle one sees NHWC in and out as inside a network, compiled
direct, in F(2x2,3x3) and in F(4x4,3x3) where m divides the output (random weights; the figure is
the chain's time). Models: the zoo's ResNet-18 and ResNet-50 (random weights; MobileNet-v2 has no
stride-1 3x3 convolution with more than 3 input channels), Winograd as the build chooses
(`winograd.choose`) and off, and ONNX Runtime on the same file. Untuned (default schedules), this
host's -mcpu, 2 threads. Each TVM library is timed in a process of its own (two in one process
share kernel names), every round times each variant once, and ratios are taken within a round:
the median over rounds of the p50 ratio and of the fastest-run ratio. Outputs are compared with
ONNX Runtime's.

Usage: python benchmarks/winograd.py [--rounds 5] [--skip-layers] [--models resnet18 resnet50]
Writes benchmarks/results/winograd_<mcpu>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/tvm.py would shadow Apache TVM: drop this folder from the path; this checkout's deploypipe first
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]
LAYERS = ((56, 64), (28, 128), (14, 256), (7, 512))
TIMER = Path(__file__).parent / "tvm_int8_isa.py"  # its --time child times one library in a fresh process


def chain(hw: int, channels: int, path: Path) -> None:
    """Three padded 3x3 conv + ReLU layers, channels -> channels, on hw x hw."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((channels, channels, 3, 3)) * (2 / (9 * channels)) ** 0.5).astype(np.float32)
    b = (rng.standard_normal(channels) * 0.1).astype(np.float32)
    nodes = []
    for i in range(3):
        nodes += [helper.make_node("Conv", ["x" if i == 0 else f"r{i - 1}", "w", "b"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], ["y" if i == 2 else f"r{i}"])]
    shape = [1, channels, hw, hw]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def compile_library(onnx_path: Path, variant: str, threads: int, out: Path) -> list[str]:
    """direct, auto (the build's choice) or m2 / m4 (that tile size wherever it divides the
    output); returns the Winograd layers."""
    import tvm

    from deploypipe.backends.tvm import winograd
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower
    from deploypipe.importers import import_model

    if variant.startswith("m"):
        winograd.MIN_TILES = {int(variant[1:]): 1}
    target = tvm.target.Target({"kind": "llvm", "mcpu": str(tvm.target.codegen.llvm_get_system_cpu()),
                                "num-cores": threads})
    lowered = lower(import_relax(import_model(onnx_path)), target, winograd_convs=variant != "direct")
    compile_module(lowered, target).export_library(str(out))
    return winograd.layers(lowered)


def _median(values: list[float]) -> float:
    import numpy as np

    return float(np.median(values))


def measure(name: str, onnx_path: Path, variants: list[str], args: argparse.Namespace) -> dict:
    """Build the variants, time them and ORT in interleaved rounds; ratios to ORT and to direct."""
    import numpy as np
    import onnxruntime as ort

    libs, layers = {}, {}
    for v in variants:
        lib = args.out / f"{name}-{v}.so"
        child = subprocess.run([sys.executable, __file__, "--compile", str(onnx_path), v, str(args.threads), str(lib)],
                               capture_output=True, text=True, check=True)
        layers[v] = json.loads(child.stdout.strip().splitlines()[-1])
        if v.startswith("m") and not layers[v]:
            continue  # m divides no output here: the same library as direct
        libs[v] = lib
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    feed_name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    inputs = args.out / f"{name}-input.npy"
    np.save(inputs, x)
    reference = sess.run(None, {feed_name: x})[0]
    env = {**os.environ, "TVM_NUM_THREADS": str(args.threads)}
    rounds = []
    for _ in range(args.rounds):
        for _ in range(5):
            sess.run(None, {feed_name: x})
        runs = []
        for _ in range(args.number):
            start = time.perf_counter()
            sess.run(None, {feed_name: x})
            runs.append((time.perf_counter() - start) * 1e3)
        timed = {"ort": {"p50": float(np.median(runs)), "min": min(runs)}}
        for v, lib in libs.items():
            child = subprocess.run([sys.executable, str(TIMER), "--time", str(lib), str(args.number), str(inputs),
                                    str(args.out / f"{name}-{v}-out.npy")], env=env, capture_output=True, text=True,
                                   check=True)
            timed[v] = json.loads(child.stdout.strip().splitlines()[-1])
        rounds.append(timed)
    errors = {v: float(np.abs(np.load(args.out / f"{name}-{v}-out.npy") - reference).max()) for v in libs}
    row = {
        "winograd_layers": {v: layers[v] for v in libs},
        "vs_ort": {v: {"p50": _median([r[v]["p50"] / r["ort"]["p50"] for r in rounds]),
                       "fastest": _median([r[v]["min"] / r["ort"]["min"] for r in rounds])} for v in libs},
        "vs_direct": {v: {"p50": _median([r[v]["p50"] / r["direct"]["p50"] for r in rounds]),
                          "fastest": _median([r[v]["min"] / r["direct"]["min"] for r in rounds])}
                      for v in libs if v != "direct"},
        "max_abs_err_vs_ort": errors,
        "rounds": rounds,
    }
    print(name, json.dumps({"vs_direct": row["vs_direct"], "vs_ort": row["vs_ort"], "err": errors}), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--number", type=int, default=50, help="runs per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="*", default=["resnet18", "resnet50"])
    ap.add_argument("--skip-layers", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-winograd")
    ap.add_argument("--compile", nargs=4, metavar=("ONNX", "VARIANT", "THREADS", "LIB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.compile:  # a child: one library compiled (MIN_TILES set per variant)
        onnx_path, variant, threads, lib = args.compile
        print(json.dumps(compile_library(Path(onnx_path), variant, int(threads), Path(lib))))
        return

    import tvm

    from benchmarks._sibling import load
    from deploypipe.isa import host_isa

    bench_tvm = load("tvm")
    args.out.mkdir(parents=True, exist_ok=True)
    host = str(tvm.target.codegen.llvm_get_system_cpu())
    result: dict = {"where": f"measured on this host, -mcpu={host} (INT8 ISA {host_isa()}), {args.threads} threads, "
                             "untuned (default schedules), each TVM library in its own process",
                    "rounds": args.rounds, "layers": {}, "models": {}}
    if not args.skip_layers:
        for hw, channels in LAYERS:
            path = args.out / f"chain{hw}x{channels}.onnx"
            chain(hw, channels, path)
            result["layers"][f"{hw}x{hw}x{channels}"] = measure(path.stem, path, ["direct", "m2", "m4"], args)
    for name in args.models:
        result["models"][name] = measure(name, bench_tvm.export(name, args.out), ["direct", "auto"], args)
    (ROOT / "benchmarks" / "results" / f"winograd_{host}.json").write_text(json.dumps(result, indent=1))
    print(result["where"])


if __name__ == "__main__":
    main()
