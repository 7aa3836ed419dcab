"""The everyday command line (issue 21): the bench table read at a glance at 100 columns, `--wide`
and `--columns`, `deploypipe doctor`, per-layer Chrome traces, progress kept off stdout, and the
torchvision/timm spellings of zoo names. Real artifacts of a tiny model, real runtimes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import onnx
import pytest
from rich.cells import cell_len
from rich.console import Console

from deploypipe import targets, zoo
from deploypipe.api import BuildConfig, build
from deploypipe.bench import BenchConfig, BenchResult, run_bench
from deploypipe.bench.report import render_html
from deploypipe.bench.table import COLUMNS, WIDE, pick_columns, render
from deploypipe.errors import UserError
from tests.conftest import tiny_classifier

FAST = {"iterations": 5, "warmup": 1, "min_seconds": 0.05}
TINY_NODES = {n.name for n in tiny_classifier().graph.node}


@pytest.fixture(scope="module")
def benched(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[BenchResult], Path]:
    """FP32 and INT8 ONNX Runtime, FP32 OpenVINO, and an rpi4 artifact with no runner here (estimated),
    benched with --profile --trace-dir."""
    root = tmp_path_factory.mktemp("everyday")
    onnx.save(tiny_classifier(0), str(root / "tiny.onnx"))
    out = root / "arts"
    fp32 = build(BuildConfig(model=str(root / "tiny.onnx"), output=out)).path
    build(BuildConfig(model=str(root / "tiny.onnx"), output=out, quantize="int8"))
    build(BuildConfig(model=str(root / "tiny.onnx"), output=out, compiler="openvino"))
    away = out / "tiny-rpi4-onnxruntime-fp32"
    shutil.copytree(fp32, away)
    data = json.loads((away / "manifest.json").read_text())
    data.update(name=away.name, target="rpi4", kind="no-such-runtime")
    (away / "manifest.json").write_text(json.dumps(data))
    traces = root / "traces"
    results = run_bench([out], BenchConfig(**FAST, profile=True, trace_dir=str(traces)))
    return results, traces


def _text(renderable: object, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_default_table_fits_100_columns_with_nothing_cut(benched: tuple[list[BenchResult], Path]) -> None:
    results, _ = benched
    text = _text(render(results))
    lines = text.splitlines()
    assert all(cell_len(line) <= 100 for line in lines), max(lines, key=cell_len)
    assert "…" not in "\n".join(lines[:len(results) + 2])  # no table cell is cut
    by = {r.name: r for r in results}
    def row(r: BenchResult) -> str:  # the artifact column: 'tiny onnxruntime fp32' (the target has its own)
        short = f"{r.model} {r.compiler} {r.precision}"
        return next(line for line in lines if line.startswith(short + " ") and line[len(short):].split()[0] == r.target)

    for r in results:
        if r.ran:
            assert format(r.latency_ms.p50, ".3g") in row(r) and format(r.latency_ms.p90, ".3g") in row(r)
            assert f"{r.fidelity['cosine']:.5f}" in row(r) and "here" in row(r)
    fp32, int8 = by["tiny-host-cpu-onnxruntime-fp32"], by["tiny-host-cpu-onnxruntime-int8"]
    speedup = f"{fp32.latency_ms.p50 / int8.latency_ms.p50:.2f}x"
    assert speedup in row(int8)
    away = by["tiny-rpi4-onnxruntime-fp32"]
    assert not away.ran and away.estimated_ms is not None
    assert "est." in row(away) and format(away.estimated_ms, ".3g") in row(away)  # the only latency figure there is
    reason = [line for line in lines if line.startswith("estimated: tiny-rpi4-onnxruntime-fp32 — ")]
    assert len(reason) == 1 and "no runner for artifact kind" in reason[0]


def test_long_reasons_stay_on_one_line(benched: tuple[list[BenchResult], Path]) -> None:
    results, _ = benched
    away = next(r for r in results if not r.ran)
    long = away.model_copy(update={"reason": "cannot run here: " + "the device library needs a board; " * 8})
    lines = _text(render([long])).splitlines()
    reason = [line for line in lines if "cannot run here" in line]
    assert len(reason) == 1 and reason[0].endswith("…") and cell_len(reason[0]) <= 100


def test_columns_and_wide(benched: tuple[list[BenchResult], Path]) -> None:
    results, _ = benched
    chosen = pick_columns("artifact,p50,speedup")
    header = next(line for line in _text(render(results, chosen)).splitlines() if line.startswith("artifact"))
    assert header.split() == ["artifact", "p50", "ms", "vs", "fp32"]
    wide = _text(render(results, pick_columns(None, wide=True)), width=400)
    for key in ("p99", "ips_w", "est_err", "trace", "load"):
        assert COLUMNS[key].header in wide and key in WIDE
    assert Path(results[0].trace).name in wide
    with pytest.raises(UserError, match="unknown column.*nope"):
        pick_columns("artifact,nope")


def test_cli_bench_columns_and_trace_dir_need_their_partners(benched: tuple[list[BenchResult], Path], cli) -> None:
    results, _ = benched
    art = Path(results[0].artifact)
    bad = cli("bench", str(art), "--columns", "p50,nope")
    assert bad.returncode == 2 and "unknown column" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    lonely = cli("bench", str(art), "--trace-dir", "t")
    assert lonely.returncode == 2 and "--trace-dir needs --profile" in lonely.stderr


def test_onnxruntime_trace_is_chrome_json_with_onnx_node_names(benched: tuple[list[BenchResult], Path]) -> None:
    results, traces = benched
    r = next(r for r in results if r.name == "tiny-host-cpu-onnxruntime-fp32")
    path = Path(r.trace)
    assert path.parent == traces.resolve() and path.is_file()
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    assert trace["otherData"]["runtime"] == "onnxruntime" and "own profiler" in trace["otherData"]["source"]
    for ev in events:
        assert isinstance(ev["name"], str) and ev["ph"] in ("X", "M", "B", "E", "i")
        if ev["ph"] == "X":
            assert ev["dur"] >= 0 and ev["ts"] >= 0 and "pid" in ev and "tid" in ev
    kernels = [ev for ev in events if ev.get("cat") == "Node" and "onnx_node" in ev.get("args", {})]
    assert kernels and {ev["name"] for ev in kernels} <= TINY_NODES
    # the fused Conv+BatchNorm+Relu kernel (ORT names it after the Relu's output) is the Conv, as in TVM/TFLite
    assert {"conv", "pool", "fc"} <= {ev["name"] for ev in kernels} and "relu" not in {ev["name"] for ev in kernels}
    assert all(ev["args"]["backend_name"] for ev in kernels)


def test_openvino_trace_names_map_to_the_source_onnx(benched: tuple[list[BenchResult], Path]) -> None:
    results, _ = benched
    r = next(r for r in results if r.name == "tiny-host-cpu-openvino-fp32")
    trace = json.loads(Path(r.trace).read_text())
    layers = [ev for ev in trace["traceEvents"] if ev["ph"] == "X"]
    assert len(layers) == len(r.layers)
    named = {ev["name"] for ev in layers if "onnx_node" in ev["args"]}
    assert named and named <= TINY_NODES and set(trace["otherData"]["onnx_nodes"]) == named
    # OpenVINO's own names differ (e.g. 'c/WithoutBiases'): kept beside the ONNX name
    assert any(ev["args"]["backend_name"] != ev["name"] for ev in layers)


def test_report_links_the_traces(benched: tuple[list[BenchResult], Path]) -> None:
    results, traces = benched
    page = render_html(results, page_dir=traces.parent)
    for r in results:
        if r.trace:
            assert f'href="traces/{Path(r.trace).name}"' in page


def test_doctor_json_is_fast_complete_and_exits_0(cli) -> None:
    start = time.perf_counter()
    proc = cli("doctor", "--json")
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert took < 5, f"doctor took {took:.1f} s"
    report = json.loads(proc.stdout)
    assert set(report) >= {"deploypipe", "python", "cpu", "backends", "tools", "targets", "warnings"}
    names = {b["name"] for b in report["backends"]}
    assert names >= {"onnxruntime", "openvino", "nncf", "tvm", "ai-edge-litert", "TFLite converter venv", "hls4ml",
                     "tensorrt", "loadgen"}
    for item in report["backends"] + report["tools"]:
        assert set(item) == {"name", "found", "detail", "hint"} and (item["detail"] if item["found"] else item["hint"])
    onnxruntime = next(b for b in report["backends"] if b["name"] == "onnxruntime")
    import onnxruntime as ort

    assert onnxruntime["found"] and onnxruntime["detail"] == ort.__version__
    tools = {t["name"]: t for t in report["tools"]}
    assert {"qemu-aarch64-static", "arm64 root", "NVIDIA GPU", "edgetpu_compiler", "vivado", "trtexec"} <= set(tools)
    assert tools["qemu-aarch64-static"]["found"] == bool(shutil.which("qemu-aarch64-static"))
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith(("flags", "Features"))).split(":", 1)[1].split())
    assert report["cpu"]["features"] and all(v == (k in flags) for k, v in report["cpu"]["features"].items())
    verdicts = {t["name"]: t for t in report["targets"]}
    assert set(verdicts) == set(targets.all_targets())
    assert all(t["run"] in ("here", "emulation", "estimate", "none") for t in verdicts.values())
    assert verdicts["host-cpu"]["run"] == "here" and "onnxruntime" in verdicts["host-cpu"]["builds"]
    human = cli("doctor")
    assert human.returncode == 0 and "Targets" in human.stdout and "host-cpu" in human.stdout


def test_torchvision_and_timm_spellings_are_aliases() -> None:
    assert zoo.get("mobilenet_v2").name == "mobilenet-v2"
    assert zoo.get("googlenet").name == "inception-v1"
    assert zoo.get("squeezenet1_1").name == "squeezenet1.1"
    assert zoo.get("shufflenet_v2_x0_5").name == "shufflenet-v2-0.5"
    assert zoo.get("MobileNetV2_100").name == "mobilenet-v2"
    assert all(zoo.get(a).name == name for a, name in zoo.ALIASES.items())
    with pytest.raises(UserError, match="Did you mean: resnet50"):
        zoo.get("resnet5")


@pytest.mark.slow  # torch export: ~13 s on the 2-core CI machine
def test_alias_builds_the_canonical_model(tmp_path: Path, cli) -> None:
    proc = cli("build", "--model", "digits_mlp", "-o", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert Path(json.loads(proc.stdout)["path"]).name == "digits-mlp-host-cpu-onnxruntime-fp32"


def test_unknown_model_still_gets_suggestions(cli) -> None:
    proc = cli("build", "--model", "mobilenet_v3_large")
    assert proc.returncode == 2 and "unknown model 'mobilenet_v3_large'. Did you mean: mobilenet-v2" in proc.stderr


def test_progress_goes_to_stderr_with_counts_and_never_to_stdout(tmp_path: Path) -> None:
    import subprocess

    onnx.save(tiny_classifier(), str(tmp_path / "tiny.onnx"))
    env = {**os.environ, "FORCE_COLOR": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160"}  # as in a terminal
    proc = subprocess.run([sys.executable, "-m", "deploypipe", "build", "--model", str(tmp_path / "tiny.onnx"),
                           "--quantize", "int8", "-o", str(tmp_path / "arts"), "--json"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest"]["precision"] == "int8"  # stdout is the JSON and nothing else
    assert "building" in proc.stderr and "0:00:0" in proc.stderr  # the spinner with its elapsed time


def test_progress_steps_are_strings_with_counts(tmp_path: Path) -> None:
    from deploypipe.progress import Step

    onnx.save(tiny_classifier(), str(tmp_path / "tiny.onnx"))
    seen: list[str] = []
    build(BuildConfig(model=str(tmp_path / "tiny.onnx"), output=tmp_path, quantize="int8"), progress=seen.append)
    steps = [m for m in seen if isinstance(m, Step)]
    assert steps and [s.done for s in steps] == list(range(steps[0].total))
    assert all(s.startswith("int8: calibrating") for s in steps)


def test_fused_kernels_map_to_onnx_nodes_by_op_order() -> None:
    from deploypipe.bench.trace import by_op_order, from_layers
    from deploypipe.backends.runner import LayerTime

    # what TVM's instrument reports for tiny_classifier (BatchNorm folded into the conv kernel)
    tvm = [LayerTime(name="fused_conv2d_add_relu", op="conv2d", ms=0.02), LayerTime(name="mean", op="mean", ms=0.01),
           LayerTime(name="fused_matmul_add1", op="matmul", ms=0.01), LayerTime(name="vm.builtin.*", op="vm.builtin", ms=0.0)]
    proto = tiny_classifier()
    assert by_op_order(tvm, proto) == {"fused_conv2d_add_relu": "conv", "mean": "pool", "fused_matmul_add1": "fc"}
    events = [e for e in from_layers(tvm, proto, "tvm") if e["ph"] == "X"]
    assert [e["name"] for e in events] == ["conv", "pool", "fc", "vm.builtin.*"]
    assert events[1]["ts"] == events[0]["ts"] + events[0]["dur"] and events[0]["args"]["onnx_node_by"] == "op order"


def test_shell_completion_completes_commands_and_options() -> None:
    import subprocess

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_DEPLOYPIPE_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        proc = subprocess.run([sys.executable, "-m", "deploypipe"], capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("deploypipe doc") == ["doctor"]
    assert complete("deploypipe bench --trace") == ["--trace-dir"]
