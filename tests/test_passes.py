"""The pass layer on tiny inline models and the trained digits CNN: each pass's contract, figures
in its details, the INT8 accuracy gate and mixed precision, pruning and the per-layer diff."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_classifier

from deploypipe import passes
from deploypipe.errors import FidelityError, UnsupportedError
from deploypipe.importers import ImportOptions
from deploypipe.importers.common import finish
from deploypipe.model import ArrayProvider, Model
from deploypipe.analysis import reference as _ort
from deploypipe.passes import PassContext

CTX = PassContext(target="host-cpu", precision="int8")


def tiny_model() -> Model:
    return finish(tiny_classifier(), name="tiny", source="tiny.onnx", importer="onnx", options=ImportOptions())


@pytest.fixture(scope="module")
def digits() -> Model:
    """The digits CNN trained here, with real calibration and held-out data. Uses the zoo's data
    providers when they exist; until then the same digits split, attached here."""
    from deploypipe import zoo

    if hasattr(zoo, "data_providers"):
        from deploypipe.importers import import_model

        return import_model("digits-cnn")
    from deploypipe.importers.pytorch import export_module
    from deploypipe.zoo.datasets import digits as split

    entry, sp = zoo.get("digits-cnn"), split()
    return finish(
        export_module(entry.module(), entry.inputs), name="digits-cnn", source="digits-cnn", importer="zoo",
        options=ImportOptions(), torch_source=entry,
        calibration=ArrayProvider("input", sp.x_train, sp.y_train, "scikit-learn digits training split (real)"),
        evaluation=ArrayProvider("input", sp.x_test, sp.y_test, "scikit-learn digits held-out split (real)"),
    )


def outputs(proto: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([next(iter(o.values())) for o in _ort.run(proto, feeds)])


@pytest.mark.parametrize("tool", ["onnxslim", "onnxsim", "ort-basic"])
def test_simplify_folds_batchnorm_and_keeps_outputs(tool: str) -> None:
    model = tiny_model()
    result = passes.create("simplify", {"tool": tool})(model, CTX)
    assert model.content_hash() == model.provenance.source_hash  # the input is left alone
    assert result.modified
    assert result.details["nodes_before"] == 6 and result.details["nodes_after"] == 5
    assert "BatchNormalization" not in result.details["ops_after"]
    feeds = list(model.calibration.samples(4))
    np.testing.assert_allclose(outputs(result.model.proto, feeds), outputs(model.proto, feeds), rtol=1e-4, atol=1e-5)


def test_simplify_ort_extended_fuses_activation_into_ort_only_op() -> None:
    result = passes.create("simplify", {"tool": "ort-extended"})(tiny_model(), CTX)
    assert "FusedConv" in result.details["ops_after"]
    assert result.details["non_standard_domains"] == ["com.microsoft"]


def test_fp16_keeps_fp32_io_and_reports_error() -> None:
    model = tiny_model()
    result = passes.create("fp16", {})(model, CTX)
    proto = result.model.proto
    assert result.model.inputs[0].dtype == "float32" and result.model.outputs[0].dtype == "float32"
    assert {i.data_type for i in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    d = result.details
    assert 0 < d["max_abs_err"] < 3e-2 * d["output_scale"]
    assert d["weight_bytes"]["fp16"] * 2 == d["weight_bytes"]["fp32"]


def test_int8_quantizes_and_reports_gate_and_io_params() -> None:
    result = passes.create("int8", {})(tiny_model(), CTX)
    ops = {n.op_type for n in result.model.proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    gate = result.details["gate"]
    assert gate["passed"] and gate["top1_agreement"] >= 0.99
    assert "synthetic" in gate["data"] and "held-out seed" in gate["data"]
    assert result.details["calibration"]["real"] is False
    q = result.details["io_quant"]["input"]
    assert q["scale"] > 0 and 0 <= q["zero_point"] <= 255


def test_int8_gate_fails_then_mixed_precision_keeps_layers_in_fp32() -> None:
    strict = {"min_cosine": 0.999999}
    with pytest.raises(FidelityError, match="cosine"):
        passes.create("int8", {"tolerance": strict})(tiny_model(), CTX)
    result = passes.create("int8", {"tolerance": strict, "mixed_precision": True})(tiny_model(), CTX)
    d = result.details
    assert d["gate"]["passed"] and d["fp32_layers"]
    assert set(d["fp32_layers"]) <= set(d["fp32_nodes"])
    # kept from the ranking, in the order they helped (not always rank order: on an AVX2 host the
    # conv helps only after its ReLU's neighbours are in FP32, so it is tried again then)
    ranked = [r["node"] for r in d["layer_ranking"]]
    assert set(d["fp32_layers"]) <= set(ranked)


def test_int8_search_on_real_data_tries_calibrations_then_fewest_fp32_layers(digits: Model) -> None:
    """Judged on real labelled data, a miss starts the accuracy-aware search by itself: the other
    calibration methods first, then the fewest FP32 layers that pass; each step has its figure
    and its latency."""
    messages: list[str] = []
    ctx = PassContext(target="host-cpu", precision="int8", progress=messages.append)
    tol = {"min_cosine": 0.999995, "max_accuracy_drop": 0.5, "min_samples": 200}
    d = passes.create("int8", {"tolerance": tol})(digits, ctx).details
    steps = d["search"]["steps"]
    assert [s["calibration"] for s in steps[:3]] == ["minmax", "entropy", "percentile"]
    assert not any(s["passed"] for s in steps[:3]) and steps[-1]["passed"]
    assert d["fp32_layers"] == steps[-1]["fp32_layers"] and d["fp32_layers"]
    # greedy: each step tries the kept layers plus the next ranked one; only the last one passes
    assert all(not s["passed"] for s in steps[3:-1])
    for a, b in zip(steps[3:], steps[4:]):  # b keeps what a kept (or a's without its last try) plus one more
        assert b["fp32_layers"][:-1] in (a["fp32_layers"], a["fp32_layers"][:-1])
    assert d["calibration"]["method"] == steps[-1]["calibration"]
    assert all(s["latency_ms"] > 0 for s in steps) and d["search"]["fp32_latency_ms"] > 0
    assert d["search"]["judged_by"] == "accuracy"
    assert sum("int8: step" in m and " ms (" in m for m in messages) == len(steps)


def test_int8_search_is_off_on_synthetic_evidence() -> None:
    """Synthetic inputs refuse a catastrophe only; they never start a search nobody asked for."""
    with pytest.raises(FidelityError):
        passes.create("int8", {"tolerance": {"min_cosine": 0.999999, "synthetic_min_cosine": 0.999999}})(tiny_model(), CTX)


def test_int8_judged_by_the_users_metric(digits: Model) -> None:
    """--metric drives the gate and the search: its first figure may fall max_metric_drop below FP32's."""
    def agreement(refs: list[dict[str, np.ndarray]], outs: list[dict[str, np.ndarray]], labels: np.ndarray | None) -> dict[str, float]:
        r = np.concatenate([next(iter(x.values())) for x in refs]).argmax(-1)
        o = np.concatenate([next(iter(x.values())) for x in outs]).argmax(-1)
        return {"agree": float(np.mean(r == o)), "n": float(len(r))}

    ctx = PassContext(target="host-cpu", precision="int8", metric=("t:agreement", agreement))
    d = passes.create("int8", {"tolerance": {"max_metric_drop": 0.05, "max_accuracy_drop": 5}})(digits, ctx).details
    assert d["gate"]["metrics_fp32"]["agree"] == 1.0 and d["gate"]["metrics"]["agree"] >= 0.95
    assert d["search"]["judged_by"] == "metric t:agreement"
    with pytest.raises(FidelityError, match="metric agree"):
        passes.create("int8", {"tolerance": {"max_metric_drop": -1.0, "max_accuracy_drop": 5}, "max_fp32_layers": 1})(digits, ctx)


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_on_trained_model_real_accuracy(digits: Model, method: str) -> None:
    result = passes.create("int8", {"calibration": method})(digits, CTX)
    gate = result.details["gate"]
    assert gate["data"].startswith("held-out real data")
    assert gate["accuracy_fp32"] > 95
    assert gate["accuracy_fp32"] - gate["accuracy"] <= 0.5
    assert result.details["calibration"]["real"] and result.details["calibration"]["method"] == method


