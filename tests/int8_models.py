"""Small models for the INT8 tests of several backends' test files: a convolution net and its
QDQ form as the generic int8 pass makes it (ONNX Runtime's static quantization)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def qdq_model(tmp_path: Path, fp32: onnx.ModelProto, shape: tuple[int, ...], reduce_range: bool = False) -> Path:
    """The model quantized as the generic int8 pass does it (QDQ, u8 activations per tensor, s8
    weights per channel; 7-bit weights with `reduce_range`, as for CPUs without VNNI), calibrated
    on random inputs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    path = tmp_path / "fp32.onnx"
    onnx.save_model(fp32, str(path))
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    qdq = tmp_path / ("qdq-7bit.onnx" if reduce_range else "qdq.onnx")
    quantize_static(str(path), str(qdq), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(qdq)).graph.node)
    return qdq


INT8_SHAPE = (1, 3, 14, 14)  # int8_convnet's input


def int8_convnet() -> onnx.ModelProto:
    """Layers the integer path takes, with channel counts that need padding: 3x3 padded (on the
    input, whose zero point is not 0) from 3 input channels (not a multiple of 4), 1x1 to 24
    output channels (not a multiple of 16), a padded 3x3 depthwise one, 3x3 strided; global pool;
    dense to 10 classes (not a multiple of 4 or 16)."""
    from onnx import numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [const("w0", 32, 3, 3, 3), const("b0", 32), const("w1", 24, 32, 1, 1), const("b1", 24),
             const("dw", 24, 1, 3, 3), const("db", 24),
             const("w2", 16, 24, 3, 3), const("b2", 16), const("fc_w", 10, 16), const("fc_b", 10)]
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "dw", "db"], ["cd"], pads=[1, 1, 1, 1], group=24),
        helper.make_node("Relu", ["cd"], ["rd"]),
        helper.make_node("Conv", ["rd", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c2"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    return classifier("int8net", nodes, inits, list(INT8_SHAPE))


def classifier(name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: list[int]) -> onnx.ModelProto:
    """An opset-17 graph from `input` (float, `shape`) to `logits` (1x10)."""
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def kernels_with(asm: str, instruction: str) -> dict[str, int]:
    """How many kernels of each kind (conv2d, matmul) in an objdump listing use `instruction`."""
    found: dict[str, int] = {}
    for body in re.split(r"\n(?=[0-9a-f]+ <)", asm):
        name = re.match(r"[0-9a-f]+ <([^>]*)>", body)
        kind = next((k for k in ("conv2d", "matmul") if name and k in name.group(1)), None)
        if kind and instruction in body:
            found[kind] = found.get(kind, 0) + 1
    return found
