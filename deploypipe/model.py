"""The `Model` handle that flows through the pipeline: an ONNX graph plus what it means.

Besides the ModelProto it carries typed input/output specs, provenance (where it came from, a
content hash) and the data providers later stages need: calibration data for quantization and,
for models trained here, labelled held-out data so accuracy figures are real.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict

from deploypipe.errors import ShapeError

_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


class QuantParams(BaseModel):
    """Affine quantization of an integer I/O tensor: real = (q - zero_point) * scale."""

    model_config = ConfigDict(extra="forbid")
    scale: float
    zero_point: int


class TensorSpec(BaseModel):
    """Name, static shape (None for a dynamic dim) and numpy dtype of one model input/output;
    `bounds` gives (min, max) for the dynamic dims the build was asked to accept."""

    model_config = ConfigDict(extra="forbid")
    name: str
    shape: tuple[int | None, ...]
    dtype: str
    quant: QuantParams | None = None
    bounds: tuple[tuple[int, int] | None, ...] | None = None
    # for artifacts built as a set of fixed shapes (one compiled model each): the sizes a dynamic dim takes
    sizes: tuple[tuple[int, ...] | None, ...] | None = None

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with each dynamic dim at its lower bound (or `batch` where it has none)."""
        lows = [b[0] if b else None for b in self.bounds] if self.bounds else [None] * len(self.shape)
        return tuple(d if d is not None else (low if low is not None else batch) for d, low in zip(self.shape, lows, strict=True))

    def takes(self, dim: int, size: int) -> bool:
        """Whether dim `dim` accepts `size`: a fixed dim its value, a dynamic one any size within
        its bounds (any size where it has none)."""
        fixed, bound = self.shape[dim], self.bounds[dim] if self.bounds else None
        listed = self.sizes[dim] if self.sizes else None
        if listed is not None:
            return size in listed
        return size == fixed if fixed is not None else bound is None or bound[0] <= size <= bound[1]

    def dim_text(self, dim: int) -> str:
        """One dim for messages: 3, 1..32, {1,8,32} (a set of sizes), or ? (dynamic without bounds)."""
        fixed, bound = self.shape[dim], self.bounds[dim] if self.bounds else None
        listed = self.sizes[dim] if self.sizes else None
        if listed is not None:
            return "{" + ",".join(map(str, listed)) + "}"
        return str(fixed) if fixed is not None else f"{bound[0]}..{bound[1]}" if bound else "?"

    def accepts(self) -> str:
        """The shapes this tensor takes, for messages: 1..32x3x224x224."""
        return "x".join(self.dim_text(i) for i in range(len(self.shape)))


def is_static(dim: onnx.TensorShapeProto.Dimension) -> bool:
    """A fixed dim. Exporters in the wild store dynamic dims as -1 or 0 as well as symbols."""
    return dim.HasField("dim_value") and dim.dim_value > 0


def specs_of(values: list[onnx.ValueInfoProto], skip: set[str] | None = None) -> list[TensorSpec]:
    out = []
    for vi in values:
        if skip and vi.name in skip:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if is_static(d) else None for d in tt.shape.dim)
        out.append(TensorSpec(name=vi.name, shape=dims, dtype=_ONNX_TO_NP.get(tt.elem_type, "float32")))
    return out