def test_prune_needs_a_torch_source() -> None:
    with pytest.raises(UnsupportedError, match="no PyTorch source"):
        passes.create("prune", {"ratio": 0.3})(tiny_model(), CTX)


def test_prune_trained_model_shrinks_and_finetunes(digits: Model) -> None:
    result = passes.create("prune", {"ratio": 0.5, "finetune_epochs": 2})(digits, CTX)
    d = result.details
    assert d["params"]["after"] < 0.5 * d["params"]["before"]
    assert d["macs"]["after"] < 0.5 * d["macs"]["before"]
    assert d["finetune"]["accuracy_after"] > 90
    assert [i.name for i in result.model.inputs] == [i.name for i in digits.inputs]
    logits = outputs(result.model.proto, [{"input": digits.evaluation.x[i : i + 1]} for i in range(4)])
    assert logits.shape == (4, 10)


def test_prune_must_run_first(digits: Model) -> None:
    simplified = passes.create("simplify", {})(digits, CTX).model
    with pytest.raises(UnsupportedError, match="must run first"):
        passes.create("prune", {"ratio": 0.3})(simplified, CTX)


def test_layer_diff_names_first_divergent_layer() -> None:
    from deploypipe.analysis.layerdiff import compare_layers

    model = tiny_model()
    int8 = passes.create("int8", {})(model, CTX).model
    feeds = list(model.calibration.samples(2))
    same = compare_layers(model.proto, model.proto, feeds)
    assert same.first_divergent is None and all(x.rel_err == 0 for x in same.layers)
    report = compare_layers(model.proto, int8.proto, feeds, rtol=1e-6)
    assert report.first_divergent is not None and report.first_divergent.node == "conv"
    assert "qdq" in {x.found_as for x in report.layers}


