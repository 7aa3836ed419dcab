"""Importers: every source (zoo name, .onnx, PyTorch file, ...) becomes a `Model` (ONNX).

Each importer module declares the suffixes it accepts; `import_model` picks one by suffix, or the
zoo when the source is not a path. Modules are imported only when chosen, so heavy frameworks
load only for the sources that need them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deploypipe.errors import InputFileError
from deploypipe.model import Model

# suffix -> module with `load(path, options) -> Model`
_BY_SUFFIX: dict[str, str] = {
    ".onnx": "deploypipe.importers.onnx_file",
    ".pt": "deploypipe.importers.pytorch",
    ".pth": "deploypipe.importers.pytorch",
    ".pt2": "deploypipe.importers.pytorch",
    ".keras": "deploypipe.importers.tensorflow",
    ".h5": "deploypipe.importers.tensorflow",
    ".tflite": "deploypipe.importers.tensorflow",
    "/": "deploypipe.importers.tensorflow",  # a folder: TensorFlow SavedModel
}


InputDtype = Literal["float32", "float16", "int64", "int32", "int8", "uint8", "bool"]


class ImportOptions(BaseModel):
    """How to read a source. `allow_pickle` must be set explicitly to unpickle arbitrary code."""

    model_config = ConfigDict(extra="forbid")
    weights: Path | None = None  # real pretrained weights (state_dict) for a zoo architecture
    # None: a dynamic dim (its range in `input_bounds`); `batch`: batch sizes for dim 0 of every input
    input_shapes: dict[str, tuple[int | None, ...]] = Field(default_factory=dict)
    input_bounds: dict[str, dict[int, tuple[int, int]]] = Field(default_factory=dict)
    batch: tuple[int, ...] = ()
    seq_len: tuple[int, int] | None = None  # (min, max) of dim 1 of every integer (token) input

    @field_validator("batch")
    @classmethod
    def _sizes(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(b < 1 or b > 1 << 16 for b in v):
            raise ValueError("batch sizes must be between 1 and 65536")
        return tuple(sorted(set(v)))

    @property
    def ranged(self) -> bool:
        """Whether some input is asked to take more than one shape."""
        return len(self.batch) > 1 or self.seq_len is not None or any(self.input_bounds.values())

    @property
    def listed(self) -> bool:
        """Whether the only shapes asked for are a list of batch sizes (a set of fixed shapes)."""
        return len(self.batch) > 1 and self.seq_len is None and not any(self.input_bounds.values())

    def requested(self, name: str, dims: tuple[int | None, ...], integer: bool,
                  ) -> tuple[tuple[int | None, ...], dict[int, tuple[int, int]]] | None:
        """What was asked of one input whose dims are `dims` (None: dynamic): the shape with None
        where it stays dynamic, and those dims' (min, max); None when nothing was asked. From
        --input-shape, else --batch (dim 0) and --seq-len (dim 1 of an integer rank-2 input)."""
        wanted = self.input_shapes.get(name)
        ranges = dict(self.input_bounds.get(name, {}))
        token = bool(self.seq_len) and integer and len(dims) == 2
        if wanted is None and (self.batch or token):
            wanted = dims
            if len(self.batch) == 1:
                wanted = (self.batch[0], *wanted[1:])
            elif self.batch:
                wanted, ranges[0] = (None, *wanted[1:]), (self.batch[0], self.batch[-1])
            elif wanted[0] is None:
                wanted = (1, *wanted[1:])
            if token:
                wanted, ranges[1] = (wanted[0], None), self.seq_len  # type: ignore[assignment]
        return None if wanted is None else (tuple(wanted), ranges)
    # dtypes of inputs a source does not record (TorchScript); checked against an ONNX's own
    input_dtypes: dict[str, InputDtype] = Field(default_factory=dict)
    allow_pickle: bool = False
    opset: int = 17


def suffixes() -> list[str]:
    return sorted(_BY_SUFFIX)


def import_model(source: str | Path, options: ImportOptions | None = None) -> Model:
    options = options or ImportOptions()
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX or path.exists():
        if not path.exists():
            raise InputFileError(f"{path}: no such file")
        module = _BY_SUFFIX.get(suffix) or _BY_SUFFIX.get("/" if path.is_dir() else suffix)
        if module is None:
            raise InputFileError(
                f"{path}: unsupported model format '{suffix or 'directory'}'; "
                f"supported: {', '.join(suffixes())} or a zoo name"
            )
        return importlib.import_module(module).load(path, options)
    from deploypipe import zoo
    from deploypipe.importers import zoo_model

    return zoo_model.load(zoo.get(str(source)).name, options)  # torchvision/timm spellings resolve here
