"""TensorFlow/Keras/TFLite importers: files made here by real Keras/TensorFlow (in .venv-tflite),
imported to ONNX with tf2onnx and checked against Keras' own outputs on ONNX Runtime."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from deploypipe.toolchains import venv_dir

pytestmark = [
    pytest.mark.tflite,
    pytest.mark.skipif(venv_dir() is None, reason=".venv-tflite (the onnx2tf/TensorFlow converter venv) is absent: "
                                                  "run bash scripts/install.sh"),
]

_MAKE = """
import numpy as np, keras, tensorflow as tf
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
m.save("m.keras"); m.save("m.h5"); m.export("saved")
open("m.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(m).convert())
x = np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32)
np.save("x.npy", x); np.save("y.npy", m(x).numpy())
"""


@pytest.fixture(scope="module")
def tf_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tfsrc")
    python = venv_dir() / "bin" / "python"  # type: ignore[operator]
    proc = subprocess.run([str(python), "-c", _MAKE], cwd=root, capture_output=True, text=True, check=False,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.mark.parametrize(("name", "importer"), [("m.keras", "tensorflow"), ("m.h5", "tensorflow"),
                                                ("saved", "tensorflow"), ("m.tflite", "tflite")])
def test_import_matches_keras(tf_files: Path, name: str, importer: str) -> None:
    from deploypipe.importers import import_model

    model = import_model(tf_files / name)
    assert model.provenance.importer == importer
    assert any("tf2onnx" in n for n in model.provenance.notes)
    assert model.inputs[0].shape == (1, 8, 8, 3)  # NHWC kept, batch pinned
    sess = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {model.inputs[0].name: np.load(tf_files / "x.npy")})[0]
    np.testing.assert_allclose(y, np.load(tf_files / "y.npy"), atol=1e-5)


def test_folder_without_saved_model_is_a_clear_error(tmp_path: Path, cli) -> None:
    (tmp_path / "notamodel").mkdir()
    res = cli("inspect", str(tmp_path / "notamodel"))
    assert res.returncode == 2
    assert "no saved_model.pb" in res.stderr
