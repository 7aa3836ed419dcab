"""Issue 17: exit codes that hold, artifact replacement with no window, servers that cannot be
taken over or exhausted, and a bounded fault soak of the split runtime."""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_classifier

from deploypipe import net
from deploypipe.artifact import MANIFEST, VERSIONS, staging
from deploypipe.bench.remote import bench_remote
from deploypipe.bench.serve import RuntimeServer, native_code, unpack_upload
from deploypipe.bench.results import BenchConfig
from deploypipe.errors import InputFileError, UserError
from deploypipe.partition import graph, wire
from deploypipe.partition.server import CloudServer, Served, onnx_inputs, ort_executor

FAST = {"iterations": 3, "warmup": 1, "min_seconds": 0.0, "energy": "off"}


@pytest.fixture(autouse=True)
def _own_token_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Servers and clients in these tests use a token home of their own, never ~/.config."""
    home = tmp_path_factory.mktemp("cfg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv(net.TOKEN_ENV, raising=False)
    return home


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deploypipe.api import BuildConfig, build

    root = tmp_path_factory.mktemp("art")
    onnx.save_model(tiny_classifier(), str(root / "tiny.onnx"))
    return build(BuildConfig(model=str(root / "tiny.onnx"), output=root / "out", name="tiny")).path


def _deploypipe(*args: str, **kw) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "deploypipe", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


# --- exit codes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_exits_nonzero_and_leaves_previous_artifact(tmp_path: Path, sig: int, code: int) -> None:
    """Ctrl-C gave exit 0; SIGTERM left a temp folder. Now: 130/143, old artifact intact, no temp."""
    from deploypipe.api import BuildConfig, build

    onnx.save_model(tiny_classifier(), str(tmp_path / "tiny.onnx"))
    old = build(BuildConfig(model=str(tmp_path / "tiny.onnx"), output=tmp_path / "out", name="a"))
    before = os.readlink(old.path)
    store = tmp_path / "out" / VERSIONS / "a"
    proc = _deploypipe("build", "-m", str(tmp_path / "tiny.onnx"), "-o", str(tmp_path / "out"), "--name", "a",
                       "--quantize", "int8", "--force")
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("tmp-") for p in store.iterdir()):  # the build is staging now
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert os.readlink(old.path) == before and (old.path / MANIFEST).is_file()
    assert not [p for p in store.iterdir() if not p.name.startswith("v-")]


def test_full_disk_is_one_line_exit_6_and_keeps_the_previous_artifact(tmp_path: Path, tiny_onnx: Path) -> None:
    """A full output disk was exit 70 with a traceback. RLIMIT_FSIZE makes writes fail for real
    (EFBIG, as ENOSPC would) without needing a small file system."""
    import resource

    from deploypipe.api import BuildConfig, build

    old = build(BuildConfig(model=str(tiny_onnx), output=tmp_path / "out", name="a"))
    before = os.readlink(old.path)
    proc = subprocess.run([sys.executable, "-m", "deploypipe", "build", "-m", str(tiny_onnx), "-o",
                           str(tmp_path / "out"), "--name", "a", "--force"], capture_output=True, text=True,
                          check=False, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024)))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 6 and len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert str(tmp_path / "out") in lines[0]
    assert os.readlink(old.path) == before
    assert [p.name for p in (tmp_path / "out" / VERSIONS / "a").iterdir()] == [before.rpartition("/")[2]]


# --- artifact replacement ----------------------------------------------------------------------

def _write_version(dest: Path, tag: str) -> None:
    with staging(dest) as tmp:
        (tmp / "data.bin").write_bytes(tag.encode() * 256)
        (tmp / MANIFEST).write_text(json.dumps({"build_key": tag}))


def _replace_many(dest: str, who: int, n: int, errors: mp.Queue) -> None:
    for i in range(n):
        try:
            _write_version(Path(dest), f"{who}-{i}")
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            errors.put(f"{who}-{i}: {type(exc).__name__}: {exc}")


def test_concurrent_builders_never_fail_or_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 processes x 40 replacements of one name: none fails, no copy is left over."""
    import deploypipe.artifact

    monkeypatch.setattr(deploypipe.artifact, "GRACE_S", 0.0)  # collect replaced versions at once (forked too)
    dest = tmp_path / "out" / "a"
    _write_version(dest, "first")
    ctx = mp.get_context("fork")
    errors: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_replace_many, args=(str(dest), w, 40, errors)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert failures == [] and all(p.exitcode == 0 for p in procs)
    tag = json.loads((dest / MANIFEST).read_text())["build_key"]
    assert (dest / "data.bin").read_bytes() == tag.encode() * 256
    store = tmp_path / "out" / VERSIONS / "a"
    left = sorted(p.name for p in store.iterdir())
    assert len(left) <= 2 and all(n.startswith("v-") for n in left), left  # current + the one it replaced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [VERSIONS, "a"]


