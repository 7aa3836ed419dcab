"""TensorRT backend without a GPU: ONNX preparation for the target's TensorRT, explicit Q/DQ INT8
checked with ONNX Runtime, calibration cache, trtexec recipes, precision refusal/adaptation, and
the runner's refusal of engines built for another GPU or TensorRT."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploypipe.api import BuildConfig, build
from deploypipe.backends.tensorrt import engine as trt_engine
from deploypipe.backends.tensorrt import int8 as trt_int8
from deploypipe.backends.tensorrt import ops as trt_ops
from deploypipe.backends.tensorrt import prepare as trt_prepare
from deploypipe.errors import UnsupportedError
from deploypipe.backends.tensorrt.facts import GpuInfo, engine_mismatch, tensorrt_version
from deploypipe.backends.tensorrt.runner import TensorRTRunner
from deploypipe.targets import unfused_on_host
from tests.conftest import tiny_classifier

TRT82 = trt_ops.table_for("8.2.1")


def _feeds(n: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return [{"input": np.random.default_rng(seed + i).standard_normal((1, 3, 16, 16)).astype(np.float32)}
            for i in range(n)]


def _run(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    """ORT on the CPU; a QDQ graph made for TensorRT runs unfused where this host's fused u8 x s8
    kernels would saturate (x86 without VNNI), as the server-gpu artifact's host stand-in does."""
    so = ort.SessionOptions()
    if unfused_on_host("server-gpu"):
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)[0]


def _single_op_model(op: str, opset: int, name: str, **attrs: object) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name=name, **attrs)
    graph = helper.make_graph([node], "one", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


# ---- preparation ---------------------------------------------------------------------------------

def test_prepare_converts_opset17_to_13_and_keeps_outputs() -> None:
    original = tiny_classifier()
    prep = trt_prepare.prepare(original, TRT82, "8.2.1", 13)
    assert (prep.opset_from, prep.opset) == (17, 13)
    assert prep.proto.ir_version == 7  # the IR of ONNX 1.8, the release of opset 13
    onnx.checker.check_model(prep.proto, full_check=True)
    assert all(d.HasField("dim_value") for d in prep.proto.graph.output[0].type.tensor_type.shape.dim)
    for feed in _feeds(3):
        np.testing.assert_allclose(_run(prep.proto, feed), _run(original, feed), rtol=1e-5, atol=1e-5)


def test_op_missing_at_lower_opset_is_named() -> None:
    model = helper.make_model(helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="ln0")], "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "g")]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedError, match=r"node ln0: op LayerNormalization does not exist at opset 13"):
        trt_prepare.downgrade(model, 13)


def test_unsupported_ops_reported_by_node_and_op() -> None:
    model = _single_op_model("Reciprocal", 13, "recip_1")  # "N" in TensorRT 8.2's parser, "Y" in 10.0
    with pytest.raises(UnsupportedError, match=r"node recip_1: op Reciprocal"):
        trt_prepare.check_operators(model, TRT82, "8.2.1")
    trt_prepare.check_operators(model, trt_ops.table_for("10.3.0"), "10.3.0")  # later parser accepts it


def test_build_refuses_unsupported_op_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "recip.onnx"
    onnx.save(_single_op_model("Reciprocal", 13, "recip_1"), str(path))
    with pytest.raises(UnsupportedError, match="recip_1: op Reciprocal"):
        build(BuildConfig(model=str(path), target="jetson-nano", output=tmp_path / "out"))
    assert not (tmp_path / "out" / "recip-jetson-nano-tensorrt-fp16").exists()


# ---- INT8: explicit Q/DQ and calibration cache ---------------------------------------------------

@pytest.fixture(scope="module")
def qdq() -> tuple[onnx.ModelProto, onnx.ModelProto, dict[str, tuple[float, float]]]:
    prep = trt_prepare.prepare(tiny_classifier(), TRT82, "8.2.1", 13)
    model, ranges = trt_int8.quantize_qdq(prep.proto, _feeds(16))
    return prep.proto, model, ranges


