"""`deploypipe optimize`: the Pareto front, a search measured on this host (digits-cnn, trained here,
judged on its labelled held-out digits), a search for an absent device estimated by the cost model,
the winner built within the budget, a budget nobody meets (exit 5) and --json."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from deploypipe import api
from deploypipe.artifact import Artifact
from deploypipe.bench import BenchConfig
from deploypipe.campaign.optimize import OptimizeConfig, build_fields, search_space
from deploypipe.campaign.pareto import dominates, pareto_front
from deploypipe.cli import run

from conftest import tiny_classifier

FAST = BenchConfig(warmup=1, iterations=5, min_seconds=0.05)


def test_pareto_front_keeps_exactly_the_undominated_points() -> None:
    pts = [(1.0, 5.0), (2.0, 2.0), (3.0, 1.0), (2.5, 2.5), (4.0, 4.0), (2.0, 2.0)]
    assert pareto_front(pts) == [0, 1, 2, 5]  # (2.5,2.5) and (4,4) are dominated; equal points both stay
    assert pareto_front([]) == []
    assert pareto_front([(7.0,)]) == [0]
    assert pareto_front([(1.0,), (2.0,), (1.0,)]) == [0, 2]  # one objective: the minima
    assert pareto_front([(1, 2, 3), (1, 2, 4), (0, 5, 3)]) == [0, 2]  # any number of objectives
    assert dominates((1, 1), (1, 2)) and not dominates((1, 2), (1, 2)) and not dominates((0, 3), (1, 2))
    with pytest.raises(ValueError, match="objectives"):
        pareto_front([(1.0, 2.0), (1.0,)])
    with pytest.raises(ValueError, match="NaN"):
        pareto_front([(1.0, float("nan"))])


def test_search_space_follows_the_target_file() -> None:
    """Compilers and precisions from the target file; pruning with the default compiler; FP32 layers
    only where the int8 pass quantizes; impossible requests listed with their reason."""
    names = {p.name: p for p in search_space(OptimizeConfig(model="m", target="host-cpu"))}
    assert {"onnxruntime-fp32", "tvm-int8", "openvino-fp16", "tflite-int8", "onnxruntime-int8-pruned50",
            "onnxruntime-int8-fp32x2", "tvm-int8-fp32x2"} <= set(names)
    assert "tvm-fp32-pruned50" not in names and "tvm-fp16" not in names  # TVM runs fp32/int8 on host-cpu
    assert "quantizes INT8 itself" in names["openvino-int8-fp32x2"].refused
    nano = {p.name: p for p in search_space(OptimizeConfig(model="m", target="jetson-nano", compilers=["tensorrt", "onnxruntime"],
                                                           precisions=["int8"]))}
    assert "no INT8" in nano["tensorrt-int8"].refused
    assert "cannot be built with onnxruntime" in nano["onnxruntime"].refused
    rpi = {p.name for p in search_space(OptimizeConfig(model="m", target="rpi4", compilers=["onnxruntime", "tvm"]))}
    assert "onnxruntime-int8-pruned50" in rpi and "tvm-int8-pruned50" not in rpi  # tflite, the default, not searched


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optimize")


def test_search_on_this_host_measures_and_builds_the_winner_within_budget(digits_out: Path) -> None:
    cfg = OptimizeConfig(model="digits-cnn", target="host-cpu", compilers=["onnxruntime"], precisions=["fp32", "int8"],
                         prune_ratios=[0.0, 0.5], fp32_layers=[], max_accuracy_drop=1.0, output=digits_out, bench=FAST)
    report = api.optimize(cfg)
    assert {p.name for p in report.points} == {"onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-fp32-pruned50",
                                              "onnxruntime-int8-pruned50"}
    figured = [p for p in report.points if p.objective is not None]
    assert figured and all(p.objective_source.startswith("measured on") for p in figured)
    for p in figured:  # judged on the labelled held-out digits, certified
        assert p.evidence == "labelled" and p.accuracy_basis.startswith("top-1 accuracy drop on")
    assert report.front and set(report.front) <= {p.name for p in figured}
    assert report.winner is not None
    winner = report.point(report.winner)
    assert winner.accuracy_drop is not None and winner.accuracy_drop <= 1.0
    best = min(p.objective for p in figured if p.within_budget)  # type: ignore[type-var]
    assert winner.objective == best
    built = Artifact(Path(report.winner_path))  # type: ignore[arg-type]
    assert built.path.parent == digits_out and built.manifest.fidelity.passed
    assert built.manifest.precision == winner.precision and built.manifest.compiler == "onnxruntime"
    # copied from the candidate, not rebuilt: the same build key, so an identical build is a cache hit
    again = api.build(api.BuildConfig(**{**build_fields(cfg, winner, digits_out), "name": built.path.name}))
    assert again.cached and again.path == built.path


def test_cli_json_and_a_budget_nobody_meets(digits_out: Path, cli) -> None:  # noqa: ANN001
    """Only pruned candidates, whose labelled accuracy drop exceeds a 0.01-point budget: their gate
    (given the budget) refuses them, the frontier is empty, the command exits 5 with one line."""
    proc = cli("optimize", "-m", "digits-cnn", "--compilers", "onnxruntime", "--precisions", "fp32", "--prune", "0.5",
               "--fp32-layers", "0", "--max-accuracy-drop", "0.01", "-o", str(digits_out), "--json")
    assert proc.returncode == 5, proc.stderr
    assert "no candidate of digits-cnn for host-cpu meets --max-accuracy-drop 0.01" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    report = json.loads(proc.stdout)
    assert report["winner"] is None and report["front"] == []
    (point,) = report["points"]
    assert point["refused"].startswith("fails its gate") and "accuracy drop" in point["refused"]


def test_absent_target_is_estimated_and_labelled_so(tmp_path: Path) -> None:
    """rpi4 is not here: latency and energy come from the cost model (calibrated on one FP32
    measurement of this host), never from timing the artifact on this x86 host (ONNX Runtime
    artifacts for rpi4 do run here)."""
    model = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    cfg = OptimizeConfig(model=str(model), target="rpi4", objective="energy", compilers=["onnxruntime", "tflite"],
                         precisions=["fp32", "fp16"], prune_ratios=[0.0], fp32_layers=[], output=tmp_path / "out", bench=FAST)
    report = api.optimize(cfg)
    points = {p.name: p for p in report.points}
    assert "onnxruntime runs only fp32, int8 on rpi4" in points["onnxruntime-fp16"].refused
    ort = points["onnxruntime-fp32"]
    assert ort.objective_source.startswith("estimated from rpi4 figures")
    assert "estimated by roofline(rpi4" in ort.objective_source and "calibrated on" in ort.objective_source
    assert not ort.measured and ort.energy_mj == ort.objective
    tfl = points["tflite-fp32"]  # a flatbuffer holds no ONNX graph: the estimate of the same graph, said so
    assert tfl.objective == ort.objective and "on the graph of onnxruntime-fp32" in tfl.objective_source
    assert report.winner is not None and Path(report.winner_path).is_dir()  # type: ignore[arg-type]
    assert any("synthetic" in n and "never certify" in n for n in report.notes)


@pytest.mark.parametrize(("args", "needle"), [
    (["--objective", "speed"], "unknown --objective 'speed'"),
    (["--prune", "0,1.5"], "--prune 1.5: pruning ratios must be in [0, 1)"),
    (["--prune", "half"], "--prune 'half': expected a comma-separated list"),
    (["--precisions", "int4"], "unknown --precisions 'int4'"),
    (["--fp32-layers", "-1"], "--fp32-layers '-1': layer counts must be >= 0"),
    (["-t", "rpi6"], "unknown target 'rpi6'"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_build(args: list[str], needle: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["optimize", "-m", "digits-cnn", "-o", str(tmp_path), *args]) == 2
    stderr = " ".join(capsys.readouterr().err.split())  # the console may wrap a long line
    assert needle in stderr
    assert not any(tmp_path.iterdir())  # refused before any work
