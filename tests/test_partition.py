"""Edge/cloud partitioning: cut enumeration on DAGs, halves equal the whole, analyzer, split runtime."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploypipe.errors import InputFileError, UnknownNameError, UserError
from deploypipe.partition import compress, graph, network
from deploypipe.partition.server import ort_executor

def _w(name: str, *shape: int) -> onnx.TensorProto:
    """Weights seeded by their name, so every call of a builder gives the same model."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], classes: int = 10) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _head(x: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    return ([helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)],
            [_w("fc_w", 10, 8), _w("fc_b", 10)])


def residual() -> onnx.ModelProto:
    """stem -> [conv a -> relu -> conv b] + skip -> relu -> head: one residual block."""
    body = [
        helper.make_node("Conv", ["input", "ws"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["s", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["s", "b"], ["sum"], name="add"),
        helper.make_node("Relu", ["sum"], ["out"], name="relu_out"),
    ]
    head, hw = _head("out")
    return _model(body + head, [_w("ws", 8, 3, 3, 3), _w("wa", 8, 8, 3, 3), _w("wb", 8, 8, 3, 3), *hw])


def inception() -> onnx.ModelProto:
    """stem -> three branches (1x1 conv, 3x3 conv, max pool + 1x1) -> concat -> 1x1 -> head."""
    body = [
        helper.make_node("Conv", ["input", "ws"], ["s"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["s", "w1"], ["b1"], name="branch1"),
        helper.make_node("Conv", ["s", "w3"], ["b3"], name="branch3", pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["p", "wp"], ["bp"], name="branch_pool"),
        helper.make_node("Concat", ["b1", "b3", "bp"], ["cat"], name="concat", axis=1),
        helper.make_node("Conv", ["cat", "wm"], ["mix"], name="mix"),
    ]
    head, hw = _head("mix")
    return _model(body + head, [_w("ws", 8, 3, 3, 3), _w("w1", 4, 8, 1, 1), _w("w3", 4, 8, 3, 3),
                                _w("wp", 4, 8, 1, 1), _w("wm", 8, 12, 1, 1), *hw])


def _x() -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}


def _back_to_back(proto: onnx.ModelProto, cut: graph.CutPoint) -> float:
    feeds = _x()
    want = ort_executor(proto.SerializeToString())(feeds)["logits"]
    edge, cloud = graph.split(proto, cut)
    mid = ort_executor(edge.SerializeToString())(feeds) if edge is not None else feeds
    got = ort_executor(cloud.SerializeToString())(mid)["logits"] if cloud is not None else mid["logits"]
    return float(np.abs(got - want).max())


def test_residual_cuts_carry_the_skip_branch() -> None:
    cuts = graph.enumerate_cuts(residual())
    by_after = {c.after: c.names for c in cuts}
    assert by_after["<input>"] == ["input"]
    assert by_after["stem"] == ["s"]  # a single-tensor cut before the block
    assert by_after["conv_a"] == ["s", "a"]  # inside the block: skip + main branch cross
    assert by_after["relu_a"] == ["s", "ra"]
    assert by_after["add"] == ["sum"]
    assert cuts[-1].tensors == () and cuts[-1].index == len(residual().graph.node)
    single = graph.enumerate_cuts(residual(), max_tensors=1)
    assert "conv_a" not in {c.after for c in single} and "add" in {c.after for c in single}
    assert next(c for c in cuts if c.after == "conv_a").nbytes == 2 * 8 * 8 * 8 * 4


def test_inception_cuts_carry_every_open_branch() -> None:
    cuts = {c.after: c for c in graph.enumerate_cuts(inception())}
    assert cuts["branch3"].names == ["s", "b1", "b3"]  # pool branch not started: the stem output still crosses
    assert cuts["branch_pool"].names == ["b1", "b3", "bp"]
    assert cuts["concat"].names == ["cat"]


@pytest.mark.parametrize("build", [residual, inception])
def test_halves_back_to_back_equal_the_whole(build) -> None:  # noqa: ANN001
    proto = build()
    for cut in graph.enumerate_cuts(proto):
        assert _back_to_back(proto, cut) < 1e-5, cut.after


def test_find_cut_and_bad_layer() -> None:
    cuts = graph.enumerate_cuts(residual())
    assert graph.find_cut(cuts, "add").names == ["sum"]
    assert graph.find_cut(cuts, "edge-only").tensors == ()
    with pytest.raises(InputFileError, match="no valid cut after node 'nope'"):
        graph.find_cut(cuts, "nope")


def test_networks_and_custom_links() -> None:
    nets = network.all_networks()
    assert {"wifi", "4g", "3g"} <= set(nets)
    for n in nets.values():
        assert n.uplink_mbps.source and n.rtt_ms.source and n.radio_mw_per_mbps.source
    wifi = nets["wifi"]
    assert wifi.transfer_ms(0) == pytest.approx(wifi.rtt_ms.value)
    one_mb = wifi.transfer_ms(1_000_000) - wifi.rtt_ms.value
    assert one_mb == pytest.approx(8 / wifi.uplink_mbps.value * 1e3)
    assert network.get("10,40").uplink_mbps.value == 10
    with pytest.raises(UserError):
        network.get("ten,40")
    with pytest.raises(UnknownNameError):
        network.get("5gg")


def test_compression_roundtrip_and_sizes() -> None:
    a = np.maximum(np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32), 0)  # post-ReLU
    assert compress.measure({"a": a}, "none").max_abs_err == 0
    z = compress.measure({"a": a}, "zlib")
    assert z.max_abs_err == 0 and z.nbytes < a.nbytes  # half the values are zeros
    q = compress.measure({"a": a}, "int8")
    assert q.nbytes <= a.nbytes // 4 + 16 and 0 < q.max_abs_err <= (a.max() / 255) * 0.51 + 1e-6


def test_analyzer_picks_the_cut_with_least_total_time() -> None:
    from deploypipe.partition.analyzer import analyze
    from deploypipe.partition.profile import LayerCosts

    proto = residual()
    n = len(proto.graph.node)
    edge = LayerCosts(tuple([10.0] * n), "test edge", measured=False, target="rpi4")
    cloud = LayerCosts(tuple([0.1] * n), "test cloud", measured=False, target="server-gpu")
    fast, slow = network.custom(1000, 1), network.custom(0.01, 1)
    rep_fast = analyze(proto, "res", edge, cloud, fast, _x())
    assert rep_fast.best_cut.kind == "cloud-only"
    rep_slow = analyze(proto, "res", edge, cloud, slow, _x())
    assert rep_slow.best_cut.kind == "edge-only"
    for rep in (rep_fast, rep_slow):
        totals = [c.total_ms for c in rep.cuts]
        assert rep.best_cut.total_ms == min(totals)
        for c in rep.cuts:
            assert c.total_ms == pytest.approx(c.edge_ms + c.codec_ms + c.transfer_ms + c.cloud_ms)
            assert c.energy_mj == pytest.approx(c.edge_mj + c.transfer_mj)
    # a deadline nothing meets: the fastest cut is returned with a note
    tight = analyze(proto, "res", edge, cloud, slow, _x(), deadline_ms=0.001)
    assert tight.notes and tight.best_cut.total_ms == min(c.total_ms for c in tight.cuts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(paths: list[Path], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "deploypipe", "serve", *map(str, paths), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert "serving" in line, proc.stderr.read() if proc.stderr else line
    return proc


def test_split_runtime_over_tcp_and_fallback_when_server_dies(tmp_path: Path) -> None:
    from deploypipe.partition.client import EdgeClient, Link

    proto = residual()
    cut = graph.find_cut(graph.enumerate_cuts(proto), "relu_a")  # two tensors cross
    edge, cloud = graph.split(proto, cut)
    onnx.save_model(cloud, str(tmp_path / "cloud.onnx"))
    port = _free_port()
    server = _start_server([tmp_path / "cloud.onnx"], port)
    full = ort_executor(proto.SerializeToString())
    client = EdgeClient(full, ort_executor(edge.SerializeToString()), Link(uplink_mbps=50.0, rtt_ms=4.0),
                        port=port, model="cloud", codec="zlib", timeout_s=2.0)
    feeds = _x()
    want = full(feeds)["logits"]
    records = []
    try:
        for i in range(6):
            if i == 3:
                server.kill()
                server.wait()
            out, rec = client.infer(feeds)
            records.append(rec)
            assert np.abs(out["logits"] - want).max() < 1e-5  # every request answered, correctly
    finally:
        client.close()
        if server.poll() is None:
            server.kill()
            server.wait()
    assert [r.path for r in records] == ["split"] * 3 + ["fallback"] * 3
    assert client.stats.requests == 6 and client.stats.split == 3 and client.stats.fallbacks == 3
    # the token bucket really paces: two tensors of 8x8x8 fp32 (zlib'd) at 50 Mbit/s plus a 4 ms RTT
    assert all(r.remote_ms >= 4.0 for r in records[:3])


def test_cli_partition_json_and_bad_network(cli, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "res.onnx"
    onnx.save_model(residual(), str(path))
    res = cli("partition", "--model", str(path), "--edge", "host-cpu", "--cloud", "server-gpu",
              "--network", "4g", "--compression", "int8", "--json")
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["edge_label"].startswith("measured on") and rep["cloud_label"].startswith("estimated by")
    assert len(rep["cuts"]) == len(graph.enumerate_cuts(residual()))
    bad = cli("partition", "--model", str(path), "--network", "5gg")
    assert bad.returncode == 2 and "unknown network '5gg'" in bad.stderr


def test_cli_build_split_and_serve_plan(cli, tmp_path: Path) -> None:  # noqa: ANN001
    from deploypipe.partition.client import Link, plan_client

    path = tmp_path / "inc.onnx"
    onnx.save_model(inception(), str(path))
    res = cli("build", "--model", str(path), "--split", "branch3", "--edge-target", "rpi4", "--cloud-target",
              "server-gpu", "--compiler", "onnxruntime", "-o", str(tmp_path / "out"), "--name", "inc-split", "--json")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "out" / "inc-split"
    plan = json.loads((folder / "plan.json").read_text())
    assert [t["name"] for t in plan["cut"]["tensors"]] == ["s", "b1", "b3"]
    assert plan["back_to_back"]["max_abs_err"] < 1e-5
    assert (folder / "edge" / "manifest.json").is_file() and (folder / "cloud" / "manifest.json").is_file()
    port = _free_port()
    server = _start_server([folder], port)
    try:
        client = plan_client(folder, Link(100.0, 1.0), port=port)
        out, rec = client.infer(_x())
        client.close()
    finally:
        server.kill()
        server.wait()
    assert rec.path == "split"
    want = ort_executor(inception().SerializeToString())(_x())["logits"]
    assert np.abs(out["logits"] - want).max() < 1e-5
    bad = cli("build", "--model", str(path), "--split", "nope", "--compiler", "onnxruntime", "-o", str(tmp_path / "o2"))
    assert bad.returncode == 2 and "no valid cut after node 'nope'" in bad.stderr
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet-v2", "inception-v3"])
@pytest.mark.slow
def test_zoo_halves_back_to_back(name: str) -> None:
    from deploypipe import zoo
    from deploypipe.importers.pytorch import export_module

    entry = zoo.get(name)
    proto = export_module(entry.module(), entry.inputs)
    cuts = graph.enumerate_cuts(proto)
    feeds = {k: np.random.default_rng(0).standard_normal(v).astype(np.float32) for k, v in entry.inputs.items()}
    whole = ort_executor(proto.SerializeToString())
    want = next(iter(whole(feeds).values()))
    for cut in [cuts[len(cuts) // 4], cuts[len(cuts) // 2], max(cuts, key=lambda c: len(c.tensors))]:
        edge, cloud = graph.split(proto, cut)
        mid = ort_executor(edge.SerializeToString())(feeds)
        got = next(iter(ort_executor(cloud.SerializeToString())(mid).values()))
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max())), cut.after
