"""Per-layer diff: run two ONNX models layer by layer on the same inputs and name the first layer
whose output diverges beyond tolerance (what users ask for when an FP16/INT8 build breaks).

Tensors are matched by name. Passes keep FP32 tensor names: in a QDQ graph an FP32 tensor `T` is
followed by QuantizeLinear -> DequantizeLinear, whose output is `T` as the quantized model sees it;
in a QOperator graph `T` becomes `T_quantized` with `T_scale`/`T_zero_point`; an FP16 graph keeps
`T` in float16. Layers fused away in B have no match and are listed as such.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deploypipe.analysis import reference as _ort
from deploypipe.errors import InputFileError, UnsupportedError

DEFAULT_RTOL = 0.05  # relative L2 error ||a-b|| / ||a|| beyond which a layer "diverges"
_ACTIVATIONS = {"Relu", "Clip"}


@dataclass
class LayerDiff:
    """One matched layer: the node of A, where its output was found in B, and the error figures."""

    node: str
    op: str
    tensor: str
    found_as: str  # same | qdq | qoperator
    rel_err: float  # ||a - b|| / ||a|| over all samples
    added_err: float  # rel_err minus the largest rel_err among its matched inputs: what this layer adds
    max_abs_err: float
    cosine: float
    diverged: bool
    covers: list[str] = field(default_factory=list)  # this node plus upstream nodes B fused away (no own match)


@dataclass
class DiffReport:
    a: str
    b: str
    samples: int
    data: str
    rtol: float
    layers: list[LayerDiff] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # A's node outputs with no counterpart in B

    @property
    def first_divergent(self) -> LayerDiff | None:
        return next((layer for layer in self.layers if layer.diverged), None)

    def most_harmful(self, k: int = 5) -> list[LayerDiff]:
        return sorted(self.layers, key=lambda layer: layer.added_err, reverse=True)[:k]

    def to_dict(self) -> dict[str, object]:
        first = self.first_divergent
        return {
            "a": self.a, "b": self.b, "samples": self.samples, "data": self.data, "rtol": self.rtol,
            "first_divergent": asdict(first) if first else None,
            "most_harmful": [asdict(x) for x in self.most_harmful()],
            "layers": [asdict(x) for x in self.layers], "unmatched": self.unmatched,
        }


@dataclass(frozen=True)
class _Where:
    name: str  # tensor to fetch from B
    kind: str
    scale: float = 1.0
    zero_point: int = 0


def _locate(b: onnx.ModelProto) -> dict[str, _Where]:
    """For every tensor name of interest, where B holds its (dequantized) value."""
    produced = {o for n in b.graph.node for o in n.output} | {i.name for i in b.graph.input}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in b.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {i.name: i for i in b.graph.initializer}
    where: dict[str, _Where] = {}
    for t in produced:
        where[t] = _Where(t, "same")
        for q in consumers.get(t, []):
            if q.op_type != "QuantizeLinear":
                continue
            dq = next((d for d in consumers.get(q.output[0], []) if d.op_type == "DequantizeLinear"), None)
            if dq is not None:
                where[t] = _Where(dq.output[0], "qdq")
                break
    for t in produced:
        base = t.removesuffix("_quantized")
        if base != t and base not in where and f"{base}_scale" in inits and f"{base}_zero_point" in inits:
            where[base] = _Where(
                t, "qoperator", float(numpy_helper.to_array(inits[f"{base}_scale"])),
                int(numpy_helper.to_array(inits[f"{base}_zero_point"])),
            )
    return where


def _with_outputs(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy that also outputs `names` (types left to the runtime's inference)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in have])
    return proto


def _float_tensors(a: onnx.ModelProto) -> set[str]:
    """Names of A's float tensors (integer shape arithmetic is not a 'layer output')."""
    inferred = onnx.shape_inference.infer_shapes(a)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    vis = [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]
    return {v.name for v in vis if v.type.tensor_type.elem_type in floats}


