"""What every importer does last: fix shapes, name things, attach data providers."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import onnx

from deploypipe.errors import ShapeError
from deploypipe.model import (
    DataProvider,
    Model,
    Provenance,
    SyntheticProvider,
    is_static,
)

if TYPE_CHECKING:
    from deploypipe.importers import ImportOptions
    from deploypipe.model import ArrayProvider


def finish(
    proto: onnx.ModelProto,
    *,
    name: str,
    source: str,
    importer: str,
    options: ImportOptions,
    calibration: DataProvider | None = None,
    evaluation: ArrayProvider | None = None,
    torch_source: object | None = None,
    notes: tuple[str, ...] = (),
) -> Model:
    """Pin dynamic input dims (batch 1 unless `input_shapes` says otherwise; -1 and 0 are dynamic
    too, as exporters in the wild write them), keep the ones given as ranges (`input_bounds`,
    `batch`) dynamic with their bounds, and wrap as a Model."""
    inits = {i.name for i in proto.graph.initializer}
    inputs = [vi.name for vi in proto.graph.input if vi.name not in inits]
    for unknown in sorted(set(options.input_shapes) - set(inputs)):
        raise ShapeError(f"--input-shape {unknown}: the model has no input '{unknown}'; its inputs: {', '.join(inputs)}")
    bounds: dict[str, dict[int, tuple[int, int]]] = {}
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        _check_dtype(vi, options)
        integer = vi.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
        asked = options.requested(vi.name, tuple(d.dim_value if is_static(d) else None for d in dims), integer)
        if asked is not None:
            wanted, ranges = asked
            if len(wanted) != len(dims):
                raise ShapeError(f"--input-shape {vi.name}: rank {len(wanted)}, model input has rank {len(dims)}")
            for i, (d, w) in enumerate(zip(dims, wanted, strict=True)):
                if w is None and i not in ranges:
                    raise ShapeError(f"input '{vi.name}' has dynamic dim {i} ({d.dim_param or '?'}); "
                                     f"give it with --input-shape {vi.name}=1x...")
                if is_static(d) and (w is None or d.dim_value != w):
                    got = f"{ranges[i][0]}..{ranges[i][1]}" if w is None else w
                    raise ShapeError(f"--input-shape {vi.name}: dim {i} is fixed at {d.dim_value} in the model, got {got}"
                                     + ("; re-export the model with a dynamic axis there" if w is None else ""))
                if w is None:
                    d.dim_param = d.dim_param or f"{vi.name}_dim{i}"
                else:
                    d.dim_value = w
            if ranges:
                bounds[vi.name] = ranges
        else:
            for i, d in enumerate(dims):
                if not is_static(d):
                    if i != 0:
                        raise ShapeError(
                            f"input '{vi.name}' has dynamic dim {i} ({d.dim_param or '?'}); "
                            f"give it with --input-shape {vi.name}=1x..."
                        )
                    d.dim_value = 1
    proto = onnx.shape_inference.infer_shapes(proto)
    digest = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
    provider = calibration or SyntheticProvider.for_graph(proto)
    return Model(
        proto=proto,
        name=name,
        provenance=Provenance(source=source, importer=importer, source_hash=digest, notes=notes),
        calibration=provider,
        evaluation=evaluation,
        torch_source=torch_source,
        bounds=bounds,
        batches=tuple(sorted(set(options.batch))),
    )


def _check_dtype(vi: onnx.ValueInfoProto, options: ImportOptions) -> None:
    """A dtype given with --input-shape must be the one the graph declares (it cannot be changed)."""
    wanted = options.input_dtypes.get(vi.name)
    declared = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
    if wanted is not None and wanted != declared:
        raise ShapeError(f"--input-shape {vi.name}: dtype {wanted} given, the model declares {declared}")
