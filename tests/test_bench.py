"""The characterization runner on tiny real ORT artifacts: sweeps, repeats, throughput, energy,
concurrency, LoadGen, CSV/JSON, estimates, the HTML report (rendered in headless Chromium) and
remote benching over loopback."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import onnx
import pytest

from deploypipe.api import BuildConfig, build
from deploypipe.bench import BenchConfig, SweepConfig, run_bench
from deploypipe.bench import energy as en
from deploypipe.bench.remote import bench_remote
from deploypipe.bench.report import render_html, speedups, write_report
from deploypipe.bench.serve import serve
from deploypipe.bench.table import WIDE, render, write_csv
from tests.conftest import assert_renders, tiny_classifier

FAST = {"iterations": 5, "warmup": 1, "min_seconds": 0.05}


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two models on the host (fp32, one int8 too) and one artifact for rpi4 (not here)."""
    root = tmp_path_factory.mktemp("bench")
    onnx.save(tiny_classifier(0), str(root / "a.onnx"))
    onnx.save(tiny_classifier(1, 1000), str(root / "b.onnx"))
    out = root / "arts"
    build(BuildConfig(model=str(root / "a.onnx"), output=out))
    build(BuildConfig(model=str(root / "a.onnx"), output=out, quantize="int8"))
    build(BuildConfig(model=str(root / "b.onnx"), output=out))
    build(BuildConfig(model=str(root / "a.onnx"), output=out, target="rpi4", compiler="onnxruntime"))
    return out


@pytest.fixture(scope="module")
def results(arts: Path) -> list:
    cfg = BenchConfig(**FAST, throughput_runs=20, workers=2, energy="auto", profile=True)
    return run_bench([arts], cfg, sweep=SweepConfig(repeats=2))


def test_measures_everything_with_labels(results: list) -> None:
    assert len(results) == 4 and all(r.ran for r in results)
    for r in results:
        assert r.where.startswith("measured on") and r.latency_ms.p50 > 0 and r.cold_start.model_load_s > 0
        assert r.run_to_run is not None and len(r.run_to_run.medians_ms) == 2 and r.run_to_run.spread_pct >= 0
        assert r.throughput.workers == 2 and r.throughput.ips > 0 and "concurrent runner instances" in r.throughput.method
        assert r.layers and r.model_stats["macs"] > 0 and r.context["versions"]["onnxruntime"]
        # no sensor on this machine: the energy is the host figures' estimate, labelled so
        assert r.energy.measured or r.energy.source.startswith("estimated from host-cpu figures")
        assert r.efficiency is not None and r.efficiency.ips_per_watt > 0


def test_estimates_and_their_error(results: list) -> None:
    by = {r.name: r for r in results}
    rpi4 = by["a-rpi4-onnxruntime-fp32"]
    assert rpi4.estimated_ms > 0 and rpi4.estimate_label.startswith("estimated by roofline(rpi4 figures)")
    assert rpi4.efficiency.ips_per_usd is None and "this host" in rpi4.efficiency.source  # host: no price figure
    host = by["a-host-cpu-onnxruntime-fp32"]
    assert host.estimate_error is not None and "leave-one-out" in host.estimate_label
    assert by["a-host-cpu-onnxruntime-int8"].estimated_ms is None


