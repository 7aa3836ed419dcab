"""Toolchains found on this host, without importing them: which cross g++ builds for a CPU
architecture and which qemu runs its programs (by `platform.machine()` spelling), and where the
TFLite converter's own venv is and what it holds. Shared by the TVM device app, the LiteRT
converter and `deploypipe doctor`."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

VENV_ENV = "DEPLOYPIPE_TFLITE_VENV"

COMPILERS = {"x86_64": "g++", "aarch64": "aarch64-linux-gnu-g++", "armv7l": "arm-linux-gnueabihf-g++"}
APT = {"x86_64": "g++", "aarch64": "g++-aarch64-linux-gnu", "armv7l": "g++-arm-linux-gnueabihf"}  # Debian packages
# qemu user-mode emulator and the Debian cross sysroot it loads the dynamic linker and libc from
EMULATORS = {"aarch64": ("qemu-aarch64-static", "/usr/aarch64-linux-gnu"),
             "armv7l": ("qemu-arm-static", "/usr/arm-linux-gnueabihf")}


def venv_dir() -> Path | None:
    """The converter venv: $DEPLOYPIPE_TFLITE_VENV, else `.venv-tflite` beside the package or in cwd."""
    env = os.environ.get(VENV_ENV)
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[1] / ".venv-tflite", Path.cwd() / ".venv-tflite"]
    return next((c for c in candidates if (c / "bin" / "python").is_file()), None)


def toolchain_versions() -> dict[str, str]:
    """Versions in the converter venv, read from its package metadata (no TensorFlow import)."""
    venv = venv_dir()
    if venv is None:
        return {}
    site = next(iter(sorted(venv.glob("lib/python*/site-packages"))), None)
    if site is None:
        return {}
    wanted = {"tensorflow", "tf-keras", "onnx2tf", "tf2onnx", "onnx", "onnxruntime", "numpy", "protobuf"}
    out = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in wanted:
            out[f"converter:{name}"] = dist.version
    return dict(sorted(out.items()))


def gxx_version(compiler: str = "g++") -> str | None:
    """`compiler -dumpfullversion` (a build's toolchain record), or None where it does not run."""
    try:
        proc = subprocess.run([compiler, "-dumpfullversion"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return proc.stdout.strip()
