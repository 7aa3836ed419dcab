"""TFLite and Edge TPU compilers: real onnx2tf conversions of the tiny model, run on LiteRT.

These need the converter venv (.venv-tflite, made by scripts/install.sh); without it they skip
with that reason. Each conversion spawns TensorFlow (~10 s on 2 cores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_classifier
from onnx import TensorProto, helper, numpy_helper

from deploypipe.toolchains import venv_dir

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(venv_dir() is None, reason=".venv-tflite (the onnx2tf/TensorFlow converter venv) is absent: "
                                                  "run bash scripts/install.sh"),
]


def _build(model: Path, out: Path, target: str = "host-cpu", quantize: str | None = None, **kw: object):
    from deploypipe.api import BuildConfig, build

    return build(BuildConfig(model=str(model), target=target, compiler=kw.pop("compiler", None),
                             quantize=quantize, output=out, **kw))  # type: ignore[arg-type]


_STAGES: dict[str, list[str]] = {}  # progress messages of each fixture build, by precision


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from deploypipe.api import BuildConfig, build

    root = tmp_path_factory.mktemp("tfl")
    src = root / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(src))
    out = {}
    for prec in ("fp32", "fp16", "int8"):
        said = _STAGES.setdefault(prec, [])
        rep = build(BuildConfig(model=str(src), target="host-cpu", compiler="tflite",
                                quantize=None if prec == "fp32" else prec, output=root / "art"),  # type: ignore[arg-type]
                    progress=lambda m, said=said: said.append(str(m)))
        out[prec] = rep.path
    return out


def test_int8_conversion_calibrates_once_and_keeps_the_full_fidelity_check(artifacts: dict[str, Path]) -> None:
    """The int8 conversion runs one calibrated conversion (onnx2tf's own int8 option ran four, plus
    a dynamic-range one) on all 100 calibration samples, its stages show as progress, and the
    build's fidelity check still runs the default samples and gates."""
    from deploypipe.api import BuildConfig
    from deploypipe.artifact import Artifact

    said = _STAGES["int8"]
    assert any("onnx2tf: ONNX -> TensorFlow" in m for m in said), said
    assert sum("full-integer TFLite, calibrating on 100 samples" in m for m in said) == 1, said
    assert not any("calibrating" in m for m in _STAGES["fp32"] + _STAGES["fp16"])
    m = Artifact(artifacts["int8"]).manifest
    assert m.fidelity.checked and m.fidelity.passed and m.fidelity.samples == BuildConfig.model_fields["fidelity_samples"].default
    assert m.compiler_info["calibration"].startswith("100 samples")


@pytest.mark.parametrize("prec", ["fp32", "fp16", "int8"])
def test_tflite_conversions_are_faithful(artifacts: dict[str, Path], prec: str) -> None:
    from deploypipe.artifact import Artifact

    m = Artifact(artifacts[prec]).manifest
    assert m.kind == "tflite" and m.precision == prec
    assert m.files["model"].path == f"model_{prec}.tflite"
    assert m.fidelity.checked and m.fidelity.passed, m.fidelity.reasons
    limit = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.2}[prec]
    assert m.fidelity.max_abs_err < limit
    assert m.fidelity.top1_agreement == 1.0
    assert m.toolchain["converter:onnx2tf"] == "1.29.24"
    assert m.toolchain["converter:tensorflow"] == "2.19.0"
    tin = m.compiler_info["io"]["inputs"][0]
    assert tin["shape"] == [1, 16, 16, 3] and tin["perm"] == [0, 2, 3, 1]  # NHWC artifact
    assert m.inputs[0].shape == (1, 3, 16, 16)  # fed in the source form; the runner transposes
    if prec == "int8":
        assert tin["dtype"] == "int8" and m.inputs[0].quant is not None and m.inputs[0].quant.scale > 0
        assert m.outputs[0].quant is not None
        assert "100 samples" in m.compiler_info["calibration"]
    else:
        assert m.inputs[0].quant is None


def test_int8_runner_quantizes_like_the_manifest_says(artifacts: dict[str, Path]) -> None:
    """Do by hand what a device app would: transpose, quantize, run, dequantize; same answer."""
    from ai_edge_litert.interpreter import Interpreter

    from deploypipe.artifact import Artifact
    from deploypipe.backends import load

    art = Artifact(artifacts["int8"])
    inputs, reference, expected = art.golden()
    x = inputs["input"]
    q_in, q_out = art.manifest.inputs[0].quant, art.manifest.outputs[0].quant
    interp = Interpreter(model_path=str(art.file("model")))
    interp.allocate_tensors()
    tin, tout = interp.get_input_details()[0], interp.get_output_details()[0]
    q = np.clip(np.round(x.transpose(0, 2, 3, 1) / q_in.scale) + q_in.zero_point, -128, 127).astype(np.int8)
    interp.set_tensor(tin["index"], q)
    interp.invoke()
    y = (interp.get_tensor(tout["index"]).astype(np.float32) - q_out.zero_point) * q_out.scale
    with load(artifacts["int8"]) as runner:
        got = runner.infer(inputs)["logits"]
    np.testing.assert_allclose(got, y, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, expected["logits"], rtol=0, atol=1e-6)
    assert np.argmax(got) == np.argmax(reference["logits"])


