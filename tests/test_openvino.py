"""OpenVINO compiler and runner on tiny inline models: CPU FP32/FP16/INT8, the NCS2 FP16 IR and
its checks, the runner's hints/threads/PERF_COUNT profile."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploypipe import api
from deploypipe.api import BuildConfig
from deploypipe.artifact import Artifact
from deploypipe.backends.openvino.myriad import check_ir_layers, check_onnx_nodes
from deploypipe.errors import UnsupportedError
from deploypipe.backends import load, why_not_runnable
from deploypipe.backends.runner import RunOptions
from tests.conftest import tiny_classifier

pytest.importorskip("openvino")
pytestmark = pytest.mark.openvino


def _build(src: Path, out: Path, target: str, quantize: str | None = None, strict: bool = False) -> api.BuildReport:
    compiler = None if target == "ncs2" else "openvino"
    return api.build(BuildConfig(model=str(src), target=target, compiler=compiler, quantize=quantize,  # type: ignore[arg-type]
                                 output=out, strict=strict))


def _outlier_classifier() -> onnx.ModelProto:
    """A classifier whose conv has one huge channel that the classifier ignores: per-tensor INT8
    activations crush the channels that matter, so plain post-training INT8 misses the gate."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w[0] *= 3000.0
    fc = rng.standard_normal((10, 8)).astype(np.float32)
    fc[:, 0] = 0.0
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc_w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "outlier", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _with_node(op: str, name: str, **attrs: object) -> onnx.ModelProto:
    """tiny_classifier with one extra unary node on the logits."""
    m = tiny_classifier()
    g = m.graph
    g.output[0].name = "y"
    g.node.append(helper.make_node(op, ["logits"], ["y"], name=name, **attrs))
    return m


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(path))
    return path


@pytest.fixture(scope="module")
def built(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, api.BuildReport]:
    out = tmp_path_factory.mktemp("art")
    return {
        "fp32": _build(tiny, out, "host-cpu"),
        "fp16": _build(tiny, out, "xeon", "fp16"),
        "int8": _build(tiny, out, "host-cpu", "int8"),
        "ncs2": _build(tiny, out, "ncs2"),
    }


def test_cpu_fp32_ir_matches_reference(built: dict[str, api.BuildReport]) -> None:
    m = built["fp32"].manifest
    assert m.kind == "openvino" and m.precision == "fp32"
    assert m.fidelity.checked and m.fidelity.passed and m.fidelity.max_abs_err < 1e-4
    assert set(m.files) >= {"model", "weights", "golden"}
    info = m.compiler_info
    assert info["ir_version"] == 11 and info["inference_precision"] == "f32"
    assert info["layer_opsets"] and "openvino" in m.toolchain


def test_fp16_stores_half_weights(built: dict[str, api.BuildReport]) -> None:
    m16, m32 = built["fp16"].manifest, built["fp32"].manifest
    assert m16.files["weights"].bytes < 0.6 * m32.files["weights"].bytes
    assert m16.fidelity.passed and any("FP16-compressed" in n for n in m16.notes)
    xml = ET.parse(built["fp16"].path / "model.xml").getroot()
    assert any(layer.get("type") == "Convert" for layer in xml.iter("layer"))


def test_int8_is_quantized_by_nncf(built: dict[str, api.BuildReport]) -> None:
    m = built["int8"].manifest
    q = m.compiler_info["quantization"]
    assert q["method"].startswith("nncf") and q["calibration_samples"] > 0 and q["plain"]["passed"]
    assert m.compiler_info["layer_types"].get("FakeQuantize", 0) > 0
    assert m.fidelity.passed and m.fidelity.cosine > 0.95


