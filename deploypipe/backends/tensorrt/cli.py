"""`deploypipe tensorrt ...`: on the Jetson (or any TensorRT machine), build the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from deploypipe.cliutil import JsonOpt, emit_json, out, progress_bar

app = typer.Typer(no_args_is_help=True, help="TensorRT: build an artifact's engine on the device.")


@app.command("build-engine")
def build_engine(
    artifact: Annotated[Path, typer.Argument(help="A TensorRT artifact folder (from `build --target jetson-*/server-gpu`).")],
    any_gpu: Annotated[bool, typer.Option(help="Build even if this GPU is not the target's architecture.")] = False,
    implicit: Annotated[bool, typer.Option(help="INT8 only: implicit INT8 from the FP32 ONNX + calibration cache.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """On the device: build the TensorRT engine of an artifact and record GPU and TensorRT in its manifest."""
    from deploypipe.backends.tensorrt.ondevice import trt_build

    with progress_bar("building the TensorRT engine"):
        facts = trt_build(artifact, any_gpu=any_gpu, implicit=implicit)
    if as_json:
        emit_json(facts.model_dump())
    else:
        g = facts.golden_check
        check = f"; golden check: max abs err {g.max_abs_err:.3g}, cosine {g.cosine:.5f} ({g.where})" if g else ""
        out.print(f"built {artifact}/model.engine on {facts.gpu} (SM {facts.sm}), TensorRT {facts.tensorrt} "
                  f"({facts.built_with}){check}", highlight=False)
