"""Models exported by someone else: int64 token inputs, old opsets, Resize/Cast under FP16, -1
batch dims, transformer INT8, odd node names, and tool failures that must read as refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import wild_models as wm

from deploypipe.api import BuildConfig, build
from deploypipe.errors import InputFileError, ShapeError, UnsupportedError, UserError
from deploypipe.importers import ImportOptions, import_model
from deploypipe.model import SyntheticProvider, integer_ranges
from deploypipe.analysis import reference as _ort
from deploypipe.passes import PassContext, create
from deploypipe.passes.base import refusal

SEQ = {n: (1, wm.SEQ) for n in wm.BERT_INPUTS}


@pytest.fixture(scope="module")
def bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wm.save(wm.tiny_bert(), tmp_path_factory.mktemp("bert") / "bert.onnx")


def _bert(path: Path):  # noqa: ANN202 - a Model
    return import_model(path, ImportOptions(input_shapes=SEQ))


# ---- 1. integer inputs --------------------------------------------------------------------------

def test_integer_inputs_drawn_within_the_table_they_index(bert_path: Path) -> None:
    model = _bert(bert_path)
    assert integer_ranges(model.proto) == {"input_ids": (0, wm.VOCAB), "token_type_ids": (0, 2)}
    feeds = list(model.calibration.samples(16))
    ids = np.stack([f["token_type_ids"] for f in feeds])
    assert set(np.unique(ids)) == {0, 1}  # both rows of the 2-row table, nothing past it
    assert all((f["attention_mask"] == 1).all() for f in feeds)
    assert np.stack([f["input_ids"] for f in feeds]).max() < wm.VOCAB
    assert "token_type_ids: ids in [0, 2)" in model.calibration.description
    _ort.run(model.proto, feeds)  # out-of-range ids made ORT's Gather fail here


def test_bert_builds_fp32_on_host(bert_path: Path, tmp_path: Path) -> None:
    from deploypipe.isa import host_isa

    report = build(BuildConfig(model=str(bert_path), target="host-cpu", output=tmp_path,
                               import_options=ImportOptions(input_shapes=SEQ)))
    assert report.manifest.fidelity.passed and report.manifest.fidelity.cosine > 0.9999
    assert f"INT8 ISA {host_isa()}" in report.manifest.fidelity.where  # figures say where they were measured


def test_torchscript_import_uses_declared_dtypes(tmp_path: Path) -> None:
    from deploypipe.cliutil import parse_shapes as _parse_shapes

    path = wm.tiny_bert_torchscript(tmp_path / "bert.pt")
    opts = _parse_shapes([f"{n}=1x{wm.SEQ}:int64" for n in wm.BERT_INPUTS])
    assert opts["input_dtypes"] == dict.fromkeys(wm.BERT_INPUTS, "int64")
    model = import_model(path, ImportOptions(**opts))
    assert [(s.name, s.dtype) for s in model.inputs] == [(n, "int64") for n in wm.BERT_INPUTS]
    assert integer_ranges(model.proto)["token_type_ids"] == (0, 2)
    with pytest.raises(UserError, match="unknown dtype 'int65'"):
        _parse_shapes(["input_ids=1x8:int65"])
    with pytest.raises(InputFileError, match=r"input_ids:float32.*--input-shape NAME=1x32:int64"):
        import_model(path, ImportOptions(input_shapes=SEQ))  # float zeros cannot index an embedding


def test_onnx_input_dtype_must_match_the_graph(bert_path: Path) -> None:
    with pytest.raises(ShapeError, match="dtype float32 given, the model declares int64"):
        import_model(bert_path, ImportOptions(input_shapes=SEQ, input_dtypes={"input_ids": "float32"}))


# ---- 2. INT8 on opset < 13 ----------------------------------------------------------------------

def test_int8_converts_opset11_for_per_channel(tmp_path: Path) -> None:
    model = import_model(wm.save(wm.conv_net(opset=11), tmp_path / "conv11.onnx"))
    result = create("int8")(model, PassContext(target="host-cpu", precision="int8"))
    assert result.details["opset"]["model"] == 11 and result.details["opset"]["quantized_at"] == 13
    assert "version_converter" in result.details["opset"]["how"]
    assert result.details["scheme"]["per_channel"]
    onnx.checker.check_model(result.model.proto)


# ---- 3. FP16 on Resize and Cast ----------------------------------------------------------------

@pytest.mark.parametrize("which", ["resize_cast", "bert"])
def test_fp16_survives_resize_and_cast(which: str, bert_path: Path, tmp_path: Path) -> None:
    model = (import_model(wm.save(wm.resize_cast(), tmp_path / "rc.onnx")) if which == "resize_cast"
             else _bert(bert_path))
    result = create("fp16")(model, PassContext(target="host-cpu", precision="fp16"))
    onnx.checker.check_model(result.model.proto)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in result.model.proto.graph.initializer)
    _ort.run(result.model.proto, list(model.calibration.samples(2)))
    assert result.details["max_abs_err"] < 0.03 * result.details["output_scale"]


# ---- 4. -1 / 0 batch dims ----------------------------------------------------------------------

@pytest.mark.parametrize("batch", [-1, 0])
def test_batch_stored_as_minus_one_or_zero_is_dynamic(batch: int, tmp_path: Path) -> None:
    path = wm.save(wm.conv_net(batch=batch), tmp_path / "m.onnx")
    pinned = import_model(path, ImportOptions(input_shapes={"x": (1, 3, 16, 16)}))
    assert pinned.inputs[0].shape == (1, 3, 16, 16)
    assert import_model(path).inputs[0].shape == (1, 3, 16, 16)
    with pytest.raises(ShapeError, match="dim 1 is fixed at 3 in the model, got 4"):
        import_model(path, ImportOptions(input_shapes={"x": (1, 4, 16, 16)}))


# ---- 5. MACs of attention ----------------------------------------------------------------------

def test_attention_matmuls_are_counted(bert_path: Path) -> None:
    from deploypipe.analysis.stats import analyze

    stats = analyze(_bert(bert_path).proto)
    both = [lay for lay in stats.layers if lay.op_type == "MatMul" and lay.params == 0]
    assert len(both) == 2 and all(lay.macs for lay in both)  # q.k^T and att.v: activations on both sides
    assert both[0].macs == wm.SEQ * wm.SEQ * wm.HIDDEN
    assert stats.macs >= sum(lay.macs for lay in both) and not stats.incomplete


def test_matmul_after_an_op_without_shape_inference_is_counted() -> None:
    from deploypipe.analysis.stats import analyze

    stats = analyze(wm.loop_model())  # ONNX infers no shape for the Loop's output
    mm2 = next(lay for lay in stats.layers if lay.name == "mm2")
    assert mm2.macs == 1 * 3 * 8 and not stats.incomplete  # K from the weight's rows


# ---- 6. transformer-aware INT8 -----------------------------------------------------------------

@pytest.mark.parametrize("compiler", ["onnxruntime", "tvm"])
def test_transformer_int8_keeps_norms_in_float(compiler: str, bert_path: Path) -> None:
    model = _bert(bert_path)
    result = create("int8")(model, PassContext(target="host-cpu", precision="int8", compiler=compiler))
    scheme = result.details["scheme"]
    assert scheme["scheme"] == "transformer" and "LayerNormalization" in scheme["why"]
    assert scheme["dynamic"] is (compiler == "onnxruntime")
    if compiler == "tvm":
        assert "compiler tvm runs no dynamic quantization" in scheme["why"]
    assert scheme["per_channel"] and scheme["float_matmuls"] == 2
    proto = result.model.proto
    producers = {o: n for n in proto.graph.node for o in n.output}
    for node in proto.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):  # float in, float out: no DQ feeding them
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    assert result.details["gate"]["passed"] and result.details["gate"]["cosine"] > 0.99


def test_simplified_ffn_block_is_a_transformer(tmp_path: Path) -> None:
    """onnxslim turns 3-D Linear layers into Reshape+Gemm: still a transformer."""
    from deploypipe.passes.int8 import transformer_signs

    model = import_model(wm.save(wm.torch_layernorm_mlp(), tmp_path / "ffn.onnx"))
    simple = create("simplify")(model, PassContext(target="host-cpu", precision="int8")).model
    assert "MatMul" not in {n.op_type for n in simple.proto.graph.node}
    assert transformer_signs(simple.proto)[:2] == ["Erf", "LayerNormalization"]


def test_cnn_int8_stays_static(tmp_path: Path) -> None:
    model = import_model(wm.save(wm.conv_net(), tmp_path / "c.onnx"))
    result = create("int8")(model, PassContext(target="host-cpu", precision="int8"))
    assert result.details["scheme"]["scheme"] == "static" and not result.details["scheme"]["dynamic"]


# ---- 8. tool failures become refusals naming node and op ---------------------------------------

def test_tool_errors_name_node_and_op(bert_path: Path) -> None:
    model = _bert(bert_path)
    feed = next(SyntheticProvider(model.inputs).samples(1))  # no ranges: ids up to 1000 in a 2-row table
    with pytest.raises(Exception) as info:  # noqa: PT011 - ORT raises its own untyped errors
        _ort.run(model.proto, [feed])
    err = refusal("pass x", model.proto, info.value)
    assert isinstance(err, UnsupportedError) and err.exit_code == 3
    assert "(op Gather)" in str(err) and "token_type" in str(err)


def test_pass_failure_is_a_refusal_not_an_internal_error(bert_path: Path) -> None:
    from dataclasses import replace

    model = _bert(bert_path)
    bad = replace(model, calibration=SyntheticProvider(model.inputs))  # ids past the token-type table
    with pytest.raises(UnsupportedError, match=r"pass fp16 cannot handle bert at node '.*token_type.*' \(op Gather\)"):
        create("fp16")(bad, PassContext(target="host-cpu", precision="fp16"))


def test_build_of_a_graph_the_runtime_cannot_run_exits_3_naming_the_node(tmp_path: Path, cli) -> None:  # noqa: ANN001
    path = wm.save(wm.erf_double(), tmp_path / "erf.onnx")
    proc = cli("build", "-m", str(path), "-o", str(tmp_path / "out"))
    assert proc.returncode == 3, proc.stderr
    assert "node 'erf_f64' (op Erf)" in proc.stderr and "NOT_IMPLEMENTED" in proc.stderr
    assert "internal error" not in proc.stderr


# ---- 9. ISA --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "target", "reduce"), [("avx2", "host-cpu", True), ("vnni", "host-cpu", False),
                                                       ("avx2", "edgetpu", False), ("avx2", "server-gpu", False)])
def test_reduce_range_follows_the_target_isa(env: str, target: str, reduce: bool, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from deploypipe.targets import target_isa

    monkeypatch.setenv("DEPLOYPIPE_ISA", env)
    model = import_model(wm.save(wm.conv_net(), tmp_path / "c.onnx"))
    result = create("int8")(model, PassContext(target=target, precision="int8"))
    scheme = result.details["scheme"]
    assert scheme["reduce_range"] is reduce and scheme["isa"] == target_isa(target)
    assert scheme["host_isa"] == ("x86-avx2" if env == "avx2" else "x86-vnni")
    # a host whose fused kernels saturate judges a full-range model on the unfused QDQ graph
    assert ("unfused" in scheme["gate_kernels"]) is (env == "avx2" and not reduce)
    assert result.details["gate"]["passed"]


def test_unknown_isa_override_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploypipe.isa import host_isa

    monkeypatch.setenv("DEPLOYPIPE_ISA", "sse2")
    with pytest.raises(UserError, match="DEPLOYPIPE_ISA=sse2"):
        host_isa()


# ---- 7. names converters refuse ----------------------------------------------------------------

def test_names_are_sanitized_for_onnx2tf() -> None:
    from deploypipe.litert._convert_script import sanitize_names

    proto = wm.conv_net(node_prefix="Softmax@0/")
    sanitize_names(proto)
    names = [n.name for n in proto.graph.node] + [t for n in proto.graph.node for t in n.input]
    assert all(c.isalnum() or c == "_" for name in names for c in name)
    onnx.checker.check_model(proto)
    feed = {"x": np.ones((1, 3, 16, 16), np.float32)}
    np.testing.assert_allclose(_ort.run(proto, [feed])[0]["probs"],
                               _ort.run(wm.conv_net(node_prefix="Softmax@0/"), [feed])[0]["probs"], rtol=1e-6)


@pytest.mark.tflite
def test_tflite_builds_a_model_with_at_signs_in_names(tmp_path: Path) -> None:
    path = wm.save(wm.conv_net(node_prefix="Softmax@0/"), tmp_path / "at.onnx")
    report = build(BuildConfig(model=str(path), target="rpi4", output=tmp_path))
    assert report.manifest.fidelity.passed


@pytest.mark.tflite
def test_failed_edgetpu_gate_leaves_the_compatibility_report(tmp_path: Path) -> None:
    import json

    from deploypipe.errors import FidelityError

    path = wm.save(wm.conv_net(), tmp_path / "c.onnx")
    config = BuildConfig(model=str(path), target="edgetpu", quantize="int8", output=tmp_path / "out",
                         tolerance={"min_cosine": 1.01})  # a gate no INT8 model passes
    with pytest.raises(FidelityError, match=r"except the compiler's report: (\S+edgetpu_report\.json)") as info:
        build(config)
    kept = Path(str(info.value).rsplit(": ", 1)[1])
    assert kept.parent == tmp_path / "out" and json.loads(kept.read_text())["nodes"]


def test_internal_error_hint_names_the_real_debug_spelling(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The hint said 're-run with --debug', a flag `build` does not take; it must name
    `deploypipe --debug build ...` (the option belongs to the top-level command)."""
    from deploypipe import api, cli

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "build", broken)
    assert cli.run(["build", "-m", "anything"]) == 70
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "deploypipe --debug build ..." in err
