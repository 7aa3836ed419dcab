"""MLPerf LoadGen scenarios (SingleStream, Offline, Server) around any deploypipe runner, for users
who want MLPerf-comparable numbers. LoadGen writes its own logs (`mlperf_log_summary.txt`,
`mlperf_log_detail.txt`) into the folder given; the summary's figures are returned as a dict.

The query sample library holds the artifact's golden input only (performance mode, no accuracy
run): LoadGen measures timing, deploypipe's fidelity check covers correctness.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from deploypipe.backends.runner import Runner
from deploypipe.errors import MissingBackendError


def _summary(path: Path) -> dict[str, Any]:
    """`key : value` lines of mlperf_log_summary.txt (numbers as numbers)."""
    out: dict[str, Any] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if not sep or not value.strip() or key.startswith(("=", "*")):
            continue
        value = value.strip()
        try:
            out[key.strip()] = float(value) if "." in value or "e" in value else int(value)
        except ValueError:
            out[key.strip()] = value
    return out


def run(runner: Runner, feeds: dict[str, np.ndarray], scenario: str, outdir: Path, *, min_queries: int,
        min_seconds: float, expected_ms: float, server_qps: float) -> dict[str, Any]:
    """Run one LoadGen performance test; returns the summary's figures and the log folder."""
    try:
        import mlperf_loadgen as lg
    except ImportError as exc:
        raise MissingBackendError("mlcommons-loadgen", "bench") from exc

    outdir.mkdir(parents=True, exist_ok=True)
    pending: queue.Queue[list[Any] | None] = queue.Queue()

    def process(samples: list[Any]) -> None:
        for s in samples:
            runner.infer(feeds, check=False)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0)])

    def serve() -> None:  # Server queries arrive from LoadGen's thread; answer them from ours
        while (item := pending.get()) is not None:
            process(item)

    worker = threading.Thread(target=serve, daemon=True) if scenario == "server" else None
    issue = pending.put if worker else process

    settings = lg.TestSettings()
    settings.scenario = {"singlestream": lg.TestScenario.SingleStream, "offline": lg.TestScenario.Offline,
                         "server": lg.TestScenario.Server}[scenario]
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_query_count = min_queries
    settings.min_duration_ms = int(min_seconds * 1000)
    settings.single_stream_expected_latency_ns = int(expected_ms * 1e6)
    settings.offline_expected_qps = 1000.0 / expected_ms
    settings.server_target_qps = server_qps
    settings.server_target_latency_ns = int(max(expected_ms * 4, 10) * 1e6)
    log = lg.LogSettings()
    log.log_output.outdir = str(outdir)
    log.log_output.copy_summary_to_stdout = False

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(1, 1, lambda _idx: None, lambda _idx: None)
    if worker:
        worker.start()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        if worker:
            pending.put(None)
            worker.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return {"scenario": scenario, "log_dir": str(outdir), **_summary(outdir / "mlperf_log_summary.txt")}
