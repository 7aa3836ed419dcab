"""ONNX -> .tflite conversion (fp32, fp16 weights, full-integer int8) with onnx2tf, shared by the
tflite and edgetpu backends and the TensorFlow importers.

The converter (TensorFlow 2.19 + onnx2tf 1.29.24) lives in its own venv, `.venv-tflite`, because
its pins (onnx 1.19.1, numpy<2, protobuf<5) conflict with the main environment; it is run as a
subprocess on `_convert_script.py`. The runtime side (ai-edge-litert) is in the main venv.

Layout and quantization contract (see docs/tflite.md): the .tflite takes channel-last (NHWC)
tensors, and int8 files take int8 tensors. The manifest keeps the source model's input specs
(ONNX names, NCHW, float32) with the int8 `quant` params attached, and `compiler_info["io"]`
gives each TFLite tensor's name, shape, dtype and the permutation from the ONNX layout; the
tflite runner transposes and quantizes (q = round(x/s) + z), then dequantizes ((q - z) * s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.errors import (
    BuildError,
    InputFileError,
    InternalError,
    MissingBackendError,
    UnsupportedError,
)
from deploypipe.model import Model, QuantParams, TensorSpec
from deploypipe.toolchains import VENV_ENV, venv_dir

_SCRIPT = Path(__file__).with_name("_convert_script.py")
_INSTALL_HINT = "the converter lives in its own venv: run `bash scripts/install.sh` (creates .venv-tflite) " \
                f"or point {VENV_ENV} at a venv made from scripts/requirements-tflite*.txt"


class TfliteOptions(BaseModel):
    """`[compilers.tflite] options` of a target file."""

    model_config = ConfigDict(extra="forbid")
    calibration_samples: int = Field(default=100, ge=1, le=2000)  # int8 calibration batch count
    quant_type: Literal["per-channel", "per-tensor"] = "per-channel"
    io_dtype: Literal["int8", "uint8"] = "int8"  # full-integer model input/output type
    timeout_s: int = Field(default=1800, ge=60)


def toolchain_python(what: str = "TFLite converter (onnx2tf + TensorFlow)") -> Path:
    venv = venv_dir()
    if venv is None:
        raise MissingBackendError(what, "tflite", _INSTALL_HINT)
    return venv / "bin" / "python"


def run_toolchain(request: dict[str, Any], timeout_s: int, what: str) -> dict[str, Any]:
    """Run one command of `_convert_script.py` in the converter venv; its errors become ours."""
    python = toolchain_python()
    with tempfile.TemporaryDirectory(prefix="dp-tflite-req-") as tmp:
        req, res = Path(tmp, "request.json"), Path(tmp, "result.json")
        req.write_text(json.dumps(request))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)  # the converter venv must not see the main venv's packages
        try:
            proc = subprocess.run([str(python), str(_SCRIPT), str(req), str(res)], capture_output=True, text=True,
                                  timeout=timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{what}: the TFLite toolchain ran past {timeout_s} s") from exc
        if not res.is_file():
            tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-6:] if "] Ignored " not in line)[-400:]
            how = f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else f"exit {proc.returncode}"
            raise BuildError(f"{what}: the TFLite toolchain crashed ({how}; TensorFlow's converter, not deploypipe): {tail}")
        result = json.loads(res.read_text())
    if result.get("ok"):
        return result
    kind, msg = result.get("kind"), f"{what}: {result.get('error')}"
    if kind == "unsupported":
        raise UnsupportedError(msg)
    if kind == "input":
        raise InputFileError(msg)
    if kind == "build":
        raise BuildError(msg)
    raise InternalError(f"{msg}\n{result.get('traceback', '')}")


def _calibration_arrays(model: Model, n: int, folder: Path) -> dict[str, str]:
    """Stack n calibration feeds per input into .npy files (channel-first, as the ONNX model), a
    whole number of the model's batches."""
    batches: dict[str, list[np.ndarray]] = {s.name: [] for s in model.inputs}
    for feed in model.calibration.samples(n, seed=0):
        for name, arr in feed.items():
            batches[name].append(np.asarray(arr, dtype=np.float32))
    rows = model.inputs[0].shape[0] or 1  # onnx2tf calibrates in slices of the model's batch size
    paths = {}
    for i, (name, arrs) in enumerate(batches.items()):
        path = folder / f"calibration_{i}.npy"
        data = np.concatenate(arrs, axis=0)
        if len(data) % rows:  # whole batches only: the samples repeated up to the next multiple
            data = np.concatenate([data] * (rows // len(data) + 2))[: -(-len(data) // rows) * rows]
        np.save(path, data)
        paths[name] = str(path)
    return paths


def convert(model: Model, precisions: list[str], outdir: Path, opts: TfliteOptions,
            what: str) -> dict[str, Any]:
    """ONNX -> the asked .tflite variants in `outdir`; returns the toolchain's description."""
    for spec in model.inputs:
        if not spec.dtype.startswith("float"):
            raise UnsupportedError(
                f"{what}: input '{spec.name}' is {spec.dtype}; onnx2tf's TFLite path (and full-integer "
                "quantization) needs float inputs (token-id models cannot be converted here)")
    with tempfile.TemporaryDirectory(prefix="dp-tflite-") as tmp:
        scratch = Path(tmp)
        src = scratch / "source.onnx"
        model.save(src)
        n = opts.calibration_samples if "int8" in precisions else 4
        request = {
            "command": "convert", "onnx": str(src), "scratch": str(scratch), "outdir": str(outdir),
            "precisions": precisions, "calibration": _calibration_arrays(model, n, scratch),
            "quant_type": opts.quant_type, "io_dtype": opts.io_dtype,
        }
        result = run_toolchain(request, opts.timeout_s, what)
    result["calibration"] = f"{n} samples of {model.calibration.description}" if "int8" in precisions else ""
    return result


def io_specs(model: Model, io: dict[str, list[dict[str, Any]]]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Manifest specs: the source model's names/shapes/dtypes, with int8 quant params attached."""
    def specs(model_specs: list[TensorSpec], tensors: list[dict[str, Any]]) -> list[TensorSpec]:
        by_name = {t["onnx_name"]: t for t in tensors}
        out = []
        for s in model_specs:
            t = by_name[s.name]
            quant = QuantParams(scale=t["scale"], zero_point=t["zero_point"]) if t["scale"] > 0 else None
            out.append(s.model_copy(update={"quant": quant}))
        return out

    return specs(model.inputs, io["inputs"]), specs(model.outputs, io["outputs"])


def io_summary(io: dict[str, list[dict[str, Any]]]) -> str:
    parts = []
    for t in io["inputs"]:
        layout = "channel-last" if t["perm"] else "same layout"
        q = f", q = round(x/{t['scale']:.6g}) + {t['zero_point']}" if t["scale"] > 0 else ""
        parts.append(f"input '{t['onnx_name']}' -> TFLite {t['dtype']}{t['shape']} ({layout}{q})")
    return "; ".join(parts)
