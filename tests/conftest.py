"""Shared fixtures: tiny models built inline, and a CLI runner that runs the real entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from deploypipe.model import Model

ROOT = Path(__file__).resolve().parent.parent


def proto_model(proto: onnx.ModelProto, name: str) -> Model:
    """An in-memory ONNX graph as the pipeline's Model, without calibration data: what a
    compiler's graph passes take in tests that skip the importer."""
    from deploypipe.model import Model, Provenance, SyntheticProvider

    return Model(proto=proto, name=name, provenance=Provenance(name, "onnx", ""), calibration=SyntheticProvider([]))


def tiny_classifier(seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """Conv(3->8) + BN + ReLU + global pool + Gemm: a 1x3x16x16 -> 1x10 classifier."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
        numpy_helper.from_array(np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5, "scale"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "bias"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "mean"),
        numpy_helper.from_array(np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5, "var"),
        numpy_helper.from_array(rng.standard_normal((classes, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(path))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `deploypipe` entry point in a subprocess."""
    return subprocess.run([sys.executable, "-m", "deploypipe", *args], capture_output=True, text=True,
                          cwd=cwd, check=False)


@pytest.fixture
def cli():
    return run_cli


def assert_renders(page: Path, tmp_path: Path) -> None:
    """Render an HTML page in headless Chromium (skip where it is not installed) and check the
    screenshot is the window's size and not blank; DEPLOYPIPE_KEEP_SCREENSHOT=FILE keeps it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (scripts/install.sh installs it)")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
    import matplotlib.image as mpimg

    img = mpimg.imread(str(shot))
    assert img.shape[0] == 1600 and img.shape[1] == 1200
    assert img[..., :3].std() > 0.05  # not a blank page: plots and text are there
    if os.environ.get("DEPLOYPIPE_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["DEPLOYPIPE_KEEP_SCREENSHOT"])
