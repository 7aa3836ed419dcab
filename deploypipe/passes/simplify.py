"""Graph simplification: constant folding, shape simplification, Conv+BN folding, dead-node removal
(onnxslim), keeping outputs numerically identical."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict

from deploypipe.model import Model
from deploypipe.passes.base import Pass, PassContext, PassResult


class SimplifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Simplify(Pass):
    name = "simplify"
    Config = SimplifyConfig

    def call(self, model: Model, ctx: PassContext) -> PassResult:
        import onnxslim

        before = len(model.proto.graph.node)
        proto = onnxslim.slim(model.proto)
        after = len(proto.graph.node)
        ops = Counter(n.op_type for n in proto.graph.node)
        return PassResult(
            model.with_proto(proto), modified=after != before,
            details={"nodes_before": before, "nodes_after": after, "ops_after": dict(ops)},
        )
