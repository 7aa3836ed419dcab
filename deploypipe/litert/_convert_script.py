"""The TensorFlow side of the TFLite backend, run as a subprocess inside `.venv-tflite`.

Why a subprocess: onnx2tf 1.29.24 + TensorFlow 2.19 need onnx 1.19.1, numpy<2 and protobuf<5,
which conflict with the main environment. So this file imports only the standard library and what
that venv has (never `deploypipe`), and talks JSON: `python _convert_script.py REQUEST RESULT`.

Commands (REQUEST["command"]):
- versions: the toolchain's package versions.
- convert: ONNX -> TFLite fp32/fp16/full-integer int8 with onnx2tf, calibrated on our own data.
- import: TensorFlow SavedModel / Keras (.keras, .h5) / .tflite -> ONNX with tf2onnx.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

PACKAGES = ("tensorflow", "tf_keras", "onnx2tf", "tf2onnx", "onnx", "onnxruntime", "numpy", "protobuf",
            "ai-edge-litert")
# onnx2tf moves 3-D/4-D/5-D inputs from channel-first (ONNX) to channel-last (TFLite).
CHANNEL_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}
# what onnx2tf calls each variant it writes, by our precision name
VARIANTS = {"fp32": "float32", "fp16": "float16", "int8": "full_integer_quant"}


class ToolError(Exception):
    """A failure to report as one line (kind: 'unsupported' | 'input' | 'build')."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


def _rename_io(model: Any) -> tuple[list[str], list[str]]:
    """Give graph inputs/outputs plain identifiers (in_0, out_0) so that onnx2tf's sanitising of
    names cannot break the calibration-data lookup or our mapping back to the ONNX names."""
    inits = {i.name for i in model.graph.initializer}
    ins = [vi.name for vi in model.graph.input if vi.name not in inits]
    outs = [vi.name for vi in model.graph.output]
    mapping = {n: f"in_{i}" for i, n in enumerate(ins)} | {n: f"out_{i}" for i, n in enumerate(outs)}
    for node in model.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        vi.name = mapping.get(vi.name, vi.name)
    return ins, outs


def sanitize_names(model: Any) -> None:
    """Node and tensor names as plain identifiers: onnx2tf turns names into TensorFlow op names
    and refuses characters such as `@` and `:` (real exports have nodes named `Softmax@0` or
    `/encoder/layer.0/Add:0`). Graphs with subgraphs (If/Loop) are left alone: their inner nodes
    may refer to outer tensors by name."""
    import re

    graph = model.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        return
    keep = {vi.name for vi in [*graph.input, *graph.output]}
    taken: set[str] = set(keep)

    def safe(name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name).lstrip("_") or "t"
        new, k = base, 0
        while new in taken:
            k += 1
            new = f"{base}_{k}"
        taken.add(new)
        return new

    tensors = [i.name for i in graph.initializer] + [t for n in graph.node for t in [*n.input, *n.output]]
    mapping = {t: safe(t) for t in dict.fromkeys(tensors) if t and t not in keep}
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for vi in graph.value_info:
        vi.name = mapping.get(vi.name, vi.name)
    for node in graph.node:
        node.input[:] = [mapping.get(t, t) for t in node.input]
        node.output[:] = [mapping.get(t, t) for t in node.output]
        node.name = safe(node.name or node.op_type)


def _describe(path: Path) -> dict[str, Any]:
    """I/O tensors (name, shape, dtype, quantization) and op list of a .tflite file."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(path))
    ops = [d["op_name"] for d in interp._get_ops_details()]  # noqa: SLF001 - the only op listing

    def io(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
        res = []
        for d in details:
            scale, zero = d["quantization"]
            res.append({"tflite_name": d["name"], "index": int(d["index"]), "shape": [int(x) for x in d["shape"]],
                        "dtype": d["dtype"].__name__, "scale": float(scale), "zero_point": int(zero)})
        return res

    sigs = interp._get_full_signature_list()  # noqa: SLF001 - signature name -> tensor index
    sig = next(iter(sigs.values()), {"inputs": {}, "outputs": {}})
    return {"inputs": io(interp.get_input_details()), "outputs": io(interp.get_output_details()), "ops": ops,
            "signature": sig}


def _pick(desc: dict[str, Any], side: str, i: int) -> dict[str, Any]:
    """The TFLite tensor for ONNX input/output i: by signature name (in_i, out_i; onnx2tf names
    int8 outputs output_i), else by position."""
    details = desc[side]
    by_index = {d["index"]: d for d in details}
    names = (f"in_{i}",) if side == "inputs" else (f"out_{i}", f"output_{i}")
    for name in names:
        idx = desc["signature"][side].get(name)
        if idx in by_index:
            return dict(by_index[idx])
    return dict(details[i])


def _layout(onnx_shape: list[int], tfl_shape: list[int], input_side: bool) -> list[int] | None:
    """Permutation from the ONNX layout to the TFLite tensor's layout (None: same layout)."""
    perm = CHANNEL_LAST.get(len(onnx_shape))
    moved = [onnx_shape[p] for p in perm] if perm else None
    if input_side and perm and moved == tfl_shape:
        return list(perm)  # onnx2tf's documented rule for inputs wins when shapes are ambiguous
    if tfl_shape == onnx_shape:
        return None
    if moved == tfl_shape:
        return list(perm)  # type: ignore[arg-type]
    raise ToolError("build", f"TFLite tensor shape {tfl_shape} does not match ONNX shape {onnx_shape} in any known layout")


