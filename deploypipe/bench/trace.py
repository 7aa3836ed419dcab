"""Chrome trace-event JSON of a per-layer profile (`bench --profile --trace-dir DIR`), one file per
artifact, to open in https://ui.perfetto.dev or chrome://tracing.

Backends that write their own trace (ONNX Runtime's profiler) keep their events; for the others
(OpenVINO's PERF_COUNT counters, TVM's VM instrument, TFLite's per-op timing) the mean layer times
are laid end to end as one average run. Each layer is named after the ONNX node it comes from, so
two backends' traces of one model line up: by name where the backend keeps the node's name or its
output's (ONNX Runtime, OpenVINO), else by position, matching the backend's op kinds in order
against the ONNX graph's (TVM's fused kernels, TFLite's ops). `args.onnx_node_by` says which; the
backend's own name stays in `args.backend_name`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx

from deploypipe.artifact import Artifact
from deploypipe.backends.runner import LayerTime

_ORT_SUFFIX = "_kernel_time"
# a backend's op kind (TVM's leading op, TFLite's builtin, lower case) -> the ONNX ops it implements
_ONNX_OPS: dict[str, set[str]] = {
    "conv2d": {"Conv"}, "conv_2d": {"Conv"}, "depthwise_conv_2d": {"Conv"}, "conv2d_transpose": {"ConvTranspose"},
    "matmul": {"Gemm", "MatMul"}, "dense": {"Gemm", "MatMul"}, "fully_connected": {"Gemm", "MatMul"},
    "batch_matmul": {"MatMul"}, "mean": {"GlobalAveragePool", "ReduceMean"},
    "adaptive_avg_pool2d": {"GlobalAveragePool", "AveragePool"}, "avg_pool2d": {"AveragePool"},
    "average_pool_2d": {"AveragePool", "GlobalAveragePool"}, "max_pool2d": {"MaxPool"}, "max_pool_2d": {"MaxPool"},
    "softmax": {"Softmax"}, "concatenate": {"Concat"}, "concatenation": {"Concat"}, "layer_norm": {"LayerNormalization"},
    "transpose": {"Transpose"}, "relu": {"Relu"}, "add": {"Add"}, "mul": {"Mul"},
}


def onnx_names(proto: onnx.ModelProto | None) -> dict[str, str]:
    """Node name, and each output tensor's name, -> the ONNX node name."""
    names: dict[str, str] = {}
    for name, node in _nodes(proto):
        for out in node.output:
            names.setdefault(out, name)
        names[name] = name
    return names


class _Graph:
    """Nodes by name and the node producing each tensor."""

    def __init__(self, proto: onnx.ModelProto | None) -> None:
        self.by_name = dict(_nodes(proto))
        self.producer = {out: name for name, n in self.by_name.items() for out in n.output}


def _leading(node: str, op: str, graph: _Graph, steps: int = 4) -> str:
    """The node of a fused layer's own op: ONNX Runtime names a fused Conv+BatchNorm+Relu kernel
    after the Relu's output, so walk back through first inputs to the Conv (else keep `node`)."""
    by_name, producer = graph.by_name, graph.producer
    current = node
    for _ in range(steps):
        n = by_name.get(current)
        if n is None:
            return node
        if n.op_type == op:
            return current
        current = producer.get(n.input[0], "") if n.input else ""
    return node


def _nodes(proto: onnx.ModelProto | None) -> list[tuple[str, onnx.NodeProto]]:
    if proto is None:
        return []
    return [(node.name or f"{node.op_type}_{i}", node) for i, node in enumerate(proto.graph.node)]


def artifact_onnx(art: Artifact) -> onnx.ModelProto | None:
    """The ONNX graph whose node names a trace uses: the `.onnx` the artifact was built from while it
    is still where the manifest says (the names the user knows, the same for every backend), else
    the ONNX the artifact carries (after deploypipe's passes). Zoo-built OpenVINO, TVM and TFLite
    artifacts have neither: their traces keep the backend's names."""
    from deploypipe.bench.derived import artifact_proto

    source = Path(art.manifest.model.source)
    if art.manifest.model.importer == "onnx" and source.is_file():
        return onnx.load(str(source), load_external_data=False)
    return artifact_proto(art.path)


