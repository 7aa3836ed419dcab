"""`deploypipe-run`, the device app for TVM artifacts: TVM's C++ runtime plus a small runner
(`runner.cc`), compiled with the target's g++ (cross g++ for ARM boards). No Python on the device.

Why it exists: PyPI has TVM runtimes for x86-64 and aarch64 only, so an armv7 board (Raspberry Pi 3,
PYNQ-Z1's Cortex-A9) cannot load a model.so through Python; and a board app should not need Python.

The runtime is compiled from the sources that ship inside the installed apache-tvm and apache-tvm-ffi
wheels, so it matches the compiler that wrote model.so. Those wheels lack three serialization
headers (io.h, serializer.h, bytes_io.h: the byte format of the VM executable); they are taken,
unmodified, from the apache-tvm-tirx wheel on PyPI (downloaded once into the cache). Four small
shims of deploypipe's own (`shims/`) stand in for helpers the runner never uses (NVTX ranges, base64
JSON streams, a digit test). The LLM support files of the Relax VM (KV caches, RNN state, tensor
caches) are left out.

Objects are cached per architecture and TVM version under `$DEPLOYPIPE_CACHE` (default
`~/.cache/deploypipe`)/native/, so only the first build for an architecture compiles the runtime
(a few minutes on 2 cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploypipe.errors import BuildError, DeployPipeError, MissingBackendError, UnsupportedError
from deploypipe.toolchains import APT as _APT
from deploypipe.toolchains import COMPILERS, EMULATORS
from deploypipe.progress import Step

HERE = Path(__file__).resolve().parent
RUNNER = "deploypipe-run"
TIRX_WHEEL = "apache-tvm-tirx==0.1.0a4"  # its include/tvm/support matches TVM 0.27's executable format
_TIRX_HEADERS = ("io.h", "serializer.h", "bytes_io.h")
_FLAGS = ["-std=c++17", "-O2", "-fPIC", "-DNDEBUG", "-DTVM_FFI_USE_LIBBACKTRACE=0",
          "-DTVM_FFI_BACKTRACE_ON_SEGFAULT=0", "-DTVM_FFI_CMAKE_LITTLE_ENDIAN=1"]
# Relax VM files for LLM serving (KV caches, RNN state, weight caches): not needed for a DNN
_SKIP = {"builtin_fp16.cc", "attn_backend.cc", "kv_state.cc", "lm_support.cc", "paged_kv_cache.cc",
         "rnn_state.cc", "tensor_cache_support.cc", "backtrace_win.cc"}


def cache_root() -> Path:
    return Path(os.environ.get("DEPLOYPIPE_CACHE", Path.home() / ".cache" / "deploypipe"))


def _packages() -> tuple[Path, Path, str]:
    """(tvm package dir, tvm_ffi package dir, version key) of the installed wheels."""
    try:
        from importlib.metadata import version

        import tvm_ffi
    except ImportError as exc:
        raise MissingBackendError("tvm", "tvm", str(exc)) from exc
    import importlib.util

    spec = importlib.util.find_spec("tvm")  # without importing it (seconds)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBackendError("tvm", "tvm", "apache-tvm is not installed")
    tvm_dir = Path(next(iter(spec.submodule_search_locations)))
    return tvm_dir, Path(tvm_ffi.__file__).parent, f"tvm{version('apache-tvm')}-ffi{version('apache-tvm-ffi')}"


def runtime_sources() -> list[Path]:
    """The C++ files of TVM's runtime and FFI that the Relax VM on a CPU needs."""
    tvm_dir, ffi_dir, _ = _packages()
    rt = tvm_dir / "src" / "runtime"
    files = [*sorted((ffi_dir / "src" / "ffi").glob("*.cc")), *sorted((ffi_dir / "src" / "ffi" / "extra").glob("*.cc")),
             *sorted(rt.glob("*.cc")), *sorted((rt / "memory").glob("*.cc")), *sorted((rt / "vm").glob("*.cc"))]
    files = [f for f in files if f.name not in _SKIP]
    if not any(f.name == "vm.cc" for f in files):
        raise MissingBackendError("tvm", "tvm", f"no TVM runtime sources in {rt}: this apache-tvm wheel does not ship them")
    return files


def support_headers(progress: Callable[[str], None] = lambda _m: None) -> Path:
    """Directory holding tvm/support/{io,serializer,bytes_io}.h from the apache-tvm-tirx wheel."""
    root = cache_root() / "native" / TIRX_WHEEL.replace("==", "-")
    if all((root / "tvm" / "support" / h).is_file() for h in _TIRX_HEADERS):
        return root
    wheels = cache_root() / "native" / "wheels"
    found = sorted(wheels.glob("apache_tvm_tirx-*.whl")) if wheels.is_dir() else []
    if not found:
        progress(f"downloading {TIRX_WHEEL} (for TVM's serialization headers)")
        proc = subprocess.run([sys.executable, "-m", "pip", "download", TIRX_WHEEL, "--no-deps", "-d", str(wheels)],
                              capture_output=True, text=True, check=False)
        found = sorted(wheels.glob("apache_tvm_tirx-*.whl")) if wheels.is_dir() else []
        if proc.returncode != 0 or not found:
            raise MissingBackendError("tvm", "tvm", f"could not download {TIRX_WHEEL}: {proc.stderr.strip()[-300:]}")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent))
    with zipfile.ZipFile(found[-1]) as wheel:
        for header in _TIRX_HEADERS:
            target = tmp / "tvm" / "support" / header
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(f"tvm_tirx/include/tvm/support/{header}"))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def compiler_for(arch: str, cross_compiler: str | None = None) -> str:
    cxx = cross_compiler or COMPILERS.get(arch)
    if cxx is None:
        raise BuildError(f"no C++ compiler known for {arch}: pass the target's cross g++")
    if shutil.which(cxx) is None:
        raise MissingBackendError(cxx, "tvm", install=f"apt-get install {_APT.get(arch, 'g++')} (or scripts/install.sh)")
    return cxx


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()[:12]


