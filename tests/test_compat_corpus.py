"""Compatibility corpus: small ONNX models of different origins (torch.onnx's TorchScript-based and
dynamo exporters at several opsets, hand-built graphs with If/Loop, LSTM, LayerNorm, Resize/Cast,
int64 inputs, several outputs, -1 batch dims, odd names) through inspect -> FP32/FP16/INT8 on
host-cpu (ONNX Runtime) and the offline ncs2/jetson-nano checks, each cell's outcome asserted:
built, or refused (exit 3) with a reason naming node and op. A new exporter or tool version that
changes any cell shows up here. The TFLite column (onnx2tf, ~30 s a model) and the Keras/tf2onnx
origin are marked `tflite`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import wild_models as wm

from deploypipe.analysis.stats import analyze
from deploypipe.api import BuildConfig, build
from deploypipe.errors import UnsupportedError
from deploypipe.importers import ImportOptions, import_model

BERT_SHAPES = {n: (1, wm.SEQ) for n in wm.BERT_INPUTS}

# name -> (builder, --input-shape)
MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], dict[str, tuple[int, ...]]]] = {
    "bert-ts17": (lambda: wm.tiny_bert(17), BERT_SHAPES),
    "bert-ts14": (lambda: wm.tiny_bert(14), BERT_SHAPES),
    "bert-dynamo18": (lambda: wm.tiny_bert(18, dynamo=True), {}),
    "cnn-ts11": (lambda: wm.torch_cnn(11), {}),
    "cnn-dynamo18": (lambda: wm.torch_cnn(18, dynamo=True), {}),
    "lstm-ts14": (lambda: wm.torch_lstm(14), {}),
    "two-heads-ts13": (lambda: wm.torch_two_heads(13), {}),
    "ffn-ts17": (lambda: wm.torch_layernorm_mlp(17), {}),
    "ffn-dynamo20": (lambda: wm.torch_layernorm_mlp(20, dynamo=True), {}),
    "if": (wm.if_model, {}),
    "loop": (wm.loop_model, {}),
    "conv-batch-1": (lambda: wm.conv_net(batch=-1), {}),
    "conv-opset11": (lambda: wm.conv_net(opset=11), {}),
    "resize-cast": (wm.resize_cast, {}),
    "at-names": (lambda: wm.conv_net(node_prefix="Softmax@0/"), {}),
}

# Cells: (target, precision or None for the target's default). Every host-cpu cell builds.
CELLS = [("host-cpu", None), ("host-cpu", "fp16"), ("host-cpu", "int8"), ("ncs2", None), ("jetson-nano", None)]
TRANSFORMERS = {"bert-ts17", "bert-ts14", "bert-dynamo18", "ffn-ts17", "ffn-dynamo20"}
# Expected refusals (regex on the one-line error); cells not listed here are built.
_LN_TRT = r"TensorRT 8\.2\.1's ONNX parser does not support \d+ node\(s\): node \S+: op LayerNormalization"
_MYRIAD = r"ncs2: \d+ (ONNX nodes|IR layers) the MYRIAD plugin cannot run: node \S+: op {op}"
REFUSED: dict[tuple[str, str], str] = {
    ("bert-ts17", "ncs2"): _MYRIAD.format(op="Cast"),
    ("bert-ts17", "jetson-nano"): _LN_TRT,
    ("bert-ts14", "ncs2"): _MYRIAD.format(op="Cast"),
    ("bert-dynamo18", "ncs2"): _MYRIAD.format(op="Cast"),
    ("bert-dynamo18", "jetson-nano"): _LN_TRT,
    ("cnn-dynamo18", "jetson-nano"): r"cannot express the model at opset 13 .*node node_mean: op ReduceMean",
    ("lstm-ts14", "ncs2"): _MYRIAD.format(op="ShapeOf"),
    ("two-heads-ts13", "ncs2"): _MYRIAD.format(op="Interpolate is from opset11"),
    ("ffn-ts17", "ncs2"): _MYRIAD.format(op="LayerNormalization"),
    ("ffn-ts17", "jetson-nano"): _LN_TRT,
    ("ffn-dynamo20", "ncs2"): _MYRIAD.format(op="LayerNormalization"),
    ("ffn-dynamo20", "jetson-nano"): _LN_TRT,
    ("if", "ncs2"): _MYRIAD.format(op="If"),
    ("loop", "ncs2"): _MYRIAD.format(op="Loop"),
    ("resize-cast", "ncs2"): _MYRIAD.format(op="Interpolate is from opset11"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The model file for a name, exported once per test session."""
    root, made = tmp_path_factory.mktemp("corpus"), {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = wm.save(MODELS[name][0](), root / f"{name}.onnx")
        return made[name]

    return get


def _options(name: str) -> ImportOptions:
    return ImportOptions(input_shapes=MODELS[name][1])


@pytest.mark.parametrize("name", MODELS)
def test_inspect(name: str, corpus: Callable[[str], Path]) -> None:
    stats = analyze(import_model(corpus(name), _options(name)).proto)
    assert stats.macs > 0 and not stats.incomplete


@pytest.mark.parametrize(("target", "precision"), CELLS, ids=[f"{t}-{p or 'default'}" for t, p in CELLS])
@pytest.mark.parametrize("name", MODELS)
def test_cell(name: str, target: str, precision: str | None, corpus: Callable[[str], Path], tmp_path: Path) -> None:
    config = BuildConfig(model=str(corpus(name)), target=target, quantize=precision, output=tmp_path,
                         import_options=_options(name))
    refusal = REFUSED.get((name, target))
    if refusal is not None:
        with pytest.raises(UnsupportedError, match=refusal):
            build(config)
        return
    manifest = build(config).manifest
    assert manifest.fidelity.passed is not False
    if precision == "int8":
        scheme = next(p for p in manifest.passes if p.name == "int8").details["scheme"]
        assert scheme["scheme"] == ("transformer" if name in TRANSFORMERS else "static")
        assert scheme["isa"] and scheme["host_isa"]


# ---- tflite column and the Keras origin (onnx2tf / tf2onnx in .venv-tflite) ----------------------

@pytest.mark.tflite
@pytest.mark.parametrize("name", ["cnn-ts11", "at-names"])
def test_tflite_cell(name: str, corpus: Callable[[str], Path], tmp_path: Path) -> None:
    manifest = build(BuildConfig(model=str(corpus(name)), target="rpi4", output=tmp_path)).manifest
    assert manifest.compiler == "tflite" and manifest.fidelity.passed


@pytest.mark.tflite
def test_keras_origin_through_tf2onnx(tmp_path: Path) -> None:
    venv = Path(os.environ.get("DEPLOYPIPE_TFLITE_VENV", ".venv-tflite"))
    path = tmp_path / "keras_cnn.keras"
    script = ("import keras; m = keras.Sequential([keras.Input((16, 16, 3), batch_size=1), "
              "keras.layers.Conv2D(8, 3, activation='relu'), keras.layers.GlobalAveragePooling2D(), "
              f"keras.layers.Dense(4)]); m.save({str(path)!r})")
    subprocess.run([str(venv / "bin" / "python"), "-c", script], check=True, capture_output=True, timeout=300)
    for precision in (None, "int8"):
        manifest = build(BuildConfig(model=str(path), target="host-cpu", quantize=precision, output=tmp_path)).manifest
        assert manifest.fidelity.passed and manifest.model.importer == "tensorflow"
