"""The LiteRT interpreter runner shared by the tflite and edgetpu backends: runs .tflite files (ai-edge-litert; XNNPACK CPU delegate).

Feeds come in the source model's form (ONNX names, channel-first, float32), as in the golden
pair and the fidelity check; the runner moves them to the TFLite tensors' layout, quantizes int8
inputs (q = round(x/s) + z, clipped) and dequantizes outputs ((q - z) * s), so int8 artifacts are
compared with float references. `compiler_info["io"]` in the manifest says how, tensor by tensor.

Per-op profile: the Python interpreter has no profiler accessor, so each operator is cut into a
one-op model (same tensors, same delegate) and timed on the intermediate values of a real run.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from deploypipe.backends.runner import LayerTime, Runner
from deploypipe.errors import InputFileError, ShapeError

if TYPE_CHECKING:
    from deploypipe.artifact import Artifact

_PROFILE_REPEATS = 20


class LiteRtRunner(Runner):
    kind = "tflite"
    library = "ai_edge_litert.interpreter"

    @classmethod
    def why_not_runnable(cls, artifact: Artifact) -> str | None:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError:
            return "ai-edge-litert is not installed (pip install 'deploypipe[tflite]')"
        return None

    def _delegates(self) -> list[Any]:
        return []

    def activate(self) -> None:
        info = self.artifact.manifest.compiler_info
        if not info.get("io"):
            raise InputFileError(f"{self.artifact.path}: manifest has no TFLite io map (compiler_info.io)")
        self._last_feeds: dict[int, np.ndarray] = {}
        # an artifact built for --batch 1,8,32 holds one .tflite per size (compiler_info.batches)
        self._files = {int(b["batch"]): (self.artifact.path / b["file"], b["io"]) for b in info.get("batches", [])}
        self._sessions: dict[int | None, tuple[Any, dict[str, list[dict[str, Any]]]]] = {}
        self.interp, self.io = self._open(self.model_path, info["io"])
        first = next(iter(self._files), None)
        self._sessions[first] = (self.interp, self.io)

    def _open(self, path: Any, io: dict[str, list[dict[str, Any]]]) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=self.options.threads,
                             experimental_delegates=self._delegates() or None,
                             experimental_preserve_all_tensors=self.options.profile)
        interp.allocate_tensors()
        by_name = {d["name"]: d["index"] for d in interp.get_input_details() + interp.get_output_details()}
        for t in io["inputs"] + io["outputs"]:  # the io map was written for this file: check it still fits
            if by_name.get(t["tflite_name"], t["index"]) != t["index"]:
                raise InputFileError(f"{path.name}: tensor {t['tflite_name']} is not where the manifest says")
        return interp, io

    def _session(self, feeds: dict[str, np.ndarray]) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
        """The interpreter for the feeds' batch size (opened on first use)."""
        if not self._files:
            return self.interp, self.io
        batch = int(np.asarray(feeds[self.io["inputs"][0]["onnx_name"]]).shape[0])
        if batch not in self._files:
            raise ShapeError(f"this artifact holds TFLite models for batch {sorted(self._files)}, not {batch}")
        if batch not in self._sessions:
            self._sessions[batch] = self._open(*self._files[batch])
        return self._sessions[batch]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        interp, io = self._session(feeds)
        for t in io["inputs"]:
            x = np.asarray(feeds[t["onnx_name"]])
            if t["perm"]:
                x = x.transpose(t["perm"])
            dtype = np.dtype(t["dtype"])
            if t["scale"] > 0 and dtype.kind in "iu":
                info = np.iinfo(dtype)
                x = np.clip(np.round(x / t["scale"]) + t["zero_point"], info.min, info.max)
            x = np.ascontiguousarray(x, dtype=dtype)
            interp.set_tensor(t["index"], x)
            if self.options.profile:
                self._last_feeds[t["index"]] = x
        interp.invoke()
        out = {}
        for t in io["outputs"]:
            y = interp.get_tensor(t["index"])
            if t["scale"] > 0 and y.dtype.kind in "iu":
                y = (y.astype(np.float32) - t["zero_point"]) * np.float32(t["scale"])
            if t["perm"]:
                y = y.transpose(np.argsort(t["perm"]))
            out[t["onnx_name"]] = np.ascontiguousarray(y, dtype=np.float32)
        return out

    def layer_profile(self) -> list[LayerTime] | None:
        if not self.options.profile or not self._last_feeds:
            return None
        return profile_ops(self.model_path.read_bytes(), self.interp, self.options.threads, self._delegates())


def profile_ops(model_bytes: bytes, interp: Any, threads: int | None, delegates: list[Any]) -> list[LayerTime]:
    """Time each operator alone: a one-op copy of the model fed with the tensors of the last run.
    Measured, but without the cross-op effects of the whole graph (cache reuse, fusion)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    graph = model.subgraphs[0]
    ops = list(graph.operators)
    codes = [_op_name(schema, c) for c in model.operatorCodes]
    values = {i: interp.get_tensor(i) for i in range(len(graph.tensors)) if _has_value(interp, i)}
    layers = []
    for op in ops:
        feeds = [i for i in op.inputs if i >= 0 and not _is_const(model, graph, i)]
        if any(i not in values for i in feeds):
            continue
        graph.operators, graph.inputs, graph.outputs = [op], feeds, list(op.outputs)
        one = Interpreter(model_content=_serialize(schema, model), num_threads=threads,
                          experimental_delegates=delegates or None)
        one.allocate_tensors()
        for i in feeds:
            one.set_tensor(i, values[i])
        one.invoke()
        t0 = time.perf_counter()
        for _ in range(_PROFILE_REPEATS):
            one.invoke()
        ms = (time.perf_counter() - t0) * 1000 / _PROFILE_REPEATS
        name = graph.tensors[op.outputs[0]].name
        layers.append(LayerTime(name=name.decode() if isinstance(name, bytes) else str(name),
                                op=codes[op.opcodeIndex], ms=ms))
    graph.operators = ops
    return layers


def _op_name(schema: Any, code: Any) -> str:
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode}"
    return names.get(builtin, str(builtin))


def _is_const(model: Any, graph: Any, i: int) -> bool:
    buf = graph.tensors[i].buffer
    return buf > 0 and model.buffers[buf].data is not None and len(model.buffers[buf].data) > 0


def _has_value(interp: Any, i: int) -> bool:
    try:
        interp.get_tensor(i)
    except ValueError:
        return False
    return True


def _serialize(schema: Any, model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