def onnx_node(backend_name: str, names: dict[str, str]) -> str | None:
    """The ONNX node a backend layer comes from: its name, or its output's, as the backend keeps it
    (OpenVINO adds '/suffixes', ONNX Runtime '_nchwc' to its re-laid-out convolutions, TFLite
    ':0'-style or ';'-joined fused names)."""
    for candidate in (backend_name, backend_name.removesuffix("_nchwc"), *re.split(r"[;/:]", backend_name)):
        if candidate in names:
            return names[candidate]
    return None


def by_op_order(layers: list[LayerTime], proto: onnx.ModelProto | None) -> dict[str, str]:
    """Layer name -> ONNX node, walking both in execution order and pairing each layer with the next
    node of an op kind it implements (fused layers take their leading op's node)."""
    nodes, pos, found = _nodes(proto), 0, {}
    for lt in layers:
        wanted = _ONNX_OPS.get(lt.op.lower(), set())
        j = next((k for k in range(pos, len(nodes)) if nodes[k][1].op_type in wanted), None)
        if j is not None:
            found[lt.name], pos = nodes[j][0], j + 1
    return found


def _named(event: dict[str, Any], backend_name: str, names: dict[str, str], order: dict[str, str],
           graph: _Graph | None = None) -> dict[str, Any]:
    args = event.setdefault("args", {})
    args["backend_name"] = backend_name
    node, how = onnx_node(backend_name, names), "name"
    if node is not None and graph is not None and args.get("op_name"):  # ONNX Runtime: the op a kernel runs
        node = _leading(node, args["op_name"], graph)
    if node is None:
        node, how = order.get(backend_name), "op order"
    if node is not None:
        event["name"] = node
        args["onnx_node"], args["onnx_node_by"] = node, how
    return event


def from_layers(layers: list[LayerTime], proto: onnx.ModelProto | None, pid: str) -> list[dict[str, Any]]:
    """One average run: each layer's mean time as a complete ('X') event, end to end (in µs)."""
    names, order = onnx_names(proto), by_op_order(layers, proto)
    events: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": pid}}]
    ts = 0.0
    for lt in layers:
        events.append(_named({"ph": "X", "cat": "layer", "name": lt.name, "pid": pid, "tid": 0, "ts": ts,
                              "dur": lt.ms * 1000, "args": {"op": lt.op}}, lt.name, names, order))
        ts += lt.ms * 1000
    return events


def from_ort(events: list[dict[str, Any]], proto: onnx.ModelProto | None) -> list[dict[str, Any]]:
    """ONNX Runtime's own events, kernel events named after their ONNX node."""
    names, graph, out = onnx_names(proto), _Graph(proto), []
    for ev in events:
        ev = dict(ev)
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith(_ORT_SUFFIX):
            ev = _named(ev, ev["name"][: -len(_ORT_SUFFIX)], names, {}, graph)
        out.append(ev)
    return out


def write(trace_dir: Path, name: str, kind: str, layers: list[LayerTime], own_events: list[dict[str, Any]] | None,
          proto: onnx.ModelProto | None, meta: dict[str, Any]) -> Path:
    """Write `<trace_dir>/<name>.trace.json` and return its absolute path."""
    events = from_ort(own_events, proto) if own_events is not None else from_layers(layers, proto, name)
    mapped = sorted({e["args"]["onnx_node"] for e in events if "onnx_node" in e.get("args", {})})
    trace = {"traceEvents": events, "displayTimeUnit": "ms",
             "otherData": {"artifact": name, "runtime": kind, "onnx_nodes": mapped,
                           "source": "the runtime's own profiler trace" if own_events is not None
                           else "mean per-layer times laid end to end (one average run)", **meta}}
    trace_dir.mkdir(parents=True, exist_ok=True)
    path = (trace_dir / f"{name}.trace.json").resolve()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(trace))
    tmp.replace(path)
    return path
