"""TensorRT engine path: build, run and refuse mismatches on a machine with TensorRT and a CUDA
GPU. Skipped elsewhere, with the reason; nothing here is emulated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deploypipe.api import BuildConfig, build
from deploypipe.artifact import Artifact
from deploypipe.backends.tensorrt.ondevice import trt_build
from deploypipe.backends import load
from deploypipe.backends.tensorrt.runner import TensorRTRunner, local_gpu, tensorrt_version

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(tensorrt_version() is None, reason="the `tensorrt` Python module is not importable here"),
    pytest.mark.skipif(local_gpu() is None, reason="no CUDA GPU on this machine"),
]


@pytest.mark.parametrize("precision", [None, "fp16", "int8"])
def test_engine_builds_runs_and_matches_golden(tiny_onnx: Path, tmp_path: Path, precision: str | None) -> None:
    report = build(BuildConfig(model=str(tiny_onnx), target="server-gpu", quantize=precision, output=tmp_path))
    if "engine" not in report.manifest.files:  # this GPU is not the target's SM: build it as on a device
        trt_build(report.path, any_gpu=True)
    art = Artifact(report.path)
    engine = art.manifest.compiler_info["engine"]
    gpu = local_gpu()
    assert gpu is not None and engine["sm"] == gpu.sm and engine["tensorrt"].split(".")[:3] == tensorrt_version().split(".")[:3]
    inputs, reference, _ = art.golden()
    with load(report.path) as runner:
        assert runner.kind == "tensorrt"
        out = runner.infer(inputs)
    name = next(iter(reference))
    ref, got = reference[name].ravel(), out[name].ravel().astype(np.float64)
    cosine = float(np.dot(ref, got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cosine > (0.99 if precision == "int8" else 0.999)


def test_engine_of_another_sm_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    report = build(BuildConfig(model=str(tiny_onnx), target="server-gpu", output=tmp_path))
    if "engine" not in report.manifest.files:
        trt_build(report.path, any_gpu=True)
    mf = report.path / "manifest.json"
    data = json.loads(mf.read_text())
    data["compiler_info"]["engine"]["sm"] = "5.3"
    mf.write_text(json.dumps(data))
    reason = TensorRTRunner.why_not_runnable(Artifact(report.path))
    assert reason is not None and "built for GPU SM 5.3" in reason