def _rebuild_loop(dest: str, stop: float) -> None:
    i = 0
    while time.time() < stop:
        _write_version(Path(dest), f"r{i}")
        i += 1


def test_reader_always_sees_a_whole_artifact(tmp_path: Path) -> None:
    """A reader polling while another process rebuilds found the folder missing 6% of the time."""
    dest = tmp_path / "a"
    _write_version(dest, "first")
    writer = mp.get_context("fork").Process(target=_rebuild_loop, args=(str(dest), time.time() + 2.0))
    writer.start()
    looks = missing = mixed = 0
    seen = set()
    while writer.is_alive():
        looks += 1
        root = Path(os.path.realpath(dest))  # a consistent reader resolves the link once
        try:
            tag = json.loads((root / MANIFEST).read_text())["build_key"]
            data = (root / "data.bin").read_bytes()
        except OSError:
            missing += 1
            continue
        seen.add(tag)
        mixed += data != tag.encode() * 256
    writer.join()
    assert writer.exitcode == 0
    assert looks > 100 and len(seen) > 3  # the reader really raced many replacements
    assert missing == 0 and mixed == 0


def test_name_is_one_component_and_foreign_folders_are_never_touched(tmp_path: Path, tiny_onnx: Path) -> None:
    """--name precious deleted thesis.txt; --name ../x escaped -o; --name .. crashed with 70."""
    from deploypipe.cli import run

    out = tmp_path / "d"
    (out / "precious").mkdir(parents=True)
    (out / "precious" / "thesis.txt").write_text("x")
    for name in ("precious", "../x", "..", ".hidden", "a/b", ""):
        assert run(["build", "-m", str(tiny_onnx), "-o", str(out), "--name", name]) == 2, name
    assert (out / "precious" / "thesis.txt").read_text() == "x"
    assert sorted(p.name for p in out.iterdir()) == ["precious"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "tiny.onnx"]