def test_int8_accuracy_control_when_plain_misses_gate(tmp_path: Path) -> None:
    src = tmp_path / "outlier.onnx"
    onnx.save_model(_outlier_classifier(), str(src))
    m = _build(src, tmp_path / "out", "host-cpu", "int8").manifest
    q = m.compiler_info["quantization"]
    assert q["plain"]["passed"] is False and q["method"] == "nncf.quantize_with_accuracy_control"
    assert q["controlled"]["passed"] and q["accuracy_control_metric"] == "top-1 agreement with FP32"
    assert m.fidelity.passed and any("accuracy control" in n for n in m.notes)


def test_ncs2_fp16_ir_for_the_2022_3_runtime(built: dict[str, api.BuildReport]) -> None:
    r = built["ncs2"]
    m = r.manifest
    assert m.precision == "fp16" and m.compiler_info["device"] == "MYRIAD"
    assert m.compiler_info["max_layer_opset"] <= 10 and m.compiler_info["ir_version"] == 11
    assert any("2022.3 LTS runtime" in n for n in m.notes)
    assert m.host_check is not None and "not a Myriad measurement" in m.host_check.why
    # no MYRIAD in this OpenVINO: not runnable as such; fidelity came from the CPU stand-in
    reason = why_not_runnable(Artifact(r.path))
    assert reason is not None and "MYRIAD is not available" in reason and "stand-in" in reason
    assert m.fidelity.checked and m.fidelity.passed and "host stand-in" in m.fidelity.where
    with pytest.raises(UnsupportedError):
        load(r.path)
    with load(r.path, host_check=True) as runner:
        assert runner.device == "CPU"


