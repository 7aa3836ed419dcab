"""Winograd convolutions in TVM builds: the transforms' algebra, which layers take it, and a built
artifact that matches ONNX Runtime with its transform kernels on their own schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import proto_model
from onnx import TensorProto, helper, numpy_helper

from deploypipe import targets
from deploypipe.backends.tvm.facts import TvmOptions

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")


@pytest.mark.parametrize("m", [2, 4])
def test_minimal_filtering_equals_correlation(m: int) -> None:
    """F(m, 3) in one dimension: AT [(G g) * (BT d)] is the valid correlation of d by g."""
    from deploypipe.backends.tvm.winograd import matrices

    at, g, bt = matrices(m)
    rng = np.random.default_rng(m)
    d, k = rng.standard_normal(m + 2), rng.standard_normal(3)
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), np.correlate(d, k, mode="valid"), atol=1e-12)


def test_tile_size_follows_the_feature_map() -> None:
    from deploypipe.backends.tvm.winograd import choose

    assert choose(56, 56) == 4 and choose(28, 28) == 4  # 196 and 49 tiles of 4x4
    assert choose(14, 14) == 2  # 4 does not divide 14; 49 tiles of 2x2
    assert choose(7, 7) == 2  # ResNet's last stage: 16 tiles of 2x2 overhanging the output by a row and a column
    assert choose(8, 8) == 2 and choose(13, 13) == 2  # 16 whole tiles; 49 tiles, 16 % of their outputs wasted
    assert choose(6, 6) is None  # 9 tiles: too few to reuse the transformed weights
    assert choose(5, 5) is None  # 9 tiles of 2x2 for 25 outputs: too much waste besides


def test_on_by_default_where_measured() -> None:
    def options(name: str, **kw: str) -> TvmOptions:
        return TvmOptions(**(targets.get(name).compilers["tvm"].options | kw))

    assert options("host-cpu").use_winograd() and options("xeon").use_winograd()
    assert not options("rpi4").use_winograd() and not options("rpi3").use_winograd()  # no ARM core timed it
    assert options("rpi4", winograd="on").use_winograd() and not options("host-cpu", winograd="off").use_winograd()


def _convnet(path: Path) -> None:
    """Four 3x3 convolutions on 28x28: 3->16 stays direct (too few channels); padded 16->16 and
    16->16 with a residual add (F(4x4) each), unpadded 16->16 to 26x26 (F(2x2): 4 does not divide
    26); then pooling and a classifier."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * (2 / np.prod(shape[1:])) ** 0.5).astype(np.float32)

    inits = [numpy_helper.from_array(a, n) for n, a in
             [("w0", w(16, 3, 3, 3)), ("w1", w(16, 16, 3, 3)), ("b1", w(16) * 0.1), ("w2", w(16, 16, 3, 3)), ("w3", w(16, 16, 3, 3)),
              ("fc", w(10, 16)), ("fcb", w(10))]]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c0", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s2"]),
        helper.make_node("Relu", ["s2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "wino", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_build_takes_winograd_layers_and_matches_onnxruntime(tmp_path: Path) -> None:
    import onnxruntime as ort

    from deploypipe.api import BuildConfig, build
    from deploypipe.backends import load
    from deploypipe.backends.runner import RunOptions
    from deploypipe.backends.tvm import winograd
    from deploypipe.backends.tvm.relax import import_relax, lower
    from deploypipe.importers import import_model

    model = tmp_path / "wino.onnx"
    _convnet(model)
    result = build(BuildConfig(model=str(model), target="host-cpu", compiler="tvm", output=tmp_path / "art",
                               tuning_logs=tmp_path / "tuning_logs"))
    manifest = result.manifest
    assert manifest.compiler_info["winograd"] == ["28x28x16->16: F(4x4,3x3)", "28x28x16->16: F(4x4,3x3)",
                                                  "26x26x16->16: F(2x2,3x3)"]
    assert any(n.startswith("Winograd form for 3 stride-1 3x3 convolution(s)") for n in manifest.notes)

    x = np.random.default_rng(1).standard_normal((1, 3, 28, 28)).astype(np.float32)
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with load(result.path, RunOptions()) as runner:
        got = runner.infer({"x": x})["y"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)

    # each transform kernel has the transform schedule (tile outputs unrolled), not the generic one
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    lowered = lower(import_relax(import_model(model)), target)
    transforms = [f for gv, f in lowered.functions_items() if "winograd" in gv.name_hint
                  and isinstance(f, tvm.tirx.PrimFunc)]
    assert len(transforms) == 5  # per layer an input and an output transform; the two 28x28 layers share one input transform
    assert all(winograd.schedule_transform(f, target) is not None for f in transforms)
    off = lower(import_relax(import_model(model)), target, winograd_convs=False)
    assert winograd.layers(off) == [] and winograd.layers(lowered)


def test_overhanging_tiles_match_onnxruntime() -> None:
    """A 7x7 output in 2x2 tiles (ResNet's last stage): the input is padded by one more row and
    column so the last tiles read zeros, and the output transform leaves their extra outputs out;
    the result equals the direct convolution's (ONNX Runtime's)."""
    import onnxruntime as ort

    from deploypipe.backends.tvm import winograd
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.1).astype(np.float32), n)
             for n, s in [("w", (24, 16, 3, 3)), ("b", (24,))]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "last", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 7, 7])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    model = proto_model(proto, "last")
    lowered = lower(import_relax(model), target)
    assert winograd.layers(lowered) == ["7x7x16->24: F(2x2,3x3)"]
    transforms = [f for gv, f in lowered.functions_items() if "winograd" in gv.name_hint and isinstance(f, tvm.tirx.PrimFunc)]
    assert len(transforms) == 2 and all(winograd.schedule_transform(f, target) is not None for f in transforms)
    x = rng.standard_normal((1, 16, 7, 7)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = tvm.relax.VirtualMachine(compile_module(lowered, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
