"""The cross-compiled aarch64 library itself, run under qemu user-mode emulation: an arm64 Debian
root (scripts/tvm_arm_root.sh) runs TVM's RPC server, deploypipe uploads the rpi4 artifact's
model.so and checks its outputs against the FP32 reference; an rpi5 INT8 artifact's sdot kernels
(qemu's default `max` CPU has the ARMv8.2 dot product) against the FP32 model and ONNX Runtime's
execution of the same QDQ graph. Emulated timings are labelled as such and never taken as device
timings.

armv7 (rpi3, pynq-z1) libraries: PyPI has no armv7 TVM runtime, so they run through deploypipe-run,
TVM's C++ runtime cross-compiled for armv7 (deploypipe.backends.tvm.native), under qemu-arm with Debian's armhf
cross sysroot.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, tiny_classifier
from int8_models import INT8_SHAPE, int8_convnet, kernels_with, qdq_model
from tvm_servers import free_port, started

pytestmark = [pytest.mark.tvm, pytest.mark.qemu]
pytest.importorskip("tvm")

ARM_ROOT = Path(os.environ.get("DEPLOYPIPE_ARM64_ROOT", ROOT / ".cache" / "arm64-root"))


def _missing() -> str | None:
    if shutil.which("aarch64-linux-gnu-g++") is None:
        return "aarch64-linux-gnu-g++ missing (scripts/install.sh installs g++-aarch64-linux-gnu)"
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64-static missing (scripts/install.sh installs qemu-user-static)"
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not binfmt.is_file() or "enabled" not in binfmt.read_text():
        return "binfmt_misc has no enabled qemu-aarch64 entry (scripts/tvm_arm_root.sh registers it; needs root)"
    if not (ARM_ROOT / ".ready").is_file():
        return f"no arm64 root at {ARM_ROOT} (run scripts/tvm_arm_root.sh)"
    return None


@pytest.fixture(scope="module")
def emulated_board(tmp_path_factory: pytest.TempPathFactory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    port = free_port()
    env = {"QEMU_LD_PREFIX": str(ARM_ROOT), "PYTHONPATH": str(ARM_ROOT / "opt" / "tvm"),
           "DEPLOYPIPE_EMULATED": "qemu-user aarch64"}
    cmd = [str(ARM_ROOT / "usr" / "bin" / "python3"), "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
           "--port", str(port), "--port-end", str(port + 1)]
    log = tmp_path_factory.mktemp("qemu") / "server.log"
    with started(cmd, port, env=env, timeout=180, log=log):
        yield f"127.0.0.1:{port}"


def _check_emulated(tmp_path: Path, target: str, arch: str, options: dict) -> Path:
    """Build the tiny model for `target`, run its `arch` library under emulation with `options`
    and check it against the FP32 reference and the label; returns the artifact folder."""
    from deploypipe.api import BuildConfig, build
    from deploypipe.artifact import Artifact
    from deploypipe.backends import load
    from deploypipe.backends.runner import RunOptions

    model = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    path = build(BuildConfig(model=str(model), target=target, compiler="tvm", output=tmp_path / "art",
                             tuning_logs=tmp_path / "logs")).path
    art = Artifact(path)
    assert art.manifest.compiler_info["library_arch"] == arch
    with load(path, RunOptions(**options)) as runner:
        inputs, reference, _ = art.golden()
        out = runner.infer(inputs)
        where = runner.where()
    np.testing.assert_allclose(out["logits"], reference["logits"], rtol=1e-4, atol=1e-5)
    assert where is not None and f"qemu-user {arch}" in where and "NOT a device timing" in where
    return path


def test_aarch64_library_matches_reference_under_qemu(tmp_path: Path, emulated_board: str, cli) -> None:
    path = _check_emulated(tmp_path, "rpi4", "aarch64", {"device": f"rpc://{emulated_board}"})

    res = cli("bench", str(path), "--device", f"rpc://{emulated_board}", "--iterations", "2", "--warmup", "0", "--json")
    assert res.returncode == 0, res.stderr
    (result,) = json.loads(res.stdout)
    assert result["ran"] and "NOT a device timing" in result["where"]
    assert result["fidelity"]["max_abs_err"] < 1e-4
    assert result["energy"] is None


def test_rpi5_int8_library_runs_sdot_kernels_matching_onnxruntime_under_qemu(tmp_path: Path, emulated_board: str) -> None:
    """A QDQ model built for rpi5 (Cortex-A76): its convolutions and dense layer are integer kernels on sdot (u8
    activations shifted to s8 in the producers' kernels), the aarch64 model.so holds sdot, and run
    under qemu it matches ONNX Runtime running the same QDQ graph unoptimized (exact dequantized
    sums in float, on any host) and the FP32 model within the int8 gate's tolerance for synthetic inputs."""
    import subprocess

    import onnxruntime as ort

    from deploypipe.api import BuildConfig, build
    from deploypipe.backends import load
    from deploypipe.backends.runner import RunOptions
    from deploypipe.passes.int8 import Int8Config

    if shutil.which("aarch64-linux-gnu-objdump") is None:
        pytest.skip("aarch64-linux-gnu-objdump missing (binutils-aarch64-linux-gnu)")
    qdq = qdq_model(tmp_path, int8_convnet(), INT8_SHAPE)
    path = build(BuildConfig(model=str(qdq), target="rpi5", compiler="tvm", output=tmp_path / "art",
                             tuning_logs=tmp_path / "logs")).path
    manifest = json.loads((path / "manifest.json").read_text())
    kernels = manifest["compiler_info"]["int8_kernels"]
    assert (kernels["path"], kernels["instruction"]) == ("integer", "sdot")
    assert (kernels["integer_convolutions"], kernels["convolutions"]) == (3, 4)  # depthwise: float on aarch64
    assert (kernels["integer_dense_layers"], kernels["dense_layers"]) == (1, 1)
    assert any("integer kernels: sdot (ARMv8.2 dot product, -mcpu=cortex-a76): 3 of 4 convolutions and 1 of 1 "
               "dense layers" in n and "depthwise convolutions (an integer one not measured on an AArch64 core)" in n
               for n in manifest["notes"]), manifest["notes"]
    asm = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(path / "model.so")], capture_output=True, text=True,
                         check=True).stdout
    assert kernels_with(asm, "\tsdot\t") == {"conv2d": 3, "matmul": 1}

    x = np.random.default_rng(7).standard_normal(INT8_SHAPE).astype(np.float32)
    with load(path, RunOptions(device=f"rpc://{emulated_board}")) as runner:
        out = runner.infer({"input": x})["logits"]
        assert "qemu-user aarch64" in (runner.where() or "")
    # ORT's graph optimizations would run the QDQ convolutions as its own u8 x s8 kernels, which
    # saturate in 16 bits on x86 without VNNI; unoptimized, it computes them dequantized in float
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    (qdq_out,) = ort.InferenceSession(str(qdq), plain, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    (fp32_out,) = ort.InferenceSession(str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})
    np.testing.assert_allclose(out, qdq_out, rtol=0, atol=1e-3)
    cosine = float(np.dot(out.ravel(), fp32_out.ravel()) / (np.linalg.norm(out) * np.linalg.norm(fp32_out)))
    assert cosine >= Int8Config().tolerance["synthetic_min_cosine"], cosine