def test_qdq_model_is_in_tensorrt_form_and_runs(qdq) -> None:
    fp32, model, _ = qdq
    onnx.checker.check_model(model, full_check=True)
    assert trt_int8.qdq_problems(model) == []
    assert trt_prepare.opset_of(model) <= 13
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    conv_w = next(n for n in qs if n.input[0] in inits and inits[n.input[0]].ndim == 4)
    assert inits[conv_w.input[1]].shape == (8,)  # per-channel weight scales, one per output channel
    assert all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qs)
    ref = np.concatenate([_run(fp32, f) for f in _feeds(8, seed=100)])
    got = np.concatenate([_run(model, f) for f in _feeds(8, seed=100)])
    cosine = float(np.dot(ref.ravel(), got.ravel()) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cosine > 0.99
    assert np.mean(ref.argmax(-1) == got.argmax(-1)) >= 0.875


def test_qdq_problems_flags_asymmetric_zero_point(qdq) -> None:
    _, model, _ = qdq
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    zp_name = next(n.input[2] for n in broken.graph.node if n.op_type == "QuantizeLinear")
    for init in broken.graph.initializer:
        if init.name == zp_name:
            init.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp_name))
    assert any("zero point is not 0" in p for p in trt_int8.qdq_problems(broken))


def test_calibration_cache_format_and_scales_match_qdq(qdq, tmp_path: Path) -> None:
    _, model, ranges = qdq
    path = tmp_path / "calibration.cache"
    n = trt_int8.write_calibration_cache(path, ranges, "8.2.1")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8201-EntropyCalibration2" and n == len(lines) - 1 > 0
    assert all(re.fullmatch(r"[^:]+: [0-9a-f]{8}", ln) for ln in lines[1:])
    _, scales = trt_int8.read_calibration_cache(path.read_text())
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_in = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert scales["input"] == pytest.approx(float(inits[q_in.input[1]]), rel=1e-6)
    lo, hi = ranges["input"]
    assert struct.unpack(">f", struct.pack(">f", max(abs(lo), abs(hi)) / 127))[0] == pytest.approx(scales["input"])
    assert trt_int8.reheaded(path.read_text(), "10.3.0").splitlines()[0] == "TRT-100300-EntropyCalibration2"


@pytest.mark.parametrize(("version", "number"), [("8.2.1", 8201), ("8.4.1", 8401), ("10.3.0", 100300)])
def test_tensorrt_version_number(version: str, number: int) -> None:
    assert trt_int8.trt_version_number(version) == number


# ---- recipes -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("precision", "present", "absent"), [
    ("fp32", [], ["--fp16", "--int8"]), ("fp16", ["--fp16"], ["--int8"]), ("int8", ["--int8"], ["--fp16", "--calib"]),
])
def test_trtexec_flags_per_precision(precision: str, present: list[str], absent: list[str]) -> None:
    args = trt_engine.trtexec_args("model.onnx", precision, "8.2.1", 512)
    assert args[:3] == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine"]
    assert "--workspace=512" in args  # TensorRT 8.2's flag; 8.4+ use --memPoolSize
    assert all(f in args for f in present) and not any(a.startswith(tuple(absent)) for a in args)


def test_workspace_flag_follows_trtexec_version() -> None:
    assert "--memPoolSize=workspace:1024" in trt_engine.trtexec_args("m.onnx", "fp16", "8.6.1", 1024)
    assert "--memPoolSize=workspace:1024M" in trt_engine.trtexec_args("m.onnx", "fp16", "10.0", 1024)
    implicit = trt_engine.trtexec_args("model_fp32.onnx", "int8", "8.2.1", 512, "calibration.cache")
    assert "--calib=calibration.cache" in implicit and "--int8" in implicit


# ---- builds: precision adaptation/refusal, artifacts ---------------------------------------------

def test_nano_int8_is_built_as_fp16_with_the_reason(tiny_onnx: Path, tmp_path: Path) -> None:
    report = build(BuildConfig(model=str(tiny_onnx), target="jetson-nano", quantize="int8", output=tmp_path))
    m = report.manifest
    assert (m.kind, m.precision, m.requested_precision) == ("tensorrt", "fp16", "int8")
    assert any("requested int8, built fp16 instead" in n and "no INT8 math" in n for n in m.notes)
    line = m.compiler_info["trtexec"]
    assert "--fp16" in line and "--int8" not in line and "--workspace=512" in line
    assert line in (report.path / "build_engine.sh").read_text()
    prepared = onnx.load(str(report.path / "model.onnx"))
    assert trt_prepare.opset_of(prepared) == 13
    assert prepared.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # FP16 is a builder flag
    assert "calibration_cache" not in m.files and m.host_check is not None
    text = report.summary()
    assert "jetson-nano with tensorrt, fp16" in text and "built fp16 instead" in text
    assert "FP16 rounding is not measured here" in text and "tensorrt build-engine" in text
    assert m.fidelity.checked and m.fidelity.passed


