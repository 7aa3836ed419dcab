"""Campaigns on tiny real models: the grid and its refusals, build cache hits, resumption after a
kill, the results store and `deploypipe results`, the process-pool and Ray executors, a loopback TVM
RPC tracker with two devices, and the campaign report rendered in headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from deploypipe import run_campaign
from deploypipe.campaign import grid, spec
from deploypipe.campaign.store import SCHEMA_VERSION, Store
from deploypipe.errors import InputFileError
from tests.conftest import ROOT, assert_renders, tiny_classifier

BENCH = """
[bench]
iterations = 5
warmup = 1
min_seconds = 0.05
"""


def _models(root: Path) -> tuple[Path, Path]:
    a, b = root / "tiny_a.onnx", root / "tiny_b.onnx"
    onnx.save(tiny_classifier(0), str(a))
    onnx.save(tiny_classifier(1, 1000), str(b))
    return a, b


def _file(root: Path, body: str) -> Path:
    path = root / "campaign.toml"
    path.write_text(body)
    return path


def _quick(root: Path, name: str = "t") -> Path:
    """Two tiny models on this host and on an rpi4 that is not here, FP32 and INT8 with ONNX Runtime,
    and TVM FP16 (which neither target file allows)."""
    a, b = _models(root)
    return _file(root, f"""
name = "{name}"
models = ["{a}", "{b}"]
targets = ["host-cpu", "rpi4"]
[[variants]]
compiler = "onnxruntime"
precision = ["fp32", "int8"]
[[variants]]
compiler = "tvm"
precision = "fp16"
{BENCH}""")


def _statuses(store: Path, campaign: str) -> dict[tuple[str, str, str], str]:
    with Store(store) as db:
        return {(r["model"], r["target"], r["variant"]): r["status"] for r in db.query(campaign=campaign)}


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """The quick campaign run once, serially: (file, store, report)."""
    root = tmp_path_factory.mktemp("campaign")
    file = _quick(root)
    report = run_campaign(file, output=root / "out", executor="serial")
    return file, root / "out" / "results.db", report


def test_grid_lists_every_refusal_with_its_reason(tmp_path: Path) -> None:
    a, _ = _models(tmp_path)
    file = _file(tmp_path, f"""