def compare_layers(a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], *,
                   rtol: float = DEFAULT_RTOL, a_name: str = "A", b_name: str = "B",
                   data: str = "") -> DiffReport:
    """Run A and B on `feeds` with every matchable intermediate tensor exposed and compare them in
    A's (topological) node order."""

    a = _ort.name_nodes(a)
    where = _locate(b)
    floats = _float_tensors(a)
    pairs = [(n, t) for n in a.graph.node for t in n.output if t and t in floats]
    matched = [(n, t) for n, t in pairs if t in where]
    report = DiffReport(a=a_name, b=b_name, samples=len(feeds), data=data, rtol=rtol,
                        unmatched=[t for _n, t in pairs if t not in where])
    if not matched:
        raise UnsupportedError(f"{b_name} shares no intermediate tensor names with {a_name}: nothing to compare")
    # A quantized tensor whose activation B fused away (Conv -> Relu/Clip folded into the quantization
    # range) holds the activation's output: compare it with that.
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in a.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    ref_of: dict[str, str] = {}
    for _n, t in matched:
        nxt = consumers.get(t, [])
        fused = (where[t].kind != "same" and len(nxt) == 1 and nxt[0].op_type in _ACTIVATIONS
                 and nxt[0].output[0] not in where)
        ref_of[t] = nxt[0].output[0] if fused else t
    a_names = sorted(set(ref_of.values()))
    b_names = sorted({where[t].name for t, _r in ref_of.items()})
    try:
        a_out = _ort.run(_with_outputs(a, a_names), feeds, a_names)
        b_out = _ort.run(_with_outputs(b, b_names), feeds, b_names)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for bad graphs
        raise InputFileError(f"could not run the models for a per-layer diff: {exc}") from exc
    errors: dict[str, float] = {}  # rel err per tensor; unmatched tensors inherit their inputs' worst
    group: dict[str, list[str]] = {}  # unmatched tensor -> the nodes that produced it since the last match
    matched_names = {t for _n, t in matched}
    for node in a.graph.node:
        upstream = max((errors.get(i, 0.0) for i in node.input), default=0.0)
        covers = list(dict.fromkeys([node.name, *(n for i in node.input for n in group.get(i, []))]))
        for t in node.output:
            if t not in matched_names:
                errors[t], group[t] = upstream, covers
                continue
            w = where[t]
            ref = np.concatenate([o[ref_of[t]].astype(np.float64).ravel() for o in a_out])
            got = np.concatenate([o[w.name].astype(np.float64).ravel() for o in b_out])
            if w.kind == "qoperator":
                got = (got - w.zero_point) * w.scale
            if ref.shape != got.shape:
                report.unmatched.append(t)
                errors[t], group[t] = upstream, covers
                continue
            diff = ref - got
            norm = float(np.linalg.norm(ref))
            rel = float(np.linalg.norm(diff) / norm) if norm > 0 else float(np.linalg.norm(diff))
            denom = norm * float(np.linalg.norm(got))
            cosine = float(np.dot(ref, got) / denom) if denom > 0 else float(np.array_equal(ref, got))
            errors[t] = rel
            report.layers.append(LayerDiff(
                node=node.name, op=node.op_type, tensor=t, found_as=w.kind, rel_err=rel,
                added_err=rel - upstream, max_abs_err=float(np.max(np.abs(diff))) if diff.size else 0.0,
                cosine=cosine, diverged=rel > rtol, covers=covers,
            ))
    return report


def load_onnx(path: Path) -> onnx.ModelProto:
    """An ONNX file, or the ONNX graph inside an artifact folder (its model or host stand-in)."""
    path = Path(path)
    if path.is_dir():
        from deploypipe.artifact import Artifact

        art = Artifact(path)
        m = art.manifest
        candidates = [e.path for e in m.files.values() if e.path.endswith(".onnx")]
        if m.host_check is not None and m.host_check.file.endswith(".onnx"):
            candidates.insert(0, m.host_check.file)
        if not candidates:
            raise UnsupportedError(
                f"artifact {path} ({m.kind}) holds no ONNX graph; a per-layer diff needs ONNX on both sides"
            )
        path = path / candidates[0]
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    try:
        return onnx.load_model(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise InputFileError(f"{path}: not a readable ONNX model ({exc})") from exc


def diff_paths(a: Path, b: Path, *, samples: int = 4, rtol: float = DEFAULT_RTOL,
               inputs: Path | None = None) -> DiffReport:
    """`deploypipe diff`: load both graphs, build the inputs (an .npz file or seeded synthetic
    data shaped like A's inputs) and compare layer by layer."""
    from deploypipe.model import SyntheticProvider, check_feeds, specs_of

    pa, pb = load_onnx(a), load_onnx(b)
    inits = {i.name for i in pa.graph.initializer}
    specs = specs_of(list(pa.graph.input), skip=inits)
    if inputs is not None:
        try:
            with np.load(inputs) as z:
                feeds = [{k: z[k] for k in z.files}]
        except (OSError, ValueError) as exc:
            raise InputFileError(f"{inputs}: not a readable .npz of input arrays ({exc})") from exc
        check_feeds(specs, feeds[0])
        data = f"inputs from {inputs}"
    else:
        provider = SyntheticProvider(specs)
        feeds = list(provider.samples(samples, seed=0))
        data = provider.description
    return compare_layers(pa, pb, feeds, rtol=rtol, a_name=str(a), b_name=str(b), data=data)


def render(report: DiffReport, top: int = 5) -> object:
    """A rich table of the layers (the first divergent one highlighted) and the worst offenders."""
    from rich.console import Group
    from rich.text import Text

    from deploypipe.tables import table as new_table

    first = report.first_divergent
    table = new_table(f"per-layer diff: {report.a} vs {report.b} ({report.samples} samples, {report.data})",
                      ("#", "node", "op", "as", "rel err", "added", "cosine", "max abs"),
                      right=("#", "rel err", "added", "cosine", "max abs"), fold=("node",))
    for i, x in enumerate(report.layers):
        style = "bold red" if x is first else ("red" if x.diverged else None)
        table.add_row(str(i), x.node, x.op, x.found_as, f"{x.rel_err:.2e}", f"{x.added_err:+.2e}",
                      f"{x.cosine:.5f}", f"{x.max_abs_err:.3g}", style=style)
    if first is None:
        verdict = Text(f"no layer diverges beyond rel err {report.rtol} (measured with onnxruntime on this host)")
    else:
        verdict = Text(f"first divergent layer: {first.node} ({first.op}) rel err {first.rel_err:.3g} > {report.rtol}",
                       style="bold red")
    worst = ", ".join(f"{x.node} ({x.added_err:+.3g})" for x in report.most_harmful(top))
    lines = [table, verdict, Text(f"most error added by: {worst}")]
    if report.unmatched:
        lines.append(Text(f"{len(report.unmatched)} tensor(s) of A have no counterpart in B (fused or renamed)"))
    return Group(*lines)
