"""TVM over RPC against real servers on loopback: bench via `--rpc` and via a tracker with a key,
and MetaSchedule tuning that measures its candidates on the tracker's device."""

from __future__ import annotations

import json
import time
from pathlib import Path

import onnx
import pytest
from conftest import tiny_classifier
from tvm_servers import free_port, host_server, started, tracker

pytestmark = pytest.mark.tvm
pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deploypipe.api import BuildConfig, build

    tmp = tmp_path_factory.mktemp("rpc")
    model = tmp / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    return build(BuildConfig(model=str(model), compiler="tvm", output=tmp / "art", tuning_logs=tmp / "logs")).path


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory):
    """A tracker with one loopback board registered under key 'loopback' (a board registered with a
    tracker only takes sessions the tracker hands out), and a plain server for direct `--rpc`."""
    from tvm import rpc

    tport, sport, dport = free_port(), free_port(), free_port()
    log = tmp_path_factory.mktemp("farm")
    with started(tracker(tport), tport, log=log / "tracker.log"), \
            started(host_server(sport, f"127.0.0.1:{tport}", "loopback"), sport, log=log / "server.log"), \
            started(host_server(dport), dport, log=log / "direct.log"):
        deadline = time.monotonic() + 30
        while "loopback" not in str(rpc.connect_tracker("127.0.0.1", tport).summary()):
            assert time.monotonic() < deadline, "server never registered with the tracker"
            time.sleep(0.5)
        yield f"127.0.0.1:{tport}", f"127.0.0.1:{dport}"


def _bench(cli, artifact: Path, *remote: str, code: int = 0) -> dict:
    res = cli("bench", str(artifact), "--iterations", "3", "--warmup", "1", *remote, "--json")
    assert res.returncode == code, res.stderr  # 3: nothing was measured
    (result,) = json.loads(res.stdout)
    return result


def test_bench_over_rpc_direct_and_via_tracker(cli, artifact: Path, farm: tuple[str, str]) -> None:
    tracker_addr, server_addr = farm
    for remote, label in (
        (("--device", f"rpc://{server_addr}"), f"TVM RPC server {server_addr}"),
        (("--device", f"tracker://{tracker_addr}/loopback"), f"device key 'loopback' via tracker {tracker_addr}"),
        (("--rpc", server_addr), f"TVM RPC server {server_addr}"),  # the old spelling, kept for one release
    ):
        r = _bench(cli, artifact, *remote)
        assert r["ran"], r["reason"]
        assert label in r["where"] and "emulation" not in r["where"]
        assert r["fidelity"]["max_abs_err"] < 1e-4 and r["latency_ms"]["n"] >= 3


def test_bad_remote_is_one_clear_error(cli, artifact: Path) -> None:
    res = cli("bench", str(artifact), "--tracker", "127.0.0.1:1")
    assert res.returncode == 2 and "--tracker and --key go together" in res.stderr
    res = cli("bench", str(artifact), "--device", "rpc://nohost")
    assert res.returncode == 2 and "expected SCHEME://HOST:PORT" in res.stderr
    res = cli("bench", str(artifact), "--device", "ftp://x:1")  # well formed, but no runner speaks ftp
    assert res.returncode == 2 and "expected rpc://HOST:PORT, tracker://HOST:PORT/KEY or qemu" in res.stderr
    r = _bench(cli, artifact, "--device", f"rpc://127.0.0.1:{free_port()}", code=3)
    assert not r["ran"] and "cannot reach the TVM RPC server" in r["reason"]


def test_tune_measures_on_the_tracker_device(cli, tmp_path: Path, farm: tuple[str, str]) -> None:
    from deploypipe.backends.tvm.relax import tuning_records

    model = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    res = cli("tvm", "tune", "--model", str(model), "--trials", "2", "--trials-per-iter", "2",
              "--device", f"tracker://{farm[0]}/loopback", "--tuning-logs", str(tmp_path / "logs"), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["measured_on"] == f"device key 'loopback' via tracker {farm[0]}"
    assert report["records_after"] == tuning_records(tmp_path / "logs" / "tiny" / "host-cpu") >= 2
