"""The quick campaign on this host: wall time cold and warm, what happened to its cells, and what
the executors buy. Every run is a fresh `deploypipe campaign` process (each pays its own imports).

1. serial, cold: a fresh output folder (no artifact cache, no store).
2. serial, resumed: the same command again: every cell finished, nothing is redone.
3. serial, warm: the same folder with `--redo`: every build is a cache hit, every cell measured again.
4. pool with 2 workers and 5. Ray (a local instance started by the run) with 2 CPUs, each in a fresh
   output folder, so no cache helps them: total wall time and build-phase wall time against the
   serial cold run of this same invocation. Measurements are serialized in every executor, so only
   the build phase can get faster.

    python benchmarks/campaign.py [--campaign campaigns/quick.toml]   # writes benchmarks/results/campaign.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this folder's openvino.py and tflite.py would shadow the packages of those names
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

from deploypipe.bench.context import run_context
from deploypipe.isa import host_isa


def campaign(file: Path, out: Path, executor: str, *extra: str) -> dict:
    """One `deploypipe campaign --json` run: its summary, the process's wall time, the cell lines."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deploypipe", "campaign", str(file), "-o", str(out),
                           "--executor", executor, "--workers", "2", "--json", *extra],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"campaign with {executor} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    lines = proc.stdout.splitlines()
    cells = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]
    summary = json.loads("\n".join(lines[len(cells):]))
    return {"executor": executor, "process_wall_s": wall, "campaign_wall_s": summary["wall_s"],
            "build_wall_s": summary["build_wall_s"], "counts": summary["counts"], "builds": summary["builds"],
            "cache_hits": summary["cache_hits"], "where": summary["where"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", type=Path, default=ROOT / "campaigns" / "quick.toml")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "campaign.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp:
        root = Path(tmp)
        cold = campaign(args.campaign, root / "serial", "serial")
        resumed = campaign(args.campaign, root / "serial", "serial")
        warm = campaign(args.campaign, root / "serial", "serial", "--redo")
        pool = campaign(args.campaign, root / "pool", "pool")
        ray = campaign(args.campaign, root / "ray", "ray")
    ctx = run_context()
    result = {
        "measured_on": f"{ctx['host']} ({ctx['cpu']}, {ctx['cores']} cores, INT8 ISA {host_isa()})",
        "load_average_at_end": ctx["loadavg"],
        "campaign": str(args.campaign.relative_to(ROOT) if args.campaign.is_relative_to(ROOT) else args.campaign),
        "runs": {"serial_cold": cold, "serial_resumed": resumed, "serial_warm": warm, "pool_2_workers": pool,
                 "ray_2_cpus": ray},
        "cells": cold["counts"],
        "warm_vs_cold": {"total": cold["process_wall_s"] / warm["process_wall_s"],
                         "build_phase": cold["build_wall_s"] / warm["build_wall_s"]},
        "resumed_vs_cold": cold["process_wall_s"] / resumed["process_wall_s"],
        "speedup_vs_serial": {
            name: {"total": cold["process_wall_s"] / run["process_wall_s"],
                   "build_phase": cold["build_wall_s"] / run["build_wall_s"]}
            for name, run in (("pool_2_workers", pool), ("ray_2_cpus", ray))},
        "note": ("ratios against the serial cold run of this same invocation; measurements run one at a "
                 "time in every executor, so only the build phase can get faster; other processes shared "
                 "the 2 cores (load average above)"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
