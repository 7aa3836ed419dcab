"""What each TensorRT version's ONNX parser accepts: highest opset and the operators it imports.

Data, not code: transcribed from onnx-tensorrt's `docs/operators.md` on the release branches
(https://github.com/onnx/onnx-tensorrt/blob/release/8.2-GA/docs/operators.md: "TensorRT 8.2 supports
operators up to Opset 13"; .../release/10.0-GA/docs/operators.md: "opset 9 to opset 20"). Operators
listed "N" there, or not listed at all, are absent. Restrictions that matter to deploypipe's own
output (Q/DQ zero points must be 0, DequantizeLinear input must be INT8) are checked in `trt_int8`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OpTable:
    """One TensorRT release line's ONNX parser."""

    release: str  # e.g. "8.2"
    opset_max: int
    operators: frozenset[str]
    source: str


_TABLES: dict[str, OpTable] = {
    "8.2": OpTable("8.2", 13, frozenset({
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
        "Atanh", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat",
        "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
        "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf",
        "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND",
        "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
        "GreaterOrEqual", "GRU", "HardSigmoid", "Identity", "If", "ImageScaler",
        "InstanceNormalization", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log",
        "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM", "MatMul", "Max",
        "MaxPool", "Mean", "Min", "Mul", "Neg", "NonMaxSuppression", "Not", "Or", "Pad",
        "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomUniform",
        "RandomUniformLike", "Range", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
        "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
        "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "Round", "ScaledTanh", "Scan",
        "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Sigmoid", "Sign", "Sin",
        "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
        "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
        "Transpose", "Unsqueeze", "Upsample", "Where"
    }), "onnx-tensorrt release/8.2-GA docs/operators.md"),
    "10.0": OpTable("10.0", 20, frozenset({
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
        "Atanh", "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu",
        "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh",
        "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
        "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather",
        "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
        "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU",
        "Hardmax", "HardSigmoid", "HardSwish", "Identity", "If", "ImageScaler",
        "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less",
        "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM",
        "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod",
        "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad",
        "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "RandomNormal",
        "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal",
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize",
        "ReverseSequence", "RNN", "RoiAlign", "Round", "ScaledTanh", "Scan", "Scatter",
        "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin",
        "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
        "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK",
        "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor"
    }), "onnx-tensorrt release/10.0-GA docs/operators.md"),
}


def table_for(tensorrt_version: str) -> OpTable | None:
    """The parser table for a version string like "8.2.1" or "10.3"; 10.x later than 10.0 is
    judged by the 10.0 table (later parsers only add operators)."""
    parts = tensorrt_version.split(".")
    major_minor = ".".join(parts[:2])
    if major_minor in _TABLES:
        return _TABLES[major_minor]
    if parts[0] == "10":
        return _TABLES["10.0"]
    return None


def known_releases() -> list[str]:
    return sorted(_TABLES)
