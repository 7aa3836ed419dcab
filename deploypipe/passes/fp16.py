"""FP16: weights and compute in float16 (ONNX Runtime's float16 converter), FP32 I/O kept by default
so callers and devices that feed float32 need no change. Reports the max abs error against the FP32
input.

The converted graph is checked (ONNX checker, an ONNX Runtime session) before it is accepted. Where
it is not valid, the op type of the node named in the error joins the block list (stays FP32) and
the conversion is redone: real exports trip the converters on Resize and Cast, which insert casts
with mismatched types (onnxconverter-common also loops forever on some block lists, so it is not used).
"""

from __future__ import annotations

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.errors import FidelityError
from deploypipe.model import Model
from deploypipe.analysis import reference as _ort
from deploypipe.passes.base import Pass, PassContext, PassResult, failing_node, refusal

_CHECK_SEED = 10_000


class Fp16Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_io_types: bool = True  # FP32 inputs/outputs with Casts at the edges
    op_block_list: list[str] = Field(default_factory=list)  # op types to keep in FP32 (besides the converter's defaults)
    max_retries: int = Field(default=4, ge=0)  # op types added to the block list after a failed check
    check_samples: int = Field(default=8, ge=1)
    max_rel_err: float | None = 3e-2  # max abs err / max(1, |FP32 output|); None: report only


class Fp16(Pass):
    name = "fp16"
    Config = Fp16Config

    def call(self, model: Model, ctx: PassContext) -> PassResult:
        cfg: Fp16Config = self.config  # type: ignore[assignment]
        blocked = list(cfg.op_block_list)
        while True:
            proto, problem = _convert(model.proto, cfg.keep_io_types, blocked)
            if problem is None:
                break
            node = failing_node(model.proto, str(problem)) or failing_node(proto, str(problem))
            if node is None or node.op_type in blocked or len(blocked) - len(cfg.op_block_list) >= cfg.max_retries:
                raise refusal("fp16: the converted graph is invalid", model.proto, problem)
            ctx.progress(f"fp16: keeping {node.op_type} in FP32 (node {node.name}: {str(problem)[:120]})")
            blocked.append(node.op_type)
        feeds = list(model.calibration.samples(cfg.check_samples, seed=_CHECK_SEED))
        refs, outs = _ort.run(model.proto, feeds), _ort.run(proto, feeds)
        ref = np.concatenate([np.concatenate([r[k].ravel() for k in r]) for r in refs]).astype(np.float64)
        out = np.concatenate([np.concatenate([o[k].ravel() for k in o]) for o in outs]).astype(np.float64)
        max_abs = float(np.max(np.abs(ref - out)))
        scale = max(1.0, float(np.max(np.abs(ref))))
        details = {
            "max_abs_err": max_abs, "output_scale": scale, "samples": len(feeds),
            "data": model.calibration.description, "keep_io_types": cfg.keep_io_types,
            "fp32_ops": blocked, "fp32_ops_added": blocked[len(cfg.op_block_list):],
            "weight_bytes": {"fp32": _weight_bytes(model.proto), "fp16": _weight_bytes(proto)},
        }
        if cfg.max_rel_err is not None and max_abs > cfg.max_rel_err * scale:
            raise FidelityError(
                f"fp16: max abs error {max_abs:.3g} > {cfg.max_rel_err} x output scale {scale:.3g} "
                f"({model.calibration.description}); keep sensitive ops in FP32 with op_block_list"
            )
        return PassResult(model.with_proto(proto), modified=True, details=details)


def _weight_bytes(proto: object) -> int:
    from onnx import numpy_helper

    return int(sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer))  # type: ignore[attr-defined]


def _convert(proto: onnx.ModelProto, keep_io_types: bool,
             blocked: list[str]) -> tuple[onnx.ModelProto, Exception | None]:
    """The FP16 graph, topologically sorted (the converter appends the casts it inserts at the
    end), and why it is not valid (checker or ONNX Runtime load error), or None."""
    from onnxruntime.transformers import float16

    from deploypipe.analysis.stats import topological

    kwargs: dict[str, object] = {"keep_io_types": keep_io_types}
    if blocked:
        kwargs["op_block_list"] = sorted({*float16.DEFAULT_OP_BLOCK_LIST, *blocked})
    out = float16.convert_float_to_float16(onnx.ModelProto.FromString(proto.SerializeToString()), **kwargs)
    nodes = topological(out.graph)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    try:
        onnx.checker.check_model(out)
        _ort.session(out)
    except Exception as exc:  # noqa: BLE001 - checker and ORT raise untyped errors; returned as the reason
        return out, exc
    return out, None
