"""Graph simplification: constant folding, shape simplification, Conv+BN folding, dead-node and
identity removal, keeping outputs numerically identical.

Three tools can do it (compared in docs/passes.md): onnxslim (default), onnxsim, and ORT's
offline optimizer. The ORT "extended" level also fuses activations into Conv/Gemm, but as
com.microsoft ops only ONNX Runtime runs, so it is opt-in and only sensible for ORT targets.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Literal

import onnx
from pydantic import BaseModel, ConfigDict

from deploypipe.analysis import reference
from deploypipe.errors import BuildError
from deploypipe.model import Model
from deploypipe.passes.base import Pass, PassContext, PassResult


class SimplifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: Literal["onnxslim", "onnxsim", "ort-basic", "ort-extended"] = "onnxslim"


class Simplify(Pass):
    name = "simplify"
    Config = SimplifyConfig

    def call(self, model: Model, ctx: PassContext) -> PassResult:
        tool = self.config.tool  # type: ignore[attr-defined]
        before = len(model.proto.graph.node)
        try:
            proto = _TOOLS[tool](model.proto)
        except BuildError:
            raise
        except Exception as exc:  # noqa: BLE001 - each tool raises its own untyped errors
            raise BuildError(f"simplify ({tool}) failed on {model.name}: {exc}") from exc
        after = len(proto.graph.node)
        ops = Counter(n.op_type for n in proto.graph.node)
        domains = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
        return PassResult(
            model.with_proto(proto), modified=after != before,
            details={"tool": tool, "nodes_before": before, "nodes_after": after, "ops_after": dict(ops),
                     "non_standard_domains": domains},
        )


def _onnxslim(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(onnx.ModelProto.FromString(proto.SerializeToString()))  # slim edits its argument


def _onnxsim(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    out, ok = onnxsim.simplify(proto)
    if not ok:
        raise BuildError("onnxsim could not verify that the simplified model matches the original")
    return out


def _ort(level: str):  # noqa: ANN202 - returns a tool function
    def run(proto: onnx.ModelProto) -> onnx.ModelProto:
        with tempfile.TemporaryDirectory(prefix="deploypipe-ortopt-") as tmp:
            path = Path(tmp, "opt.onnx")
            reference.session(proto, level=level, optimized_path=path)
            return onnx.load_model(str(path))

    return run


_TOOLS = {"onnxslim": _onnxslim, "onnxsim": _onnxsim, "ort-basic": _ort("basic"), "ort-extended": _ort("extended")}
