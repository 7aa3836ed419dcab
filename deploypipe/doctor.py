"""`deploypipe doctor`: what this machine can build and run, in one look.

Backends with their versions (read from package metadata: nothing heavy is imported, so this takes
well under a second), the CPU features that change results (VNNI decides whether INT8 pays off on
x86; dot-product on ARM), cross toolchains and qemu for emulated ARM runs, GPUs, and per target
whether it can be built here, run here, run under emulation, or only estimated by the cost model.
Missing pieces are warnings with their install hint, never errors.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from deploypipe import __version__, targets
from deploypipe.toolchains import APT, COMPILERS, EMULATORS, VENV_ENV, toolchain_versions, venv_dir

_ROOT = Path(__file__).resolve().parent.parent
_EXTRA = "pip install 'deploypipe[{}]'"


@dataclass
class Item:
    """One thing checked: found (with its version or path) or missing (with how to get it)."""

    name: str
    found: bool
    detail: str = ""
    hint: str = ""


# distribution(s) -> (shown name, install hint); the first installed distribution wins
_BACKENDS: list[tuple[str, tuple[str, ...], str]] = [
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), "pip install onnxruntime (a main dependency)"),
    ("openvino", ("openvino",), _EXTRA.format("openvino")),
    ("nncf", ("nncf",), _EXTRA.format("openvino")),
    ("tvm", ("apache-tvm",), _EXTRA.format("tvm")),
    ("ai-edge-litert", ("ai-edge-litert",), _EXTRA.format("tflite")),
    ("hls4ml", ("hls4ml",), _EXTRA.format("fpga")),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"), "on a Jetson: JetPack; on a server: pip install tensorrt"),
    ("loadgen", ("mlcommons-loadgen",), _EXTRA.format("bench")),
]
_MACHINE = {"armv7": "armv7l"}  # target files' arch -> platform.machine() spelling (deploypipe.toolchains' keys)
# CPU feature flags that change what a backend does: /proc/cpuinfo name -> what it means here
_X86_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI (fast INT8)",
              "avx_vnni": "AVX-VNNI (fast INT8)", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX BF16",
              "amx_int8": "AMX INT8", "avx512_fp16": "AVX-512 FP16"}
_ARM_FLAGS = {"asimd": "NEON", "asimddp": "dot-product (fast INT8)", "i8mm": "INT8 matrix multiply",
              "bf16": "BF16", "fphp": "FP16 arithmetic", "neon": "NEON"}


def _version(dists: tuple[str, ...]) -> str | None:
    """The version of the first installed distribution, naming it when it is not the first
    (e.g. '1.20.1 (onnxruntime-gpu)')."""
    for i, dist in enumerate(dists):
        try:
            v = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return v if i == 0 else f"{v} ({dist})"
    return None


def backends() -> list[Item]:
    out = []
    for name, dists, hint in _BACKENDS:
        v = _version(dists)
        out.append(Item(name, v is not None, v or "", "" if v else hint))
    out.append(tflite_venv())
    return out


def tflite_venv() -> Item:
    """The TFLite converter's own venv (TensorFlow + onnx2tf): found where the tflite compiler looks."""
    venv = venv_dir()
    if venv is None:
        return Item("TFLite converter venv", False, "", f"bash scripts/install.sh (creates .venv-tflite) or set {VENV_ENV}")
    have = toolchain_versions()
    versions = [f"{pkg} {have[f'converter:{pkg}']}" for pkg in ("tensorflow", "onnx2tf") if f"converter:{pkg}" in have]
    return Item("TFLite converter venv", True, f"{venv} ({', '.join(versions) or 'no TensorFlow found'})")


def _flag_labels(arch: str) -> dict[str, str]:
    return _X86_FLAGS if arch in ("x86_64", "AMD64") else _ARM_FLAGS