@pytest.mark.parametrize("target", ["jetson-nano", "jetson-tx2"])
def test_strict_int8_on_jetson_is_refused(cli, tiny_onnx: Path, tmp_path: Path, target: str) -> None:
    proc = cli("build", "--model", str(tiny_onnx), "--target", target, "--quantize", "int8", "--strict",
               "-o", str(tmp_path / "out"))
    stderr = " ".join(proc.stderr.split())  # the console wraps long lines
    assert proc.returncode == 3
    assert f"int8 is not possible on {target}" in stderr and "no INT8 math" in stderr
    assert not (tmp_path / "out").exists()


def test_server_gpu_int8_artifact(tmp_path: Path) -> None:
    source = tmp_path / "tiny64.onnx"
    onnx.save(tiny_classifier(classes=64), str(source))  # a weight over 1 KiB: the size ORT externalizes
    report = build(BuildConfig(model=str(source), target="server-gpu", quantize="int8", output=tmp_path))
    m, root = report.manifest, report.path
    assert m.precision == "int8" and {"model", "onnx_fp32", "calibration_cache", "build_script"} <= set(m.files)
    assert trt_int8.qdq_problems(onnx.load(str(root / "model.onnx"))) == []
    fp32 = onnx.load(str(root / "model_fp32.onnx"))  # self-contained: weights inside, runs as the FP32 reference
    assert not any(i.external_data for i in fp32.graph.initializer)
    feed = _feeds(1)[0]
    np.testing.assert_allclose(_run(fp32, feed), _run(tiny_classifier(classes=64), feed), rtol=1e-5, atol=1e-5)
    assert (root / "calibration.cache").read_text().startswith("TRT-100000-EntropyCalibration2\n")
    script = (root / "build_engine.sh").read_text()
    assert m.compiler_info["trtexec"] in script and m.compiler_info["trtexec_implicit_int8"] in script
    assert "--calib=calibration.cache" in m.compiler_info["trtexec_implicit_int8"]
    assert m.compiler_info["providers"][0] == "CUDAExecutionProvider"
    assert m.fidelity.checked and m.fidelity.passed and m.fidelity.cosine > 0.99
    assert "host stand-in: model.onnx" in m.fidelity.where


# ---- runner --------------------------------------------------------------------------------------

def test_runner_refuses_engine_of_another_gpu_or_tensorrt(tiny_onnx: Path, tmp_path: Path) -> None:
    report = build(BuildConfig(model=str(tiny_onnx), target="jetson-nano", output=tmp_path))
    manifest = json.loads((report.path / "manifest.json").read_text())
    manifest["compiler_info"]["engine"] = {"gpu": "NVIDIA Tegra X1", "sm": "5.3", "tensorrt": "8.2.1.8"}
    engine = manifest["compiler_info"]["engine"]
    nano = GpuInfo(name="NVIDIA Tegra X1", sm="5.3")
    assert engine_mismatch(engine, nano, "8.2.1.9") is None  # same major.minor.patch: same engine format
    msg = engine_mismatch(engine, GpuInfo(name="NVIDIA H100", sm="9.0"), "10.3.0")
    assert msg is not None
    assert "built for GPU SM 5.3 (NVIDIA Tegra X1)" in msg and "SM 9.0 (NVIDIA H100)" in msg
    assert "built with TensorRT 8.2.1.8" in msg and "TensorRT 10.3.0" in msg and "tensorrt build-engine" in msg
    assert "TensorRT 8.3.0" in (engine_mismatch(engine, nano, "8.3.0") or "")


@pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed here")
def test_without_tensorrt_the_runner_says_why_and_trt_build_fails_cleanly(cli, tiny_onnx: Path, tmp_path: Path) -> None:
    from deploypipe.artifact import Artifact

    report = build(BuildConfig(model=str(tiny_onnx), target="jetson-tx2", output=tmp_path))
    reason = TensorRTRunner.why_not_runnable(Artifact(report.path))
    assert reason is not None and "TensorRT not installed" in reason
    before = (report.path / "manifest.json").read_text()
    proc = cli("trt-build", str(report.path))
    assert proc.returncode == 4 and "deploypipe[tensorrt]" in " ".join(proc.stderr.split())
    assert (report.path / "manifest.json").read_text() == before and not (report.path / "model.engine").exists()
