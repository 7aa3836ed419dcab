"""FPGA target (PYNQ-Z1) through hls4ml: graph checks, the ONNX chain rebuilt for hls4ml, resource
refusals, and (marker `fpga`) the digits-mlp build end to end with its g++-compiled C simulation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploypipe.backends.hls4ml.graph import check_chain, estimate, plan_reuse, to_torch, weight_layers
from deploypipe.errors import UnsupportedError
from tests.conftest import tiny_classifier

BOARD = {"DSP48E1": 220, "BRAM18K": 280, "LUT": 53200, "FF": 106400}


def _mlp(widths: list[int], seed: int = 0) -> onnx.ModelProto:
    """MatMul+Add / ReLU chain (the other way exporters write Linear)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        inits += [numpy_helper.from_array(rng.standard_normal((a, b)).astype(np.float32) * 0.3, f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(b).astype(np.float32) * 0.1, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"fc{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}")]
        x = f"a{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, widths[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, widths[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_chain_rebuilt_as_torch_matches_onnx() -> None:
    import torch

    proto = _mlp([12, 20, 7])
    x = np.random.default_rng(1).standard_normal((3, 12)).astype(np.float32)
    with torch.no_grad():
        got = to_torch(proto)(torch.from_numpy(x)).numpy()
    ref = np.concatenate([_ort(proto, x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_digits_cnn_chain_rebuilt_matches_onnx() -> None:
    """The exported, simplified digits-cnn (BN folded into Conv) rebuilds to the same function."""
    import torch

    from deploypipe import passes
    from deploypipe.importers import import_model
    from deploypipe.passes import PassContext

    model = import_model("digits-cnn")
    model = passes.create("simplify", {})(model, PassContext(target="pynq-z1", precision="int8")).model
    check_chain(model.proto)
    (x,) = next(model.evaluation.samples(1)).values()
    with torch.no_grad():
        got = to_torch(model.proto)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _ort(model.proto, x), rtol=1e-4, atol=1e-4)


def test_unsupported_op_is_named() -> None:
    with pytest.raises(UnsupportedError, match=r"node 'pool' \(op GlobalAveragePool\)"):
        check_chain(tiny_classifier())


def test_branch_is_refused_naming_the_node() -> None:
    proto = _mlp([8, 8, 4])
    # make relu0's output also feed a second consumer: a residual-style branch
    proto.graph.node.append(helper.make_node("Relu", ["r0"], ["extra"], name="side"))
    with pytest.raises(UnsupportedError, match=r"node 'relu0' \(op Relu\): its output feeds several nodes"):
        check_chain(proto)


def test_reuse_factor_planned_to_fit_the_dsps() -> None:
    layers = weight_layers(_mlp([64, 128, 64, 10]))
    assert [w.weights for w in layers] == [64 * 128, 128 * 64, 64 * 10]
    est = plan_reuse(layers, 8, 24, BOARD, 0.8)
    assert est.totals["DSP48E1"] <= 0.8 * 220 and not est.over(0.8)
    # one power of two less would not fit: the plan is the smallest reuse that does
    for w in layers:
        w.reuse = max(1, min(w.reuse // 2, w.weights))
    assert estimate(layers, 8, 24, BOARD).over(0.8)


def test_resnet18_refused_with_resource_reason(cli, tmp_path: Path) -> None:
    out = tmp_path / "arts"
    r = cli("build", "-m", "resnet18", "--target", "pynq-z1", "--output", str(out))
    assert r.returncode == 3, r.stderr + r.stdout
    msg = r.stderr + r.stdout
    assert "does not fit the pynq-z1 fabric" in msg and "BRAM18K: estimated" in msg, msg
    assert "> 224 (80% of the board's 280)" in msg and "tvm" in msg, msg
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))


@pytest.mark.fpga
@pytest.mark.slow
def test_digits_mlp_end_to_end(tmp_path: Path) -> None:
    """hls4ml project + g++ C simulation; fidelity and accuracy on the real held-out digits."""
    pytest.importorskip("hls4ml")
    from deploypipe import api
    from deploypipe.backends.hls4ml.compiler import NOT_BUILT

    rep = api.build(api.BuildConfig(model="digits-mlp", target="pynq-z1", output=tmp_path))
    m = rep.manifest
    assert (m.compiler, m.kind, m.precision) == ("hls4ml", "hls4ml-csim", "int8")
    assert NOT_BUILT in m.notes
    f = m.fidelity
    assert f.checked and f.passed and f.samples == 450 and "held-out" in f.data
    assert "hls4ml-csim" in f.where
    assert f.accuracy is not None and f.accuracy >= f.accuracy_fp32 - 2.0 and f.accuracy > 90.0
    res = m.compiler_info["resources"]
    assert res["method"].startswith("estimated by deploypipe")
    assert all(res["estimated"][k] <= res["board"][k] for k in res["board"])
    assert m.compiler_info["bitstream"] == "not built"

    script = rep.path / "build_bitstream.sh"
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert "vivado_hls -f build_prj.tcl" in text and "vivado -mode batch -source design.tcl" in text
    assert set(m.files) >= {"model", "hls_project", "build_script", "hls_config", "golden"}
    import zipfile

    names = zipfile.ZipFile(rep.path / "hls_project.zip").namelist()
    assert "hls_project/firmware/deploypipe_nn.cpp" in names and "hls_project/design.tcl" in names
    design = zipfile.ZipFile(rep.path / "hls_project.zip").read("hls_project/design.tcl").decode()
    assert "xc7z020clg400-1" in design and "pynq-z1" in design
    cfg = json.loads((rep.path / "hls4ml_config.json").read_text())
    assert all("fixed<8," in p["Precision"]["weight"] for p in cfg["LayerName"].values() if "weight" in p["Precision"])

    # the shipped library alone (ctypes, no hls4ml) reproduces the build host's outputs
    inputs, _, expected = api.Artifact(rep.path).golden()
    with api.load(rep.path) as runner:
        outs = runner.infer(inputs)
    for k, v in expected.items():
        np.testing.assert_array_equal(outs[k], v)
    assert api.self_check(rep.path).passed
