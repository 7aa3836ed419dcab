"""TVM INT8 on a CPU without VNNI: the AVX2 integer kernels (vpmaddubsw + vpmaddwd) against the
float-simulated QDQ path they replace and against TVM FP32, for the zoo models; and what the integer
depthwise convolutions buy (against the same build with them float-simulated).

The QDQ graph is the pipeline's own int8 pass for the `xeon` target (Broadwell, AVX2: 7-bit weights,
`reduce_range`, so no 16-bit pair can saturate), quantized by ONNX Runtime on synthetic calibration
data. Four libraries are compiled for `-mcpu=MCPU` (default broadwell, the xeon target's): FP32,
INT8 integer, INT8 float-simulated (`relax.lower(..., integer_kernels=False)`), INT8 integer with the
depthwise convolutions float-simulated. A -mcpu with VNNI (this host's, e.g. emeraldrapids)
measures the VNNI kernels on the same 7-bit weights. Each is timed in a
process of its own (two TVM libraries in one process share kernel symbol names and measure like
one), every round times each once, and the ratios are taken within a round (the machine is a shared
2-core VM): the median over the rounds of the p50 ratio and of the fastest-run ratio.

This host's CPU runs the AVX2 code, so the figures show what the instruction mix buys, measured
here; they are not timings of an AVX2 CPU (a Broadwell core issues vpmaddubsw on one port, newer
cores on two), and say so.

Usage: python benchmarks/tvm_int8_isa.py [--models mobilenet-v2 resnet18] [--mcpu broadwell] [--rounds 7]
Writes benchmarks/results/tvm_int8_<mcpu>.json. --mcpu skylake-avx512 measures an AVX-512 CPU without
VNNI (Skylake-SP), whose kernels are vpmaddubsw on 512-bit vectors (AVX512BW).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/tvm.py would shadow Apache TVM: drop this folder from the path; this checkout's deploypipe first
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]
VARIANTS = ("fp32", "int8-integer", "int8-float-sim", "int8-integer-dw-float")
PAIRS = {"integer_vs_float_sim": ("int8-integer", "int8-float-sim"), "integer_vs_fp32": ("int8-integer", "fp32"),
         "float_sim_vs_fp32": ("int8-float-sim", "fp32"),
         "depthwise_integer_vs_float_sim": ("int8-integer", "int8-integer-dw-float")}


def compile_library(onnx_path: Path, mcpu: str, threads: int, variant: str, out: Path) -> str:
    """Compile one library (a VARIANTS entry; int8-integer-dw-float: the integer layers but the
    depthwise ones, as builds were before those became integer); returns its INT8 note."""
    import tvm

    from deploypipe.backends.tvm import integer
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower
    from deploypipe.importers import import_model

    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": threads})
    mod = import_relax(import_model(onnx_path))
    if variant == "int8-integer-dw-float":
        mod = integer.integer_layers(mod, integer.integer_path(target)[0], depthwise=False)[0]
    lowered = lower(mod, target, integer_kernels=variant == "int8-integer")
    compile_module(lowered, target).export_library(str(out))
    return integer.report(lowered, target)[1] if variant != "fp32" else ""


def time_library(path: Path, number: int, inputs: Path, output: Path) -> dict[str, float]:
    """Time `path` in this process: p50 and fastest of `number` runs; its output is saved."""
    import time

    import numpy as np
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    x = tvm.runtime.tensor(np.load(inputs))
    np.save(output, vm["main"](x).numpy())
    for _ in range(5):
        vm["main"](x)
    runs = []
    for _ in range(number):
        start = time.perf_counter()
        vm["main"](x)
        runs.append((time.perf_counter() - start) * 1e3)
    return {"p50": float(np.median(runs)), "min": min(runs)}


def _median(values: list[float]) -> float:
    import numpy as np

    return float(np.median(values))


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mobilenet-v2", "resnet18"])
    ap.add_argument("--mcpu", default="broadwell", help="an x86 CPU without VNNI (the xeon target's)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--number", type=int, default=100, help="runs per variant per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-tvm-avx2")
    ap.add_argument("--time", nargs=4, metavar=("LIB", "NUMBER", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.time:  # the child: one library timed in a fresh process
        lib, number, inputs, output = args.time
        print(json.dumps(time_library(Path(lib), int(number), Path(inputs), Path(output))))
        return

    import tvm

    from benchmarks._sibling import load
    from deploypipe.api import BuildConfig, build
    from deploypipe.artifact import Artifact
    from deploypipe.isa import host_isa

    bench_tvm = load("tvm")
    args.out.mkdir(parents=True, exist_ok=True)
    host = str(tvm.target.codegen.llvm_get_system_cpu())
    env = {**os.environ, "TVM_NUM_THREADS": str(args.threads)}
    rows = {}
    for name in args.models:
        fp32 = bench_tvm.export(name, args.out)
        # random weights give near-tied logits: the top-1 gate is relaxed, as in benchmarks/tvm.py
        qdq_build = build(BuildConfig(model=str(fp32), target="xeon", compiler="onnxruntime", quantize="int8",
                                      force=True, output=args.out, name=f"{name}-ort-int8-xeon",
                                      tolerance={"min_top1_agreement": 0.5}))
        qdq = Artifact(qdq_build.path).file("model")
        libs = {v: args.out / f"{name}-{v}-{args.mcpu}.so" for v in VARIANTS}
        notes = {v: compile_library(fp32 if v == "fp32" else qdq, args.mcpu, args.threads, v, lib)
                 for v, lib in libs.items()}
        note = notes["int8-integer"]
        print(f"{name}: {note}", flush=True)
        inputs = args.out / f"{name}-input.npy"
        shape = Artifact(qdq_build.path).manifest.inputs[0].shape
        np.save(inputs, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        rounds = []
        for _ in range(args.rounds):
            timed = {}
            for variant, lib in libs.items():
                child = subprocess.run([sys.executable, __file__, "--time", str(lib), str(args.number), str(inputs),
                                        str(args.out / f"{name}-{variant}-out.npy")],
                                       env=env, capture_output=True, text=True, check=True)
                timed[variant] = json.loads(child.stdout.strip().splitlines()[-1])
            rounds.append(timed)
        outs = {v: np.load(args.out / f"{name}-{v}-out.npy") for v in VARIANTS}

        rows[name] = {
            "int8_note": note, "int8_note_depthwise_float": notes["int8-integer-dw-float"],
            "ratios_median": {pair: {"p50": _median([r[a]["p50"] / r[b]["p50"] for r in rounds]),
                                     "fastest": _median([r[a]["min"] / r[b]["min"] for r in rounds])}
                              for pair, (a, b) in PAIRS.items()},
            "fastest_ms_median": {v: _median([r[v]["min"] for r in rounds]) for v in VARIANTS},
            "integer_vs_float_sim_max_abs_diff": float(np.abs(outs["int8-integer"] - outs["int8-float-sim"]).max()),
            "integer_vs_depthwise_float_max_abs_diff": float(np.abs(outs["int8-integer"]
                                                                    - outs["int8-integer-dw-float"]).max()),
            "int8_vs_fp32_max_abs_diff": float(np.abs(outs["int8-integer"] - outs["fp32"]).max()),
            "rounds": rounds,
        }
        print(name, json.dumps(rows[name]["ratios_median"]), flush=True)
    where = f"-mcpu={args.mcpu} code measured on this host's {host} (INT8 ISA {host_isa()}), {args.threads} threads"
    if args.mcpu != host:
        where += ": that CPU's instruction mix, not its timings"
    result = {"where": where, "mcpu": args.mcpu, "threads": args.threads, "rounds": args.rounds, "models": rows}
    (ROOT / "benchmarks" / "results" / f"tvm_int8_{args.mcpu}.json").write_text(json.dumps(result, indent=1))
    print(where)


if __name__ == "__main__":
    main()