def build_runner(arch: str, cross_compiler: str | None = None,
                 progress: Callable[[str], None] = lambda _m: None) -> Path:
    """Compile (or reuse) deploypipe-run for `arch`; returns the binary's path."""
    cxx = compiler_for(arch, cross_compiler)
    tvm_dir, ffi_dir, versions = _packages()
    shims = HERE / "shims"
    shim_files = sorted(p for p in shims.rglob("*.h"))
    key = _digest(cxx.encode(), " ".join(_FLAGS).encode(), *(p.read_bytes() for p in shim_files))
    out_dir = cache_root() / "native" / f"{arch}-{versions}-{key}"
    runner_src = HERE / "runner.cc"
    binary = out_dir / f"{RUNNER}-{_digest(runner_src.read_bytes())}"
    if binary.is_file():
        return binary
    # the runtime includes "../support/x.h" from src/runtime and "../../support/x.h" from
    # src/runtime/vm; against -I <shims>/src/runtime and -I <shims>/src/runtime/vm (which must
    # exist) both land on the shims' src/support/
    local_shims = out_dir / "shims"
    if not local_shims.is_dir():
        shutil.copytree(shims, local_shims)
    (local_shims / "src" / "runtime" / "vm").mkdir(parents=True, exist_ok=True)
    includes = [local_shims / "include", support_headers(progress), tvm_dir / "include", ffi_dir / "include",
                ffi_dir / "3rdparty" / "dlpack" / "include", local_shims / "src" / "runtime",
                local_shims / "src" / "runtime" / "vm"]
    flags = [*_FLAGS, *(f"-I{p}" for p in includes)]
    obj_dir = out_dir / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    sources = runtime_sources()
    done = 0

    def compile_one(src: Path) -> Path:
        nonlocal done
        rel = src.relative_to(ffi_dir if src.is_relative_to(ffi_dir) else tvm_dir)
        obj = obj_dir / (str(rel).replace(os.sep, "_") + ".o")
        if not obj.is_file():
            tmp = obj.with_suffix(f".o.{os.getpid()}.tmp")  # two builds at once never share a half-written file
            proc = subprocess.run([cxx, *flags, "-c", str(src), "-o", str(tmp)], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                raise BuildError(f"{cxx} failed on {src.name}: {proc.stderr.strip()[-1500:]}")
            os.replace(tmp, obj)
        done += 1
        progress(Step(f"TVM runtime for {arch}: {done}/{len(sources)} files compiled", done, len(sources)))
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, sources))
    progress(f"linking {RUNNER} for {arch}")
    tmp = binary.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([cxx, *flags, str(runner_src), *map(str, objects), "-o", str(tmp),
                           # model.so resolves the runtime's C API from the executable
                           "-rdynamic", "-ldl", "-pthread", "-static-libstdc++", "-static-libgcc"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"linking {RUNNER} for {arch} failed: {proc.stderr.strip()[-1500:]}")
    os.replace(tmp, binary)
    return binary


def emulator(arch: str) -> list[str] | None:
    """The command prefix that runs an `arch` binary on this host, or None if it runs natively."""
    import platform

    if arch == platform.machine():
        return None
    if arch not in EMULATORS:
        raise UnsupportedError(f"no emulator known for {arch} libraries (known: {', '.join(EMULATORS)})")
    qemu, sysroot = EMULATORS[arch]
    if shutil.which(qemu) is None:
        raise MissingBackendError(qemu, "tvm", install="apt-get install qemu-user-static (or scripts/install.sh)")
    if not Path(sysroot, "lib").is_dir():
        raise MissingBackendError(f"the {arch} sysroot {sysroot}", "tvm",
                                  install=f"apt-get install {_APT[arch]} (it brings the sysroot)")
    return [qemu, "-L", sysroot]


@dataclass
class NativeRun:
    """What one deploypipe-run call returned."""

    outputs: list[np.ndarray]
    load_ms: float
    first_ms: float
    latency_ms: list[float]


def run(binary: Path, library: Path, inputs: list[np.ndarray], *, prefix: list[str] | None = None,
        warmup: int = 1, repeat: int = 1, threads: int | None = None, timeout: float = 600) -> NativeRun:
    """Run `library` through deploypipe-run (under `prefix`, e.g. qemu) on `inputs` in VM order."""
    with tempfile.TemporaryDirectory(prefix="deploypipe-run-") as tmp:
        work = Path(tmp)
        args = [*(prefix or []), str(binary), str(library), "--output-dir", str(work),
                "--warmup", str(warmup), "--repeat", str(repeat)]
        if threads:
            args += ["--threads", str(threads)]
        for i, arr in enumerate(inputs):
            arr = np.ascontiguousarray(arr)
            path = work / f"input_{i}.bin"
            arr.astype(arr.dtype.newbyteorder("<"), copy=False).tofile(path)
            args += ["--input", f"{arr.dtype.name}:{'x'.join(map(str, arr.shape)) or '1'}:{path}"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise DeployPipeError(f"{RUNNER} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        outputs = [np.fromfile(work / o["file"], dtype=np.dtype(o["dtype"])).reshape(o["shape"])
                   for o in report["outputs"]]
    return NativeRun(outputs=outputs, load_ms=report["load_ms"], first_ms=report["first_ms"],
                     latency_ms=report["latency_ms"])
