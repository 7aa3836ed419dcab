"""The backend registry: compilers, runners and CLI sub-apps by name, imported only when used.

Each backend is a package `deploypipe.backends.<name>` holding its compiler, its runner (which
never imports the compiler, so a device needs only the runner's runtime), its facts and its CLI
sub-commands. Generic code (api, bench, partition) reaches a backend only through this module.

This package's own module is light (the CLI imports it to mount sub-apps before `--help`): the
interfaces are in `backends.compiler` / `backends.runner`, and what loading an artifact needs
(numpy, onnx through `artifact`) is imported by the function that loads one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from deploypipe.errors import InputFileError, UnknownNameError, UnsupportedError
from deploypipe.registry import resolve
from deploypipe.targets import TargetSpec

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact
    from deploypipe.backends.compiler import Compiler
    from deploypipe.backends.runner import Runner, RunOptions

_B = "deploypipe.backends"
# compiler name -> "module:Class"; each module imports its heavy toolchain inside functions.
COMPILERS: dict[str, str] = {
    "onnxruntime": f"{_B}.onnxruntime.compiler:OnnxRuntimeCompiler",
    "tensorrt": f"{_B}.tensorrt.compiler:TensorRTCompiler",
    "openvino": f"{_B}.openvino.compiler:OpenVinoCompiler",
    "tflite": f"{_B}.tflite.compiler:TfliteCompiler",
    "edgetpu": f"{_B}.edgetpu.compiler:EdgeTpuCompiler",
    "hls4ml": f"{_B}.hls4ml.compiler:Hls4mlCompiler",
    "tvm": f"{_B}.tvm.compiler:TvmCompiler",
}
# artifact kind -> "module:Class"
RUNNERS: dict[str, str] = {
    "onnxruntime": f"{_B}.onnxruntime.runner:OnnxRuntimeRunner",
    "tensorrt": f"{_B}.tensorrt.runner:TensorRTRunner",
    "openvino": f"{_B}.openvino.runner:OpenVinoRunner",
    "tflite": f"{_B}.tflite.runner:TfliteRunner",
    "edgetpu": f"{_B}.edgetpu.runner:EdgeTpuRunner",
    "hls4ml-csim": f"{_B}.hls4ml.runner:Hls4mlCsimRunner",
    "tvm": f"{_B}.tvm.runner:TvmRunner",
}
# backend -> "module:app": Typer sub-apps mounted as `deploypipe <backend> ...`
CLI_APPS: dict[str, str] = {
    "tvm": f"{_B}.tvm.cli:app",
    "tensorrt": f"{_B}.tensorrt.cli:app",
    "edgetpu": f"{_B}.edgetpu.cli:app",
}


def compiler_names() -> list[str]:
    return sorted(COMPILERS)


def compiler_class(name: str) -> type[Compiler]:
    if name not in COMPILERS:
        raise UnknownNameError("compiler", name, COMPILERS)
    return resolve(COMPILERS, name)


def get_compiler(name: str) -> Compiler:
    return compiler_class(name)()


def compiler_options(compiler: str, target: TargetSpec) -> BaseModel:
    """The target file's `[compilers.<compiler>] options`, validated into the compiler's typed
    Options (the one place options are parsed); a bad file is one line naming file, key and why."""
    cls = compiler_class(compiler)
    if compiler not in target.compilers:
        raise UnsupportedError(f"target {target.name} has no compiler {compiler}")
    try:
        return cls.Options(**target.compilers[compiler].options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "options"
        raise InputFileError(f"target {target.name}: [compilers.{compiler}] options: {where}: {first['msg']}") from None


def check_target(target: TargetSpec) -> None:
    """Validate every compiler's options in a target file (`deploypipe targets` does it for all)."""
    for name in target.compilers:
        compiler_options(name, target)


def runner_class(kind: str) -> type[Runner]:
    if kind not in RUNNERS:
        raise UnsupportedError(f"no runner for artifact kind '{kind}' in this deploypipe")
    return resolve(RUNNERS, kind)


def why_not_runnable(artifact: Artifact) -> str | None:
    """None if this machine can run the artifact's own format, else the reason."""
    if artifact.manifest.kind not in RUNNERS:
        return f"no runner for artifact kind '{artifact.manifest.kind}'"
    return runner_class(artifact.manifest.kind).why_not_runnable(artifact)


def runs_elsewhere(kind: str, options: RunOptions | None) -> bool:
    """Whether `options.device` moves the artifact's run off this host's own execution (a device
    the runner reaches itself, or emulation of another CPU)."""
    if options is None or options.device is None or kind not in RUNNERS:
        return False
    return runner_class(kind).runs_elsewhere(options)


def load(path: str | Path, options: RunOptions | None = None, host_check: bool = False) -> Runner:
    """A runner for the artifact at `path`. With `host_check`, an artifact that cannot run here
    is run through its host stand-in (e.g. the prepared ONNX of a TensorRT artifact). Options naming
    a device the runner can reach (`RunOptions.device`) run it there instead."""
    from deploypipe.artifact import Artifact
    from deploypipe.backends.runner import RunOptions


    artifact = Artifact(Path(path))
    reason = why_not_runnable(artifact)
    if reason is None or runs_elsewhere(artifact.manifest.kind, options):
        return runner_class(artifact.manifest.kind)(artifact, options or RunOptions())
    hc = artifact.manifest.host_check
    if host_check and hc is not None:
        return runner_class(hc.kind)(artifact, options or RunOptions(), model_file=hc.file)
    raise UnsupportedError(f"{path}: cannot run here: {reason}")


__all__ = ["check_target", "compiler_class", "compiler_names", "compiler_options", "get_compiler", "load",
           "runner_class", "runs_elsewhere", "why_not_runnable"]