name = "g"
models = ["{a}"]
targets = ["host-cpu", "jetson-nano", "edgetpu"]
[[variants]]
compiler = ["onnxruntime", "tensorrt"]
precision = ["fp32", "int8"]
[[exclude]]
target = "edgetpu"
precision = "fp32"
reason = "the Edge TPU runs only full-integer models"
""")
    cells = grid.expand(spec.load(file))
    assert len(cells) == 3 * 4  # every combination is a row, none dropped
    by = {(c.target, c.variant.name): c for c in cells}
    assert by[("host-cpu", "onnxruntime-int8")].status == "planned"
    assert "cannot be built with compiler 'tensorrt'" in by[("host-cpu", "tensorrt-fp32")].reason
    nano = by[("jetson-nano", "tensorrt-int8")]  # the target file's own reason, strict by default
    assert nano.status == "refused" and nano.reason.startswith("int8 is not possible on jetson-nano")
    assert by[("jetson-nano", "tensorrt-fp32")].status == "planned"
    assert by[("edgetpu", "onnxruntime-fp32")].reason == "the Edge TPU runs only full-integer models"
    assert by[("edgetpu", "onnxruntime-int8")].status == "refused"  # not excluded: the target refuses it
    assert all(c.reason for c in cells if c.status != "planned")


@pytest.mark.parametrize(("body", "needle"), [
    ('name = "x"\nmodels = ["digits-cnn"]\ntargets = ["host-cpu"]\nspeed = 1\n', "speed: Extra inputs are not permitted"),
    ('name = "x"\nmodels = ["digits-cnn"]\ntargets = ["host-cpu"]\n[[variants]]\nprecision = "int4"\n',
     "variants[0].precision:"),
    ('name = "x"\nmodels = ["digits-cnn"]\ntargets = ["rpi6"]\n', "targets[0]: unknown target 'rpi6'. Did you mean: rpi5, rpi4, rpi3?"),
    ('name = "x"\nmodels = ["resnet5O"]\ntargets = ["host-cpu"]\n', "models[0]: unknown model 'resnet5O'"),
    ('name = "x"\nmodels = ["digits-cnn"]\ntargets = ["host-cpu"]\n[[variants]]\nprune = 1.5\n', "variants[0].prune:"),
    ('name = "x"\nmodels = ["digits-cnn"]\ntargets = ["host-cpu"]\n[farm]\nkeys = { host-cpu = "a" }\n',
     "farm.keys needs farm.tracker"),
    ('name = "x"\nmodels = [\n', "not valid TOML"),
])
def test_a_bad_campaign_file_is_one_line_naming_the_key(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(InputFileError) as exc:
        spec.load(_file(tmp_path, body))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_the_cli_plan_and_its_errors(tmp_path: Path, cli) -> None:
    res = cli("campaign", str(_file(tmp_path, 'name = "x"\nmodels = ["digits-cnn"]\ntargets = ["rpi6"]\n')), "--plan")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "targets[0]" in res.stderr
    res = cli("campaign", str(_quick(tmp_path)), "--plan", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert len(plan) == 12 and sum(c["status"] == "refused" for c in plan) == 4


def test_campaign_measures_here_estimates_the_rest_and_labels_both(done: tuple) -> None:
    _, store, report = done
    assert report.counts == {"measured": 4, "estimated": 4, "refused": 4} and report.builds == 8
    assert report.where == {"here": 4, "estimate": 4}
    with Store(store) as db:
        rows = db.query(campaign="t")
        assert db.version == SCHEMA_VERSION
    for r in rows:
        if r["target"] == "host-cpu" and r["status"] == "measured":
            assert r["measured_label"].startswith("measured on") and r["measured_p50_ms"] > 0
            assert r["estimated_ms"] is None and r["estimate_label"] is None
        elif r["status"] == "estimated":
            assert r["measured_p50_ms"] is None and r["measured_label"] is None
            assert r["estimate_label"].startswith("estimated by roofline(rpi4") and r["estimated_ms"] > 0
            assert "rpi4 is not this host" in r["reason"]
        else:
            assert r["status"] == "refused" and "compiler tvm supports only fp32, int8" in r["reason"]
    kinds = sqlite3.connect(store).execute("SELECT kind, COUNT(*) FROM figures GROUP BY kind").fetchall()
    assert dict(kinds) == {"measured": 4, "estimated": 4}


def test_a_second_run_redoes_nothing(done: tuple) -> None:
    file, store, _ = done
    again = run_campaign(file, output=store.parent, executor="serial")
    assert again.resumed == 12 and again.builds == 0 and again.counts["measured"] == 4


def test_results_cli_filters_json_and_csv(done: tuple, cli) -> None:
    _, store, _ = done
    res = cli("results", str(store), "--target", "rpi4", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {r["target"] for r in rows} == {"rpi4"} and len(rows) == 6
    res = cli("results", str(store), "--model", "tiny_a", "--campaign", "t", "--csv")
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == 6 and {r["model"] for r in table} == {"tiny_a"}
    assert {"measured_p50_ms", "measured_label", "estimated_ms", "estimate_label"} <= set(table[0])
    text = cli("results", str(store))
    assert text.returncode == 0 and "estimated by roofline" in text.stdout and "measured on" in text.stdout


def test_the_store_refuses_a_newer_schema(tmp_path: Path, cli) -> None:
    path = tmp_path / "r.db"
    with Store(path) as db:
        assert db.version == SCHEMA_VERSION
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(InputFileError, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        Store(path)
    res = cli("results", str(path))
    assert res.returncode == 2 and "upgrade deploypipe" in res.stderr


def test_a_killed_campaign_resumes_without_redoing_finished_cells(tmp_path: Path) -> None:
    file = _quick(tmp_path, "k")
    cmd = [sys.executable, "-m", "deploypipe", "campaign", str(file), "-o", str(tmp_path / "out"),
           "--executor", "serial", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    for line in proc.stdout:  # one JSON line per finished cell: stop it after the first measurement
        if json.loads(line).get("status") == "measured":
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    store = tmp_path / "out" / "results.db"
    first = {k: s for k, s in _statuses(store, "k").items() if s != "built"}
    assert "measured" in first.values() and len(first) < 12
    report = run_campaign(file, output=tmp_path / "out", executor="serial")
    assert report.resumed == len(first) and report.cells == 12
    assert report.builds == 8 - sum(1 for s in first.values() if s == "measured")
    assert report.cache_hits == report.builds  # identical cells, built before the kill: the build's cache key
    with Store(store) as db:
        second_run = [r for r in db.query(campaign="k") if r["run_id"] == report.run_id]
    assert not {(r["model"], r["target"], r["variant"]) for r in second_run} & set(first)
    assert report.counts == {"measured": 4, "estimated": 4, "refused": 4}


def test_pool_executor_fans_out_builds(done: tuple, tmp_path: Path) -> None:
    file, store, _ = done
    report = run_campaign(file, output=tmp_path / "pool", executor="pool", workers=2)
    assert report.executor == "pool (2 workers)" and report.builds == 8 and report.cache_hits == 0
    assert _statuses(tmp_path / "pool" / "results.db", "t") == _statuses(store, "t")


def test_ray_executor_on_a_local_instance(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    a, _ = _models(tmp_path)
    file = _file(tmp_path, f'name = "r"\nmodels = ["{a}"]\ntargets = ["host-cpu"]\n'
                           f'[[variants]]\nprecision = ["fp32", "int8"]\n{BENCH}')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # the workers import this checkout
    try:
        report = run_campaign(file, output=tmp_path / "out", executor="ray", workers=2)
    finally:
        ray.shutdown()
    assert report.executor.startswith("ray") and report.counts == {"measured": 2} and report.builds == 2


def test_a_target_with_a_serve_runtime_host_is_measured_there(tmp_path: Path) -> None:
    import threading

    from deploypipe.bench.serve import serve

    a, _ = _models(tmp_path)
    token = tmp_path / "token"
    ready: list[str] = []
    server = threading.Thread(target=serve, daemon=True, kwargs={
        "port": 0, "max_requests": 1, "idle_timeout_s": 120, "token_file": token, "workdir": tmp_path / "srv",
        "on_ready": lambda h, p: ready.append(f"{h}:{p}")})
    server.start()
    deadline = time.monotonic() + 30
    while not ready:
        assert time.monotonic() < deadline and server.is_alive(), "serve-runtime did not start"
        time.sleep(0.1)
    file = _file(tmp_path, f'name = "s"\nmodels = ["{a}"]\ntargets = ["xeon"]\n'
                           f'[farm]\nremote = {{ xeon = "{ready[0]}" }}\ntoken_file = "{token}"\n{BENCH}')
    report = run_campaign(file, output=tmp_path / "out", executor="serial")
    server.join(30)
    assert report.where == {"remote": 1} and not server.is_alive()  # its one request was ours
    with Store(tmp_path / "out" / "results.db") as db:
        (row,) = db.query()
    assert "by serve-runtime" in row["measured_label"] and row["measured_p50_ms"] > 0


def test_a_serve_runtime_that_is_down_fails_its_cell_not_the_campaign(tmp_path: Path) -> None:
    import socket

    a, _ = _models(tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    file = _file(tmp_path, f'name = "d"\nmodels = ["{a}"]\ntargets = ["xeon"]\n'
                           f'[farm]\nremote = {{ xeon = "127.0.0.1:{port}" }}\n{BENCH}')
    report = run_campaign(file, output=tmp_path / "out", executor="serial")
    assert report.counts == {"estimated": 1}
    with Store(tmp_path / "out" / "results.db") as db:
        (row,) = db.query()
    assert row["reason"].startswith(f"not measured (remote): remote 127.0.0.1:{port}")
    assert row["estimate_label"].startswith("estimated by roofline(xeon")


@pytest.mark.tvm
def test_tvm_cells_go_to_their_device_on_the_tracker(tmp_path: Path) -> None:
    pytest.importorskip("tvm")
    from tvm import rpc
    from tvm_servers import free_port, host_server, started, started_together, tracker

    a, _ = _models(tmp_path)
    tport, pa, pb = free_port(), free_port(), free_port()
    addr = f"127.0.0.1:{tport}"
    file = _file(tmp_path, f"""
