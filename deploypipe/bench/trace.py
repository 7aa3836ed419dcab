"""Chrome trace-event JSON of a per-layer profile (`bench --profile --trace-dir DIR`), one file per
artifact, to open in https://ui.perfetto.dev or chrome://tracing.

Backends that write their own trace (ONNX Runtime's profiler) keep their events; for the others
(OpenVINO's PERF_COUNT counters, TVM's VM instrument, TFLite's per-op timing) the mean layer times
are laid end to end as one average run. Where a layer's name is an ONNX node name or the name of an
ONNX node's output, the event is named after that node (the backend's own name stays in args), so
two backends' traces of one model line up.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx

from deploypipe.artifact import Artifact
from deploypipe.runtime.base import LayerTime

_ORT_SUFFIX = "_kernel_time"


def onnx_names(proto: onnx.ModelProto | None) -> dict[str, str]:
    """Node name, and each output tensor's name, -> the ONNX node name."""
    names: dict[str, str] = {}
    if proto is None:
        return names
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        for out in node.output:
            names.setdefault(out, name)
        names[name] = name
    return names


def artifact_names(art: Artifact) -> dict[str, str]:
    """ONNX names for an artifact's layers: from the ONNX it carries, else (OpenVINO IR, TFLite, TVM
    libraries) from the ONNX file it was built from, when that is still where the manifest says."""
    from deploypipe.bench.derived import artifact_proto

    proto = artifact_proto(art.path)
    source = Path(art.manifest.model.source)
    if proto is None and art.manifest.model.importer == "onnx" and source.is_file():
        proto = onnx.load(str(source), load_external_data=False)
    return onnx_names(proto)


def onnx_node(backend_name: str, names: dict[str, str]) -> str | None:
    """The ONNX node a backend layer comes from: its name, or its output's, as the backend keeps it
    (OpenVINO adds '/suffixes', ONNX Runtime '_nchwc' to its re-laid-out convolutions, TFLite
    ':0'-style or ';'-joined fused names)."""
    for candidate in (backend_name, backend_name.removesuffix("_nchwc"), *re.split(r"[;/:]", backend_name)):
        if candidate in names:
            return names[candidate]
    return None


def _named(event: dict[str, Any], backend_name: str, names: dict[str, str]) -> dict[str, Any]:
    node = onnx_node(backend_name, names)
    if node is not None:
        event["name"] = node
        event.setdefault("args", {})["onnx_node"] = node
    event.setdefault("args", {})["backend_name"] = backend_name
    return event


def from_layers(layers: list[LayerTime], names: dict[str, str], pid: str) -> list[dict[str, Any]]:
    """One average run: each layer's mean time as a complete ('X') event, end to end (in µs)."""
    events: list[dict[str, Any]] = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": pid}}]
    ts = 0.0
    for lt in layers:
        events.append(_named({"ph": "X", "cat": "layer", "name": lt.name, "pid": pid, "tid": 0, "ts": ts,
                              "dur": lt.ms * 1000, "args": {"op": lt.op}}, lt.name, names))
        ts += lt.ms * 1000
    return events


def from_ort(events: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    """ONNX Runtime's own events, kernel events named after their ONNX node."""
    out = []
    for ev in events:
        ev = dict(ev)
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith(_ORT_SUFFIX):
            ev = _named(ev, ev["name"][: -len(_ORT_SUFFIX)], names)
        out.append(ev)
    return out


def write(trace_dir: Path, name: str, kind: str, layers: list[LayerTime], own_events: list[dict[str, Any]] | None,
          names: dict[str, str], meta: dict[str, Any]) -> Path:
    """Write `<trace_dir>/<name>.trace.json` and return its absolute path."""
    events = from_ort(own_events, names) if own_events is not None else from_layers(layers, names, name)
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
