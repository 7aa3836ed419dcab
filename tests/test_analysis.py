"""analyze() on tiny hand-built ONNX graphs whose MACs and params are known by hand."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploypipe.analysis.stats import analyze


def _model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _w(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)


def _vi(name: str, *shape, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_conv_macs_and_params() -> None:
    # 3->8 channels, 3x3, pad 1 on 1x3x16x16: 8*16*16 outputs x 3*3*3 MACs each.
    model = _model(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")],
        [_vi("x", 1, 3, 16, 16)],
        [_vi("y", 1, 8, 16, 16)],
        [_w("w", 8, 3, 3, 3), _w("b", 8)],
    )
    stats = analyze(model)
    assert stats.macs == 8 * 16 * 16 * 27
    assert stats.params == 8 * 27 + 8
    assert stats.flop_per_param == stats.macs / stats.params
    (layer,) = stats.layers
    assert (layer.name, layer.op_type, layer.output_shape) == ("conv", "Conv", (1, 8, 16, 16))
    assert layer.output_bytes == 8 * 16 * 16 * 4
    assert layer.params == stats.params


def test_depthwise_conv_counts_one_channel_per_group() -> None:
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=32, pads=[1, 1, 1, 1])],
        [_vi("x", 1, 32, 10, 10)],
        [_vi("y", 1, 32, 10, 10)],
        [_w("w", 32, 1, 3, 3)],
    )
    stats = analyze(model)
    assert stats.macs == 32 * 10 * 10 * 9
    assert stats.params == 32 * 9


def test_gemm_transb_and_matmul() -> None:
    model = _model(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
            helper.make_node("MatMul", ["h", "m"], ["y"]),
        ],
        [_vi("x", 2, 64)],
        [_vi("y", 2, 10)],
        [_w("w", 32, 64), _w("b", 32), _w("m", 32, 10)],
    )
    stats = analyze(model)
    assert [layer.macs for layer in stats.layers] == [2 * 32 * 64, 2 * 10 * 32]
    assert stats.params == 32 * 64 + 32 + 320
    assert stats.op_histogram == {"Gemm": 1, "MatMul": 1}


def test_batched_matmul_and_einsum() -> None:
    model = _model(
        [
            helper.make_node("MatMul", ["a", "b"], ["c"]),
            helper.make_node("Einsum", ["c", "b"], ["d"], equation="bij,bjk->bik"),
        ],
        [_vi("a", 4, 5, 6), _vi("b", 4, 6, 6)],
        [_vi("d", 4, 5, 6)],
        opset=17,
    )
    stats = analyze(model)
    assert [layer.macs for layer in stats.layers] == [4 * 5 * 6 * 6, 4 * 5 * 6 * 6]
    assert stats.params == 0


def test_conv_transpose() -> None:
    # Every one of 4*5*5 input elements is scattered into 2 out-channels x 3x3 taps.
    model = _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])],
        [_vi("x", 1, 4, 5, 5)],
        [_vi("y", 1, 2, 11, 11)],
        [_w("w", 4, 2, 3, 3)],
    )
    assert analyze(model).macs == 4 * 5 * 5 * 2 * 9


def test_lstm_macs() -> None:
    seq, batch, inp, hid = 20, 1, 200, 200
    model = _model(
        [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hid)],
        [_vi("x", seq, batch, inp)],
        [_vi("y", seq, 1, batch, hid)],
        [_w("W", 1, 4 * hid, inp), _w("R", 1, 4 * hid, hid), _w("B", 1, 8 * hid)],
    )
    stats = analyze(model)
    assert stats.macs == seq * batch * 4 * hid * (inp + hid)
    assert stats.params == 4 * hid * (inp + hid) + 8 * hid


def test_int64_constants_and_scalars_are_not_params_constant_weights_are() -> None:
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    weight = numpy_helper.from_array(np.ones((12, 5), dtype=np.float32), "wc")
    model = _model(
        [
            helper.make_node("Reshape", ["x", "shape"], ["flat"]),
            helper.make_node("Constant", [], ["wc"], value=weight),
            helper.make_node("MatMul", ["flat", "wc"], ["mm"]),
            helper.make_node("Mul", ["mm", "scale"], ["y"]),
        ],
        [_vi("x", 1, 3, 2, 2)],
        [_vi("y", 1, 5)],
        [shape, numpy_helper.from_array(np.array(2.0, dtype=np.float32), "scale")],
    )
    stats = analyze(model)
    assert stats.params == 60
    assert stats.macs == 60
    by_op = {layer.op_type: layer for layer in stats.layers}
    assert by_op["MatMul"].params == 60  # the Constant's weight is charged to its consumer
    assert by_op["Reshape"].output_shape == (1, 12)


def test_dynamic_batch_leaves_dims_none() -> None:
    model = _model(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1), helper.make_node("Relu", ["y"], ["z"])],
        [_vi("x", "N", 8)],
        [_vi("z", "N", 4)],
        [_w("w", 4, 8)],
    )
    stats = analyze(model)
    gemm, relu = stats.layers
    assert gemm.output_shape == (None, 4) and gemm.output_bytes is None and gemm.macs is None
    assert relu.macs == 0
    assert stats.incomplete == [gemm.name]
    assert stats.params == 32 and stats.macs == 0


def test_layers_come_in_topological_order_and_serialize() -> None:
    # File order is deliberately wrong: the Relu consumes the Conv output but is listed first.
    nodes = [
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
    ]
    graph = helper.make_graph(nodes, "g", [_vi("x", 1, 1, 4, 4)], [_vi("y", 1, 2, 2, 2)], [_w("w", 2, 1, 3, 3)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stats = analyze(model)
    assert [layer.name for layer in stats.layers] == ["conv", "relu"]
    assert stats.macs == 2 * 2 * 2 * 9
    assert json.loads(json.dumps(stats.to_dict()))["layers"][0]["output_shape"] == [1, 2, 2, 2]


def test_shapes_flow_through_exporter_computed_pads() -> None:
    # pads = Cast(Concat(Shape-derived zeros, const)) as legacy exporters emit for ZeroPad2d;
    # plain shape inference stops at Pad, so the Conv after it would have no MACs.
    zeros = numpy_helper.from_array(np.zeros(4, dtype=np.int64), "z")
    ones = numpy_helper.from_array(np.array([0, 0, 1, 1], dtype=np.int64), "o")
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Mul", ["s", "z"], ["s0"]),
            helper.make_node("Concat", ["s0", "o"], ["p"], axis=0),
            helper.make_node("Cast", ["p"], ["pads"], to=TensorProto.INT64),
            helper.make_node("Pad", ["x", "pads"], ["xp"]),
            helper.make_node("Conv", ["xp", "w"], ["y"]),
        ],
        [_vi("x", 1, 2, 4, 4)],
        [_vi("y", 1, 3, None, None)],
        [zeros, ones, _w("w", 3, 2, 2, 2)],
    )
    stats = analyze(model)
    conv = stats.layers[-1]
    assert conv.output_shape == (1, 3, 4, 4) and conv.macs == 3 * 16 * 8
    assert stats.incomplete == [] and stats.params == 24