name = "farm"
models = ["{a}"]
targets = ["host-cpu", "xeon"]
[[variants]]
compiler = "tvm"
[farm]
tracker = "{addr}"
keys = {{ host-cpu = "board-a", xeon = "board-b" }}
{BENCH}""")
    with started(tracker(tport), tport, log=tmp_path / "tracker.log"), \
            started_together([(host_server(pa, addr, "board-a"), pa, tmp_path / "a.log"),
                              (host_server(pb, addr, "board-b"), pb, tmp_path / "b.log")]):
        deadline = time.monotonic() + 30
        while not all(k in str(rpc.connect_tracker("127.0.0.1", tport).summary()) for k in ("board-a", "board-b")):
            assert time.monotonic() < deadline, "the two devices never registered with the tracker"
            time.sleep(0.5)
        report = run_campaign(file, output=tmp_path / "out", executor="serial")
    assert report.where == {"farm": 2}, report
    with Store(tmp_path / "out" / "results.db") as db:
        labels = {r["target"]: r["measured_label"] for r in db.query()}
    assert labels == {"host-cpu": f"measured on the device key 'board-a' via tracker {addr} (input/output copies over RPC included)",
                      "xeon": f"measured on the device key 'board-b' via tracker {addr} (input/output copies over RPC included)"}


def test_campaign_report_renders_in_chromium(done: tuple, tmp_path: Path, cli) -> None:
    _, store, _ = done
    page = tmp_path / "report.html"
    res = cli("report", str(store), "-o", str(page), "--campaign", "t")
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    assert "What each variant buys, per target" in text and "Latency vs accuracy per target" in text
    assert "Per-model latency across devices" in text and "src=\"http" not in text
    assert text.count("<table class='context'>") == 1 and "Cells not built" in text
    assert "x E" in text  # the rpi4 speed-ups: estimate against estimate, marked
    assert_renders(page, tmp_path)


def test_a_zoo_model_at_another_input_shape_calibrates_at_that_shape() -> None:
    """Regression: the zoo's synthetic calibration inputs kept the entry's own shape (224x224) when
    --input-shape changed it, so every such build failed in its first pass."""
    from deploypipe.importers import ImportOptions, import_model

    model = import_model("squeezenet1.1", ImportOptions(input_shapes={"input": (1, 3, 32, 32)}))
    assert next(iter(model.calibration.samples(1)))["input"].shape == (1, 3, 32, 32)
