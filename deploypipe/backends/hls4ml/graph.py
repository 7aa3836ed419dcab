"""The ONNX side of the FPGA flow: which graphs the HLS path takes, the pre-synthesis resource
estimate, and the ONNX chain rebuilt as a torch module for hls4ml's PyTorch frontend.

Why rebuild a torch module: hls4ml's ONNX frontend wants QONNX-cleaned, channels-last graphs
(Gemm is not even parsed), while its PyTorch frontend takes plain Linear/Conv2d/pool/ReLU chains.
Rebuilding from the ONNX the compiler receives (not from the zoo source) keeps every pass that ran
(folding, pruning) in the hardware, and works for user .onnx files too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from deploypipe.errors import UnsupportedError

BRAM18K_BITS = 18 * 1024
# the ops the rebuilt chain supports (hls4ml PyTorch frontend layers); Identity/Dropout are skipped
CHAIN_OPS = {"Gemm", "MatMul", "Add", "Conv", "Relu", "Sigmoid", "Tanh", "MaxPool", "AveragePool",
             "Flatten", "Reshape", "BatchNormalization", "Identity", "Dropout"}
WEIGHT_OPS = {"Gemm", "MatMul", "Conv", "ConvTranspose"}


@dataclass
class WeightLayer:
    """A layer with weights, as the estimate sees it: one output position computed at a time
    (hls4ml's ParallelizationFactor 1), so its multiplies per step equal its weight count."""

    name: str
    op: str
    weights: int
    reuse: int = 1

    @property
    def parallel_mults(self) -> int:
        return math.ceil(self.weights / self.reuse)


@dataclass
class Estimate:
    """Pre-synthesis resource estimate (ours, not Vivado's) and the board's figures."""

    layers: list[WeightLayer]
    weight_bits: int
    accum_bits: int
    totals: dict[str, int] = field(default_factory=dict)
    board: dict[str, int] = field(default_factory=dict)

    def over(self, max_utilization: float) -> list[str]:
        """Resources above `max_utilization` of the board, as 'DSP48E1: estimated N > M (board M0)'."""
        out = []
        for res, have in self.board.items():
            need, cap = self.totals.get(res, 0), int(have * max_utilization)
            if need > cap:
                out.append(f"{res}: estimated {need} > {cap} ({max_utilization:.0%} of the board's {have})")
        return out

    def to_info(self) -> dict[str, Any]:
        return {
            "method": ESTIMATE_METHOD,
            "estimated": self.totals,
            "board": self.board,
            "utilization": {k: round(self.totals[k] / v, 3) for k, v in self.board.items() if v},
            "layers": [{"name": w.name, "op": w.op, "weights": w.weights, "reuse_factor": w.reuse,
                        "parallel_multipliers": w.parallel_mults} for w in self.layers],
        }


ESTIMATE_METHOD = (
    "estimated by deploypipe's pre-synthesis model, not by Vivado: every weight layer computes one "
    "output position at a time; DSP48E1 = sum over layers of ceil(weights / reuse factor) (one DSP per "
    "parallel multiplier: an upper bound, Vivado maps some narrow products to LUTs); BRAM18K = 0 for "
    "reuse factor 1 (weights become constants in the multipliers), else per layer max(ceil(weight bits "
    "/ 18 Kib), ceil(parallel weights x weight bits / 36 bits per port)); LUT = parallel multipliers x "
    "accumulator bits (one adder bit each) + 3000 for control and the AXI wrapper; FF = LUT (pipeline "
    "registers)"
)


def weight_layers(proto: onnx.ModelProto) -> list[WeightLayer]:
    """Every node that multiplies by a stored weight tensor, with that tensor's size."""
    inits = {i.name: int(np.prod(i.dims)) for i in proto.graph.initializer}
    out = []
    for node in proto.graph.node:
        if node.op_type in WEIGHT_OPS:
            sizes = [inits[x] for x in node.input[1:2] if x in inits]
            if sizes:
                out.append(WeightLayer(node.name or node.output[0], node.op_type, sizes[0]))
    return out


def estimate(layers: list[WeightLayer], weight_bits: int, accum_bits: int, board: dict[str, int]) -> Estimate:
    """Resource totals for the given per-layer reuse factors (see ESTIMATE_METHOD)."""
    dsp = sum(w.parallel_mults for w in layers)
    bram = 0
    for w in layers:
        if w.reuse > 1:
            bram += max(math.ceil(w.weights * weight_bits / BRAM18K_BITS),
                        math.ceil(w.parallel_mults * weight_bits / 36))
    lut = dsp * accum_bits + 3000
    totals = {"DSP48E1": dsp, "BRAM18K": bram, "LUT": lut, "FF": lut}
    return Estimate(layers, weight_bits, accum_bits, totals, board)


def min_bram(layers: list[WeightLayer], weight_bits: int) -> int:
    """BRAM18K needed just to hold the weights, whatever the reuse factor (a lower bound)."""
    return sum(math.ceil(w.weights * weight_bits / BRAM18K_BITS) for w in layers)


def plan_reuse(layers: list[WeightLayer], weight_bits: int, accum_bits: int, board: dict[str, int],
               max_utilization: float) -> Estimate:
    """The smallest global reuse factor whose estimate fits the board (a power of two, so hls4ml
    can snap it to a divisor per layer), capped per layer at its weight count."""
    reuse = 1
    while True:
        for w in layers:
            w.reuse = min(reuse, w.weights)
        est = estimate(layers, weight_bits, accum_bits, board)
        if not est.over(max_utilization) or all(w.reuse == w.weights for w in layers):
            return est
        reuse *= 2


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def check_chain(proto: onnx.ModelProto) -> None:
    """Refuse graphs the rebuilt chain cannot express, naming the node and op."""
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    ranks = {i.name: len(i.dims) for i in graph.initializer}
    if len([i for i in graph.input if i.name not in inits]) != 1 or len(graph.output) != 1:
        raise UnsupportedError("the hls4ml path takes single-input, single-output models")
    consumers: dict[str, int] = {}
    for node in graph.node:
        for x in node.input:
            consumers[x] = consumers.get(x, 0) + 1
    for node in graph.node:
        where = f"node '{node.name or node.output[0]}' (op {node.op_type})"
        if node.op_type not in CHAIN_OPS:
            raise UnsupportedError(f"{where}: not supported by the hls4ml path "
                                   f"(supported: {', '.join(sorted(CHAIN_OPS))})")
        if any(consumers.get(o, 0) > 1 for o in node.output):
            raise UnsupportedError(f"{where}: its output feeds several nodes; the hls4ml path takes plain chains")
        dynamic = [x for x in node.input if x and x not in inits]
        if node.op_type != "Reshape" and len(dynamic) != 1:
            raise UnsupportedError(f"{where}: {len(dynamic)} activation inputs; the hls4ml path takes plain chains")
        if node.op_type == "Conv" and (_attr(node, "group", 1) != 1 or ranks.get(node.input[1]) != 4
                                       or set(_attr(node, "dilations", [1, 1])) != {1}):
            raise UnsupportedError(f"{where}: only 2-D, ungrouped, undilated convolutions")
        if node.op_type == "Gemm" and (_attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0
                                       or _attr(node, "beta", 1.0) != 1.0):
            raise UnsupportedError(f"{where}: only Gemm with transA=0, alpha=beta=1")
        if node.op_type in ("MaxPool", "AveragePool") and (_attr(node, "ceil_mode", 0) or any(_attr(node, "pads", []))):
            raise UnsupportedError(f"{where}: padded or ceil_mode pooling")
        pads = _attr(node, "pads", [0, 0, 0, 0])
        if node.op_type == "Conv" and pads[: len(pads) // 2] != pads[len(pads) // 2 :]:
            raise UnsupportedError(f"{where}: asymmetric padding {pads}")


def to_torch(proto: onnx.ModelProto) -> Any:
    """The ONNX chain (after `check_chain`) as a torch.nn.Sequential with the same weights."""
    import torch
    from torch import nn

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    layers: list[nn.Module] = []
    rank = len(proto.graph.input[0].type.tensor_type.shape.dim)
    pending_linear: nn.Linear | None = None
    for node in proto.graph.node:
        op = node.op_type
        if op in ("Identity", "Dropout"):
            continue
        if op == "Add" and pending_linear is not None:  # MatMul + Add = Linear with bias
            bias = next(inits[x] for x in node.input if x in inits)
            with torch.no_grad():
                pending_linear.bias = nn.Parameter(torch.from_numpy(bias.reshape(-1).astype(np.float32)))
            pending_linear = None
            continue
        pending_linear = None
        if op in ("Flatten", "Reshape"):
            if rank > 2:
                layers.append(nn.Flatten())
            rank = 2
        elif op in ("Gemm", "MatMul"):
            w = inits[node.input[1]].astype(np.float32)
            w = w if (op == "Gemm" and _attr(node, "transB", 0)) else w.T
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                if op == "Gemm" and len(node.input) > 2:
                    lin.bias = nn.Parameter(torch.from_numpy(inits[node.input[2]].reshape(-1).astype(np.float32)))
            layers.append(lin)
            pending_linear = lin if op == "MatMul" else None
        elif op == "Conv":
            w = inits[node.input[1]].astype(np.float32)
            pads = _attr(node, "pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:
                raise UnsupportedError(f"node '{node.name}' (op Conv): asymmetric padding {pads}")
            conv = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(_attr(node, "strides", [1, 1])),
                             padding=tuple(pads[:2]), bias=len(node.input) > 2)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w))
                if len(node.input) > 2:
                    conv.bias.copy_(torch.from_numpy(inits[node.input[2]].astype(np.float32)))
            layers.append(conv)
        elif op in ("MaxPool", "AveragePool"):
            pads = _attr(node, "pads", [0, 0, 0, 0])
            if any(pads):
                raise UnsupportedError(f"node '{node.name}' (op {op}): padded pooling")
            cls = nn.MaxPool2d if op == "MaxPool" else nn.AvgPool2d
            k = tuple(_attr(node, "kernel_shape"))
            layers.append(cls(k, stride=tuple(_attr(node, "strides", list(k)))))
        elif op == "BatchNormalization":
            scale, bias, mean, var = (inits[x] for x in node.input[1:5])
            bn = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(len(scale), eps=_attr(node, "epsilon", 1e-5))
            with torch.no_grad():
                for t, v in ((bn.weight, scale), (bn.bias, bias), (bn.running_mean, mean), (bn.running_var, var)):
                    t.copy_(torch.from_numpy(v.astype(np.float32)))
            layers.append(bn)
        elif op == "Add":
            raise UnsupportedError(f"node '{node.name}' (op Add): an Add not following a MatMul")
        else:
            layers.append({"Relu": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}[op]())
    return nn.Sequential(*layers).eval()