def _stage(req: dict[str, Any], message: str) -> None:
    """Name the stage starting now for the parent's progress display (one line per stage)."""
    if req.get("stages"):
        with open(req["stages"], "a") as fh:
            fh.write(message + "\n")


def convert(req: dict[str, Any]) -> dict[str, Any]:
    _stage(req, "loading TensorFlow and onnx2tf")
    import numpy as np
    import onnx
    import onnx2tf

    scratch = Path(req["scratch"])
    outdir = Path(req["outdir"])
    precisions: list[str] = req["precisions"]
    model = onnx.load(req["onnx"])
    onnx_in, onnx_out = _rename_io(model)
    sanitize_names(model)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(model.graph.input) + list(model.graph.output)}
    src = scratch / "model.onnx"
    onnx.save(model, str(src))
    want_int8 = "int8" in precisions
    custom = []
    for i, name in enumerate(onnx_in):
        data = np.load(req["calibration"][name]).astype(np.float32)  # (N, *onnx_shape[1:]) channel-first
        perm = CHANNEL_LAST.get(data.ndim)
        if perm:
            data = data.transpose(perm)
        path = scratch / f"calib_{i}.npy"
        np.save(path, np.ascontiguousarray(data))
        custom.append([f"in_{i}", str(path), 0.0, 1.0])  # data is already normalized: mean 0, std 1
        if i == 0 and data.ndim == 4 and data.shape[-1] == 3:
            _offline_sample(scratch, data)
    if want_int8:
        _int8_graph_semantics()
    if precisions == ["int8"]:
        _float_files_from_functions()
    tf_out = scratch / "tf"
    log = scratch / "onnx2tf.log"
    cwd = os.getcwd()
    os.chdir(scratch)  # onnx2tf writes/reads helper files in the working folder
    try:
        _stage(req, "onnx2tf: ONNX -> TensorFlow -> float TFLite")
        with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            # onnx2tf's own int8 option calibrates four times (integer, full-integer, and two int16
            # activation variants) plus a dynamic-range pass; only full-integer is wanted, so it
            # converts to float (with the same signatures as its int8 path) and _full_integer
            # runs the one calibrated conversion with onnx2tf's settings
            onnx2tf.convert(
                input_onnx_file_path=str(src), output_folder_path=str(tf_out),
                copy_onnx_input_output_names_to_tflite=True, non_verbose=True,
                output_signaturedefs=want_int8,
            )
            if want_int8:
                _stage(req, f"full-integer TFLite, calibrating on {len(np.load(custom[0][1], mmap_mode='r'))} samples")
                _full_integer(tf_out, custom, max(shapes["in_0"][0], 1) if shapes.get("in_0") else 1,
                              req.get("quant_type", "per-channel"), req.get("io_dtype", "int8"))
    except SystemExit as exc:  # onnx2tf reports errors with sys.exit(1)
        raise ToolError("unsupported", f"onnx2tf could not convert the model: {_tail(log)}") from exc
    except Exception as exc:  # noqa: BLE001 - any converter failure becomes one line
        raise ToolError("unsupported", f"onnx2tf failed ({type(exc).__name__}: {exc}); {_tail(log)}") from exc
    finally:
        os.chdir(cwd)
    _stage(req, "checking the written .tflite files")
    results: dict[str, Any] = {}
    for prec in precisions:
        made = tf_out / f"model_{VARIANTS[prec]}.tflite"
        if not made.is_file():
            raise ToolError("build", f"onnx2tf wrote no {made.name}; {_tail(log)}")
        dest = outdir / f"model_{prec}.tflite"
        shutil.copyfile(made, dest)
        desc = _describe(dest)
        flex = sorted({op for op in desc["ops"] if "Flex" in op or op == "CUSTOM"})
        if flex:
            raise ToolError("unsupported", f"the {prec} TFLite model needs TensorFlow (Flex) ops {', '.join(flex)}, "
                                           "which the LiteRT runtime does not have")
        io = {"inputs": [], "outputs": []}
        for side, names in (("inputs", onnx_in), ("outputs", onnx_out)):
            for i, name in enumerate(names):
                d = _pick(desc, side, i)
                tag = f"{'in' if side == 'inputs' else 'out'}_{i}"
                d |= {"onnx_name": name, "onnx_shape": shapes[tag],
                      "perm": _layout(shapes[tag], d["shape"], side == "inputs")}
                io[side].append(d)
        results[prec] = {"file": dest.name, "io": io, "ops": desc["ops"]}
    _fix_output_layouts(src, results, req)
    return {"results": results, "versions": versions()}


