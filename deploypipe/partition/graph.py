"""Cut points of an ONNX DAG and the two subgraphs on either side of a cut.

A cut after the first k nodes (in the file's topological order, which ONNX requires) is valid for
any DAG: every edge then points from the edge half to the cloud half. What crosses is the set of
activation tensors produced at or before the cut (or graph inputs) and still needed after it. In a
chain that set is one tensor; inside a residual block it holds the skip branch too, inside an
inception block every open branch. Tensors that depend on no graph input (weights, Constant nodes,
shape arithmetic on constants) never cross: each half recomputes or embeds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import helper

from deploypipe.errors import InputFileError, UnsupportedError


@dataclass(frozen=True)
class Crossing:
    """One activation tensor that crosses a cut."""

    name: str
    shape: tuple[int | None, ...]  # None: a dynamic (batch) dim
    dtype: str  # numpy dtype name
    nbytes: int


@dataclass(frozen=True)
class CutPoint:
    """The cut after the first `index` nodes: nodes [0, index) run on the edge, the rest in the cloud.

    `index == 0` is cloud-only (the raw input crosses); `index == n_nodes` is edge-only (nothing crosses).
    """

    index: int
    after: str  # name of the last edge node, or "<input>" for cloud-only
    after_op: str
    tensors: tuple[Crossing, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]


def node_names(proto: onnx.ModelProto) -> list[str]:
    """Stable node names: the node's own, else `<op>_<index>` (exporters sometimes leave them empty)."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(proto.graph.node)]


def _tensor_types(proto: onnx.ModelProto) -> dict[str, onnx.TypeProto.Tensor]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    return {vi.name: vi.type.tensor_type for vi in [*g.input, *g.value_info, *g.output]}


def _crossing(name: str, types: dict[str, onnx.TypeProto.Tensor]) -> Crossing:
    tt = types.get(name)
    if tt is None or not tt.HasField("shape") or any(not (d.HasField("dim_value") or d.dim_param) for d in tt.shape.dim):
        raise UnsupportedError(
            f"tensor '{name}' has no known shape after shape inference; partitioning needs its shape "
            "(give the inputs' shapes with --input-shape)"
        )
    # a symbolic dim (a dynamic batch) stays None; the bytes are costed per sample (that dim as 1)
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    np_dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    return Crossing(name=name, shape=shape, dtype=np_dtype.name,
                    nbytes=math.prod(d or 1 for d in shape) * np_dtype.itemsize)


def activation_tensors(proto: onnx.ModelProto) -> set[str]:
    """Tensors that depend on a graph input: the only ones that can ever need to cross."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    live = {i.name for i in g.input if i.name not in inits}
    for node in g.node:
        if any(t in live for t in node.input if t):
            live.update(o for o in node.output if o)
    return live


def enumerate_cuts(proto: onnx.ModelProto, max_tensors: int | None = None) -> list[CutPoint]:
    """Every prefix cut of the graph with its crossing set, cloud-only first, edge-only last.

    `max_tensors` keeps only cuts where at most that many tensors cross (1: Neurosurgeon's
    single-tensor cuts of a chain); cloud-only and edge-only are always kept.
    """
    g = proto.graph
    if not g.node:
        raise InputFileError(f"model '{g.name}' has no nodes: nothing to partition")
    active = activation_tensors(proto)
    types = _tensor_types(proto)
    names = node_names(proto)
    outputs = {o.name for o in g.output}
    inits = {t.name for t in g.initializer}
    # last node index that reads each activation tensor (graph outputs are read "at the end")
    last_use: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for t in node.input:
            if t in active:
                last_use[t] = i
    end = len(g.node)
    for o in outputs:
        last_use[o] = end
    produced: list[str] = [i.name for i in g.input if i.name not in inits]
    cuts: list[CutPoint] = []
    for k in range(end + 1):
        if k > 0:
            new = [o for o in g.node[k - 1].output if o in active]
            if not new and k < end:
                continue  # a constant-only node: same crossing set as the cut before it
            produced.extend(new)
        if k == end:
            crossing: list[str] = []
        else:
            crossing = [t for t in produced if last_use.get(t, -1) >= k]
            if any(t in outputs for t in crossing):
                continue  # a model output is final on the edge already: not a clean cut
        if max_tensors is not None and 0 < k < end and len(crossing) > max_tensors:
            continue
        after, op = ("<input>", "") if k == 0 else (names[k - 1], g.node[k - 1].op_type)
        cuts.append(CutPoint(k, after, op, tuple(_crossing(t, types) for t in crossing)))
    return cuts


def find_cut(cuts: list[CutPoint], layer: str) -> CutPoint:
    """The cut right after the node named `layer` (or 'edge-only' / 'cloud-only')."""
    if layer == "cloud-only":
        return cuts[0]
    if layer == "edge-only":
        return cuts[-1]
    for cut in cuts:
        if cut.after == layer:
            return cut
    raise InputFileError(
        f"no valid cut after node '{layer}'; cuts exist after: "
        + ", ".join(c.after for c in cuts[:8]) + (" ..." if len(cuts) > 8 else "")
    )


def split(proto: onnx.ModelProto, cut: CutPoint) -> tuple[onnx.ModelProto | None, onnx.ModelProto | None]:
    """(edge, cloud) subgraphs for `cut`; None for an empty half (cloud-only / edge-only)."""
    g = proto.graph
    inits = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in inits]
    outputs = [o.name for o in g.output]
    n = len(g.node)
    inferred = onnx.shape_inference.infer_shapes(proto)
    extractor = onnx.utils.Extractor(inferred)
    edge = None if cut.index == 0 else _finish(extractor.extract_model(inputs, cut.names or outputs), proto, "edge")
    cloud = None if cut.index == n else _finish(extractor.extract_model(cut.names, outputs), proto, "cloud")
    return edge, cloud


def _finish(half: onnx.ModelProto, source: onnx.ModelProto, role: str) -> onnx.ModelProto:
    """Keep the source's opsets/IR version, drop stale value_info, and check the result."""
    half.ir_version = source.ir_version
    del half.opset_import[:]
    half.opset_import.extend(source.opset_import)
    half.graph.name = f"{source.graph.name or 'model'}-{role}"
    del half.graph.value_info[:]
    onnx.checker.check_model(half)
    return half
