"""An ONNX file a given TensorRT's parser accepts: simplified, at that parser's opset or below,
static shapes inferred, every operator checked against the parser's support list.

Down-conversion first tries `onnx.version_converter`. Its down-adapters are incomplete (there is
none for Relu 14 -> 13, for instance), so where it gives up, nodes whose operator schema did not
change in meaning between the two opsets (type-list or new-attribute-at-default changes only) are
relabelled, and the result is verified by the ONNX checker with full type inference at the lower
opset. Nodes that cannot be expressed at the lower opset are reported by name and op.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx
from onnx import helper

from deploypipe.backends.tensorrt.ops import OpTable
from deploypipe.errors import BuildError, ShapeError, UnsupportedError

_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class Prepared:
    """The prepared model and how it was obtained (for the manifest)."""

    proto: onnx.ModelProto
    opset_from: int
    opset: int
    conversion: str  # "none", "onnx.version_converter" or "schema-checked relabel"
    details: dict[str, object] = field(default_factory=dict)


def opset_of(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), 1)


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Nodes of a graph and of its subgraphs (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def unsupported_nodes(proto: onnx.ModelProto, table: OpTable) -> list[str]:
    """'node NAME: op OP' for every node the parser of `table` cannot import."""
    bad = []
    for node in _all_nodes(proto.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            bad.append(f"node {node.name or '?'}: op {node.domain}::{node.op_type} (custom domain; needs a TensorRT plugin)")
        elif node.op_type not in table.operators:
            bad.append(f"node {node.name or '?'}: op {node.op_type}")
    return bad


def check_operators(proto: onnx.ModelProto, table: OpTable, version: str) -> None:
    bad = unsupported_nodes(proto, table)
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise UnsupportedError(
            f"TensorRT {version}'s ONNX parser does not support {len(bad)} node(s): {shown} "
            f"(operator list: {table.source})"
        )


def _ir_for_opset(opset: int) -> int:
    """The IR version released together with `opset` (onnx.helper.VERSION_TABLE): older parsers
    built against that ONNX release read it without complaint."""
    for _release, ir, op, *_ in helper.VERSION_TABLE:
        if op >= opset:
            return ir
    return onnx.IR_VERSION


def _relabel_problems(proto: onnx.ModelProto, target: int) -> list[str]:
    """Nodes whose meaning would change when read at `target`; attributes a newer schema added
    are dropped when they hold that schema's default (which is the old behaviour)."""
    current = opset_of(proto)
    problems = []
    for node in _all_nodes(proto.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        try:
            new = onnx.defs.get_schema(node.op_type, current, "")
        except onnx.defs.SchemaError:
            problems.append(f"node {node.name}: op {node.op_type} is unknown to ONNX {onnx.__version__}")
            continue
        try:
            old = onnx.defs.get_schema(node.op_type, target, "")
        except onnx.defs.SchemaError:
            problems.append(f"node {node.name}: op {node.op_type} does not exist at opset {target} "
                            f"(added in opset {new.since_version})")
            continue
        if old.since_version == new.since_version:
            continue
        keep = []
        for attr in node.attribute:
            if attr.name in old.attributes:
                keep.append(attr)
                continue
            default = new.attributes[attr.name].default_value if attr.name in new.attributes else None
            if default is None or default.type == onnx.AttributeProto.UNDEFINED or \
                    helper.get_attribute_value(default) != helper.get_attribute_value(attr):
                problems.append(f"node {node.name}: op {node.op_type} uses attribute '{attr.name}' "
                                f"that opset {target} lacks")
        if len(keep) != len(node.attribute):
            del node.attribute[:]
            node.attribute.extend(keep)
        variadic = bool(old.inputs) and old.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
        if len(node.input) > len(old.inputs) and not variadic:
            problems.append(f"node {node.name}: op {node.op_type} has {len(node.input)} inputs; opset {target} "
                            f"takes {len(old.inputs)} ({', '.join(i.name for i in old.inputs)})")
        elif any(old.inputs[i].name != new.inputs[i].name
                 for i in range(min(len(node.input), len(old.inputs), len(new.inputs)))):
            problems.append(f"node {node.name}: op {node.op_type} inputs changed meaning between "
                            f"opset {old.since_version} and {new.since_version}")
    return problems


def downgrade(proto: onnx.ModelProto, target: int) -> tuple[onnx.ModelProto, str]:
    """The model at opset `target` (or unchanged if already at or below it)."""
    if opset_of(proto) <= target:
        return proto, "none"
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, target)
        onnx.checker.check_model(converted, full_check=True)
        method = "onnx.version_converter"
    except Exception:  # noqa: BLE001 - the converter lacks many down-adapters; the relabel below is checked
        converted = onnx.ModelProto()
        converted.CopyFrom(proto)
        problems = _relabel_problems(converted, target)
        if problems:
            raise UnsupportedError(
                f"cannot express the model at opset {target} (the highest this TensorRT parses): "
                + "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
                + f". Exporting the source model at opset {target} lets the exporter decompose such ops."
            ) from None
        for o in converted.opset_import:
            if o.domain in _DEFAULT_DOMAINS:
                o.version = target
        method = "schema-checked relabel"
    converted.ir_version = min(converted.ir_version, _ir_for_opset(target))
    del converted.graph.value_info[:]
    try:
        onnx.checker.check_model(converted, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise UnsupportedError(f"the model is not valid at opset {target}: {str(exc).splitlines()[0]}") from exc
    return converted, method


def static_shapes(proto: onnx.ModelProto, dynamic_ok: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """Shape-inferred model whose inputs and outputs have static dims, except the inputs in
    `dynamic_ok` (they get an optimization profile) and outputs that follow them."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types here
        raise BuildError(f"shape inference failed on the prepared model: {str(exc).splitlines()[0]}") from exc
    inits = {i.name for i in inferred.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.output]:
        if vi.name in inits or (dynamic_ok and (vi.name in dynamic_ok or vi in inferred.graph.output)):
            continue
        dims = vi.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
        if dynamic:
            raise ShapeError(f"tensor '{vi.name}' has dynamic dim(s) {dynamic} after shape inference; "
                             f"give it a range (--batch, --input-shape NAME=1..8x...) for an optimization profile, "
                             f"or a fixed size with --input-shape")
    return inferred


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(proto)


def prepare(proto: onnx.ModelProto, table: OpTable, version: str, opset_max: int,
            dynamic_ok: frozenset[str] = frozenset()) -> Prepared:
    """Simplify -> opset <= min(opset_max, parser max) -> static shapes (but for the inputs in
    `dynamic_ok`, which get a profile) -> operator check."""
    target = min(opset_max, table.opset_max)
    start = opset_of(proto)
    slim = simplify(proto)
    converted, method = downgrade(slim, target)
    shaped = static_shapes(converted, dynamic_ok)
    check_operators(shaped, table, version)
    return Prepared(
        proto=shaped, opset_from=start, opset=opset_of(shaped), conversion=method,
        details={"nodes_before": len(proto.graph.node), "nodes_after": len(shaped.graph.node),
                 "ir_version": shaped.ir_version},
    )
