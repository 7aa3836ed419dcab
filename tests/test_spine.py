"""The spine end to end on tiny models: targets, import, build, artifact, runner, bench, CLI, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploypipe import targets
from deploypipe.api import BuildConfig, build, load, self_check
from deploypipe.artifact import MANIFEST, Artifact, staging
from deploypipe.errors import (
    FidelityError,
    InputFileError,
    ShapeError,
    UnknownNameError,
    UnsafeInputError,
    UnsupportedError,
)
from deploypipe.importers import ImportOptions, import_model

SEED_DEVICES = ["host-cpu", "xeon", "server-gpu", "rpi3", "rpi4", "jetson-tx2", "jetson-nano", "edgetpu",
                "ncs2", "pynq-z1", "snapdragon-835"]


# --- targets ----------------------------------------------------------------------------------

def test_every_seed_device_has_a_target_file_with_sourced_figures() -> None:
    specs = targets.all_targets()
    for name in SEED_DEVICES:
        assert name in specs
        spec = specs[name]
        assert spec.default_compiler in spec.compilers
        assert all(f.source for f in spec.figures.values())


def test_nano_int8_is_adapted_to_fp16_with_the_reason() -> None:
    res = targets.get("jetson-nano").resolve(None, "int8")
    assert (res.compiler, res.precision, res.requested) == ("tensorrt", "fp16", "int8")
    assert "SM 5.3" in res.notes[0] and "INT8" in res.notes[0]


def test_impossible_precisions_are_refused() -> None:
    with pytest.raises(UnsupportedError, match="int8 is not possible on jetson-nano"):
        targets.get("jetson-nano").resolve(None, "int8", strict=True)
    with pytest.raises(UnsupportedError, match="full-integer"):
        targets.get("edgetpu").resolve(None, "fp16")
    with pytest.raises(UnsupportedError, match="FakeQuantize"):
        targets.get("ncs2").resolve(None, "int8", strict=True)
    with pytest.raises(UnsupportedError, match="compilers are"):
        targets.get("rpi3").resolve("openvino", None)


def test_unknown_target_suggests_nearest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: jetson-nano"):
        targets.get("jetson-nan")


# --- import -----------------------------------------------------------------------------------

def test_onnx_import_pins_batch_and_hashes(tiny_onnx: Path) -> None:
    m = import_model(tiny_onnx)
    assert m.inputs[0].shape == (1, 3, 16, 16) and m.outputs[0].name == "logits"
    assert m.provenance.importer == "onnx" and len(m.provenance.source_hash) == 64
    assert not m.calibration.real and "synthetic" in m.calibration.description


def test_corrupt_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(InputFileError, match="not a valid ONNX model"):
        import_model(bad)
    with pytest.raises(InputFileError, match="no such file"):
        import_model(tmp_path / "missing.onnx")
    weird = tmp_path / "model.xyz"
    weird.write_text("x")
    with pytest.raises(InputFileError, match="unsupported model format"):
        import_model(weird)


def _torch_net():
    import torch

    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 5)).eval()


def test_pickled_module_needs_explicit_permission(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "net.pt"
    torch.save(_torch_net(), path)
    with pytest.raises(UnsafeInputError, match="--allow-pickle"):
        import_model(path, ImportOptions(input_shapes={"input": (1, 3, 8, 8)}))
    m = import_model(path, ImportOptions(input_shapes={"input": (1, 3, 8, 8)}, allow_pickle=True))
    assert m.outputs[0].shape == (1, 5)


def test_torchscript_and_exported_program_import(tmp_path: Path) -> None:
    import torch

    net = _torch_net()
    x = torch.randn(1, 3, 8, 8)
    ts = tmp_path / "net_ts.pt"
    torch.jit.trace(net, x).save(str(ts))
    with pytest.raises(InputFileError, match="--input-shape"):
        import_model(ts)
    m = import_model(ts, ImportOptions(input_shapes={"x": (1, 3, 8, 8)}))
    ep = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(ep))
    m2 = import_model(ep)
    import onnxruntime as ort

    for model in (m, m2):
        sess = ort.InferenceSession(model.proto.SerializeToString())
        (y,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        np.testing.assert_allclose(y, net(x).detach().numpy(), atol=1e-5)


def test_state_dict_file_is_pointed_to_weights_flag(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "weights.pth"
    torch.save(_torch_net().state_dict(), path)
    with pytest.raises(InputFileError, match="--weights"):
        import_model(path, ImportOptions(input_shapes={"input": (1, 3, 8, 8)}))


# --- build, artifact, runner ------------------------------------------------------------------

def _build(tiny_onnx: Path, out: Path, **kw) -> object:
    return build(BuildConfig(model=str(tiny_onnx), output=out, **kw))


def test_build_writes_a_self_describing_artifact_and_caches(tiny_onnx: Path, tmp_path: Path) -> None:
    rep = _build(tiny_onnx, tmp_path)
    m = rep.manifest
    assert not rep.cached and m.schema_version == 1 and m.kind == "onnxruntime"
    assert m.target == "host-cpu" and m.precision == "fp32" and m.passes[0].name == "simplify"
    assert m.fidelity.checked and m.fidelity.passed and m.fidelity.max_abs_err < 1e-4
    assert "onnxruntime" in m.toolchain and m.model.stats["macs"] > 0
    assert {"model", "golden"} <= set(m.files)
    Artifact(rep.path)  # hashes verify
    again = _build(tiny_onnx, tmp_path)
    assert again.cached and again.manifest.build_key == m.build_key
    forced = _build(tiny_onnx, tmp_path, force=True)
    assert not forced.cached


def test_runner_infers_and_rejects_wrong_shapes(tiny_onnx: Path, tmp_path: Path) -> None:
    rep = _build(tiny_onnx, tmp_path)
    art = Artifact(rep.path)
    inputs, reference, expected = art.golden()
    with load(rep.path) as runner:
        out = runner.infer(inputs)
        np.testing.assert_allclose(out["logits"], expected["logits"], rtol=1e-6)
        with pytest.raises(ShapeError, match=r"shape 1x3x8x8, this artifact accepts 1x3x16x16"):
            runner.infer({"input": np.zeros((1, 3, 8, 8), np.float32)})
        with pytest.raises(ShapeError, match="expects"):
            runner.infer({"x": inputs["input"]})
    assert self_check(rep.path).passed


def test_corrupt_artifact_file_is_detected(tiny_onnx: Path, tmp_path: Path) -> None:
    rep = _build(tiny_onnx, tmp_path)
    (rep.path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(InputFileError, match="corrupt"):
        Artifact(rep.path)
    (rep.path / MANIFEST).write_text("{not json")
    with pytest.raises(InputFileError, match="corrupt or unsupported manifest"):
        Artifact(rep.path)


def test_interrupted_build_leaves_previous_artifact_intact(tmp_path: Path) -> None:
    dest = tmp_path / "a"
    dest.mkdir()
    (dest / MANIFEST).write_text("{}")
    with pytest.raises(KeyboardInterrupt), staging(dest) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert (dest / MANIFEST).read_text() == "{}"


def test_fidelity_gate_failure_writes_nothing(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(FidelityError, match="nothing was written"):
        _build(tiny_onnx, out, tolerance={"min_cosine": 1.5})
    assert list(out.iterdir()) == []


# --- CLI --------------------------------------------------------------------------------------

def test_help_imports_no_heavy_backend() -> None:
    code = ("import sys; from deploypipe.cli import app; "
            "heavy = [m for m in ('onnx','numpy','torch','tvm','openvino','onnxruntime') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_errors_are_one_line_with_exit_codes(cli, tiny_onnx: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    r = cli("build", "--model", str(tiny_onnx), "--target", "jetson-nan", "-o", str(tmp_path))
    assert r.returncode == 2 and "Did you mean: jetson-nano" in r.stderr and "Traceback" not in r.stderr
    r = cli("build", "--model", str(tmp_path / "nope.onnx"), "-o", str(tmp_path))
    assert r.returncode == 2 and "no such file" in r.stderr
    r = cli("build", "--model", str(tiny_onnx), "--no-such-flag")  # a usage error, not an internal one
    assert r.returncode == 2 and "No such option: --no-such-flag" in r.stderr and "internal error" not in r.stderr
    r = cli("build", "--model", str(tiny_onnx), "--target", "edgetpu", "--quantize", "fp16", "-o", str(tmp_path))
    assert r.returncode == 3 and "full-integer" in r.stderr
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_cli_build_bench_check_json(cli, tiny_onnx: Path, tmp_path: Path) -> None:
    r = cli("build", "--model", str(tiny_onnx), "-o", str(tmp_path / "arts"), "--json")
    assert r.returncode == 0, r.stderr
    built = json.loads(r.stdout)
    assert built["manifest"]["fidelity"]["passed"] is True
    r = cli("bench", str(tmp_path / "arts"), "--iterations", "5", "--warmup", "1", "--json",
            "--json-file", str(tmp_path / "res.json"))
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)
    assert res["ran"] and res["latency_ms"]["n"] >= 5 and res["latency_ms"]["p50"] > 0
    assert res["cold_start"]["model_load_s"] > 0 and res["peak_rss_mb"] > 0
    assert res["fidelity"]["max_abs_err"] < 1e-4 and res["where"].startswith("measured on")
    assert json.loads((tmp_path / "res.json").read_text())[0]["name"] == res["name"]
    r = cli("check", built["path"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["passed"] is True


def test_bench_lists_unrunnable_artifacts_with_reason(tiny_onnx: Path, tmp_path: Path) -> None:
    from deploypipe.bench import run_bench

    rep = _build(tiny_onnx, tmp_path)
    manifest = json.loads((rep.path / MANIFEST).read_text())
    manifest["kind"] = "martian-npu"
    (rep.path / MANIFEST).write_text(json.dumps(manifest))
    (res,) = run_bench([tmp_path])
    assert not res.ran and "martian-npu" in res.reason


def test_targets_and_inspect_commands(cli, tiny_onnx: Path) -> None:
    r = cli("targets", "--json")
    assert r.returncode == 0 and set(SEED_DEVICES) <= set(json.loads(r.stdout))
    r = cli("inspect", str(tiny_onnx), "--json")
    data = json.loads(r.stdout)
    assert data["macs"] == 8 * 3 * 9 * 16 * 16 + 8 * 10 and data["op_histogram"]["Conv"] == 1
    assert onnx.load(str(tiny_onnx)).graph.node  # the file is untouched


def test_precision_without_a_pass_is_refused_not_mislabelled(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="would not be fp16"):
        _build(tiny_onnx, tmp_path, quantize="fp16", recipe="default")


def test_code_change_invalidates_the_cache(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> None:
    from deploypipe import api

    first = _build(tiny_onnx, tmp_path)
    monkeypatch.setattr(api, "code_hash", lambda: "changed-code")
    again = _build(tiny_onnx, tmp_path)
    assert not again.cached and again.manifest.build_key != first.manifest.build_key


def test_pruned_build_is_gated_on_accuracy_not_bitwise_equality(tmp_path: Path) -> None:
    rep = build(BuildConfig(model="digits-cnn", prune=0.3, output=tmp_path))
    f = rep.manifest.fidelity
    assert f.passed and f.accuracy is not None and f.accuracy_fp32 - f.accuracy <= 1.0
    assert "max_accuracy_drop" in f.tolerance and "rel_max_abs_err" not in f.tolerance
    assert self_check(rep.path).passed  # the device check uses the build's own gate
