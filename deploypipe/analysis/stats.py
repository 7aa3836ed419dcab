"""Parameter, MAC and operator statistics of an ONNX model.

Computed on the ModelProto itself (not on a torch module) so the same figures come out for every
imported model, whatever framework it came from. Conventions follow seed 001 (Hadidi et al.,
IISWC'19): its "FLOP" column counts multiply-accumulates, so ``macs`` is the figure to compare and
``flop_per_param`` is MACs / params. Bias additions, normalisation, activations and pooling count
0 MACs. Pure onnx + numpy: no runtime is needed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx
from onnx import TensorProto, helper, numpy_helper

Shape = tuple[int | None, ...]

# Integer/bool tensors are shapes, axes, indices or masks, not learned weights.
_NOT_PARAM_DTYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL}


@dataclass(frozen=True)
class LayerStat:
    """One node: what it produces and what it costs; ``macs`` is None when a dim is dynamic."""

    name: str
    op_type: str
    output_name: str
    output_shape: Shape | None
    output_bytes: int | None
    macs: int | None
    params: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape is not None else None
        return d


@dataclass(frozen=True)
class ModelStats:
    """Whole-model totals; ``incomplete`` names nodes whose MACs could not be computed."""

    params: int
    macs: int
    flop_per_param: float
    op_histogram: dict[str, int]
    layers: list[LayerStat]
    incomplete: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "flop_per_param": self.flop_per_param,
            "op_histogram": dict(self.op_histogram),
            "layers": [layer.to_dict() for layer in self.layers],
            "incomplete": list(self.incomplete),
        }


def analyze(model: onnx.ModelProto) -> ModelStats:
    """Count params, MACs and ops of the main graph, layer by layer in topological order."""
    graph = model.graph
    shapes, dtypes = _tensor_types(_infer(model))
    param_sizes = _param_tensors(graph, shapes)

    layers: list[LayerStat] = []
    incomplete: list[str] = []
    claimed: set[str] = set()
    for i, node in enumerate(topological(graph)):
        name = node.name or f"{node.op_type}_{i}"
        own = [t for t in node.input if t in param_sizes and t not in claimed]
        claimed.update(own)
        out = node.output[0] if node.output else ""
        out_shape = shapes.get(out)
        macs = _macs(node, shapes)
        if macs is None and node.op_type in _MAC_OPS:
            incomplete.append(name)
        layers.append(
            LayerStat(
                name=name,
                op_type=node.op_type,
                output_name=out,
                output_shape=out_shape,
                output_bytes=_nbytes(out_shape, dtypes.get(out)),
                macs=macs if node.op_type in _MAC_OPS else 0,
                params=sum(param_sizes[t] for t in own),
            )
        )

    params = sum(param_sizes.values())
    macs_total = sum(layer.macs or 0 for layer in layers)
    return ModelStats(
        params=params,
        macs=macs_total,
        flop_per_param=macs_total / params if params else 0.0,
        op_histogram=dict(Counter(n.op_type for n in graph.node)),
        layers=layers,
        incomplete=incomplete,
    )


def _infer(model: onnx.ModelProto) -> onnx.GraphProto:
    """Shape-infer a light copy: weights become typed inputs, integer shape subgraphs are folded.

    Exporters compute e.g. Pad's pads or Split's sizes with Shape/Gather/Concat chains that ONNX
    shape inference cannot see through; evaluating those integer-only nodes (Shape from the shapes
    inferred so far, the rest with onnx's numpy reference evaluator) and re-inferring lets shapes
    flow past them. Float weights are never copied, only their types and dims. Declared
    intermediate shapes are kept only where fully static: a stale one with unknown dims (left by an
    export with dynamic axes whose inputs were pinned since) would stop inference from refining it,
    which left every MatMul of an exported BERT uncounted.
    """
    src = model.graph
    ints = [t for t in src.initializer if t.data_type in _NOT_PARAM_DTYPES]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    declared = {i.name for i in src.input}
    weights = [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
        for t in src.initializer
        if t.data_type not in _NOT_PARAM_DTYPES and t.name not in declared
    ]
    shapes: dict[str, Shape | None] = {}
    folded: dict[str, Any] = {}
    for _ in range(_FOLD_ROUNDS):
        known = {t.name: numpy_helper.to_array(t) for t in ints}
        folded = _fold_integer_constants(src, known, opset, shapes)
        graph = helper.make_graph(
            [n for n in src.node if not (n.output and all(o in folded for o in n.output))],
            src.name,
            [*src.input, *weights],
            list(src.output),
            [*ints, *(numpy_helper.from_array(v, k) for k, v in folded.items())],
            value_info=[vi for vi in src.value_info if _known(_dims(vi.type.tensor_type))],
        )
        light = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        light.functions.extend(model.functions)
        try:
            graph = onnx.shape_inference.infer_shapes(light, data_prop=True).graph
        except (onnx.shape_inference.InferenceError, ValueError):
            return graph
        new_shapes = _tensor_types(graph)[0]
        if sum(map(_known, new_shapes.values())) == sum(map(_known, shapes.values())):
            break
        shapes = new_shapes
    return graph


_FOLD_ROUNDS = 4


def _fold_integer_constants(
    graph: onnx.GraphProto, known: dict[str, Any], opset: int, shapes: dict[str, Shape | None]
) -> dict[str, Any]:
    """Evaluate nodes whose inputs are all known integer constants (or Shape of a static tensor)."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    folded: dict[str, Any] = {}
    opsets = [helper.make_opsetid("", opset)]
    for node in topological(graph):
        if node.op_type == "Constant":
            tensor = _constant_tensor(node)
            if tensor is not None and tensor.data_type in _NOT_PARAM_DTYPES:
                known[node.output[0]] = folded[node.output[0]] = numpy_helper.to_array(tensor)
            continue
        if node.op_type == "Shape" and _known(shapes.get(node.input[0])):
            dims = shapes[node.input[0]][_attr(node, "start", 0) : _attr(node, "end", None)]  # type: ignore[index]
            known[node.output[0]] = folded[node.output[0]] = np.array(dims, dtype=np.int64)
            continue
        if node.domain not in ("", "ai.onnx") or not node.input or not all(i in known for i in node.input if i):
            continue
        try:
            values = ReferenceEvaluator(node, opsets=opsets).run(None, {i: known[i] for i in node.input if i})
        except Exception:  # noqa: BLE001 - an op the reference evaluator cannot run stays unfolded
            continue
        for name, value in zip(node.output, values, strict=False):
            if getattr(value, "dtype", None) is not None and value.dtype.kind in "iub":
                known[name] = folded[name] = value
    return folded


def _dims(tensor_type: onnx.TypeProto.Tensor) -> Shape | None:
    if not tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)


