"""User data in: load `--data` / `--eval-data`, split calibration from evaluation, and attach both
to the Model as its data providers, so the INT8 pass calibrates on them and the fidelity gate
judges on them. See docs/data.md."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from deploypipe.data.loaders import Dataset, label_output, load
from deploypipe.data.record import DataRecord, SetRecord
from deploypipe.errors import UserError
from deploypipe.model import ArrayProvider, Model

CALIBRATION_MAX = 100  # samples kept for calibration when one set is split; the rest evaluate


class DatasetProvider(ArrayProvider):
    """A Dataset as the pipeline's provider: every model input per sample, labels when known.
    `x` is the first input's array, so code counting samples with len(provider.x) keeps working."""

    def __init__(self, ds: Dataset, description: str) -> None:
        first = next(iter(ds.arrays))
        super().__init__(first, ds.arrays[first], ds.labels, description)
        self.arrays = ds.arrays

    def samples(self, n: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The first n samples (already in content-hash order, so a seeded shuffle adds nothing)."""
        for i in range(min(n, len(self.x))):
            yield {k: v[i : i + 1] for k, v in self.arrays.items()}


def split(ds: Dataset, eval_ds: Dataset | None) -> tuple[Dataset, Dataset, str, int]:
    """(calibration, evaluation, how, duplicates dropped). Samples are deduplicated by content and
    ordered by their content hash, so the split is the same on every machine, independent of file
    names and order, and the two sets never share a sample."""
    order, dropped = _unique_by_hash(ds)
    if eval_ds is None:
        if len(order) < 2:
            raise UserError(f"{ds.source}: {len(order)} distinct sample(s); need at least 2 to split into "
                            "calibration and evaluation, or give --eval-data")
        k = min(CALIBRATION_MAX, len(order) // 2)
        how = f"one set split by content hash: first {k} to calibration (at most {CALIBRATION_MAX}), rest to evaluation"
        return ds.take(order[:k]), ds.take(order[k:]), how, dropped
    if ds.classes and eval_ds.classes and ds.classes != eval_ds.classes:
        raise UserError(f"--data {ds.source} and --eval-data {eval_ds.source} have different class folders; "
                        "list them in a classes.txt in each so labels mean the same output index")
    seen = {ds.hashes[i] for i in order}
    ev_order, ev_dropped = _unique_by_hash(eval_ds)
    keep = [i for i in ev_order if eval_ds.hashes[i] not in seen]
    if not keep:
        raise UserError(f"--eval-data {eval_ds.source}: every sample is also in --data {ds.source}")
    how = "separate sets" + (f"; {len(ev_order) - len(keep)} evaluation sample(s) also in the calibration "
                             "set were dropped" if len(keep) < len(ev_order) else "")
    return ds.take(order), eval_ds.take(keep), how, dropped + ev_dropped


def _unique_by_hash(ds: Dataset) -> tuple[list[int], int]:
    first: dict[str, int] = {}
    for i, h in enumerate(ds.hashes):
        first.setdefault(h, i)
    return sorted(first.values(), key=lambda i: ds.hashes[i]), len(ds) - len(first)


def _record(ds: Dataset) -> SetRecord:
    return SetRecord(source=ds.source, samples=len(ds), sha256=ds.sha256(), labelled=ds.labels is not None)


def _describe(ds: Dataset, role: str) -> str:
    labelled = ", labelled" if ds.labels is not None and "labelled" not in ds.format else ""
    return f"{ds.source} ({ds.format}, {len(ds)} {role} samples{labelled}; real data)"


def attach(model: Model, data: Path | None, eval_data: Path | None, preprocess: str | Path | None = None,
           tokenizer: Path | None = None) -> tuple[Model, DataRecord | None]:
    """The model with the user's data as its calibration and evaluation providers, and the record
    for the manifest; the model unchanged (and None) when no data is given."""
    if data is None and eval_data is None:
        if preprocess is not None or tokenizer is not None:
            raise UserError("--preprocess / --tokenizer apply to --data or --eval-data; none was given")
        return model, None
    inputs, outputs = model.inputs, model.outputs

    def read(p: Path) -> Dataset:
        return load(p, inputs, outputs, preprocess, tokenizer)

    if data is None:
        ev, dropped = _dedupe(read(eval_data))  # type: ignore[arg-type]
        calib, how = None, "evaluation set only; calibration stays on the model's own data"
        model = replace(model, evaluation=DatasetProvider(ev, _describe(ev, "held-out")))
    else:
        calib, ev, how, dropped = split(read(data), read(eval_data) if eval_data is not None else None)
        model = replace(model, calibration=DatasetProvider(calib, _describe(calib, "calibration")),
                        evaluation=DatasetProvider(ev, _describe(ev, "held-out")))
    shown = calib or ev
    out = label_output(outputs) if ev.labels is not None else None
    record = DataRecord(
        format=shown.format, calibration=_record(calib) if calib is not None else None, evaluation=_record(ev),
        split=how, duplicates_dropped=dropped, preprocess=shown.preprocess, tokenizer=shown.tokenizer,
        classes=list(shown.classes or []), label_output=out.name if out is not None else None,
    )
    return model, record


def _dedupe(ds: Dataset) -> tuple[Dataset, int]:
    order, dropped = _unique_by_hash(ds)
    return ds.take(order), dropped


__all__ = ["DataRecord", "Dataset", "DatasetProvider", "attach", "load", "split"]