def _int8_graph_semantics() -> None:
    """Build the TensorFlow graph as onnx2tf's int8 option would although that option is off: its
    one graph-level effect is MaxPool padding with 0 instead of the float minimum (-3.4e38 in a
    padded tensor ruins its quantization range; XNNPACK then refuses the int8 model)."""
    import functools

    import onnx2tf.ops.MaxPool as maxpool

    original = maxpool.make_node

    @functools.wraps(original)
    def make_node(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "output_integer_quantized_tflite": True})

    maxpool.make_node = make_node


def _float_files_from_functions() -> None:
    """onnx2tf always writes float32 and float16 .tflite files, each through
    `TFLiteConverter.from_keras_model`, which re-serializes the Keras model's layer configs (the
    weights as JSON lists): 530 of 547 s of ResNet-18's conversion in a profile on this host. An
    int8-only build uses neither file, so that constructor is made to fail, and onnx2tf takes its
    own fallback, `from_concrete_functions`, which converts the traced graph directly."""
    import tensorflow as tf

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("deploypipe: int8-only build, float files from the concrete function")

    tf.lite.TFLiteConverter.from_keras_model = refuse


def _full_integer(tf_out: Path, custom: list[list[Any]], batch: int, quant_type: str, io_dtype: str) -> None:
    """The full-integer .tflite from onnx2tf's SavedModel, with the converter settings onnx2tf's
    own int8 path uses (int8 builtins, per-channel unless asked otherwise, int8/uint8 I/O),
    calibrated once on our data (already normalized: mean 0, std 1)."""
    import numpy as np
    import tensorflow as tf

    data = {name: np.load(path) for name, path, _mean, _std in custom}
    count = min(len(a) for a in data.values())

    def representative() -> Any:  # batches of the model's batch size, as onnx2tf yields them
        for i in range(0, count, batch):
            yield {name: tf.convert_to_tensor(a[i:i + batch], tf.float32) for name, a in data.items()}

    converter = tf.lite.TFLiteConverter.from_saved_model(str(tf_out))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
    converter._experimental_disable_per_channel = quant_type != "per-channel"  # noqa: SLF001 - as onnx2tf sets it
    converter.unfold_batchmatmul = False
    converter.representative_dataset = representative
    converter.inference_input_type = converter.inference_output_type = tf.uint8 if io_dtype == "uint8" else tf.int8
    (tf_out / f"model_{VARIANTS['int8']}.tflite").write_bytes(converter.convert())


