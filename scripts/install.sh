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
  g++  # fpga: hls4ml compiles its bit-accurate C simulation with g++ (also in build-essential)
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

echo "deploypipe installed in $VENV: activate with 'source $VENV/bin/activate'"