def test_staging_of_a_builder_that_died_is_collected(tmp_path: Path) -> None:
    """A build killed hard (SIGKILL, or a native abort no finally survives) leaves its staging
    folder; the next build of that name removes it, as the folder names its dead process."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "a"
    _write_version(dest, "first")
    store = tmp_path / VERSIONS / "a"
    (store / f"tmp-{dead.pid}-xyz").mkdir()
    (store / f"tmp-{dead.pid}-xyz" / "half.bin").write_bytes(b"x")
    (store / f"tmp-{os.getpid()}-live").mkdir()  # a live builder's staging is not touched
    _write_version(dest, "second")
    names = sorted(p.name for p in store.iterdir())
    assert f"tmp-{dead.pid}-xyz" not in names and f"tmp-{os.getpid()}-live" in names


def test_real_folder_from_an_older_deploypipe_is_replaced_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "a"
    dest.mkdir()
    (dest / MANIFEST).write_text("{}")
    _write_version(dest, "new")
    assert dest.is_symlink() and json.loads((dest / MANIFEST).read_text())["build_key"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [VERSIONS, "a"]


def test_split_build_uses_the_same_staging(tmp_path: Path, tiny_onnx: Path) -> None:
    from deploypipe.api import BuildConfig
    from deploypipe.partition.build import build_split

    (tmp_path / "out" / "foreign").mkdir(parents=True)
    base = BuildConfig(model=str(tiny_onnx), compiler="onnxruntime", output=tmp_path / "out", name="foreign")
    with pytest.raises(UserError, match="not a deploypipe artifact"):
        build_split(base, "relu", "rpi4", "server-gpu")
    rep = build_split(base.model_copy(update={"name": "s"}), "relu", "rpi4", "server-gpu")
    assert rep.path.is_symlink() and os.readlink(rep.path).startswith(f"{VERSIONS}/s/")
    assert (rep.path / "cloud" / MANIFEST).is_file() and json.loads((rep.path / "plan.json").read_text())["cloud"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [VERSIONS, "foreign", "s"]


def test_bench_discovery_and_load_work_through_the_link(artifact: Path) -> None:
    import deploypipe
    from deploypipe.artifact import find_artifacts

    assert artifact.is_symlink()
    assert find_artifacts([artifact.parent]) == [artifact]  # the version store is not listed twice
    inputs, _, expected = deploypipe.artifact.Artifact(artifact).golden()
    with deploypipe.load(artifact) as runner:
        np.testing.assert_allclose(runner.infer(inputs)["logits"], expected["logits"], rtol=1e-6)


# --- serve-runtime -----------------------------------------------------------------------------

def _serve_runtime(tmp_path: Path, **kw) -> tuple[threading.Thread, str]:
    from deploypipe.bench.serve import serve

    ready = threading.Event()
    addr: list[str] = []

    def on_ready(h: str, p: int) -> None:
        addr.append(f"{h}:{p}")
        ready.set()

    args = {"port": 0, "max_requests": 1, "idle_timeout_s": 30, "on_ready": on_ready, "workdir": tmp_path / "work", **kw}
    thread = threading.Thread(target=serve, kwargs=args, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread, addr[0]


def test_serve_runtime_requires_the_token_and_creates_it_0600(tmp_path: Path, artifact: Path,
                                                                _own_token_home: Path) -> None:
    thread, addr = _serve_runtime(tmp_path, max_requests=1)
    token = _own_token_home / "deploypipe" / "token"
    assert token.stat().st_mode & 0o777 == 0o600
    wrong = tmp_path / "wrong"
    wrong.write_text("x" * 64)
    wrong.chmod(0o600)
    with pytest.raises(UserError, match="refused our token"):
        bench_remote(addr, artifact, BenchConfig(**FAST), token_file=wrong)
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path / "elsewhere")  # a client with no token at all
    with pytest.raises(UserError, match="requires a token"):
        bench_remote(addr, artifact, BenchConfig(**FAST))
    r = bench_remote(addr, artifact, BenchConfig(**FAST), token_file=token)  # the owner's copy works
    assert r.ran and "by serve-runtime" in r.where
    thread.join(30)
    assert not thread.is_alive()
    wrong.chmod(0o644)
    with pytest.raises(UserError, match="readable by other users"):
        net.client_token(wrong)


def test_insecure_no_auth_only_on_loopback() -> None:
    with pytest.raises(UserError, match="loopback only"):
        net.check_insecure_host("0.0.0.0")
    for host in ("127.0.0.1", "::1", "localhost"):
        net.check_insecure_host(host)


def test_uploaded_native_code_is_refused_without_trust(tmp_path: Path, artifact: Path) -> None:
    """serve-runtime ran an uploaded tvm artifact's model.so; now only with --trust-uploads."""
    import shutil

    upload = tmp_path / "up"
    shutil.copytree(artifact.resolve(), upload / "evil")
    (upload / "evil" / "model.so").write_bytes(b"\x7fELF" + bytes(60))
    thread, addr = _serve_runtime(tmp_path, max_requests=1, insecure_no_auth=True)
    with pytest.raises(UserError, match="native code.*--trust-uploads"):
        bench_remote(addr, upload / "evil", BenchConfig(**FAST))
    thread.join(30)
    assert native_code(upload / "evil") == ["model.so"]


def test_client_choices_cannot_move_output_or_reach_other_hosts(tmp_path: Path) -> None:
    rt = RuntimeServer(tmp_path / "work", 1 << 20, 1 << 20, trust_uploads=False)
    cfg = rt.config({"config": {**FAST, "loadgen_dir": "/tmp/evil", "scenario": "offline"}})
    assert Path(cfg.loadgen_dir).is_relative_to((tmp_path / "work").resolve())
    with pytest.raises(UserError, match="refused"):
        rt.config({"config": {**FAST, "device": "rpc://10.0.0.1:9090"}})


