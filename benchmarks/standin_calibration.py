"""What the stand-in photos (deploypipe.data.natural) buy as INT8 calibration when no data is given.

The PP-OCR text detector (real weights; its preprocessing is ImageNet's, as the stand-in photos')
is quantized by the INT8 pass three times, calibrated on (a) synthetic N(0,1) noise, (b) the
stand-in photos, (c) its own real text pages (the best case), and each result is judged on the
same held-out real text pages: weakest-output cosine and text-mask IoU against FP32.

    python benchmarks/standin_calibration.py [--samples 16]

Writes benchmarks/results/standin_calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT), *(p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402

from deploypipe import passes  # noqa: E402
from deploypipe.analysis import reference  # noqa: E402
from deploypipe.bench.context import run_context  # noqa: E402
from deploypipe.data import metrics as mt  # noqa: E402
from deploypipe.data.natural import NaturalImages  # noqa: E402
from deploypipe.importers import import_model  # noqa: E402
from deploypipe.model import SyntheticProvider  # noqa: E402
from deploypipe.passes import PassContext  # noqa: E402
from deploypipe.zoo.real_metrics import mask_iou, text_masks  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "standin_calibration.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ppocr-det")
    ap.add_argument("--samples", type=int, default=16, help="calibration samples (the real set has fewer: all of it)")
    ap.add_argument("--methods", nargs="+", default=["minmax"], choices=["minmax", "entropy", "percentile"])
    args = ap.parse_args()
    model = import_model(args.model)
    real = model.calibration
    held_out = list(real.samples(1000, seed=7))  # RealProvider: any seed but 0 is the held-out split
    refs = reference.run(model.proto, held_out)
    sources = {"synthetic N(0,1)": SyntheticProvider(model.inputs), "stand-in photos": NaturalImages(model.inputs[0]),
               "own real data": real}
    rows = {}
    for (label, provider), method in ((src, m) for src in sources.items() for m in args.methods):
        key = f"{label}, {method}"
        print(f"{args.model}: calibrating on {key} ...", flush=True)
        cfg = {"calibration": method, "calibration_samples": args.samples, "gate": False, "mixed_precision": False}
        result = passes.create("int8", cfg)(replace(model, calibration=provider), PassContext("host-cpu", "int8"))
        outs = reference.run(result.model.proto, held_out)
        name = next(iter(refs[0]))
        ref_maps, out_maps = [r[name] for r in refs], [o[name] for o in outs]
        rows[key] = {
            "calibration": result.details["calibration"],
            "cosine": float(min(mt.cosine(np.stack(ref_maps), np.stack(out_maps)), 1.0)),
            "mask_iou_vs_fp32": mask_iou(text_masks(out_maps), text_masks(ref_maps)),
        }
        print(f"  cosine {rows[key]['cosine']:.4f}, mask IoU {rows[key]['mask_iou_vs_fp32']:.3f}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"context": run_context(), "model": args.model, "held_out_samples": len(held_out),
                                   "judged_on": "held-out real text pages shipped with deploypipe", "rows": rows},
                                  indent=1, default=str))


if __name__ == "__main__":
    main()
