"""What the MYRIAD plugin (Intel NCS2, Myriad X VPU) of OpenVINO 2022.3 LTS can run.

OpenVINO dropped the MYRIAD plugin after the 2022.3 LTS line, so nothing here can ask the plugin
itself; the capability list is the documented one, checked before anything is built.

Source: the "Supported Layers" table, "VPU" column, of the OpenVINO 2022.x documentation page
"Supported Devices" (openvinotoolkit/openvino, docs/OV_Runtime_UG/supported_plugins/
Supported_Devices.md; published as
https://docs.openvino.ai/2022.3/openvino_docs_OV_UG_supported_plugins_Supported_Devices.html).
Rows marked "Supported*" there are "limited to specific parameters" (see that page's Known Layers
Limitations); they are accepted here and named in a manifest note. FakeQuantize (INT8) is "Not
Supported" on VPU, which Intel's KB article 000058516 confirms ("Unsupported Layer Type
FakeQuantize" on MYRIAD).

The table uses the plugin's own layer names; below, each ONNX op and each OpenVINO opset op is
mapped onto a table row. An op that maps to no "Supported" row is refused, naming the node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Table rows whose VPU column reads "Supported" (exactly as the table spells them).
VPU_SUPPORTED: frozenset[str] = frozenset({
    "Abs", "Activation-Clamp", "Activation-ELU", "Activation-Exp", "Activation-Leaky ReLU",
    "Activation-Not", "Activation-PReLU", "Activation-ReLU", "Activation-ReLU6",
    "Activation-Sigmoid/Logistic", "Activation-TanH", "ArgMax", "BatchNormalization", "Broadcast",
    "Ceil", "Concat", "Const", "Convolution-Dilated", "Convolution-Grouped", "Convolution-Ordinary",
    "Crop", "Deconvolution", "Eltwise-And", "Eltwise-Add", "Eltwise-Div", "Eltwise-Equal",
    "Eltwise-FloorMod", "Eltwise-Greater", "Eltwise-GreaterEqual", "Eltwise-Less",
    "Eltwise-LessEqual", "Eltwise-LogicalAnd", "Eltwise-LogicalOr", "Eltwise-LogicalXor",
    "Eltwise-Max", "Eltwise-Min", "Eltwise-Mul", "Eltwise-NotEqual", "Eltwise-Pow", "Eltwise-Prod",
    "Eltwise-SquaredDiff", "Eltwise-Sub", "Eltwise-Sum", "Erf", "Exp", "Flatten", "Floor",
    "FullyConnected (Inner Product)", "Gather", "Gemm", "GRN", "Interp", "Log", "LRN (Norm)",
    "LSTMCell", "LSTMSequence", "NonMaxSuppression", "OneHot", "Permute", "Pooling(AVG,MAX)",
    "Power", "PriorBox", "PriorBoxClustered", "Proposal", "PSROIPooling", "ReduceAnd", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceSum", "RegionYolo", "ReorgYolo", "Resample", "Reshape",
    "ReverseSequence", "RNN", "ROIPooling", "ScatterUpdate", "Select", "Sign", "Slice", "SoftMax",
    "Softplus", "Split", "Squeeze", "StridedSlice", "TensorIterator", "Tile", "TopK", "Unsqueeze",
})
# Rows whose VPU column reads "Supported*": limited to specific parameters.
VPU_LIMITED: frozenset[str] = frozenset({
    "CTCGreedyDecoder", "DetectionOutput", "MVN", "Normalize", "Pad", "ScaleShift",
})

_ELTWISE = {
    "Add": "Eltwise-Add", "Sub": "Eltwise-Sub", "Mul": "Eltwise-Mul", "Div": "Eltwise-Div",
    "Max": "Eltwise-Max", "Min": "Eltwise-Min", "Pow": "Eltwise-Pow", "Sum": "Eltwise-Sum",
    "Equal": "Eltwise-Equal", "Greater": "Eltwise-Greater", "GreaterOrEqual": "Eltwise-GreaterEqual",
    "Less": "Eltwise-Less", "LessOrEqual": "Eltwise-LessEqual", "And": "Eltwise-LogicalAnd",
    "Or": "Eltwise-LogicalOr", "Xor": "Eltwise-LogicalXor", "Mod": "Eltwise-FloorMod",
}
# ONNX op type -> table row (None: not in the table at all).
ONNX_TO_ROW: dict[str, str] = {
    **_ELTWISE,
    "Conv": "Convolution-Ordinary", "ConvTranspose": "Deconvolution",
    "Relu": "Activation-ReLU", "LeakyRelu": "Activation-Leaky ReLU", "PRelu": "Activation-PReLU",
    "Elu": "Activation-ELU", "Sigmoid": "Activation-Sigmoid/Logistic", "Tanh": "Activation-TanH",
    "Clip": "Activation-Clamp", "Not": "Activation-Not", "Exp": "Exp", "Log": "Log", "Abs": "Abs",
    "Ceil": "Ceil", "Floor": "Floor", "Sign": "Sign", "Erf": "Erf", "Softplus": "Softplus",
    "Neg": "Neg", "Reciprocal": "Reciprocal", "Sin": "Sin", "Cos": "Cos", "Tan": "Tan",
    "Asin": "Asin", "Acos": "Acos", "Atan": "Atan", "Sinh": "Sinh", "Cosh": "Cosh",
    "Asinh": "Asinh", "Acosh": "Acosh", "Atanh": "Atanh", "HardSigmoid": "HardSigmoid",
    "Selu": "Selu", "Softsign": "Softsign",
    "MaxPool": "Pooling(AVG,MAX)", "AveragePool": "Pooling(AVG,MAX)",
    "GlobalAveragePool": "Pooling(AVG,MAX)", "GlobalMaxPool": "Pooling(AVG,MAX)",
    "BatchNormalization": "BatchNormalization", "LRN": "LRN (Norm)",
    "MeanVarianceNormalization": "MVN", "InstanceNormalization": "MVN",
    "Concat": "Concat", "Flatten": "Flatten", "Reshape": "Reshape", "Squeeze": "Squeeze",
    "Unsqueeze": "Unsqueeze", "Transpose": "Permute", "Split": "Split", "Slice": "StridedSlice",
    "Gather": "Gather", "Tile": "Tile", "Expand": "Broadcast", "Pad": "Pad", "TopK": "TopK",
    "ArgMax": "ArgMax", "Where": "Select", "OneHot": "OneHot",
    "Gemm": "Gemm", "MatMul": "FullyConnected (Inner Product)", "Softmax": "SoftMax",
    "LogSoftmax": "LogSoftmax", "Resize": "Interp", "Upsample": "Resample",
    "ReduceMean": "ReduceMean", "ReduceMax": "ReduceMax", "ReduceMin": "ReduceMin",
    "ReduceSum": "ReduceSum", "ReduceProd": "ReduceProd", "ReduceL1": "ReduceL1",
    "ReduceL2": "ReduceL2", "ReduceLogSum": "ReduceLogSum", "ReduceLogSumExp": "ReduceLogSumExp",
    "ReduceSumSquare": "ReduceSumSquare",
    "LSTM": "LSTMSequence", "GRU": "GRUSequence", "RNN": "RNNSequence",
    "DepthToSpace": "DepthToSpace", "SpaceToDepth": "SpaceToDepth", "Range": "Range",
    "NonMaxSuppression": "NonMaxSuppression", "ReverseSequence": "ReverseSequence",
    "QuantizeLinear": "FakeQuantize", "DequantizeLinear": "FakeQuantize",
}
# ONNX ops the OpenVINO converter folds into constants or removes when shapes are static; the
# IR check that follows conversion catches any that survive (e.g. a ShapeOf layer).
ONNX_FOLDED: frozenset[str] = frozenset({"Constant", "Identity", "Dropout", "Shape", "ConstantOfShape"})

_IR_ELTWISE = {
    "Add": "Eltwise-Add", "Subtract": "Eltwise-Sub", "Multiply": "Eltwise-Mul",
    "Divide": "Eltwise-Div", "Maximum": "Eltwise-Max", "Minimum": "Eltwise-Min",
    "Power": "Eltwise-Pow", "SquaredDifference": "Eltwise-SquaredDiff", "FloorMod": "Eltwise-FloorMod",
    "Equal": "Eltwise-Equal", "NotEqual": "Eltwise-NotEqual", "Greater": "Eltwise-Greater",
    "GreaterEqual": "Eltwise-GreaterEqual", "Less": "Eltwise-Less", "LessEqual": "Eltwise-LessEqual",
    "LogicalAnd": "Eltwise-LogicalAnd", "LogicalOr": "Eltwise-LogicalOr",
    "LogicalXor": "Eltwise-LogicalXor",
}
# OpenVINO opset op type -> table row.
IR_TO_ROW: dict[str, str] = {
    **_IR_ELTWISE,
    "Constant": "Const", "Const": "Const", "Convolution": "Convolution-Ordinary", "GroupConvolution": "Convolution-Grouped",
    "ConvolutionBackpropData": "Deconvolution", "GroupConvolutionBackpropData": "Deconvolution",
    "BinaryConvolution": "BinaryConvolution", "DeformableConvolution": "DeformableConvolution",
    "Relu": "Activation-ReLU", "Clamp": "Activation-Clamp", "Elu": "Activation-ELU",
    "PRelu": "Activation-PReLU", "Sigmoid": "Activation-Sigmoid/Logistic", "Tanh": "Activation-TanH",
    "LogicalNot": "Activation-Not", "Exp": "Exp", "Log": "Log", "Abs": "Abs", "Ceiling": "Ceil",
    "Floor": "Floor", "Sign": "Sign", "Erf": "Erf", "SoftPlus": "Softplus", "Negative": "Neg",
    "Sin": "Sin", "Cos": "Cos", "Tan": "Tan", "Asin": "Asin", "Acos": "Acos", "Atan": "Atan",
    "Sinh": "Sinh", "Cosh": "Cosh", "Asinh": "Asinh", "Acosh": "Acosh", "Atanh": "Atanh",
    "HardSigmoid": "HardSigmoid", "Selu": "Selu", "SoftSign": "Softsign",
    "MaxPool": "Pooling(AVG,MAX)", "AvgPool": "Pooling(AVG,MAX)",
    "BatchNormInference": "BatchNormalization", "LRN": "LRN (Norm)", "MVN": "MVN",
    "NormalizeL2": "Normalize", "GRN": "GRN",
    "Concat": "Concat", "Reshape": "Reshape", "Squeeze": "Squeeze", "Unsqueeze": "Unsqueeze",
    "Transpose": "Permute", "Split": "Split", "VariadicSplit": "Split", "StridedSlice": "StridedSlice",
    "Gather": "Gather", "Tile": "Tile", "Broadcast": "Broadcast", "Pad": "Pad", "TopK": "TopK",
    "Select": "Select", "OneHot": "OneHot", "MatMul": "Gemm", "Softmax": "SoftMax",
    "LogSoftmax": "LogSoftmax", "Interpolate": "Interp",
    "ReduceMean": "ReduceMean", "ReduceMax": "ReduceMax", "ReduceMin": "ReduceMin",
    "ReduceSum": "ReduceSum", "ReduceProd": "ReduceProd", "ReduceL1": "ReduceL1", "ReduceL2": "ReduceL2",
    "ReduceLogicalAnd": "ReduceAnd", "ReduceLogicalOr": "ReduceOr",
    "LSTMCell": "LSTMCell", "LSTMSequence": "LSTMSequence", "GRUCell": "GRUCell",
    "GRUSequence": "GRUSequence", "RNNCell": "RNNCell", "RNNSequence": "RNNSequence",
    "TensorIterator": "TensorIterator", "DepthToSpace": "DepthToSpace", "SpaceToDepth": "SpaceToDepth",
    "ShuffleChannels": "ShuffleChannels", "Range": "Range", "NonMaxSuppression": "NonMaxSuppression",
    "ReverseSequence": "ReverseSequence", "ScatterUpdate": "ScatterUpdate", "FakeQuantize": "FakeQuantize",
    "CTCGreedyDecoder": "CTCGreedyDecoder", "DetectionOutput": "DetectionOutput", "PriorBox": "PriorBox",
    "PriorBoxClustered": "PriorBoxClustered", "Proposal": "Proposal", "PSROIPooling": "PSROIPooling",
    "ROIPooling": "ROIPooling", "RegionYolo": "RegionYolo", "ReorgYolo": "ReorgYolo",
}
# Graph plumbing, not compute layers. Convert is the FP16-weight decompression that every
# compressed-FP16 IR carries (2022.3's Model Optimizer wrote the same pattern for FP16 IRs).
IR_STRUCTURAL: frozenset[str] = frozenset({"Parameter", "Result", "Convert"})
# 3-D variants have their own "Not Supported" rows.
_RANK5_ROWS = {
    "Convolution-Ordinary": "Convolution-Ordinary 3D", "Convolution-Grouped": "Convolution-Grouped 3D",
    "Deconvolution": "Deconvolution 3D", "Pooling(AVG,MAX)": "Pooling(AVG,MAX) 3D",
}
_OPSET = re.compile(r"^opset(\d+)$")


@dataclass(frozen=True)
class Finding:
    """One node or layer the MYRIAD plugin cannot run (or runs only with limits)."""

    node: str
    op: str
    why: str

    def __str__(self) -> str:
        return f"node {self.node}: op {self.op} {self.why}"


def _row_verdict(row: str | None, op: str) -> str | None:
    if row is None:
        return "is not in the OpenVINO 2022.3 VPU supported-layers table"
    if row in VPU_SUPPORTED or row in VPU_LIMITED:
        return None
    shown = f" (table row '{row}')" if row != op else ""
    if row == "FakeQuantize":
        return "(INT8 quantization) is not supported by the MYRIAD plugin, which runs FP16 only"
    return f"is 'Not Supported' on VPU in the OpenVINO 2022.3 supported-layers table{shown}"


def row_for(op: str, rank: int | None, table: dict[str, str]) -> str | None:
    row = table.get(op)
    if row is not None and rank == 5:
        return _RANK5_ROWS.get(row, row)
    return row


def check_onnx_nodes(nodes: list[tuple[str, str, int | None]]) -> tuple[list[Finding], list[Finding]]:
    """(refused, limited) for ONNX nodes given as (name, op_type, rank of first input or None)."""
    refused, limited = [], []
    for name, op, rank in nodes:
        if op in ONNX_FOLDED:
            continue
        row = row_for(op, rank, ONNX_TO_ROW)
        why = _row_verdict(row, op)
        if why is not None:
            refused.append(Finding(name, op, why))
        elif row in VPU_LIMITED:
            limited.append(Finding(name, op, "is supported on VPU only for specific parameters"))
    return refused, limited


def check_ir_layers(layers: list[tuple[str, str, str, int | None]], max_opset: int | None) -> list[Finding]:
    """Refused IR layers, given as (name, type, version like 'opset1', output rank or None):
    ops outside the table, and opsets newer than the 2022.3 runtime reads."""
    refused = []
    for name, op, version, rank in layers:
        m = _OPSET.match(version)
        if m is None:
            refused.append(Finding(name, op, f"comes from '{version}', not a standard opset the 2022.3 runtime reads"))
            continue
        if max_opset is not None and int(m.group(1)) > max_opset:
            refused.append(Finding(
                name, op, f"is from {version}, newer than opset{max_opset} (what the 2022.3 LTS runtime was checked to load)"
            ))
            continue
        if op in IR_STRUCTURAL:
            continue
        why = _row_verdict(row_for(op, rank, IR_TO_ROW), op)
        if why is not None:
            refused.append(Finding(name, op, why))
    return refused
