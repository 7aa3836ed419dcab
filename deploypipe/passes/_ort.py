"""Running ONNX protos on ONNX Runtime for the passes' own checks (FP32 vs transformed outputs).

Kept apart from the ORT runner: passes check models that are not artifacts yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

if TYPE_CHECKING:
    import onnxruntime as ort


def session(proto: onnx.ModelProto, threads: int | None = None, optimize: bool = True) -> ort.InferenceSession:
    """A CPU session; `optimize=False` runs the graph as written (no fusions), which keeps every
    intermediate tensor of a QDQ graph as the quantizer wrote it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]],
        outputs: list[str] | None = None, optimize: bool = True) -> list[dict[str, np.ndarray]]:
    """Outputs (all graph outputs, or `outputs`) for each feed dict."""
    sess = session(proto, optimize=optimize)
    names = outputs or [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f), strict=True)) for f in feeds]


def name_nodes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where every node has a unique name (quantizers and per-layer reports refer to nodes by name)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return proto
