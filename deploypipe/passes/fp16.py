"""FP16: weights and compute in float16 (onnxconverter-common), FP32 I/O kept by default so callers
and devices that feed float32 need no change. Reports the max abs error against the FP32 input."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.errors import BuildError, FidelityError
from deploypipe.model import Model
from deploypipe.analysis import reference as _ort
from deploypipe.passes.base import Pass, PassContext, PassResult

_CHECK_SEED = 10_000


class Fp16Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_io_types: bool = True  # FP32 inputs/outputs with Casts at the edges
    op_block_list: list[str] = Field(default_factory=list)  # op types to keep in FP32 (besides the converter's defaults)
    check_samples: int = Field(default=8, ge=1)
    max_rel_err: float | None = 3e-2  # max abs err / max(1, |FP32 output|); None: report only


class Fp16(Pass):
    name = "fp16"
    Config = Fp16Config

    def call(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxconverter_common import float16

        cfg: Fp16Config = self.config  # type: ignore[assignment]
        kwargs = {"keep_io_types": cfg.keep_io_types}
        if cfg.op_block_list:
            kwargs["op_block_list"] = sorted({*float16.DEFAULT_OP_BLOCK_LIST, *cfg.op_block_list})
        try:
            proto = float16.convert_float_to_float16(model.proto, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the converter raises untyped errors
            raise BuildError(f"fp16: conversion failed: {exc}") from exc
        feeds = list(model.calibration.samples(cfg.check_samples, seed=_CHECK_SEED))
        refs, outs = _ort.run(model.proto, feeds), _ort.run(proto, feeds)
        ref = np.concatenate([np.concatenate([r[k].ravel() for k in r]) for r in refs]).astype(np.float64)
        out = np.concatenate([np.concatenate([o[k].ravel() for k in o]) for o in outs]).astype(np.float64)
        max_abs = float(np.max(np.abs(ref - out)))
        scale = max(1.0, float(np.max(np.abs(ref))))
        details = {
            "max_abs_err": max_abs, "output_scale": scale, "samples": len(feeds),
            "data": model.calibration.description, "keep_io_types": cfg.keep_io_types,
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
