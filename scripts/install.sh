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

# --- tvm: a virtual aarch64 board (arm64 Debian root + TVM runtime under qemu) for tests/test_tvm_qemu.py
# (~1 min, ~600 MB under .cache/; skipped when present, or when not root / tools missing)
if [ "$(id -u)" = 0 ]; then
  DEPLOYPIPE_VENV="$VENV" bash scripts/tvm_arm_root.sh || echo "note: arm64 root not built; the qemu test will skip" >&2
fi

echo "deploypipe installed in $VENV: activate with 'source $VENV/bin/activate'"
