#!/usr/bin/env bash
# TVM backend: a virtual aarch64 board for correctness tests. Builds .cache/arm64-root, a minimal
# Debian 12 arm64 root with Python 3.11 and the aarch64 wheels of the TVM runtime, which
# qemu-user-static runs as a TVM RPC server (tests/test_tvm_qemu.py). Timings taken there are
# emulation timings and are never reported as device timings.
# Needs: root (binfmt_misc), qemu-user-static, binfmt-support, debootstrap. Skips when already built.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"  # debootstrap and update-binfmts live there; a minimal PATH lacks them
ROOT="${DEPLOYPIPE_ARM64_ROOT:-.cache/arm64-root}"
PY="${DEPLOYPIPE_VENV:-.venv}/bin/python"
[ -x "$PY" ] || PY=python3
if [ -f "$ROOT/.ready" ]; then echo "arm64 root present: $ROOT"; exit 0; fi
for tool in debootstrap qemu-aarch64-static update-binfmts; do
  command -v "$tool" >/dev/null || { echo "skip arm64 root: $tool missing" >&2; exit 0; }
done
# qemu runs aarch64 executables through binfmt_misc (the TVM RPC server starts worker processes)
[ -e /proc/sys/fs/binfmt_misc/register ] || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
rm -rf "$ROOT.tmp"
mkdir -p "$(dirname "$ROOT")"
# --foreign downloads the packages and unpacks the base; the rest are unpacked here with dpkg-deb:
# no maintainer scripts run under emulation (Python and the TVM runtime need none), so this is fast
debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,libstdc++6 bookworm "$ROOT.tmp" \
  http://deb.debian.org/debian >/dev/null
for deb in "$ROOT.tmp"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT.tmp"; done
# TVM runtime wheels for aarch64 (glibc 2.36 in bookworm >= manylinux_2_28), versions as on the host
"$PY" -m pip install -q --target "$ROOT.tmp/opt/tvm" --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp --only-binary=:all: --no-deps \
  apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy ml_dtypes typing_extensions psutil cloudpickle
# a server started with DEPLOYPIPE_EMULATED set says so over RPC (deploypipe.emulated), in every worker
cat > "$ROOT.tmp/opt/tvm/sitecustomize.py" <<'PYEOF'
import os
if os.environ.get("DEPLOYPIPE_EMULATED"):
    import tvm_ffi
    tvm_ffi.register_global_func("deploypipe.emulated", lambda: os.environ["DEPLOYPIPE_EMULATED"], override=True)
PYEOF
rm -rf "$ROOT.tmp/var/cache/apt/archives"/*.deb "$ROOT.tmp/debootstrap"/*.deb
touch "$ROOT.tmp/.ready"
rm -rf "$ROOT" && mv "$ROOT.tmp" "$ROOT"
echo "arm64 root ready: $ROOT ($(du -sh "$ROOT" | cut -f1))"
