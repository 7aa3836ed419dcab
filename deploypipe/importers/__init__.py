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
