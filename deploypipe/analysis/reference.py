"""The one ONNX Runtime CPU session deploypipe uses for its own work on ONNX protos: the FP32
reference of the fidelity check, passes' checks, partition profiling and the split server's ONNX
halves. Kept apart from the onnxruntime backend's runner, which runs built artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnx

if TYPE_CHECKING:
    import onnxruntime as ort

Level = Literal["none", "basic", "extended", "all"]


def session(model: onnx.ModelProto | bytes | Path | str, threads: int | None = None, optimize: bool = True, *,
            level: Level | None = None, profile_prefix: Path | None = None,
            optimized_path: Path | None = None) -> ort.InferenceSession:
    """A CPU session. `optimize=False` (or level "none") runs the graph as written (no fusions),
    which keeps every intermediate tensor of a QDQ graph as the quantizer wrote it; `threads`
    pins intra-op threads (inter-op 1); `profile_prefix` turns on ORT's profiler;
    `optimized_path` saves the graph after ORT's optimizations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    level = level or ("all" if optimize else "none")
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


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