def _tensor_types(graph: onnx.GraphProto) -> tuple[dict[str, Shape | None], dict[str, int]]:
    """Shape and element type of every named tensor the graph declares or infers."""
    shapes: dict[str, Shape | None] = {}
    dtypes: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type"):
            shapes[vi.name] = _dims(vi.type.tensor_type)
            dtypes[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
        dtypes[init.name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            value = _constant_tensor(node)
            if value is not None:
                shapes[node.output[0]] = tuple(value.dims)
                dtypes[node.output[0]] = value.data_type
    return shapes, dtypes


def _constant_tensor(node: onnx.NodeProto) -> TensorProto | None:
    for attr in node.attribute:
        if attr.name == "value":
            return attr.t
    return None


def _param_tensors(graph: onnx.GraphProto, shapes: dict[str, Shape | None]) -> dict[str, int]:
    """Element counts of weight tensors: float/quantized initializers and Constant nodes, not scalars."""
    sizes: dict[str, int] = {}
    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [(n.output[0], _constant_tensor(n)) for n in graph.node if n.op_type == "Constant"]
    for name, tensor in tensors:
        if tensor is None or tensor.data_type in _NOT_PARAM_DTYPES or len(tensor.dims) == 0:
            continue
        sizes[name] = math.prod(tensor.dims)
    return sizes


def topological(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes in dependency order, keeping the file's order among ready nodes (stable Kahn)."""
    produced_by = {out: i for i, n in enumerate(graph.node) for out in n.output if out}
    deps = [{produced_by[t] for t in n.input if t in produced_by} for n in graph.node]
    users: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    remaining = [len(d) for d in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    order: list[int] = []
    while ready:
        ready.sort()
        i = ready.pop(0)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(graph.node):  # a cycle: not a valid ONNX graph, keep the file order
        return list(graph.node)
    return [graph.node[i] for i in order]


def _nbytes(shape: Shape | None, dtype: int | None) -> int | None:
    if shape is None or dtype is None or any(d is None for d in shape):
        return None
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(dtype).itemsize
    except (KeyError, TypeError):
        return None
    return math.prod(shape) * itemsize  # type: ignore[arg-type]


def _known(shape: Shape | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _conv(node: onnx.NodeProto, shapes: dict[str, Shape | None], x: int, w: int) -> int | None:
    """Output elements x (in-channels per group x kernel volume): covers grouped and depthwise."""
    out, weight = shapes.get(node.output[0]), shapes.get(node.input[w])
    if not (_known(out) and _known(weight)):
        return None
    return math.prod(out) * math.prod(weight[1:])  # type: ignore[arg-type,index]


def _conv_transpose(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int | None:
    """Every input element is scattered through (out-channels per group x kernel volume)."""
    inp, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
    if not (_known(inp) and _known(weight)):
        return None
    return math.prod(inp) * math.prod(weight[1:])  # type: ignore[arg-type,index]


def _matmul(node: onnx.NodeProto, shapes: dict[str, Shape | None], a: int, b: int) -> int | None:
    """Output elements x K; K from the left operand, or from the right one (a weight, usually)
    when the left's shape is unknown, e.g. the output of a Loop or a custom op."""
    out, lhs, rhs = shapes.get(node.output[0]), shapes.get(node.input[a]), shapes.get(node.input[b])
    if _known(lhs) and lhs:
        k = lhs[-1]
    elif _known(rhs) and rhs and len(rhs) >= 2:  # type: ignore[arg-type]
        k = rhs[-2]  # type: ignore[index]
    else:
        return None
    if not _known(out):
        return None
    return math.prod(out) * k  # type: ignore[arg-type,operator]


def _gemm(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int | None:
    out, lhs = shapes.get(node.output[0]), shapes.get(node.input[0])
    if not (_known(out) and _known(lhs)) or len(lhs) != 2:  # type: ignore[arg-type]
        return None
    k = lhs[0] if _attr(node, "transA", 0) else lhs[1]  # type: ignore[index]
    return math.prod(out) * k  # type: ignore[arg-type,operator]


def _recurrent(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int | None:
    """seq x batch x (W and R matrix-vector products) per direction; gate arithmetic is not MACs."""
    x, w, r = (shapes.get(node.input[i]) for i in range(3))
    if not (_known(x) and _known(w) and _known(r)):
        return None
    seq, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])  # type: ignore[index]
    return seq * batch * (math.prod(w) + math.prod(r))  # type: ignore[arg-type,operator]


def _einsum(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int | None:
    """Product of the sizes of all distinct indices (each one multiply-add); no ellipsis support."""
    equation = _attr(node, "equation", b"")
    lhs = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "").split("->")[0]
    if "..." in lhs:
        return None
    sizes: dict[str, int] = {}
    for term, name in zip(lhs.split(","), node.input, strict=False):
        shape = shapes.get(name)
        if not _known(shape) or len(shape) != len(term):  # type: ignore[arg-type]
            return None
        sizes.update(zip(term, shape, strict=True))  # type: ignore[arg-type]
    return math.prod(sizes.values())


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


_MAC_OPS = {
    "Conv": lambda n, s: _conv(n, s, 0, 1),
    "ConvInteger": lambda n, s: _conv(n, s, 0, 1),
    "QLinearConv": lambda n, s: _conv(n, s, 0, 3),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": lambda n, s: _matmul(n, s, 0, 1),
    "MatMulInteger": lambda n, s: _matmul(n, s, 0, 1),
    "QLinearMatMul": lambda n, s: _matmul(n, s, 0, 3),
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "RNN": _recurrent,
    "Einsum": _einsum,
}


def _macs(node: onnx.NodeProto, shapes: dict[str, Shape | None]) -> int | None:
    fn = _MAC_OPS.get(node.op_type)
    return fn(node, shapes) if fn else 0