def test_upload_unpacked_size_is_capped(tmp_path: Path) -> None:
    """A 1.1 MB upload unpacked to 1.07 GB; the cap now holds on the unpacked bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("art/zeros.bin")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    data = buf.getvalue()
    assert len(data) < 200_000
    with pytest.raises(InputFileError, match="unpacks to more than|unpacked bytes"):
        unpack_upload(data, tmp_path, max_bytes=1 << 20)
    written = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert written <= 2 << 20
    # a pax header is read into memory by tarfile itself: the stream cap holds there too
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("art/f")
        info.pax_headers = {"comment": "x" * (4 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InputFileError, match="more than"):
        unpack_upload(pax.getvalue(), tmp_path / "p", max_bytes=1 << 20)
    with pytest.raises(InputFileError, match="not a readable tar.gz"):
        unpack_upload(gzip.compress(b"junk" * 100), tmp_path / "q", max_bytes=1 << 20)


def test_idle_client_does_not_block_a_real_one_and_silent_server_times_out(tmp_path: Path, artifact: Path) -> None:
    """One idle client that sent 4 bytes blocked a real bench; a silent server held a client ~16 min."""
    thread, addr = _serve_runtime(tmp_path, max_requests=1, insecure_no_auth=True, client_timeout=1.0)
    host, port = addr.rsplit(":", 1)
    idle = socket.create_connection((host, int(port)))
    idle.sendall(b"\x00\x00\x00\x00")
    t0 = time.monotonic()
    r = bench_remote(addr, artifact, BenchConfig(**FAST))
    assert r.ran
    thread.join(30)
    idle.close()
    silent = socket.create_server(("127.0.0.1", 0))
    t0 = time.monotonic()
    with pytest.raises(UserError, match="no answer|no greeting"):
        bench_remote(f"127.0.0.1:{silent.getsockname()[1]}", artifact, BenchConfig(**FAST), timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    silent.close()


# --- serve (split runtime) ---------------------------------------------------------------------

def _cloud(tmp_path: Path, client_timeout: float = 0.5) -> tuple[CloudServer, list[str], threading.Thread]:
    """A CloudServer (in a thread, no auth on loopback) whose model takes float32[1,3,16,16]."""
    path = tmp_path / "m.onnx"
    onnx.save_model(tiny_classifier(), str(path))
    lines: list[str] = []
    server = CloudServer({"m": Served(ort_executor(path), onnx_inputs(path))}, insecure_no_auth=True,
                         max_clients=4, client_timeout=client_timeout, log=lines.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, lines, thread


@pytest.fixture
def cloud(tmp_path: Path):
    server, lines, thread = _cloud(tmp_path)
    yield server, lines
    server.shutdown()
    thread.join(5)


def _zlib_bomb(n: int) -> bytes:
    """n zero bytes, zlib'd, built in 1 MiB steps (the test itself must not hold n bytes)."""
    c = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    return b"".join(c.compress(chunk) for _ in range(n >> 20)) + c.flush()


def _raw_request(port: int, payload: bytes) -> dict:
    ch = net.connect("127.0.0.1", port, None, timeout=5)
    try:
        ch.send(payload)
        header, _ = wire.unpack(ch.recv(1 << 24), 1 << 24)
        return header
    finally:
        ch.close()


