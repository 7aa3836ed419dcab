#!/usr/bin/env bash
# One-command install on a fresh Debian 12 / Python 3.11 machine: system packages, then the
# project's virtual environment(s). Safe to re-run. Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DEPLOYPIPE_VENV:-.venv}"
PY="${PYTHON:-python3.11}"

# --- system packages (one list; each backend adds its own line) -------------------------------
APT_PACKAGES=(
  build-essential
  chromium fonts-dejavu-core  # bench: `deploypipe report` page checked in headless Chromium (tests)
  g++  # fpga: hls4ml compiles its bit-accurate C simulation with g++ (also in build-essential)
  # tvm: cross toolchains for ARM boards, qemu user-mode emulation + debootstrap for the arm64 test root
  g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user-static binfmt-support debootstrap
)
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
  echo "note: not root or no apt-get; make sure these are installed: ${APT_PACKAGES[*]}" >&2
fi

# --- main environment -------------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip wheel setuptools
"$VENV/bin/pip" install -q -e ".[all,dev]"

# --- TFLite / Edge TPU converter venv (tflite backend) -----------------------------------------
# onnx2tf 1.29.24 + TensorFlow 2.19 + tf2onnx need onnx 1.19.1, numpy<2 and protobuf<5, which
# conflict with the main environment: they get their own venv, run as a subprocess by
# deploypipe/compilers/tflite.py. Exact pins: scripts/requirements-tflite*.txt (~2.4 GB, a few
# minutes). Skip with DEPLOYPIPE_SKIP_TFLITE=1; tests marked tflite then skip.
TFLITE_VENV="${DEPLOYPIPE_TFLITE_VENV:-.venv-tflite}"
if [ "${DEPLOYPIPE_SKIP_TFLITE:-0}" != 1 ]; then
  [ -x "$TFLITE_VENV/bin/python" ] || "$PY" -m venv "$TFLITE_VENV"
  "$TFLITE_VENV/bin/pip" install -q --upgrade pip wheel
  "$TFLITE_VENV/bin/pip" install -q -r scripts/requirements-tflite.txt
  "$TFLITE_VENV/bin/pip" install -q --no-deps -r scripts/requirements-tflite-nodeps.txt
  echo "TFLite converter toolchain installed in $TFLITE_VENV"
fi

# --- tvm: a virtual aarch64 board (arm64 Debian root + TVM runtime under qemu) for tests/test_tvm_qemu.py
# (~1 min, ~600 MB under .cache/; skipped when present, or when not root / tools missing)
if [ "$(id -u)" = 0 ]; then
  DEPLOYPIPE_VENV="$VENV" bash scripts/tvm_arm_root.sh || echo "note: arm64 root not built; the qemu test will skip" >&2
fi

# --- tvm: the serialization headers deploypipe-run (the no-Python device app, deploypipe/native)
# compiles TVM's runtime with; fetched from PyPI here so later builds need no network
"$VENV/bin/python" -c "from deploypipe.backends.tvm import native; print('TVM support headers in', native.support_headers())" \
  || echo "note: apache-tvm-tirx headers not fetched; the first deploypipe-run build will try again" >&2

echo "deploypipe installed in $VENV: activate with 'source $VENV/bin/activate'"
