"""Build time of every compiler's default path, per stage, measured on this host.

Each build runs `deploypipe.api.build` (this checkout, `force=True`: no cache) in a fresh process,
as `deploypipe build` would, and times every progress stage (import, passes, calibration,
conversion, fidelity check; wall time) and the whole build's CPU time (user + system, with every
process it waited for: on a shared machine the wall time depends on the other jobs). The zoo
model is imported each time, as `--model NAME` does.

    nice -n 10 python benchmarks/build_times.py [--models resnet50 mobilenet-v2] [--only tflite]
Writes benchmarks/results/build_times.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this folder's openvino.py and tflite.py would shadow the packages of those names
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

# (label, target, compiler or None for the target's default, quantize)
PATHS = (
    ("onnxruntime int8", "host-cpu", None, "int8"),
    ("openvino fp16 (ncs2)", "ncs2", None, "fp16"),
    ("tvm fp32 (rpi4, cross + host stand-in)", "rpi4", "tvm", None),
    ("tflite int8 (rpi4)", "rpi4", None, "int8"),
    ("edgetpu int8", "edgetpu", None, "int8"),
    ("tensorrt prepare fp16 (jetson-nano)", "jetson-nano", None, "fp16"),
)

_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from deploypipe.api import BuildConfig, build
t0 = time.perf_counter()
stages, last = [], [t0, "start"]
def say(message):
    now, text = time.perf_counter(), str(message)
    if text != last[1]:
        stages.append([last[1], round(now - last[0], 2)])
        last[:] = [now, text]
rep = build(BuildConfig(model={model!r}, target={target!r}, compiler={compiler!r}, quantize={quantize!r},
                        output=Path({out!r}), force=True), progress=say)
stages.append([last[1], round(time.perf_counter() - last[0], 2)])
f = rep.manifest.fidelity
print(json.dumps({{"total_s": round(time.perf_counter() - t0, 2), "stages": stages,
                  "compiler": rep.manifest.compiler, "precision": rep.manifest.precision,
                  "fidelity": {{"passed": f.passed, "samples": f.samples, "max_abs_err": f.max_abs_err,
                               "top1_agreement": f.top1_agreement}}}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50", "mobilenet-v2"])
    ap.add_argument("--only", nargs="*", default=None, help="labels starting with these words")
    args = ap.parse_args()
    results: dict[str, dict] = {}
    out_path = ROOT / "benchmarks" / "results" / "build_times.json"
    if out_path.is_file():
        results = json.loads(out_path.read_text()).get("builds", {})
    with tempfile.TemporaryDirectory(prefix="dp-build-times-") as tmp:
        for model in args.models:
            for label, target, compiler, quantize in PATHS:
                if args.only and not any(label.startswith(w) for w in args.only):
                    continue
                code = _CHILD.format(root=str(ROOT), model=model, target=target, compiler=compiler,
                                     quantize=quantize, out=tmp)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                key = f"{model} | {label}"
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    results[key] = {"error": tail, "exit": proc.returncode}
                else:
                    results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
                # CPU time of the build and every process it waited for: on a shared machine the
                # wall time depends on the other jobs, the CPU time much less
                results[key]["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
                row = results[key]
                print(f"{key:<60} wall {row.get('total_s', row.get('error'))} s, cpu {row['cpu_s']} s", flush=True)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps({"where": _where(), "builds": results}, indent=2))


def _where() -> str:
    import platform

    from deploypipe.isa import host_isa

    return f"this host ({platform.machine()}, {host_isa()}), measured by benchmarks/build_times.py, one process per build"


if __name__ == "__main__":
    main()
