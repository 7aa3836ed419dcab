"""Engine builds: the exact `trtexec` line recorded in an artifact, and the build itself, with
TensorRT's Python API when it is importable, else with `trtexec` from PATH.

The same code serves a build host that has TensorRT and a GPU of the target's architecture
(engine built during `deploypipe build`) and the device itself (`deploypipe tensorrt build-engine ARTIFACT`),
which then records the GPU and TensorRT that built the engine in the manifest.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from deploypipe.backends.tensorrt.facts import (
    EngineFacts,
    GpuInfo,
    local_gpu,
    tensorrt_version,
)
from deploypipe.artifact import atomic_write
from deploypipe.backends.tensorrt.int8 import reheaded
from deploypipe.errors import BuildError, MissingBackendError, UnsupportedError

ENGINE = "model.engine"


def _workspace_flag(version: str, mib: int) -> str:
    """trtexec's workspace flag: --workspace (MiB) before TensorRT 8.4, --memPoolSize after."""
    major, minor = (int(p) for p in (version.split(".") + ["0"])[:2])
    if (major, minor) < (8, 4):
        return f"--workspace={mib}"
    return f"--memPoolSize=workspace:{mib}M" if major >= 10 else f"--memPoolSize=workspace:{mib}"


Profiles = dict[str, tuple[list[int], list[int], list[int]]]  # input -> (min, opt, max) shapes


def profile_flags(profiles: Profiles | None) -> list[str]:
    """trtexec's --minShapes/--optShapes/--maxShapes for an optimization profile."""
    if not profiles:
        return []
    def spec(k: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, shapes[k]))}" for name, shapes in profiles.items())
    return [f"--minShapes={spec(0)}", f"--optShapes={spec(1)}", f"--maxShapes={spec(2)}"]


def trtexec_args(onnx: str, precision: str, version: str, workspace_mib: int,
                 calib: str | None = None, engine: str = ENGINE, profiles: Profiles | None = None) -> list[str]:
    """The trtexec command for one precision. FP16 and INT8 are builder flags: with a Q/DQ ONNX
    `--int8` makes TensorRT honour the explicit quantization; with `calib` it builds implicit
    INT8 from the calibration cache. Dynamic inputs get one optimization profile (min/opt/max)."""
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}", _workspace_flag(version, workspace_mib),
            *profile_flags(profiles)]
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args.append("--int8")
        if calib:
            args.append(f"--calib={calib}")
    return args


def build_script(explicit: list[str], implicit: list[str] | None, target: str, version: str) -> str:
    """build_engine.sh: run on the device from the artifact folder."""
    lines = [
        "#!/bin/sh",
        f"# Builds the TensorRT engine for {target} (TensorRT {version}). Run it on the device, in this folder.",
        "# `deploypipe tensorrt build-engine .` does the same and records the GPU and TensorRT version in manifest.json;",
        "# an engine built by this script alone is not listed in the manifest.",
        "set -e",
        'cd "$(dirname "$0")"',
        'PATH="$PATH:/usr/src/tensorrt/bin"  # where JetPack installs trtexec',
    ]
    if implicit:
        lines += [
            'if [ "$1" = "implicit" ]; then',
            "  # implicit INT8: FP32 ONNX + calibration cache (older TensorRT path)",
            "  exec " + shlex.join(implicit),
            "fi",
        ]
    lines.append("exec " + shlex.join(explicit))
    return "\n".join(lines) + "\n"


def _python_api_build(onnx_path: Path, engine_path: Path, precision: str, workspace_mib: int,
                      calib_text: str | None, profiles: Profiles | None = None) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) \
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else 0
    network = builder.create_network(flag)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedError(f"TensorRT's ONNX parser rejected {onnx_path.name}: " + "; ".join(errs[:5]))
    config = builder.create_builder_config()
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profiles.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    else:  # TensorRT 8.2
        config.max_workspace_size = workspace_mib << 20
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calib_text is not None:
            config.int8_calibrator = _cache_calibrator(trt, calib_text.encode())
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    atomic_write(engine_path, bytes(serialized))


def _cache_calibrator(trt: Any, cache: bytes) -> Any:
    """A calibrator that only replays a calibration cache (no data is fed)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: bytes) -> None:
            return None

    return CacheCalibrator()


def build_engine(folder: Path, onnx: str, precision: str, version: str, workspace_mib: int,
                 calib: str | None = None, profiles: Profiles | None = None) -> EngineFacts:
    """Build `folder/model.engine` with the TensorRT found here; returns the engine facts for the
    manifest. `version` is the TensorRT the recipe was written for (used to re-head a calibration
    cache for the TensorRT actually present)."""
    have = tensorrt_version()
    trtexec = None if have is not None else (shutil.which("trtexec") or shutil.which("/usr/src/tensorrt/bin/trtexec"))
    if have is None and trtexec is None:
        raise MissingBackendError("tensorrt", "tensorrt",
                                  "neither the `tensorrt` Python module nor `trtexec` is here; on a Jetson "
                                  "TensorRT comes with JetPack (python3-libnvinfer, /usr/src/tensorrt/bin/trtexec), "
                                  "on an x86-64 server with an NVIDIA GPU from `pip install tensorrt`")
    gpu = local_gpu()
    if gpu is None:
        raise UnsupportedError("no CUDA GPU on this machine: TensorRT engines are built on the GPU that runs them")
    calib_text = None
    if calib is not None:
        calib_text = (folder / calib).read_text()
        if have is not None:
            calib_text = reheaded(calib_text, have)
    if have is not None:
        _python_api_build(folder / onnx, folder / ENGINE, precision, workspace_mib, calib_text, profiles)
        return _facts(gpu, have, "tensorrt Python API", precision, calib)
    assert trtexec is not None
    version_out = subprocess.run([trtexec, "--help"], capture_output=True, text=True, check=False).stdout
    trt_ver = _trtexec_version(version_out) or version
    if calib_text is not None:
        calib_text = reheaded(calib_text, trt_ver)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".trtexec-") as tmp:
        cache_arg = None
        if calib_text is not None:
            cache_arg = str(Path(tmp) / "calibration.cache")
            Path(cache_arg).write_text(calib_text)
        engine_tmp = str(Path(tmp) / ENGINE)
        args = trtexec_args(onnx, precision, trt_ver, workspace_mib, cache_arg, engine=engine_tmp, profiles=profiles)
        proc = subprocess.run([trtexec, *args[1:]], cwd=folder, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise BuildError(f"trtexec failed (exit {proc.returncode}):\n{tail}")
        os.replace(engine_tmp, folder / ENGINE)
    return _facts(gpu, trt_ver, "trtexec", precision, calib)


def _trtexec_version(help_text: str) -> str | None:
    """trtexec prints `[TensorRT v8201] # trtexec ...` first; turn 8201 / 100300 into a version."""
    import re

    m = re.search(r"TensorRT v(\d+)", help_text)
    if not m:
        return None
    n = int(m.group(1))
    major = n // 10000 if n >= 100000 else n // 1000
    rest = n - major * (10000 if n >= 100000 else 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _facts(gpu: GpuInfo, version: str, how: str, precision: str, calib: str | None) -> EngineFacts:
    return EngineFacts(
        gpu=gpu.name, sm=gpu.sm, tensorrt=version, built_with=how, built_on=platform.node(), precision=precision,
        int8_mode=None if precision != "int8" else ("implicit (calibration cache)" if calib else "explicit Q/DQ"),
    )


