"""INT8 for TensorRT: an explicit Q/DQ ONNX in the form TensorRT's explicit quantization takes,
and a calibration cache in TensorRT's text format from the same calibration run.

- Q/DQ: ONNX Runtime's `quantize_static` (QDQ format), symmetric INT8 activations and weights
  (zero points 0, which TensorRT requires), per-channel weights, weights kept FP32 behind a
  Quantize/Dequantize pair (TensorRT quantizes them itself), biases left FP32 (TensorRT 8.2's
  DequantizeLinear takes INT8 only, not the INT32 of quantized biases).
- Calibration cache: one header line `TRT-<NV_TENSORRT_VERSION>-EntropyCalibration2`, then
  `tensor: <IEEE-754 bits of scale, hex>` per tensor with scale = max|range| / 127, the format
  TensorRT's calibrators read and write. The ranges are ONNX Runtime's min/max ranges from the
  calibration run that produced the Q/DQ model; the header names EntropyCalibration2 because that
  is the calibrator `trtexec --calib` uses to read a cache. It serves implicit-INT8 builds of the
  FP32 prepared ONNX (the older TensorRT path).
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deploypipe.errors import BuildError

_QDQ_OPTIONS = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
    "QuantizeBias": False,
}


def trt_version_number(version: str) -> int:
    """NV_TENSORRT_VERSION for "8.2.1" (8201) or "10.3.0" (100300): NvInferVersion.h uses
    major*1000+minor*100+patch before TensorRT 10 and major*10000+minor*100+patch from 10 on."""
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def cache_header(version: str) -> str:
    return f"TRT-{trt_version_number(version)}-EntropyCalibration2"


def _hex_scale(scale: float) -> str:
    return f"{struct.unpack('>I', struct.pack('>f', scale))[0]:08x}"


def write_calibration_cache(path: Path, ranges: dict[str, tuple[float, float]], version: str) -> int:
    """Write TensorRT's calibration-cache text; returns the number of tensors."""
    lines = [cache_header(version)]
    for name in sorted(ranges):
        lo, hi = ranges[name]
        amax = max(abs(float(lo)), abs(float(hi)))
        lines.append(f"{name}: {_hex_scale(amax / 127.0)}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def read_calibration_cache(text: str) -> tuple[str, dict[str, float]]:
    """(header, tensor -> scale) of a cache file: used to check what was written and to re-head a
    cache for the TensorRT actually present on the device."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise BuildError("not a TensorRT calibration cache (no TRT-<version>-<algorithm> header)")
    scales = {}
    for ln in lines[1:]:
        name, _, hexval = ln.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexval.strip().rjust(8, "0")))[0]
    return lines[0], scales


def reheaded(text: str, version: str) -> str:
    """The same cache with the header of TensorRT `version` (the scales do not depend on it)."""
    _, _, rest = text.partition("\n")
    return cache_header(version) + "\n" + rest


class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)
        self._n = len(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def __len__(self) -> int:
        return self._n


def quantize_qdq(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> tuple[onnx.ModelProto, dict[str, tuple[float, float]]]:
    """Explicit Q/DQ model and the per-tensor (min, max) ranges of the same calibration run."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.calibrate import load_tensors_data

    source = onnx.ModelProto()
    source.CopyFrom(proto)  # quantize_static may move a ModelProto's weights to external data in place
    with tempfile.TemporaryDirectory(prefix="deploypipe-trt-int8-") as tmp:
        out, cache = Path(tmp) / "qdq.onnx", Path(tmp) / "ranges.json"
        try:
            quantize_static(
                source, str(out), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                extra_options=dict(_QDQ_OPTIONS),
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises bare exceptions; re-raised typed
            raise BuildError(f"INT8 Q/DQ quantization with onnxruntime failed: {type(exc).__name__}: {exc}") from exc
        qdq = onnx.load(str(out))
        data = load_tensors_data(cache)
    ranges = {}
    for name, tr in data.items():
        lo, hi = (float(np.min(tr.range_value[0])), float(np.max(tr.range_value[1])))
        ranges[name] = (lo, hi)
    return qdq, ranges


def qdq_problems(proto: onnx.ModelProto) -> list[str]:
    """Where a Q/DQ model departs from what TensorRT's explicit quantization accepts: non-zero
    zero points, non-INT8 quantized types, per-channel scales on activations."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    problems = []
    n_q = n_dq = 0
    for node in proto.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        n_q += node.op_type == "QuantizeLinear"
        n_dq += node.op_type == "DequantizeLinear"
        if len(node.input) < 3 or node.input[2] not in inits:
            problems.append(f"node {node.name}: {node.op_type} without a constant zero point")
            continue
        zp = inits[node.input[2]]
        if zp.dtype != np.int8:
            problems.append(f"node {node.name}: {node.op_type} zero point is {zp.dtype}, TensorRT takes int8")
        if np.any(zp != 0):
            problems.append(f"node {node.name}: {node.op_type} zero point is not 0 (TensorRT needs symmetric)")
        scale = inits.get(node.input[1])
        if scale is None:
            problems.append(f"node {node.name}: {node.op_type} scale is not a constant")
        elif scale.size > 1 and node.input[0] not in inits and node.op_type == "QuantizeLinear":
            problems.append(f"node {node.name}: per-channel scale on an activation (TensorRT: weights only)")
    if n_q == 0 or n_dq == 0:
        problems.append("no QuantizeLinear/DequantizeLinear nodes: the model was not quantized")
    return problems