def test_ncs2_ir_is_all_opset1_after_maxpool_downgrade(tmp_path: Path) -> None:
    m = tiny_classifier()
    g = m.graph
    relu = next(n for n in g.node if n.op_type == "Relu")
    relu.output[0] = "r0"
    g.node.insert(list(g.node).index(relu) + 1, helper.make_node(
        "MaxPool", ["r0"], ["r"], name="pool2", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    src = tmp_path / "mp.onnx"
    onnx.save_model(m, str(src))
    r = _build(src, tmp_path / "out", "ncs2")
    info = r.manifest.compiler_info
    assert info["maxpool_v8_to_v1"] == 1 and set(info["layer_opsets"]) == {"opset1"}
    assert r.manifest.fidelity.passed


def test_ncs2_int8_refused_or_adapted_with_reason(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="FP16 only"):
        _build(tiny, tmp_path, "ncs2", "int8", strict=True)
    assert not any(tmp_path.iterdir())
    adapted = _build(tiny, tmp_path, "ncs2", "int8")
    assert adapted.manifest.precision == "fp16"
    assert any("FakeQuantize" in n for n in adapted.manifest.notes)


def test_ncs2_refuses_unsupported_op_by_node(tmp_path: Path) -> None:
    src = tmp_path / "neg.onnx"
    onnx.save_model(_with_node("Neg", "my_negation"), str(src))
    with pytest.raises(UnsupportedError, match=r"node my_negation: op Neg"):
        _build(src, tmp_path / "out", "ncs2")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # the same model builds for the CPU
    assert _build(src, tmp_path / "cpu", "host-cpu").manifest.fidelity.passed


def test_ncs2_refuses_qdq_and_3d_conv_by_node() -> None:
    refused, _ = check_onnx_nodes([("q0", "QuantizeLinear", 4), ("c3d", "Conv", 5), ("c2d", "Conv", 4),
                                   ("sh", "Shape", 4)])
    assert [f.node for f in refused] == ["q0", "c3d"]
    assert "FP16 only" in refused[0].why and "3D" in refused[1].why


def test_ir_opset_cap_names_the_layer() -> None:
    layers = [("in", "Parameter", "opset1", 4), ("g", "Gelu", "opset7", 4), ("s", "Softmax", "opset13", 2),
              ("x", "Custom", "extension", 2)]
    found = {f.node: f for f in check_ir_layers(layers, max_opset=10)}
    assert set(found) == {"g", "s", "x"}
    assert "opset13" in found["s"].why and "not in" in found["g"].why


def test_runner_hint_threads_and_perf_counters(built: dict[str, api.BuildReport]) -> None:
    from deploypipe.backends.openvino.runner import OpenVinoRunner

    art = Artifact(built["int8"].path)
    feeds, ref, _ = art.golden()
    runner = OpenVinoRunner(art, RunOptions(threads=1, profile=True), performance_hint="THROUGHPUT")
    assert runner.config() == {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32",
                               "INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True}
    with runner:
        outs = [runner.infer(feeds) for _ in range(3)]
        layers = runner.layer_profile()
        kernels = runner.exec_types()
        ips, requests = runner.throughput(feeds, seconds=0.2)
    assert layers and all(lt.ms >= 0 for lt in layers) and kernels
    assert ips > 0 and requests >= 1
    cos = float(np.dot(outs[0]["logits"].ravel(), ref["logits"].ravel())
                / np.linalg.norm(outs[0]["logits"]) / np.linalg.norm(ref["logits"]))
    assert cos > 0.95


def test_cli_build_ncs2_json(cli, tiny: Path, tmp_path: Path) -> None:
    proc = cli("build", "-m", str(tiny), "-t", "ncs2", "-o", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["manifest"]["compiler"] == "openvino" and data["manifest"]["host_check"]["kind"] == "openvino"


def test_cli_unsupported_op_exit_code(cli, tmp_path: Path) -> None:
    src = tmp_path / "hs.onnx"
    onnx.save_model(_with_node("HardSigmoid", "hsig"), str(src))
    proc = cli("build", "-m", str(src), "-t", "ncs2", "-o", str(tmp_path / "o"))
    assert proc.returncode == 3 and "hsig" in proc.stderr and "HardSigmoid" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_option_in_target_file_is_a_user_error() -> None:
    """Options are validated once, by the registry, into the compiler's typed Options."""
    from deploypipe import backends
    from deploypipe.errors import InputFileError
    from deploypipe.targets import get

    spec = get("ncs2")
    bad = spec.compilers["openvino"].model_copy(update={"options": {**spec.compilers["openvino"].options, "bogus": 1}})
    with pytest.raises(InputFileError, match=r"ncs2: \[compilers.openvino\] options: bogus: Extra inputs"):
        backends.compiler_options("openvino", spec.model_copy(update={"compilers": {**spec.compilers, "openvino": bad}}))


def test_int8_accuracy_control_uses_the_users_metric(tmp_path: Path) -> None:
    """With --metric and max_metric_drop, NNCF's accuracy control restores layers by that metric,
    and the gate (on the user's unlabelled data) judges the same figure."""
    src = tmp_path / "outlier.onnx"
    onnx.save_model(_outlier_classifier(), str(src))
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "data.npz", input=rng.standard_normal((60, 3, 16, 16)).astype(np.float32))
    (tmp_path / "agree.py").write_text(
        "import numpy as np\n"
        "def agreement(refs, outs, labels):\n"
        "    r = np.concatenate([x['logits'] for x in refs]).argmax(-1)\n"
        "    o = np.concatenate([x['logits'] for x in outs]).argmax(-1)\n"
        "    return {'agreement': float(np.mean(r == o))}\n")
    m = api.build(BuildConfig(model=str(src), target="host-cpu", compiler="openvino", quantize="int8",
                              output=tmp_path / "out", data=tmp_path / "data.npz",
                              metric=f"{tmp_path / 'agree.py'}:agreement",
                              tolerance={"max_metric_drop": 0.1})).manifest
    q = m.compiler_info["quantization"]
    assert q["evidence"] == "real-unlabelled"
    assert q["plain"]["passed"] is False and q["accuracy_control_metric"].startswith("the user's metric")
    assert q["controlled"]["passed"] and q["max_drop"] == 0.1
    assert m.fidelity.metrics["agreement"] >= 0.9 and m.fidelity.metrics_fp32["agreement"] == 1.0