def test_split_server_caps_frames_by_the_model_shapes(cloud, capfd: pytest.CaptureFixture[str]) -> None:
    """A 398 KB zlib frame decompressed to 400 MB; lz4 and corrupt frames printed tracebacks."""
    import resource

    server, lines = cloud
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bomb = _zlib_bomb(128 << 20)
    meta = {"name": "input", "dtype": "float32", "shape": [1, 3, 16, 16], "codec": "zlib", "nbytes": len(bomb) + 1}
    head = json.dumps({"id": 1, "model": "m", "tensors": [meta]}).encode()
    reply = _raw_request(server.port, len(head).to_bytes(4, "big") + head + b"R" + bomb)
    assert "inflates beyond" in reply["error"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 50_000  # KiB: no 128 MB spike
    big = dict(meta, shape=[1, 3, 4096, 4096], codec="none", nbytes=1)
    head = json.dumps({"id": 2, "model": "m", "tensors": [big]}).encode()
    assert "the model takes float32 [1, 3, 16, 16]" in _raw_request(server.port, len(head).to_bytes(4, "big") + head + b"R")["error"]
    for codec, body in (("lz4", b"R" + b"\x04\x22\x4d\x18junk"), ("zlib", b"R" + b"not zlib at all")):
        m = dict(meta, codec=codec, nbytes=len(body))
        head = json.dumps({"id": 3, "model": "m", "tensors": [m]}).encode()
        assert _raw_request(server.port, len(head).to_bytes(4, "big") + head + body)["error"]
    good = wire.pack({"id": 4, "model": "m"}, {"input": np.zeros((1, 3, 16, 16), np.float32)}, "zlib")
    assert "error" not in _raw_request(server.port, good)
    assert len(lines) == 4 and all("request refused" in line for line in lines)
    assert "Traceback" not in capfd.readouterr().err


def test_split_server_drops_half_open_clients_and_bounds_them(tmp_path: Path) -> None:
    """200 half-sent connections made 204 threads that never timed out."""
    server, lines, thread = _cloud(tmp_path, client_timeout=2.0)
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    for s in socks:
        s.sendall(b"\x00\x00")  # half a frame length, then silence
    deadline = time.monotonic() + 1.5
    while server.server.active < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(net.Busy):
        net.connect("127.0.0.1", server.port, None, timeout=2)
    deadline = time.monotonic() + 6
    while server.server.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.server.active == 0  # every half-open client was dropped after client_timeout
    assert sum("silent for" in line for line in lines) == 4 and server.server.refused == 1
    for s in socks:
        s.close()
    good = wire.pack({"id": 1, "model": "m"}, {"input": np.zeros((1, 3, 16, 16), np.float32)})
    assert "error" not in _raw_request(server.port, good)
    server.shutdown()
    thread.join(5)


def test_frames_are_authenticated_and_replays_fail(tmp_path: Path, _own_token_home: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(tiny_classifier(), str(path))
    lines: list[str] = []
    server = CloudServer({"m": Served(ort_executor(path), onnx_inputs(path))}, log=lines.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = net.client_token()
        assert token is not None  # the server created it in our token home
        with pytest.raises(net.AuthError, match="requires a token"):
            net.connect("127.0.0.1", server.port, None, timeout=2)
        good = wire.pack({"id": 1, "model": "m"}, {"input": np.zeros((1, 3, 16, 16), np.float32)})
        a = net.connect("127.0.0.1", server.port, token, timeout=2)
        sealed = a.seal(good)
        a.sock.sendall(sealed)
        assert "error" not in wire.unpack(a.recv(1 << 20), 1 << 20)[0]
        a.sock.sendall(sealed)  # the same frame again on the same connection
        with pytest.raises((net.Closed, ConnectionError)):
            a.recv(1 << 20)
        b = net.connect("127.0.0.1", server.port, token, timeout=2)
        b.sock.sendall(sealed)  # a frame of another connection
        with pytest.raises((net.Closed, ConnectionError)):
            b.recv(1 << 20)
        a.close()
        b.close()
        assert sum("failed authentication" in line for line in lines) == 2
    finally:
        server.shutdown()
        thread.join(5)


def test_fault_soak_split_runtime(tmp_path: Path) -> None:
    """Server killed, restarted and stalled mid-stream: every request answered and correct."""
    from deploypipe.partition.client import EdgeClient, Link

    proto = tiny_classifier()
    edge, cloud_half = graph.split(proto, graph.find_cut(graph.enumerate_cuts(proto), "relu"))
    onnx.save_model(cloud_half, str(tmp_path / "cloud.onnx"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def start() -> subprocess.Popen[str]:
        proc = _deploypipe("serve", str(tmp_path / "cloud.onnx"), "--port", str(port), "--client-timeout", "2")
        assert "serving" in proc.stdout.readline()  # type: ignore[union-attr]
        return proc

    server = start()
    full = ort_executor(proto.SerializeToString())
    client = EdgeClient(full, ort_executor(edge.SerializeToString()), Link(1000.0, 0.0), port=port, model="cloud",
                        codec="zlib", timeout_s=0.5)
    rng = np.random.default_rng(0)
    lost = wrong = 0
    n = 0
    try:
        for phase in ("up", "killed", "restarted", "stalled", "resumed"):
            if phase == "killed":
                server.kill()
                server.wait()
            elif phase == "restarted":
                server = start()
            elif phase == "stalled":
                server.send_signal(signal.SIGSTOP)
                while "T (stopped)" not in Path(f"/proc/{server.pid}/status").read_text():
                    time.sleep(0.01)
            elif phase == "resumed":
                server.send_signal(signal.SIGCONT)
            for _ in range(6 if phase == "stalled" else 40):
                x = {"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
                n += 1
                try:
                    out, _ = client.infer(x)
                except Exception:  # noqa: BLE001 - a lost request is what this test counts
                    lost += 1
                    continue
                wrong += not np.allclose(out["logits"], full(x)["logits"], atol=1e-4)
    finally:
        client.close()
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()
    print(f"soak: {n} requests, {lost} lost, {wrong} wrong, {client.stats.fallbacks} fallbacks, "
          f"{client.stats.split} split")
    assert lost == 0 and wrong == 0
    assert client.stats.fallbacks >= 40 + 6 and client.stats.split >= 40 + 40 + 1
