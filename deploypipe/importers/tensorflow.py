"""TensorFlow SavedModel folders, Keras files (.keras, .h5) and .tflite files -> ONNX with tf2onnx.

tf2onnx and TensorFlow run inside the TFLite converter venv (`.venv-tflite`, see
compilers/tflite.py), whose pins conflict with the main environment. The ONNX keeps the source's
layout (Keras/TFLite models are usually NHWC); batch dimensions are pinned to 1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from deploypipe.errors import InputFileError
from deploypipe.importers.common import finish

if TYPE_CHECKING:
    from deploypipe.importers import ImportOptions
    from deploypipe.model import Model

_TIMEOUT_S = 1800


def _kind(path: Path) -> str:
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InputFileError(f"{path}: a folder is read as a TensorFlow SavedModel, but it has no saved_model.pb")
        return "saved_model"
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5"):
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    raise InputFileError(f"{path}: not a TensorFlow/Keras/TFLite model")


def load(path: Path, options: ImportOptions) -> Model:
    from deploypipe.litert.convert import run_toolchain
    from deploypipe.toolchains import toolchain_versions

    kind = _kind(path)
    opset = min(options.opset, 18)  # tf2onnx 1.16 writes at most opset 18
    with tempfile.TemporaryDirectory(prefix="dp-tf-import-") as tmp:
        out = Path(tmp) / "model.onnx"
        request = {"command": "import", "source": str(path.resolve()), "output": str(out), "opset": opset, "kind": kind}
        result = run_toolchain(request, _TIMEOUT_S, f"importing {path}")
        try:
            proto = onnx.load_model(result["onnx"])
        except Exception as exc:  # noqa: BLE001 - a bad tf2onnx output is reported as the file's problem
            raise InputFileError(f"{path}: tf2onnx wrote an unreadable ONNX ({type(exc).__name__})") from exc
    versions = toolchain_versions()
    notes = (*result.get("notes", []),
             f"converted by tf2onnx {versions.get('converter:tf2onnx', '?')} (TensorFlow "
             f"{versions.get('converter:tensorflow', '?')}), opset {opset}; layout kept as in the source")
    name = path.stem if path.is_file() else path.name
    return finish(proto, name=name, source=str(path), importer="tflite" if kind == "tflite" else "tensorflow",
                  options=options, notes=tuple(notes))
