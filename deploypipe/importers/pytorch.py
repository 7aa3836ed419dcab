"""PyTorch sources: TorchScript archives, ExportedPrograms (.pt2), and pickled modules (opt-in).

Also holds `export_module`, the one torch -> ONNX export every torch-based source goes through.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from deploypipe.errors import InputFileError, UnsafeInputError
from deploypipe.importers.common import finish

if TYPE_CHECKING:
    import torch

    from deploypipe.importers import ImportOptions
    from deploypipe.model import Model


def _dynamic_axes(dynamic: dict[str, list[int]] | None, outputs: list[str]) -> dict[str, dict[int, str]] | None:
    """torch.onnx's dynamic_axes for the inputs' dynamic dims; a dynamic batch is the outputs' too."""
    if not dynamic:
        return None
    axes = {name: {i: f"{name}_dim{i}" for i in dims} for name, dims in dynamic.items()}
    if any(0 in dims for dims in dynamic.values()):
        axes |= {out: {0: "batch"} for out in outputs}
    return axes


def export_module(
    module: torch.nn.Module,
    inputs: dict[str, tuple[int, ...]],
    dtypes: dict[str, str] | None = None,
    opset: int = 17,
    dynamic: dict[str, list[int]] | None = None,
) -> onnx.ModelProto:
    """Export with the TorchScript-based exporter (fast, opset 17); fall back to dynamo for
    modules it cannot trace. Static shapes: edge compilers want them. The module must already
    be in eval mode (an ExportedProgram's module cannot be switched)."""
    import torch

    dtypes = dtypes or {}
    args = tuple(
        torch.zeros(shape, dtype=getattr(torch, dtypes.get(name, "float32")))
        for name, shape in inputs.items()
    )
    buf = io.BytesIO()
    try:
        with torch.no_grad():
            out = module(*args)
    except Exception as exc:  # noqa: BLE001 - the module's own error, reported as the input's problem
        given = ", ".join(f"{n}:{dtypes.get(n, 'float32')}" for n in inputs)
        raise InputFileError(
            f"{type(module).__name__} does not run on zero inputs ({given}): {' '.join(str(exc).split())[:300]}; "
            "give each input's shape and dtype with --input-shape NAME=1x32:int64"
        ) from exc
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    out_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    try:
        torch.onnx.export(
            module, args, buf, dynamo=False, opset_version=opset,
            input_names=list(inputs), output_names=out_names, do_constant_folding=True,
            dynamic_axes=_dynamic_axes(dynamic, out_names),
        )
    except Exception as legacy_exc:  # noqa: BLE001 - retried with the other exporter, re-raised below
        buf = io.BytesIO()
        try:
            program = torch.onnx.export(
                module, args, dynamo=True, opset_version=max(opset, 18),
                input_names=list(inputs), output_names=out_names, external_data=False,
            )
            program.save(buf)
        except Exception as exc:
            raise InputFileError(
                f"could not export {type(module).__name__} to ONNX: {legacy_exc}; dynamo: {exc}"
            ) from exc
    return onnx.load_model_from_string(buf.getvalue())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0].split('. ')[0] if text else ''}"[:200]


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a library logger that prints tracebacks for errors we report in one line."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def load(path: Path, options: ImportOptions) -> Model:
    import torch

    if path.suffix == ".pt2":
        if not zipfile.is_zipfile(path):  # torch would log a long traceback before failing
            raise InputFileError(f"{path}: not an ExportedProgram (a .pt2 is a zip archive; this file is not, or is truncated)")
        try:
            with _quiet("torch.export"):
                program = torch.export.load(str(path))
        except Exception as exc:
            raise InputFileError(f"{path}: not a readable ExportedProgram ({_first_line(exc)})") from exc
        module = program.module()
        example = program.example_inputs[0] if program.example_inputs else ()
        names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        shapes = {n: tuple(t.shape) for n, t in zip(names, example, strict=False)}
        shapes.update(options.input_shapes)
        kind = "ExportedProgram"
    elif _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:
            raise InputFileError(f"{path}: not a readable TorchScript archive ({exc})") from exc
        shapes = dict(options.input_shapes)
        kind = "TorchScript"
    else:
        module = _load_pickled(path, options)
        shapes = dict(options.input_shapes)
        kind = "pickled nn.Module"
    if not shapes:
        raise InputFileError(
            f"{path}: a {kind} file does not record input shapes; give them with --input-shape input=1x3x224x224"
        )
    proto = export_module(module, shapes, dict(options.input_dtypes), opset=options.opset)
    return finish(proto, name=path.stem, source=str(path), importer="pytorch", options=options,
                  notes=(f"exported from {kind} with torch {torch.__version__}",))


def _load_pickled(path: Path, options: ImportOptions) -> torch.nn.Module:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as safe_exc:  # a well-formed pickle that needs code to load
        if not options.allow_pickle:
            raise UnsafeInputError(
                f"{path} is a pickle that would run code when loaded; re-run with --allow-pickle "
                "only if you trust its author"
            ) from safe_exc
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise InputFileError(f"{path}: cannot be loaded by torch ({_first_line(exc)})") from exc
    except Exception as exc:  # truncated zip, garbage bytes: torch's own errors say nothing useful
        raise InputFileError(f"{path}: corrupt or truncated PyTorch file ({_first_line(exc)})") from exc
    if isinstance(obj, dict):
        raise InputFileError(
            f"{path} holds a state_dict (weights only); pass the architecture as a zoo name with "
            "--weights FILE"
        )
    if not isinstance(obj, torch.nn.Module):
        raise InputFileError(f"{path} holds a {type(obj).__name__}, not an nn.Module")
    return obj.eval()