def cpu() -> dict[str, Any]:
    """Model name, architecture and the feature flags that change results."""
    model, flags = platform.processor() or "", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
            model = value.strip()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
    features = {flag: flag in flags for flag in _flag_labels(platform.machine())}
    int8 = any(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
    return {"model": model, "arch": platform.machine(), "cores": os.cpu_count(), "features": features,
            "fast_int8": int8}


def _which(tool: str, hint: str) -> Item:
    path = shutil.which(tool)
    return Item(tool, path is not None, path or "", "" if path else hint)


def arm64_root() -> Item:
    """The emulated aarch64 board's root file system that scripts/tvm_arm_root.sh builds."""
    root = Path(os.environ.get("DEPLOYPIPE_ARM64_ROOT", _ROOT / ".cache" / "arm64-root"))
    ready = (root / ".ready").is_file()
    return Item("arm64 root", ready, str(root) if ready else "",
                "" if ready else "sudo bash scripts/tvm_arm_root.sh (a qemu aarch64 board for TVM RPC tests)")


def _gpu() -> Item:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Item("NVIDIA GPU", False, "", "no nvidia-smi: TensorRT and CUDA targets are built here, run on the device")
    try:
        proc = subprocess.run([smi, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Item("NVIDIA GPU", False, "", f"nvidia-smi failed: {exc}")
    gpus = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not gpus:
        return Item("NVIDIA GPU", False, "", f"nvidia-smi found no GPU ({proc.stderr.strip()[:80]})")
    return Item("NVIDIA GPU", True, "; ".join(f"{g} (name, driver, SM)" for g in gpus))


def tools() -> list[Item]:
    return [
        _which("g++", "apt-get install g++ (hls4ml C simulation, deploypipe-run)"),
        *(_which(cxx, f"apt-get install {APT[arch]}") for arch, cxx in COMPILERS.items()
          if arch != platform.machine()),
        *(_which(qemu, "apt-get install qemu-user-static") for qemu, _sysroot in EMULATORS.values()),
        arm64_root(),
        _gpu(),
        _which("trtexec", "comes with TensorRT (JetPack on a Jetson)"),
        _which("edgetpu_compiler", "x86-64 Debian/Ubuntu with Coral's apt repository; the artifact carries the command"),
        _which("vivado", "AMD/Xilinx Vivado (for the FPGA bitstream; the artifact carries the script)"),
    ]


@dataclass
class TargetVerdict:
    """What this machine can do for one target."""

    name: str
    builds: list[str] = field(default_factory=list)  # compilers usable here
    cannot_build: dict[str, str] = field(default_factory=dict)  # compiler -> what is missing
    run: str = "estimate"  # here | emulation | estimate | none
    detail: str = ""


def _build_needs(compiler: str, spec: targets.TargetSpec, have: dict[str, Item]) -> str | None:
    """What is missing to build for `spec` with `compiler` (names; the hints are in the lists), or None."""
    needs = {"onnxruntime": ["onnxruntime"], "tensorrt": ["onnxruntime"], "openvino": ["openvino", "nncf"],
             "tflite": ["TFLite converter venv"], "edgetpu": ["TFLite converter venv"],
             "hls4ml": ["hls4ml", "g++"], "tvm": ["tvm"]}.get(compiler, [])
    cross = spec.compilers[compiler].options.get("cross_compiler")
    if cross:
        needs.append(cross)
    missing = [n for n in needs if not have.get(n, Item(n, shutil.which(n) is not None)).found]
    return ", ".join(missing) or None


def _run_verdict(spec: targets.TargetSpec, have: dict[str, Item], arch: str) -> tuple[str, str]:
    estimable = any(k.startswith("peak_gflops_") for k in spec.figures)  # what the cost model needs
    fallback = ("estimate", "cost model from the target's figures") if estimable else ("none", "no figures to estimate from")
    if spec.runs_here or spec.arch == arch:
        runtimes = [c for c in spec.compilers if have.get({"tvm": "tvm", "openvino": "openvino", "tflite": "ai-edge-litert"}
                                                          .get(c, "onnxruntime"), Item(c, False)).found]
        return ("here", f"runtimes: {', '.join(runtimes)}") if runtimes else fallback
    if spec.arch == "cuda":
        gpu = have["NVIDIA GPU"]
        if gpu.found and (have["tensorrt"].found or "onnxruntime-gpu" in have["onnxruntime"].detail):
            return "here", f"{gpu.detail}; results are for this GPU, not the target's"
        return fallback
    machine = _MACHINE.get(spec.arch, spec.arch)
    if machine in EMULATORS and "tvm" in spec.compilers:
        qemu = EMULATORS[machine][0]
        needed = [have["tvm"], have[qemu], have[COMPILERS[machine]]]
        if all(i.found for i in needed):
            return "emulation", f"TVM library under {qemu} (correctness only, never a device timing)"
        missing = ", ".join(i.name for i in needed if not i.found)
        return fallback[0], f"{fallback[1]}; emulation needs {missing}"
    if "hls4ml" in spec.compilers and have["hls4ml"].found and have["g++"].found:
        return "emulation", "hls4ml C simulation with g++ (bit-accurate, not FPGA timing)"
    return fallback


def target_verdicts(have: dict[str, Item]) -> list[TargetVerdict]:
    out = []
    arch = {"arm64": "aarch64", "armv7l": "armv7"}.get(platform.machine(), platform.machine())  # target spelling
    for spec in targets.all_targets().values():
        v = TargetVerdict(spec.name)
        for compiler in spec.compilers:
            missing = _build_needs(compiler, spec, have)
            if missing:
                v.cannot_build[compiler] = missing
            else:
                v.builds.append(compiler)
        v.run, v.detail = _run_verdict(spec, have, arch)
        out.append(v)
    return out


def diagnose() -> dict[str, Any]:
    """Everything `deploypipe doctor` reports, as plain data (the --json output)."""
    found_backends, found_tools = backends(), tools()
    have = {i.name: i for i in [*found_backends, *found_tools]}
    cpu_info = cpu()
    warnings = [f"{i.name} missing: {i.hint}" for i in [*found_backends, *found_tools] if not i.found]
    if cpu_info["arch"] == "x86_64" and not cpu_info["fast_int8"]:
        warnings.append("no VNNI/AMX: INT8 may run no faster than FP32 on this CPU")
    return {
        "deploypipe": __version__, "python": platform.python_version(), "cpu": cpu_info,
        "backends": [asdict(i) for i in found_backends], "tools": [asdict(i) for i in found_tools],
        "targets": [asdict(v) for v in target_verdicts(have)], "warnings": warnings,
    }


def render(report: dict[str, Any]) -> Any:
    """The report as rich renderables: three short tables and the warnings."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from deploypipe.tables import table as new_table

    def items(title: str, rows: list[dict[str, Any]]) -> Table:
        t = new_table(title, ("", "name", "version / path, or how to install"), fold=("version / path, or how to install",))
        for i in rows:
            t.add_row("[green]✓[/]" if i["found"] else "[yellow]✗[/]", i["name"], i["detail"] or i["hint"])
        return t

    c = report["cpu"]
    labels = _flag_labels(c["arch"])
    feats = ", ".join(f"{labels[k]} {'yes' if v else 'no'}" for k, v in c["features"].items())
    head = Text(f"deploypipe {report['deploypipe']} · Python {report['python']} · {c['model']} ({c['arch']}, "
                f"{c['cores']} cores)\nCPU features: {feats}")
    tt = new_table("Targets", ("target", "build here", "run", "how / what is missing"),
                   fold=("build here", "how / what is missing"))
    style = {"here": "green", "emulation": "cyan", "estimate": "yellow", "none": "red"}
    for v in report["targets"]:
        why = v["detail"] + ("; cannot build with " + "; ".join(f"{k}: needs {m}" for k, m in v["cannot_build"].items())
                             if v["cannot_build"] else "")
        tt.add_row(v["name"], ", ".join(v["builds"]) or "-", f"[{style[v['run']]}]{v['run']}[/]", why)
    warn = Text("\n".join(f"warning: {w}" for w in report["warnings"]) or "no warnings", style="yellow")
    return Group(head, items("Backends", report["backends"]), items("Tools", report["tools"]), tt, warn)
