"""Runners: one per artifact kind, loaded by `load(path)`; imported only when used.

A runner needs only its own runtime installed, so the same code runs on a device.
"""

from __future__ import annotations

from pathlib import Path

from deploypipe.artifact import Artifact
from deploypipe.errors import UnsupportedError
from deploypipe.registry import resolve
from deploypipe.runtime.base import RunOptions, Runner

# artifact kind -> "module:Class"
_REGISTRY: dict[str, str] = {
    "onnxruntime": "deploypipe.runtime.onnxruntime:OnnxRuntimeRunner",
    "tensorrt": "deploypipe.runtime.tensorrt:TensorRTRunner",
    "openvino": "deploypipe.runtime.openvino:OpenVinoRunner",
    "tflite": "deploypipe.runtime.tflite:TfliteRunner",
    "edgetpu": "deploypipe.runtime.edgetpu:EdgeTpuRunner",
    "hls4ml-csim": "deploypipe.runtime.fpga:Hls4mlCsimRunner",
    "tvm": "deploypipe.runtime.tvm:TvmRunner",
}


def runner_class(kind: str) -> type[Runner]:
    if kind not in _REGISTRY:
        raise UnsupportedError(f"no runner for artifact kind '{kind}' in this deploypipe")
    return resolve(_REGISTRY, kind)


def why_not_runnable(artifact: Artifact) -> str | None:
    """None if this machine can run the artifact's own format, else the reason."""
    if artifact.manifest.kind not in _REGISTRY:
        return f"no runner for artifact kind '{artifact.manifest.kind}'"
    return runner_class(artifact.manifest.kind).why_not_runnable(artifact)


def runs_elsewhere(kind: str, options: RunOptions | None) -> bool:
    """Whether `options` move the artifact's run off this host's own execution: an RPC server or
    tracker for a remote-capable runner, or qemu (`emulate`) for an emulatable one."""
    if options is None or kind not in _REGISTRY:
        return False
    cls = runner_class(kind)
    return (cls.remote and bool(options.rpc or options.tracker)) or (cls.emulatable and options.emulate)


def load(path: str | Path, options: RunOptions | None = None, host_check: bool = False) -> Runner:
    """A runner for the artifact at `path`. With `host_check`, an artifact that cannot run here
    is run through its host stand-in (e.g. the prepared ONNX of a TensorRT artifact). Options naming
    an RPC server or tracker run a remote-capable artifact on that device instead; `emulate` runs an
    emulatable one for another CPU here under qemu."""
    artifact = Artifact(Path(path))
    reason = why_not_runnable(artifact)
    if reason is None or runs_elsewhere(artifact.manifest.kind, options):
        return runner_class(artifact.manifest.kind)(artifact, options or RunOptions())
    hc = artifact.manifest.host_check
    if host_check and hc is not None:
        return runner_class(hc.kind)(artifact, options or RunOptions(), model_file=hc.file)
    raise UnsupportedError(f"{path}: cannot run here: {reason}")


__all__ = ["RunOptions", "Runner", "load", "runs_elsewhere", "why_not_runnable"]