class DataProvider:
    """Batches of model inputs, with an honest description of what the data is."""

    held_out: bool = False  # seeds other than 0 yield samples the calibration (seed 0) never sees

    def __init__(self, description: str, real: bool) -> None:
        self.description, self.real = description, real
        # what a gate judging on these samples rests on (deploypipe.analysis.fidelity.EVIDENCE)
        self.evidence = "real-unlabelled" if real else "synthetic"

    def samples(self, n: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError


class SyntheticProvider(DataProvider):
    """Seeded data shaped like the model's inputs, respecting what each input means: N(0,1)
    floats (what normalized images look like); integer ids within the table they index
    (`int_ranges`, from `integer_ranges`); masks of ones. Always labelled synthetic."""

    def __init__(self, inputs: list[TensorSpec], int_ranges: dict[str, tuple[int, int]] | None = None,
                 vocab: int = 1000) -> None:
        self.inputs, self.vocab = inputs, vocab
        self.int_ranges = int_ranges or {}
        how = [f"{s.name}: ones" if _is_mask(s.name) or s.dtype == "bool" else "{}: ids in [{}, {})".format(
               s.name, *self._range(s.name)) for s in inputs if not s.dtype.startswith("float")]
        super().__init__("synthetic N(0,1) inputs (no real data available)" + (f"; {'; '.join(how)}" if how else ""),
                         real=False)

    def _range(self, name: str) -> tuple[int, int]:
        return self.int_ranges.get(name, (0, self.vocab))

    def samples(self, n: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        for _ in range(n):
            feed = {}
            for spec in self.inputs:
                shape = spec.concrete_shape()
                if spec.dtype.startswith("float"):
                    feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
                elif _is_mask(spec.name) or spec.dtype == "bool":
                    feed[spec.name] = np.ones(shape, dtype=spec.dtype)
                else:
                    low, high = self._range(spec.name)
                    feed[spec.name] = rng.integers(low, high, size=shape).astype(spec.dtype)
            yield feed

    @classmethod
    def for_graph(cls, proto: onnx.ModelProto) -> SyntheticProvider:
        """Synthetic data for a graph's inputs, integer ranges read from the graph."""
        inits = {i.name for i in proto.graph.initializer}
        return cls(specs_of(list(proto.graph.input), skip=inits), integer_ranges(proto))


def _is_mask(name: str) -> bool:
    return "mask" in name.lower()


# Ops an index tensor passes through unchanged in value on its way to a Gather.
_ID_PRESERVING = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Identity", "Transpose",
                  "Slice", "Tile", "Concat"}


def integer_ranges(proto: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """[low, high) for each integer graph input that (through value-preserving ops) indexes a
    Gather whose data is a constant table: `high` is the smallest table's length along the
    gathered axis (a 2-row token-type table gives [0, 2)). Inputs that index nothing are absent."""
    from onnx import helper

    tables = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tables[node.output[0]] = tuple(node.attribute[0].t.dims)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    ranges: dict[str, tuple[int, int]] = {}
    for vi in proto.graph.input:
        if vi.name in tables or vi.type.tensor_type.elem_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            continue
        bounds, seen, todo = [], {vi.name}, [vi.name]
        while todo:
            tensor = todo.pop()
            for node in users.get(tensor, []):
                if node.op_type == "Gather" and node.input[1] == tensor and node.input[0] in tables:
                    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
                    dims = tables[node.input[0]]
                    if dims:
                        bounds.append(dims[axis])
                elif node.op_type in _ID_PRESERVING:
                    todo += [o for o in node.output if o not in seen]
                    seen.update(node.output)
        if bounds:
            ranges[vi.name] = (0, min(bounds))
    return ranges


class ArrayProvider(DataProvider):
    """Real samples from an array (e.g. scikit-learn digits), optionally with labels."""

    def __init__(
        self, name: str, x: np.ndarray, labels: np.ndarray | None, description: str
    ) -> None:
        super().__init__(description, real=True)
        self.name, self.x, self.labels = name, x, labels

    def samples(self, n: int, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
        for i in range(min(n, len(self.x))):
            yield {self.name: self.x[i : i + 1]}


@dataclass(frozen=True)
class Provenance:
    """Where a model came from, for the manifest."""

    source: str  # zoo name or file path as given
    importer: str  # zoo | onnx | pytorch | tensorflow | tflite
    source_hash: str  # sha256 of the imported ONNX bytes
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """An ONNX model with io specs, provenance and data providers. Immutable: passes return new ones."""

    proto: onnx.ModelProto
    name: str
    provenance: Provenance
    calibration: DataProvider
    evaluation: ArrayProvider | None = None  # labelled held-out data, for models trained here
    torch_source: object | None = field(default=None, compare=False)  # zoo entry, for source-level passes
    # dynamic input dims the build accepts: input -> dim index -> (min, max); and the batch sizes
    # asked for (each is built/checked where a compiler takes fixed shapes, and fidelity-checked)
    bounds: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    batches: tuple[int, ...] = ()

    @property
    def inputs(self) -> list[TensorSpec]:
        inits = {i.name for i in self.proto.graph.initializer}
        specs = specs_of(list(self.proto.graph.input), skip=inits)
        return [s.model_copy(update={"bounds": tuple(self.bounds[s.name].get(i) for i in range(len(s.shape)))})
                if s.name in self.bounds else s for s in specs]

    @property
    def dynamic(self) -> bool:
        """Whether any input takes more than one shape."""
        return any(d is None for s in self.inputs for d in s.shape)

    @property
    def outputs(self) -> list[TensorSpec]:
        return specs_of(list(self.proto.graph.output))

    def with_proto(self, proto: onnx.ModelProto) -> Model:
        return replace(self, proto=proto)

    def at_batch(self, batch: int) -> Model:
        """The model with its dynamic batch dim (dim 0 of inputs and outputs) fixed at `batch`: what
        a compiler that takes fixed shapes only builds once per asked size."""
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        symbols = set()
        for vi in proto.graph.input:
            dims = vi.type.tensor_type.shape.dim
            if dims and not is_static(dims[0]):
                symbols.add(dims[0].dim_param)
                dims[0].dim_value = batch
        for vi in proto.graph.output:
            dims = vi.type.tensor_type.shape.dim
            if dims and not is_static(dims[0]) and dims[0].dim_param in symbols | {""}:
                dims[0].dim_value = batch
        del proto.graph.value_info[:]  # inferred again with the batch fixed
        return replace(self, proto=onnx.shape_inference.infer_shapes(proto), bounds={}, batches=())

    def content_hash(self) -> str:
        return hashlib.sha256(self.proto.SerializeToString(deterministic=True)).hexdigest()

    def save(self, path: Path) -> None:
        """Write the ONNX file; weights over 2 GiB would need external data, which no zoo model has."""
        onnx.save_model(self.proto, str(path))

    def sample_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        return next(SyntheticProvider(self.inputs, integer_ranges(self.proto)).samples(1, seed))


def stack_rows(feeds: list[dict[str, np.ndarray]], rows: int) -> dict[str, np.ndarray]:
    """The samples' rows stacked along dim 0, repeated as needed, to exactly `rows` rows: a batch
    made of known samples (fidelity at a batch size, bench at a batch size)."""
    return {k: np.concatenate([f[k] for f in feeds] * (rows // len(feeds) + 1))[:rows] for k in feeds[0]}


def check_feeds(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> None:
    """One clear error for wrong input names/shapes/dtypes instead of a backend traceback."""
    names = [s.name for s in specs]
    if sorted(feeds) != sorted(names):
        raise ShapeError(f"inputs {sorted(feeds)} given, model expects {names}")
    for spec in specs:
        arr = feeds[spec.name]
        if len(arr.shape) != len(spec.shape) or not all(spec.takes(i, n) for i, n in enumerate(arr.shape)):
            raise ShapeError(
                f"input '{spec.name}' has shape {'x'.join(map(str, arr.shape))}, this artifact accepts {spec.accepts()}"
            )
        if str(arr.dtype) != spec.dtype:
            raise ShapeError(f"input '{spec.name}' has dtype {arr.dtype}, model expects {spec.dtype}")