def test_layer_diff_matches_qoperator_graphs() -> None:
    from deploypipe.analysis.layerdiff import compare_layers

    model = passes.create("simplify", {})(tiny_model(), CTX).model  # BN folded: Conv..Flatten stay integer
    qop = passes.create("int8", {"format": "qoperator"})(model, CTX).model
    assert "QLinearConv" in {n.op_type for n in qop.proto.graph.node}
    report = compare_layers(model.proto, qop.proto, list(model.calibration.samples(2)))
    assert "qoperator" in {x.found_as for x in report.layers}
    assert all(x.cosine > 0.99 for x in report.layers)


def test_cli_diff_json(cli, tmp_path: Path) -> None:
    model = tiny_model()
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    model.save(a)
    onnx.save_model(passes.create("fp16", {})(model, CTX).model.proto, str(b))
    res = cli("diff", str(a), str(b), "--rtol", "1e-2", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["first_divergent"] is None and len(data["layers"]) >= 4
    assert 0 < max(x["rel_err"] for x in data["layers"]) < 1e-2
    bad = cli("diff", str(a), str(tmp_path / "missing.onnx"))
    assert bad.returncode == 2 and "missing.onnx" in bad.stderr


def test_recipes_and_tolerance_override() -> None:
    assert {"fp16", "int8", "int8-mixed"} <= set(passes.recipe_names())
    recipe = passes.recipe_for("int8", frozenset(), prune=0.3, tolerance={"min_top1_agreement": 0.9})
    assert [s.name for s in recipe.passes] == ["prune", "simplify", "int8"]
    tol = recipe.passes[2].params["tolerance"]
    assert tol["min_top1_agreement"] == 0.9 and tol["max_accuracy_drop"] == 0.5
    for step in recipe.passes:
        passes.create(step.name, step.params)  # every recipe step validates against its pass config


def test_cli_build_int8_and_prune_refusal(cli, tiny_onnx: Path, tmp_path: Path) -> None:
    res = cli("build", "-m", str(tiny_onnx), "--quantize", "int8", "-o", str(tmp_path), "--json")
    assert res.returncode == 0, res.stderr
    manifest = json.loads(res.stdout)["manifest"]
    int8 = next(p for p in manifest["passes"] if p["name"] == "int8")
    assert int8["details"]["gate"]["passed"] and int8["details"]["io_quant"]
    diff = cli("diff", str(tiny_onnx), json.loads(res.stdout)["path"], "--json")  # an artifact folder as B
    assert diff.returncode == 0, diff.stderr
    assert json.loads(diff.stdout)["layers"]
    refused = cli("build", "-m", str(tiny_onnx), "--prune", "0.3", "-o", str(tmp_path))
    assert refused.returncode == 3 and "no PyTorch source" in refused.stderr
