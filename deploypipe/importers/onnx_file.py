"""`.onnx` files: validated, with external data resolved next to the file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from deploypipe.errors import InputFileError
from deploypipe.importers.common import finish

if TYPE_CHECKING:
    from deploypipe.importers import ImportOptions
    from deploypipe.model import Model


def load(path: Path, options: ImportOptions) -> Model:
    try:
        proto = onnx.load_model(str(path), load_external_data=True)
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError...
        raise InputFileError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    return finish(proto, name=path.stem, source=str(path), importer="onnx", options=options)