def test_unrunnable_artifact_gets_labelled_estimate(arts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "arts"
    shutil.copytree(arts, copy)
    mf = copy / "a-rpi4-onnxruntime-fp32" / "manifest.json"
    data = json.loads(mf.read_text())
    data["kind"] = "no-such-runtime"
    mf.write_text(json.dumps(data))
    res = {r.name: r for r in run_bench([copy], BenchConfig(**FAST))}
    r = res["a-rpi4-onnxruntime-fp32"]
    assert not r.ran and "no runner" in r.reason
    assert r.estimated_ms > 0 and "calibrated on" in r.estimate_label
    assert not r.energy.measured and r.energy.source.startswith("estimated from rpi4 figures")
    assert r.efficiency.ips_per_usd > 0 and "estimated latency" in r.efficiency.source


def test_threads_affinity_sweep_and_concurrency(arts: Path) -> None:
    host = [arts / "a-host-cpu-onnxruntime-fp32", arts / "b-host-cpu-onnxruntime-fp32"]
    cores = sorted(os.sched_getaffinity(0))
    sweep = SweepConfig(threads=[1, 2], affinity=[[cores[0]], cores[:2]], concurrency=2, memory_limit_mb=1e6)
    res = run_bench(host, BenchConfig(**FAST, energy="off"), sweep=sweep)
    solo = [r for r in res if r.concurrency == 1]
    assert {(r.threads, tuple(r.affinity)) for r in solo} == {(t, tuple(a)) for t in (1, 2) for a in sweep.affinity}
    assert all(r.energy is None for r in res)
    conc = [r for r in res if r.concurrency == 2]
    assert len(conc) == 2 and {r.concurrent_with[0] for r in conc} == {r.name for r in conc}
    tight = run_bench(host, BenchConfig(**FAST), sweep=SweepConfig(concurrency=2, memory_limit_mb=1.0))
    assert all(r.concurrency == 1 for r in tight)  # memory bound: never run together


def test_rail_meter_integrates_power_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rail = tmp_path / "in_power0_input"
    rail.write_text("5000\n")  # 5 W in mW, like a Jetson INA3221 rail
    monkeypatch.setenv(en.POWER_FILES_ENV, str(rail))
    meter = en.find_meter("auto", on_gpu=False)
    assert isinstance(meter, en.RailMeter)
    meter.start()
    threading.Event().wait(0.3)
    joules = meter.stop()
    assert 1.2 < joules < 2.5
    e = en.measured(joules, 0.3, 10, meter, "here")
    assert e.measured and e.source.startswith("measured by power files") and 4 < e.avg_power_w < 8


def test_loadgen_singlestream_writes_logs(arts: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlperf_loadgen")
    cfg = BenchConfig(iterations=20, warmup=1, min_seconds=0.2, scenario="singlestream", loadgen_dir=str(tmp_path))
    (r,) = run_bench([arts / "a-host-cpu-onnxruntime-fp32"], cfg)
    assert r.ran, r.reason
    log = Path(r.loadgen["log_dir"])
    assert (log / "mlperf_log_summary.txt").is_file() and (log / "mlperf_log_detail.txt").is_file()
    assert r.loadgen["Scenario"] == "SingleStream" and r.loadgen["Result is"] in ("VALID", "INVALID")


def test_csv_json_table(results: list, tmp_path: Path) -> None:
    write_csv(results, tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 4 and float(rows[0]["p50_ms"]) > 0 and rows[0]["estimate_label"] is not None
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(render(results, WIDE))  # the default table shows names without the target (own column)
    assert "a-rpi4" in console.export_text()


def test_report_html_renders_in_chromium(results: list, tmp_path: Path) -> None:
    assert speedups(results) and speedups(results)[0][1].precision == "fp32"
    page = render_html(results)
    # 5 plots of seeds 000-003, plus latency vs accuracy per target and per-model latency across devices
    assert page.count("data:image/png;base64,") == 7 and "estimated" in page and "src=\"http" not in page
    assert page.count("<table class='context'>") == 1 and page.count("<pre>") == 0  # one context table, no JSON dumps
    data = tmp_path / "r.json"
    data.write_text(json.dumps([r.model_dump() for r in results]))
    assert_renders(write_report(data, tmp_path / "report.html"), tmp_path)


def test_remote_over_loopback(arts: Path) -> None:
    ready = threading.Event()
    addr: list[str] = []

    def on_ready(h: str, p: int) -> None:
        addr.append(f"{h}:{p}")
        ready.set()

    server = threading.Thread(target=serve, kwargs={"port": 0, "max_requests": 1, "idle_timeout_s": 60,
                                                     "on_ready": on_ready}, daemon=True)
    server.start()
    assert ready.wait(10)
    r = bench_remote(addr[0], arts / "a-host-cpu-onnxruntime-fp32", BenchConfig(**FAST))
    server.join(30)
    assert not server.is_alive()  # bounded: stopped after its one request
    assert r.ran and r.remote == addr[0] and "by serve-runtime" in r.where and r.latency_ms.p50 > 0


def test_cli_bench_remote_report_and_bad_input(arts: Path, tmp_path: Path, cli) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "deploypipe", "serve-runtime", "--port", "0", "--max-requests", "1",
                             "--idle-timeout", "60"], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    line = proc.stdout.readline()
    assert line.startswith("serving"), "serve-runtime did not start"
    addr = line.strip().rsplit(" ", 1)[-1]
    res = cli("bench", str(arts / "b-host-cpu-onnxruntime-fp32"), "--remote", addr, "--iterations", "5",
              "--min-seconds", "0.05", "--json-file", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"))
    assert res.returncode == 0, res.stderr
    proc.wait(30)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data[0]["remote"] == addr and (tmp_path / "r.csv").is_file()
    rep = cli("report", str(tmp_path / "r.json"), "-o", str(tmp_path / "r.html"))
    assert rep.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    bad = cli("bench", str(arts), "--affinity", "0,x")
    assert bad.returncode == 2 and "--affinity" in bad.stderr
    bad = cli("bench", str(arts), "--energy", "solar")
    assert bad.returncode == 2 and "energy" in bad.stderr
    bad = cli("report", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and "missing.json" in bad.stderr


def test_report_pairs_pruned_rows_by_their_passes_not_their_names() -> None:
    """A pruned FP32 artifact built with a custom --name is still an optimization of the FP32
    baseline: the pairing reads the manifest's pass list carried into the result."""
    from deploypipe.bench.results import BenchResult

    def row(name: str, ms: float, passes: list[str]) -> BenchResult:
        return BenchResult.model_validate({
            "artifact": name, "name": name, "model": "resnet50", "target": "host-cpu", "compiler": "onnxruntime",
            "precision": "fp32", "kind": "onnxruntime", "ran": True, "passes": passes,
            "latency_ms": {"n": 3, "mean": ms, "std": 0.0, "p50": ms, "p90": ms, "p99": ms, "min": ms}})

    slim, base = row("my-slim-resnet", 20.0, ["simplify", "prune"]), row("resnet-ref", 40.0, ["simplify"])
    (pair,) = speedups([slim, base])
    assert pair[0] is slim and pair[1] is base and pair[2] == pytest.approx(2.0)


def test_config_threads_and_affinity_hold_without_a_sweep(arts: Path) -> None:
    """run_bench(paths, BenchConfig(threads=1)) measures with 1 thread: a sweep that names no
    threads/cores must not reset the config's to the runtime default (it did, silently)."""
    one = next(p for p in sorted(arts.iterdir()) if "host-cpu" in p.name)
    (res,) = run_bench([one], BenchConfig(**FAST, threads=1, affinity=[0]))
    assert res.ran and res.threads == 1 and res.affinity == [0]
    (res,) = run_bench([one], BenchConfig(**FAST, threads=1), sweep=SweepConfig(repeats=1))
    assert res.threads == 1
    (res,) = run_bench([one], BenchConfig(**FAST, threads=1), sweep=SweepConfig(threads=[2]))
    assert res.threads == 2  # a sweep that names threads wins


@pytest.mark.parametrize("use_filter", [True, False] if hasattr(__import__("tarfile"), "data_filter") else [False])
def test_remote_upload_unpacks_safely_with_or_without_the_data_filter(tmp_path: Path, use_filter: bool) -> None:
    """serve-runtime unpacks uploads; Pythons before 3.11.4 (Debian 12's 3.11.2) have no tarfile
    "data" filter, and extractall(filter=...) raised TypeError there: the same rules apply either way."""
    import io
    import tarfile

    from deploypipe.bench.serve import safe_extract
    from deploypipe.errors import InputFileError

    def archive(name: str, link: bool = False) -> tarfile.TarFile:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"ok"))
        buf.seek(0)
        return tarfile.open(fileobj=buf, mode="r:gz")

    safe_extract(archive("art/manifest.json"), tmp_path, use_filter=use_filter)
    assert (tmp_path / "art" / "manifest.json").read_text() == "ok"
    for bad, link in [("../escape.txt", False), ("/abs.txt", False), ("art/link", True)]:
        with pytest.raises(InputFileError, match="unsafe archive member"):
            safe_extract(archive(bad, link), tmp_path / "x", use_filter=use_filter)
    assert not (tmp_path / "escape.txt").exists()