def _armv7_missing() -> str | None:
    """Why deploypipe-run cannot be built and emulated for armv7 here (the checks the code runs)."""
    from deploypipe.backends.tvm import native
    from deploypipe.errors import MissingBackendError

    try:
        native.compiler_for("armv7l")
        native.emulator("armv7l")
    except MissingBackendError as exc:
        return str(exc)
    return None


def test_armv7_library_matches_reference_under_qemu(tmp_path: Path, cli) -> None:
    """The rpi3 (armv7-a, hard float) model.so itself, run by deploypipe-run (TVM's C++ runtime
    cross-compiled for armv7 from the wheels' sources) under qemu-arm: same outputs as FP32."""
    reason = _armv7_missing()
    if reason:
        pytest.skip(reason)
    from deploypipe.backends.tvm.facts import library_arch

    path = _check_emulated(tmp_path, "rpi3", "armv7l", {"device": "qemu"})

    res = cli("bench", str(path), "--device", "qemu", "--iterations", "2", "--warmup", "0", "--json")
    assert res.returncode == 0, res.stderr
    (result,) = json.loads(res.stdout)
    assert result["ran"] and "NOT a device timing" in result["where"]
    assert result["fidelity"]["max_abs_err"] < 1e-4
    assert result["energy"] is None  # emulated time times any power figure is no energy figure
    res = cli("bench", str(path), "--iterations", "2", "--warmup", "0", "--json")  # without --emulate: not run
    (result,) = json.loads(res.stdout)
    assert not result["ran"] and "armv7l library" in result["reason"]

    res = cli("tvm", "device-app", "--target", "pynq-z1", "-o", str(tmp_path / "app"))  # same CPU family: cached
    assert res.returncode == 0, res.stderr
    assert library_arch(tmp_path / "app" / "deploypipe-run") == "armv7l"


def test_device_app_refuses_bad_input_clearly(tmp_path: Path, cli) -> None:
    """Wrong input size and a missing emulator are one clear error each (the runner is the
    cached host build when it exists, else this compiles it once)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ missing")
    from deploypipe.backends.tvm import native
    from deploypipe.errors import DeployPipeError, MissingBackendError, UnsupportedError

    model = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    from deploypipe.api import BuildConfig, build

    path = build(BuildConfig(model=str(model), target="host-cpu", compiler="tvm", output=tmp_path / "art",
                             tuning_logs=tmp_path / "logs")).path
    binary = native.build_runner("x86_64")
    good = np.zeros((1, 3, 16, 16), np.float32)
    run = native.run(binary, path / "model.so", [good], repeat=3)
    assert run.outputs[0].shape == (1, 10) and len(run.latency_ms) == 3 and run.load_ms > 0
    with pytest.raises(DeployPipeError, match="expect Tensor with dtype float32 but get float64"):
        native.run(binary, path / "model.so", [good.astype(np.float64)])
    short = tmp_path / "short.bin"
    short.write_bytes(b"\0" * 100)
    import subprocess

    proc = subprocess.run([str(binary), str(path / "model.so"), "--input", f"float32:1x3x16x16:{short}",
                           "--output-dir", str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "holds 100 bytes, the input needs 3072" in proc.stderr
    proc = subprocess.run([str(binary), str(path / "model.so"), "--bogus", "1"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and "unknown flag --bogus" in proc.stderr
    with pytest.raises(UnsupportedError, match="no emulator known for riscv64"):
        native.emulator("riscv64")
    old = os.environ["PATH"]
    os.environ["PATH"] = str(tmp_path)  # nothing on PATH
    try:
        with pytest.raises(MissingBackendError, match="apt-get install qemu-user-static"):
            native.emulator("armv7l")
    finally:
        os.environ["PATH"] = old
    res = cli("device-app", "--target", "jetson-nano-gpu-does-not-exist")
    assert res.returncode == 2 and "unknown target" in res.stderr