def _fix_output_layouts(src: Path, results: dict[str, Any], req: dict[str, Any]) -> None:
    """Where an output's layout is ambiguous from shapes alone (e.g. 1x4x4x4), settle it
    numerically: run ONNX Runtime and the fp32 TFLite model on one calibration-like input."""
    import numpy as np

    first = next(iter(results.values()))
    ambiguous = [i for i, o in enumerate(first["io"]["outputs"])
                 if len(o["onnx_shape"]) in CHANNEL_LAST and o["perm"] is None
                 and [o["onnx_shape"][p] for p in CHANNEL_LAST[len(o["onnx_shape"])]] == o["onnx_shape"]]
    if not ambiguous or "fp32" not in results:
        return
    import onnxruntime as ort
    import tensorflow as tf

    rng = np.random.default_rng(0)
    feeds = {}
    for d in first["io"]["inputs"]:
        feeds[d["onnx_name"]] = rng.standard_normal(d["onnx_shape"]).astype(np.float32)
    sess = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {f"in_{i}": feeds[d["onnx_name"]] for i, d in enumerate(first["io"]["inputs"])})
    interp = tf.lite.Interpreter(model_path=str(Path(req["outdir"]) / results["fp32"]["file"]))
    interp.allocate_tensors()
    for d in results["fp32"]["io"]["inputs"]:
        x = feeds[d["onnx_name"]]
        interp.set_tensor(d["index"], x.transpose(d["perm"]) if d["perm"] else x)
    interp.invoke()
    for i in ambiguous:
        o = results["fp32"]["io"]["outputs"][i]
        y = interp.get_tensor(o["index"])
        perm = list(CHANNEL_LAST[y.ndim])
        back = np.argsort(perm)
        if np.abs(y.transpose(back) - ref[i]).max() < np.abs(y - ref[i]).max():
            for res in results.values():
                res["io"]["outputs"][i]["perm"] = perm


def _offline_sample(scratch: Path, nhwc: "Any") -> None:
    """onnx2tf 1.29.24 downloads a 20x128x128x3 sample for its own test inference of RGB models
    and fails offline; a local file of that name (made from our calibration data) avoids it."""
    import numpy as np

    rows = np.linspace(0, nhwc.shape[1] - 1, 128).astype(int)
    cols = np.linspace(0, nhwc.shape[2] - 1, 128).astype(int)
    sample = nhwc[:, rows][:, :, cols]
    sample = np.resize(sample, (20, 128, 128, 3)).astype(np.float32)
    np.save(scratch / "calibration_image_sample_data_20x128x128x3_float32.npy", sample)


def _tail(log: Path, n: int = 600) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    return " | ".join((errs or lines)[-4:])[-n:]


def import_model(req: dict[str, Any]) -> dict[str, Any]:
    """SavedModel dir / .keras / .h5 / .tflite -> ONNX with tf2onnx (layout kept as in the source)."""
    src, out, opset, kind = Path(req["source"]), Path(req["output"]), int(req["opset"]), req["kind"]
    notes: list[str] = []
    log = out.with_suffix(".log")
    if kind == "keras":
        model = _load_keras(src)
        if any(d is None for t in model.inputs for d in t.shape[1:]):
            raise ToolError("input", f"{src}: Keras input with a dynamic non-batch dimension "
                                     f"{[tuple(t.shape) for t in model.inputs]}")
        saved = out.parent / "saved_model"
        if hasattr(model, "export"):  # Keras 3
            model.export(str(saved))
        else:  # tf_keras (Keras 2)
            import tensorflow as tf

            tf.saved_model.save(model, str(saved))
        src, kind = saved, "saved_model"
        notes.append("Keras model exported to a SavedModel, then converted by tf2onnx")
    flag = {"saved_model": "--saved-model", "tflite": "--tflite"}[kind]
    cmd = [sys.executable, "-m", "tf2onnx.convert", flag, str(src), "--output", str(out), "--opset", str(opset)]
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0 or not out.is_file():
        raise ToolError("input", f"tf2onnx could not convert {req['source']}: {_tail(log)}")
    return {"onnx": str(out), "notes": notes, "versions": versions()}


def _load_keras(path: Path) -> Any:
    """Keras 3 first (what TF 2.19 uses); Keras 2 (tf_keras) for older .h5 files."""
    errors = []
    try:
        import keras

        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - try the other loader, report both
        errors.append(f"keras 3: {type(exc).__name__}: {exc}")
    try:
        import tf_keras

        return tf_keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"tf_keras: {type(exc).__name__}: {exc}")
    raise ToolError("input", f"{path}: not a loadable Keras model ({'; '.join(e[:300] for e in errors)})")


def main() -> None:
    req_path, res_path = sys.argv[1], sys.argv[2]
    req = json.loads(Path(req_path).read_text())
    try:
        handler = {"versions": lambda _r: {"versions": versions()}, "convert": convert, "import": import_model}
        result = {"ok": True, **handler[req["command"]](req)}
    except ToolError as exc:
        result = {"ok": False, "kind": exc.kind, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a bug here must still come back as data
        result = {"ok": False, "kind": "internal", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-3000:]}
    Path(res_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
