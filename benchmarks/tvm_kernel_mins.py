"""TVM artifacts compared kernel by kernel: the sum of each kernel call's fastest time over rounds.

On a shared VM another tenant's load comes in bursts of seconds to minutes and can double a
whole-model latency between two runs of one artifact, so whole-model ratios of two builds that
differ by a few per cent say little. A kernel call's fastest time over many runs spread across
minutes is what it costs when nothing else interferes; their sum over the model compares builds of
one model (untuned, tuned, tuned with another database) where whole-model rounds cannot.

Each round runs every artifact in its own process (one TVM library per process), in turn:
`--iterations` whole-model runs (timed), then as many with the Relax VM's instrument hook timing
every kernel call. Reports per artifact the sum of per-call minima (kernels only: VM builtins
left out) and its ratio to the first artifact given of the same model, the fastest whole-model
run, and the kernels whose sums differ most between a model's builds.

Usage: python benchmarks/tvm_kernel_mins.py ART_DIR [ART_DIR ...] [--rounds 6] [--iterations 50]
       [--threads 2] [--results NAME.json]
Writes benchmarks/results/NAME.json (default tvm_kernel_mins.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/tvm.py sits beside this file: keep `import tvm` from finding it instead of Apache TVM
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]


def one(artifact: Path, iterations: int, out: Path) -> None:
    """In this process: time `artifact` whole and per kernel call, write JSON to `out`."""
    import numpy as np
    import tvm
    from tvm.runtime.vm import VirtualMachine

    manifest = json.loads((artifact / "manifest.json").read_text())
    dev = tvm.cpu()
    vm = VirtualMachine(tvm.runtime.load_module(str(artifact / "model.so")), dev)
    rng = np.random.default_rng(0)
    inputs = [tvm.runtime.tensor(rng.random(s["shape"], dtype=np.float32), dev) for s in manifest["inputs"]]
    main = vm["main"]
    for _ in range(5):
        main(*inputs)
    whole = []
    for _ in range(iterations):
        t = time.perf_counter()
        main(*inputs)
        whole.append((time.perf_counter() - t) * 1e3)
    calls: dict[int, tuple[str, list[float]]] = {}
    started: dict[int, float] = {}
    index = [0]

    def instrument(_func: object, symbol: str, before: bool, _ret: object, *_args: object) -> int:
        if before:
            started[index[0]] = time.perf_counter()
            return 0
        i = index[0]
        index[0] += 1
        calls.setdefault(i, (str(symbol), []))[1].append((time.perf_counter() - started.pop(i)) * 1e3)
        return 0

    vm.set_instrument(instrument)
    for _ in range(iterations):
        index[0] = 0
        main(*inputs)
    out.write_text(json.dumps({"whole_ms": whole, "calls": [calls[i] for i in sorted(calls)]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="*", type=Path)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default="tvm_kernel_mins.json")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(Path(args.one[0]), args.iterations, Path(args.one[1]))
        return
    if not args.artifacts:
        ap.error("give the artifact folders to compare")
    env = dict(os.environ, TVM_NUM_THREADS=str(args.threads))
    runs: dict[str, list[dict]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for art in args.artifacts:
                out = Path(tmp) / "run.json"
                subprocess.run([sys.executable, __file__, "--one", str(art), str(out), "--iterations", str(args.iterations)],
                               check=True, env=env)
                runs[str(art)].append(json.loads(out.read_text()))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    report = {}
    for art, rs in runs.items():
        names = [c[0] for c in rs[0]["calls"]]
        mins = [min(min(r["calls"][i][1]) for r in rs) for i in range(len(names))]
        per_kernel: dict[str, float] = defaultdict(float)
        for name, m in zip(names, mins, strict=True):
            if not name.startswith("vm.builtin."):
                per_kernel[re.sub(r"_prepacked$", "", name)] += m
        report[art] = {"kernel_min_sum_ms": sum(per_kernel.values()),
                       "whole_min_ms": min(min(r["whole_ms"]) for r in rs),
                       "per_kernel_ms": dict(per_kernel)}
    groups: dict[str, list[str]] = defaultdict(list)  # builds of one model compare with each other
    for art in report:
        groups[json.loads((Path(art) / "manifest.json").read_text())["model"]["name"]].append(art)
    for model, arts in groups.items():
        base = report[arts[0]]["kernel_min_sum_ms"]
        for art in arts:
            rep = report[art]
            rep["vs_first_of_model"] = rep["kernel_min_sum_ms"] / base
            print(f"{art}: sum of per-call minima {rep['kernel_min_sum_ms']:.2f} ms ({rep['vs_first_of_model']:.3f}x "
                  f"{arts[0]}), fastest whole run {rep['whole_min_ms']:.2f} ms")
        per = [report[a]["per_kernel_ms"] for a in arts]
        kernels = set().union(*per)
        for k in sorted(kernels, key=lambda k: -(max(p.get(k, 0) for p in per) - min(p.get(k, 0) for p in per)))[:6]:
            print(f"   {k[:48]:48s}", " ".join(f"{p.get(k, 0):.3f}" for p in per))
    from tvm.target import codegen

    from deploypipe.isa import host_isa

    result = {"where": f"this host ({os.uname().machine}, -mcpu={codegen.llvm_get_system_cpu()}, INT8 ISA "
                       f"{host_isa()}), {args.threads} TVM threads",
              "rounds": args.rounds, "iterations": args.iterations, "artifacts": report}
    path = ROOT / "benchmarks" / "results" / args.results
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
