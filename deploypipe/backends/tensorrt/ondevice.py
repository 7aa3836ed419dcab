"""On the device: `deploypipe tensorrt build-engine` builds a TensorRT artifact's engine with the local
TensorRT, checks it on the golden input and records where it was built in the manifest."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from deploypipe.artifact import MANIFEST, Artifact, atomic_write, file_entry
from deploypipe.backends.runner import RunOptions
from deploypipe.backends.tensorrt.engine import ENGINE, build_engine
from deploypipe.backends.tensorrt.facts import EngineFacts, GoldenCheck, local_gpu
from deploypipe.backends.tensorrt.runner import TensorRTRunner
from deploypipe.errors import UnsupportedError, UserError


def trt_build(path: Path, any_gpu: bool = False, implicit: bool = False) -> EngineFacts:
    """`deploypipe tensorrt build-engine`: build the engine of a TensorRT artifact on this machine, check it on
    the artifact's golden input, and record GPU, SM and TensorRT version in the manifest (rewritten
    atomically). Refuses a GPU of another architecture than the target's unless `any_gpu`."""
    art = Artifact(path)
    m = art.manifest
    if m.kind != "tensorrt":
        raise UserError(f"{path}: a {m.kind} artifact, not a TensorRT one (built with --target {m.target})")
    info = m.compiler_info
    gpu = local_gpu()
    if gpu is not None and gpu.sm != info["sm"] and not any_gpu:
        raise UnsupportedError(
            f"this GPU ({gpu.name}, SM {gpu.sm}) is not the {m.target}'s (SM {info['sm']}); an engine built here "
            f"would not run there. Run `deploypipe tensorrt build-engine` on the {m.target}, or pass --any-gpu to build for this GPU."
        )
    if implicit and "calibration_cache" not in m.files:
        raise UserError(f"{path}: --implicit needs an INT8 artifact with a calibration cache")
    onnx_role = "onnx_fp32" if implicit else "model"
    calib = m.files["calibration_cache"].path if implicit else None
    facts = build_engine(art.path, m.files[onnx_role].path, m.precision, info["tensorrt_version"],
                         int(info["workspace_mib"]), calib, info.get("profiles"))
    m.files["engine"] = file_entry(art.path, ENGINE)
    m.compiler_info["engine"] = facts.model_dump()  # the runner checks the engine against it
    inputs, reference, _ = art.golden()
    with TensorRTRunner(art, RunOptions()) as runner:  # art.manifest now lists the engine
        out = runner.infer(inputs, check=False)
    ref = np.concatenate([reference[k].astype(np.float64).ravel() for k in reference])
    got = np.concatenate([out[k].astype(np.float64).ravel() for k in reference])
    denom = float(np.linalg.norm(ref) * np.linalg.norm(got)) or 1.0
    facts.golden_check = GoldenCheck(
        max_abs_err=float(np.max(np.abs(ref - got))), cosine=float(np.dot(ref, got) / denom),
        where=f"measured on {platform.node()} ({gpu.name if gpu else '?'}) with the engine, 1 golden sample",
    )
    m.compiler_info["engine"] = facts.model_dump()
    m.notes.append(f"engine built on {facts.built_on}: {facts.gpu} (SM {facts.sm}), "
                   f"TensorRT {facts.tensorrt}, with {facts.built_with}")
    atomic_write(art.path / MANIFEST, m.model_dump_json(indent=2).encode())
    return facts
