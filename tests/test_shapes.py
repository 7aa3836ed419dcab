"""Dynamic shapes end to end: ranges and batch sizes in, per-compiler support (kept, profiled, or
refused before any work), bounds in the manifest, fidelity at every batch asked for, one clear
error outside the bounds, and bench measuring each batch for real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_classifier
from onnx import TensorProto, helper, numpy_helper

from deploypipe.api import BuildConfig, build, load
from deploypipe.cliutil import parse_shapes, parse_sizes
from deploypipe.errors import ShapeError, UnsupportedError, UserError
from deploypipe.importers import ImportOptions


def dynamic_classifier(path: Path) -> Path:
    """tiny_classifier with a symbolic batch dim (as `torch.onnx.export(dynamic_axes=...)` writes)."""
    model = tiny_classifier()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save_model(model, str(path))
    return path


def token_model(path: Path) -> Path:
    """input_ids [1, S] int64 -> embedding Gather -> mean over S: a text model's dynamic sequence."""
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32), "emb")
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["e"], name="gather"),
             helper.make_node("ReduceMean", ["e"], ["out"], name="mean", axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "tok", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "S"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def test_shape_ranges_and_sizes_parse() -> None:
    assert parse_shapes(["x=1..32x3x224x224"]) == {
        "input_shapes": {"x": (None, 3, 224, 224)}, "input_dtypes": {}, "input_bounds": {"x": {0: (1, 32)}}}
    assert parse_sizes("32,1,8,8", "--batch") == (1, 8, 32)
    for bad in ("x=32..1x3", "x=1..x3", "x=0..4x3"):
        with pytest.raises(UserError):
            parse_shapes([bad])
    with pytest.raises(UserError, match="--batch"):
        parse_sizes("1,a", "--batch")


def test_onnxruntime_keeps_a_dynamic_batch_checked_at_every_size(tmp_path: Path) -> None:
    src = dynamic_classifier(tmp_path / "dyn.onnx")
    rep = build(BuildConfig(model=str(src), output=tmp_path / "out", import_options=ImportOptions(batch=(1, 8, 32))))
    (spec,) = rep.manifest.inputs
    assert spec.shape == (None, 3, 16, 16) and spec.bounds == ((1, 32), None, None, None)
    assert [s.split(":")[0] for s in rep.manifest.fidelity.shapes_checked] == ["batch 1", "batch 8", "batch 32"]
    assert "also checked at batch 32" in rep.summary()
    with load(rep.path) as runner:
        assert runner.infer({"input": np.zeros((8, 3, 16, 16), np.float32)})["logits"].shape == (8, 10)
        with pytest.raises(ShapeError, match=r"shape 64x3x16x16, this artifact accepts 1\.\.32x3x16x16"):
            runner.infer({"input": np.zeros((64, 3, 16, 16), np.float32)})


@pytest.mark.parametrize(("compiler", "options", "why"), [
    ("hls4ml", {"batch": (1, 8)}, "hls4ml cannot take a range of input shapes"),
    ("edgetpu", {"batch": (1, 8)}, "edgetpu cannot take a range of input shapes.*static shapes"),
    ("tflite", {"input_bounds": {"input": {0: (1, 8)}}}, r"tflite builds a set of fixed shapes.*--batch 1,8,32"),
    ("tflite", {"seq_len": (16, 64)}, r"tflite builds a set of fixed shapes"),
])
def test_fixed_shape_compilers_refuse_a_range_before_any_work(tmp_path: Path, compiler: str,
                                                               options: dict[str, object], why: str) -> None:
    target = {"hls4ml": "pynq-z1", "edgetpu": "edgetpu"}.get(compiler, "host-cpu")
    missing = tmp_path / "never-read.onnx"  # refused before the import would fail on it
    with pytest.raises(UnsupportedError, match=why):
        build(BuildConfig(model=str(missing), target=target, compiler=compiler, output=tmp_path / "out",
                          quantize="int8" if compiler == "edgetpu" else None,
                          import_options=ImportOptions(**options)))  # type: ignore[arg-type]


@pytest.mark.tflite
def test_tflite_builds_one_model_per_listed_batch_size_in_one_artifact(tmp_path: Path) -> None:
    """--batch 1,4 for TFLite: a .tflite per size, the manifest says which sizes it takes, each
    checked against FP32 at its size, and the runner picks the one matching the input."""
    src = dynamic_classifier(tmp_path / "dyn.onnx")
    rep = build(BuildConfig(model=str(src), compiler="tflite", output=tmp_path / "out",
                            import_options=ImportOptions(batch=(1, 4))))
    m = rep.manifest
    (spec,) = m.inputs
    assert spec.sizes == ((1, 4), None, None, None) and spec.accepts() == "{1,4}x3x16x16"
    assert [b["batch"] for b in m.compiler_info["batches"]] == [1, 4]
    assert {"model", "model_batch4"} <= set(m.files) and m.files["model_batch4"].path.startswith("batch4/")
    assert [s.split(":")[0] for s in m.fidelity.shapes_checked] == ["batch 1", "batch 4"] and m.fidelity.passed
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    with load(rep.path) as runner:
        four = runner.infer({"input": x})["logits"]
        one = runner.infer({"input": x[:1]})["logits"]
        assert four.shape == (4, 10) and np.allclose(four[:1], one, atol=1e-4)
        with pytest.raises(ShapeError, match=r"accepts \{1,4\}x3x16x16"):
            runner.infer({"input": x[:2]})


@pytest.mark.tvm
def test_tvm_builds_one_library_for_a_symbolic_batch(tmp_path: Path) -> None:
    pytest.importorskip("tvm")
    rep = build(BuildConfig(model=str(dynamic_classifier(tmp_path / "dyn.onnx")), compiler="tvm",
                            output=tmp_path / "out", import_options=ImportOptions(batch=(1, 8))))
    assert [s.split(":")[0] for s in rep.manifest.fidelity.shapes_checked] == ["batch 1", "batch 8"]
    assert any("one library takes every size" in n for n in rep.manifest.notes)
    with load(rep.path) as runner:
        assert runner.infer({"input": np.zeros((8, 3, 16, 16), np.float32)})["logits"].shape == (8, 10)


def test_a_static_batch_cannot_be_made_dynamic(tmp_path: Path) -> None:
    onnx.save_model(tiny_classifier(), str(tmp_path / "static.onnx"))
    with pytest.raises(ShapeError, match="dim 0 is fixed at 1 in the model, got 1..8; re-export"):
        build(BuildConfig(model=str(tmp_path / "static.onnx"), output=tmp_path / "out",
                          import_options=ImportOptions(batch=(1, 8))))


def test_sequence_length_range_for_token_inputs(tmp_path: Path) -> None:
    src = token_model(tmp_path / "tok.onnx")
    rep = build(BuildConfig(model=str(src), output=tmp_path / "out", import_options=ImportOptions(seq_len=(4, 16))))
    (spec,) = rep.manifest.inputs
    assert spec.shape == (1, None) and spec.bounds == (None, (4, 16))
    with load(rep.path) as runner:
        for n in (4, 16):
            assert runner.infer({"input_ids": np.ones((1, n), np.int64)})["out"].shape == (1, 8)
        with pytest.raises(ShapeError, match=r"accepts 1x4\.\.16"):
            runner.infer({"input_ids": np.ones((1, 17), np.int64)})


def test_tensorrt_artifact_carries_an_optimization_profile(tmp_path: Path) -> None:
    src = dynamic_classifier(tmp_path / "dyn.onnx")
    rep = build(BuildConfig(model=str(src), target="jetson-nano", output=tmp_path / "out",
                            import_options=ImportOptions(batch=(1, 8, 32))))
    line = rep.manifest.compiler_info["trtexec"]
    assert ("--minShapes=input:1x3x16x16 --optShapes=input:8x3x16x16 --maxShapes=input:32x3x16x16" in line)
    assert line in (rep.path / "build_engine.sh").read_text()


@pytest.mark.openvino
def test_openvino_keeps_the_dynamic_batch_with_its_bounds(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    src = dynamic_classifier(tmp_path / "dyn.onnx")
    rep = build(BuildConfig(model=str(src), compiler="openvino", output=tmp_path / "out",
                            import_options=ImportOptions(batch=(1, 4))))
    with load(rep.path) as runner:
        assert runner.infer({"input": np.zeros((4, 3, 16, 16), np.float32)})["logits"].shape == (4, 10)


def test_bench_measures_each_batch_and_says_why_a_static_artifact_cannot(cli, tmp_path: Path) -> None:
    dyn = build(BuildConfig(model=str(dynamic_classifier(tmp_path / "dyn.onnx")), output=tmp_path / "arts",
                            import_options=ImportOptions(batch=(1, 8))))
    onnx.save_model(tiny_classifier(), str(tmp_path / "static.onnx"))
    build(BuildConfig(model=str(tmp_path / "static.onnx"), output=tmp_path / "arts"))
    res = cli("bench", str(tmp_path / "arts"), "--batch", "1,8", "--iterations", "3", "--warmup", "1",
              "--min-seconds", "0", "--energy", "off", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    measured = {(r["name"], r["batch_size"]) for r in rows if r["ran"]}
    assert {(dyn.path.name, 1), (dyn.path.name, 8), ("static-host-cpu-onnxruntime-fp32", 1)} <= measured
    (refused,) = [r for r in rows if not r["ran"]]
    assert refused["name"] == "static-host-cpu-onnxruntime-fp32" and "batch 8" in refused["reason"]
    assert all(r["fidelity"]["max_abs_err"] < 1e-5 for r in rows if r["ran"])


def test_zoo_models_export_with_a_dynamic_batch_when_asked(tmp_path: Path) -> None:
    from deploypipe.importers import import_model

    model = import_model("mlp-mnist", ImportOptions(batch=(1, 4)))
    (spec,) = model.inputs
    assert spec.shape[0] is None and spec.bounds[0] == (1, 4)
    text = import_model("transformer-small", ImportOptions(seq_len=(16, 64)))
    (ids,) = text.inputs
    assert ids.shape == (1, None) and ids.bounds == (None, (16, 64))


def test_cloud_batcher_stacks_concurrent_requests_and_returns_each_its_rows(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from deploypipe.partition.server import Batcher, ort_executor

    run = ort_executor(dynamic_classifier(tmp_path / "dyn.onnx"))
    batcher = Batcher(run, max_batch=8, max_wait_ms=200)
    rng = np.random.default_rng(0)
    feeds = [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(batcher, feeds))
    for f, o in zip(feeds, outs, strict=True):
        np.testing.assert_allclose(o["logits"], run(f)["logits"], rtol=1e-5, atol=1e-5)
    assert batcher.rows == 8 and batcher.runs < 8  # at least two requests ran together


def test_bench_measures_token_models_at_each_sequence_length(cli, tmp_path: Path) -> None:
    build(BuildConfig(model=str(token_model(tmp_path / "tok.onnx")), output=tmp_path / "arts",
                      import_options=ImportOptions(seq_len=(4, 16))))
    res = cli("bench", str(tmp_path / "arts"), "--seq-len", "4,16,64", "--iterations", "3", "--warmup", "1",
              "--min-seconds", "0", "--energy", "off", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert sorted(r["seq_len"] for r in rows if r["ran"]) == [4, 16]
    (refused,) = [r for r in rows if not r["ran"]]
    assert "seq 64" in refused["reason"] and "1x4..16" in refused["reason"]


def test_a_split_model_keeps_its_dynamic_batch_on_both_halves(tmp_path: Path) -> None:
    from deploypipe.partition.build import build_split

    rep = build_split(BuildConfig(model=str(dynamic_classifier(tmp_path / "dyn.onnx")), output=tmp_path / "out",
                                  import_options=ImportOptions(batch=(1, 8))), "relu", "host-cpu", "host-cpu", "wifi")
    (crossing,) = rep.plan.cut.tensors
    assert crossing.shape[0] is None and crossing.bytes == 8 * 16 * 16 * 4  # costed per sample
    feeds = {"input": np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)}
    with load(rep.path / "edge") as edge, load(rep.path / "cloud") as cloud, load(rep.path / "edge-full") as full:
        np.testing.assert_allclose(cloud.infer(edge.infer(feeds))["logits"], full.infer(feeds)["logits"],
                                   rtol=1e-5, atol=1e-5)


def test_efficiency_counts_samples_of_a_batched_row() -> None:
    """ips/W and ips/$ of a batch-8 row count 8 samples per inference (they counted one)."""
    from deploypipe.bench.derived import add_efficiency
    from deploypipe.bench.results import BenchResult, Latency

    lat = Latency(n=3, mean=10.0, std=0.0, p50=10.0, p90=10.0, p99=10.0, min=10.0)
    rows = [BenchResult(artifact="a", name="a", model="m", target="host-cpu", compiler="onnxruntime", precision="fp32",
                        kind="onnxruntime", ran=True, latency_ms=lat, batch_size=b) for b in (1, 8)]
    for r in rows:
        add_efficiency(r)
    one, eight = (r.efficiency for r in rows)
    assert one is not None and eight is not None
    for key in ("ips_per_watt", "ips_per_usd"):
        if getattr(one, key) is not None:
            assert getattr(eight, key) == pytest.approx(8 * getattr(one, key))
    assert (one.ips_per_watt, one.ips_per_usd) != (None, None)


def test_batch_checks_use_the_exact_qdq_reference_where_fused_kernels_saturate(tmp_path: Path, monkeypatch) -> None:
    """On a host whose fused u8 x s8 kernels saturate (AVX2 without VNNI; forced here with
    DEPLOYPIPE_ISA), a QDQ graph's reference runs unfused, its exact semantics, at batch 1 and at
    every other batch the build checks (the batch checks ran the fused graph)."""
    from int8_models import INT8_SHAPE, int8_convnet, qdq_model

    from deploypipe import api
    from deploypipe.analysis.fidelity import QUANTIZED_INPUT_TOLERANCE
    from deploypipe.artifact import Fidelity
    from deploypipe.importers import import_model
    from deploypipe.isa import ENV

    fp32 = int8_convnet()
    fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    fp32.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model = import_model(qdq_model(tmp_path, fp32, INT8_SHAPE), ImportOptions(batch=(1, 3)))
    assert 3 in model.batches, model.batches
    monkeypatch.setenv(ENV, "x86-avx2")
    real, optimized = api.reference.run, []

    def spy(proto: onnx.ModelProto, feeds: list, outputs: list | None = None, optimize: bool = True) -> list:
        optimized.append(optimize)
        return real(proto, feeds, outputs, optimize=False)

    monkeypatch.setattr(api.reference, "run", spy)

    class Exact:  # an artifact computing the graph exactly
        def infer(self, feeds: dict, check: bool = True) -> dict:
            return real(model.proto, [feeds], optimize=False)[0]

    feeds = list(model.calibration.samples(2, seed=1))
    api._reference(model, feeds)
    fid = Fidelity(checked=True, where="test")
    api._check_batches(Exact(), model, "fp32", dict(QUANTIZED_INPUT_TOLERANCE), feeds, fid)
    assert optimized and not any(optimized), optimized
    assert fid.passed is not False and fid.shapes_checked, fid
