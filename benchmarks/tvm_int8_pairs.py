"""TVM INT8 integer kernels vs TVM FP32 vs the float-simulated INT8 path vs ONNX Runtime FP32,
timed in pairs: the artifacts `benchmarks/tvm.py --qdq` built (tvm-untuned, tvm-qdq-untuned: integer
kernels on a VNNI CPU, tvm-qdq-float: DEPLOYPIPE_ISA=x86-avx2, ort-fp32) loaded in one process,
each timed once per round in turn, every ratio taken within a round, the median over the rounds
reported. On a shared 2-core machine the load changes from one second to the next; ratios within
a round see the same load, milliseconds across rounds do not.

Usage: TVM_NUM_THREADS=2 python benchmarks/tvm.py --models mobilenet-v2 resnet18 --qdq --out DIR
       TVM_NUM_THREADS=2 python benchmarks/tvm_int8_pairs.py --out DIR [--rounds 9]
Writes benchmarks/results/tvm_int8.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/tvm.py would shadow Apache TVM: drop this folder from the path; this checkout's deploypipe first
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]
TVM_VARIANTS = ("tvm-untuned", "tvm-qdq-untuned", "tvm-qdq-float")
PAIRS = {"int8_integer_vs_tvm_fp32": ("tvm-qdq-untuned", "tvm-untuned"),
         "int8_float_sim_vs_tvm_fp32": ("tvm-qdq-float", "tvm-untuned"),
         "int8_integer_vs_int8_float_sim": ("tvm-qdq-untuned", "tvm-qdq-float"),
         "tvm_fp32_vs_ort_fp32": ("tvm-untuned", "ort-fp32"),
         "int8_integer_vs_ort_fp32": ("tvm-qdq-untuned", "ort-fp32")}


def timers(out: Path, model: str, threads: int, number: int) -> dict[str, Callable[[], float]]:
    """One callable per variant returning the mean ms of `number` runs on a random input."""
    import numpy as np
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from deploypipe.artifact import Artifact

    inputs, _, _ = Artifact(out / f"{model}-ort-fp32").golden()
    name, x = next(iter(inputs.items()))
    runs: dict[str, Callable[[], float]] = {}
    for variant in TVM_VARIANTS:
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(Artifact(out / f"{model}-{variant}").file("model"))), tvm.cpu())
        vm.set_input("main", tvm.runtime.tensor(np.ascontiguousarray(x)))
        timer = vm.time_evaluator("invoke_stateful", tvm.cpu(), number=number, repeat=1)
        runs[variant] = lambda timer=timer: timer("main").mean * 1e3
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(Artifact(out / f"{model}-ort-fp32").file("model")), opts,
                                   providers=["CPUExecutionProvider"])

    def ort_ms() -> float:
        start = time.perf_counter()
        for _ in range(number):
            session.run(None, {name: x})
        return (time.perf_counter() - start) / number * 1e3

    runs["ort-fp32"] = ort_ms
    return runs


def main() -> None:
    import os

    import numpy as np

    from deploypipe.isa import host_isa

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True, help="the --out folder of benchmarks/tvm.py --qdq")
    ap.add_argument("--models", nargs="+", default=["mobilenet-v2", "resnet18"])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--number", type=int, default=5, help="runs per variant per round")
    args = ap.parse_args()
    threads = int(os.environ.get("TVM_NUM_THREADS", "0") or 0)
    if threads < 1:
        raise SystemExit("set TVM_NUM_THREADS (TVM's thread count; ONNX Runtime gets the same)")
    import tvm

    rows = {}
    for model in args.models:
        runs = timers(args.out, model, threads, args.number)
        for run in runs.values():
            run()  # warm-up
        rounds = [{variant: run() for variant, run in runs.items()} for _ in range(args.rounds)]
        rows[model] = {"ms_median": {v: float(np.median([r[v] for r in rounds])) for v in runs},
                       "ratios_median": {k: float(np.median([r[a] / r[b] for r in rounds])) for k, (a, b) in PAIRS.items()},
                       "rounds": rounds}
        print(model, json.dumps(rows[model]["ratios_median"], indent=1), flush=True)
    where = {"int8_isa": host_isa(), "llvm_mcpu": str(tvm.target.codegen.llvm_get_system_cpu()), "threads": threads}
    (ROOT / "benchmarks" / "results" / "tvm_int8.json").write_text(json.dumps({"where": where, "models": rows}, indent=1))


if __name__ == "__main__":
    main()