def test_per_op_profile(artifacts: dict[str, Path]) -> None:
    from deploypipe.backends import load
    from deploypipe.backends.runner import RunOptions

    art = artifacts["int8"]
    from deploypipe.artifact import Artifact

    inputs, _, _ = Artifact(art).golden()
    with load(art, RunOptions(threads=1, profile=True)) as runner:
        runner.infer(inputs)
        layers = runner.layer_profile()
    assert layers is not None
    assert [lt.op for lt in layers] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert all(lt.ms > 0 for lt in layers)


def _exp_model() -> onnx.ModelProto:
    """Conv -> Exp -> pool -> Gemm: EXP is not an Edge TPU op, so it and what follows fall back."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.2, "w"),
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(5, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Exp", ["c"], ["e"], name="exp_node"),
        helper.make_node("GlobalAveragePool", ["e"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "expnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def exp_artifact(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("tpu")
    src = root / "expnet.onnx"
    onnx.save_model(_exp_model(), str(src))
    return _build(src, root / "art", target="edgetpu")


def test_edgetpu_reports_cpu_fallback_by_node(exp_artifact, cli) -> None:
    rep = exp_artifact
    m = rep.manifest
    assert m.kind == "edgetpu" and m.precision == "int8"
    report = m.compiler_info["edgetpu_report"]
    cpu = [n for n in report["nodes"] if n["where"] == "cpu"]
    first = cpu[0]
    assert first["op"] == "EXP" and "not in the Edge TPU's supported operations" in first["reason"]
    assert first["name"]  # the node is named
    # ops after the first unsupported one fall back too (the compiler partitions once)
    assert all("after the first unsupported op" in n["reason"] for n in cpu[1:]) and len(cpu) >= 2
    assert report["nodes"][0]["op"] == "CONV_2D" and report["nodes"][0]["where"] == "tpu"
    assert any("CPU fallback: EXP" in n for n in m.notes)
    # no edgetpu_compiler here: compiler-ready model + exact command, fidelity on the CPU stand-in
    assert m.files["model"].path == "model_int8.tflite"
    script = (rep.path / "compile_edgetpu.sh").read_text()
    assert "edgetpu_compiler -s -o . model_int8.tflite" in script
    assert m.host_check is not None and m.host_check.kind == "tflite"
    assert m.fidelity.checked and "host stand-in" in m.fidelity.where
    # the CLI prints the same report, by node
    res = cli("edgetpu", "report", str(rep.path))
    assert res.returncode == 0, res.stderr
    assert "EXP" in res.stdout and "CPU" in res.stdout
    res = cli("edgetpu-report", str(rep.path), "--json")
    assert json.loads(res.stdout)["cpu_ops"] == len(cpu)


def test_edgetpu_refuses_fallback_when_asked(exp_artifact) -> None:
    from deploypipe.backends.edgetpu.compiler import refuse_fallback, report_for
    from deploypipe.errors import UnsupportedError

    rep = exp_artifact
    report = report_for(rep.path)
    refuse_fallback(report, allowed=True)
    with pytest.raises(UnsupportedError, match=r"#\d+ EXP '.+'"):
        refuse_fallback(report, allowed=False)
    assert report_for(rep.path / "model_int8.tflite") == report


def test_edgetpu_report_rejects_non_tflite(tmp_path: Path, cli) -> None:
    bad = tmp_path / "x.onnx"
    onnx.save_model(tiny_classifier(), str(bad))
    res = cli("edgetpu-report", str(bad))
    assert res.returncode == 2 and "expected a .tflite" in res.stderr


def test_int8_maxpool_with_padding_runs_and_matches(tmp_path: Path) -> None:
    """A padded MaxPool (ResNet's stem) in a full-integer model: the graph pads with 0, as onnx2tf's
    own int8 option does, not with -3.4e38 (which wrecks the quantization range; XNNPACK then
    refused the ResNet-50 int8 model)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal((10, 8)) * 0.3).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "pooled", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "pooled.onnx"
    onnx.save_model(model, str(src))
    rep = _build(src, tmp_path / "art", quantize="int8", compiler="tflite")
    assert rep.manifest.fidelity.passed and rep.manifest.fidelity.max_abs_err < 0.2, rep.manifest.fidelity
