"""Read the user's data into arrays shaped like the model's inputs, picked by what PATH is:
an image folder (class sub-folders = labels, or flat = unlabelled), an .npz, a folder of .npy, or
a text file with one sample a line (with a tokenizer). Every sample gets a content hash, which
seeds the calibration/evaluation split and the manifest's data hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploypipe.data import preprocess as pp
from deploypipe.data.metrics import kind_from_shape
from deploypipe.errors import InputFileError, ShapeError, UserError
from deploypipe.model import TensorSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
CLASSES_FILE = "classes.txt"


@dataclass
class Dataset:
    """Samples as arrays [N, *input shape without batch] per model input, with optional labels."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    hashes: list[str]  # per-sample content hash (file bytes, array bytes or text)
    source: str
    format: str
    preprocess: pp.PreprocessSpec | None = None
    classes: list[str] | None = None
    tokenizer: dict[str, str | int] | None = None

    def __len__(self) -> int:
        return len(self.hashes)

    def take(self, idx: list[int]) -> Dataset:
        return Dataset(
            arrays={k: v[idx] for k, v in self.arrays.items()},
            labels=self.labels[idx] if self.labels is not None else None,
            hashes=[self.hashes[i] for i in idx], source=self.source, format=self.format,
            preprocess=self.preprocess, classes=self.classes, tokenizer=self.tokenizer,
        )

    def sha256(self) -> str:
        """Order-independent content hash: sorted (sample hash, label) pairs."""
        labels = self.labels.tolist() if self.labels is not None else [None] * len(self)
        h = hashlib.sha256()
        for sample, label in sorted(zip(self.hashes, labels, strict=True), key=lambda t: t[0]):
            h.update(f"{sample}:{label}\n".encode())
        return h.hexdigest()


def label_output(outputs: list[TensorSpec]) -> TensorSpec | None:
    """The output labels index: the first class-score output ([1, C>1], not named like an embedding or box)."""
    return next((o for o in outputs if kind_from_shape(o.name, o.shape) == "class-scores"), None)


def load(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec], preprocess: str | Path | None = None,
         tokenizer: Path | None = None) -> Dataset:
    """The dataset at `path`, checked against the model's inputs and (for labels) outputs."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory")
    if path.is_dir():
        npys = sorted(p for p in path.iterdir() if p.suffix == ".npy")
        if npys:
            ds = _npy_folder(path, npys, inputs)
        else:
            ds = _image_folder(path, inputs, preprocess)
    elif path.suffix == ".npz":
        ds = _npz(path, inputs)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        raise UserError(f"{path}: give a folder of images, not one image")
    else:
        ds = _text(path, inputs, tokenizer)
    if tokenizer is not None and ds.format != "text":
        raise UserError(f"--tokenizer is for text data; {path} is {ds.format}")
    if len(ds) == 0:
        raise InputFileError(f"{path}: no samples")
    if ds.labels is not None:
        _check_labels(ds, outputs)
    return ds


def _check_labels(ds: Dataset, outputs: list[TensorSpec]) -> None:
    out = label_output(outputs)
    if out is None:
        raise UserError(f"{ds.source}: labels given but no model output is class scores [1, C] "
                        f"(outputs: {', '.join(f'{o.name} {o.shape}' for o in outputs)})")
    n_cls = int(out.shape[-1])  # type: ignore[arg-type]
    labels = ds.labels
    assert labels is not None
    bad = np.flatnonzero((labels < 0) | (labels >= n_cls))
    if len(bad):
        lab = int(labels[bad[0]])
        what = f" (class folder '{ds.classes[lab]}')" if ds.classes and 0 <= lab < len(ds.classes) else ""
        raise UserError(f"{ds.source}: labels outside the output range: label {lab}{what}, but output "
                        f"'{out.name}' has {n_cls} classes (0..{n_cls - 1}); {len(bad)} sample(s) affected")


def _sample_shape(spec: TensorSpec) -> tuple[int, ...]:
    if spec.shape and spec.shape[0] not in (1, None):
        raise ShapeError(f"model input '{spec.name}' has batch {spec.shape[0]}; --data needs batch-1 inputs")
    if any(d is None for d in spec.shape[1:]):
        raise ShapeError(f"model input '{spec.name}' has a dynamic dim {spec.shape}; fix it with --input-shape")
    return tuple(d for d in spec.shape[1:])  # type: ignore[misc]


def _coerce(source: str, name: str, arr: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Samples of one input as [N, *shape]: the model's dtype when the kind matches (float to
    float, int to int), else one error naming the array."""
    want = _sample_shape(spec)
    if tuple(arr.shape[1:]) != want:
        raise ShapeError(f"{source}: '{name}' has samples of shape {tuple(arr.shape[1:])} (array {tuple(arr.shape)}), "
                         f"model input '{spec.name}' expects {want} per sample (array [N, {', '.join(map(str, want))}])")
    dtype = np.dtype(spec.dtype)
    if arr.dtype.kind != dtype.kind and not (arr.dtype.kind in "iub" and dtype.kind in "iu"):
        raise ShapeError(f"{source}: '{name}' is {arr.dtype}, model input '{spec.name}' expects {spec.dtype}")
    return np.ascontiguousarray(arr.astype(dtype, copy=False))


def _array_hashes(arrays: dict[str, np.ndarray]) -> list[str]:
    n = len(next(iter(arrays.values())))
    hashes = []
    for i in range(n):
        h = hashlib.sha256()
        for name in sorted(arrays):
            h.update(name.encode())
            h.update(arrays[name][i].tobytes())
        hashes.append(h.hexdigest())
    return hashes


def _from_arrays(source: str, fmt: str, found: dict[str, np.ndarray], inputs: list[TensorSpec]) -> Dataset:
    """Arrays named after the model's inputs plus optional `labels` -> Dataset."""
    missing = [s.name for s in inputs if s.name not in found]
    if missing:
        raise InputFileError(f"{source}: missing array(s) {', '.join(repr(m) for m in missing)} "
                             f"(model inputs: {', '.join(s.name for s in inputs)}; found: {', '.join(sorted(found)) or 'none'})")
    arrays = {s.name: _coerce(source, s.name, found[s.name], s) for s in inputs}
    labels = found.get("labels")
    counts = {k: len(v) for k, v in arrays.items()} | ({"labels": len(labels)} if labels is not None else {})
    if len(set(counts.values())) > 1:
        raise ShapeError(f"{source}: arrays have different sample counts: {counts}")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ShapeError(f"{source}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
    return Dataset(arrays=arrays, labels=labels, hashes=_array_hashes(arrays), source=source, format=fmt)


def _npz(path: Path, inputs: list[TensorSpec]) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            found = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable .npz ({exc.__class__.__name__}: {exc})") from None
    return _from_arrays(str(path), "npz", found, inputs)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{path}: not a readable .npy ({exc.__class__.__name__}: {exc})") from None


def _npy_folder(path: Path, files: list[Path], inputs: list[TensorSpec]) -> Dataset:
    """Either one .npy per input (named after it, [N, ...], plus labels.npy) or one .npy per
    sample of a single-input model (shaped like the input, with or without the batch dim)."""
    names = {s.name for s in inputs}
    stems = {f.stem for f in files}
    if stems & names:
        return _from_arrays(str(path), "npy-folder", {f.stem: _load_npy(f) for f in files}, inputs)
    if len(inputs) != 1:
        raise InputFileError(f"{path}: model has inputs {sorted(names)}; give one <input>.npy per input "
                             f"([N, ...] each), found {', '.join(sorted(stems))}")
    spec = inputs[0]
    want = _sample_shape(spec)
    samples = []
    for f in files:
        arr = _load_npy(f)
        if tuple(arr.shape) == (1, *want):
            arr = arr[0]
        if tuple(arr.shape) != want:
            raise ShapeError(f"{f}: shape {tuple(arr.shape)}, model input '{spec.name}' expects {spec.shape}")
        samples.append(arr)
    arrays = {spec.name: _coerce(str(path), spec.name, np.stack(samples), spec)}
    return Dataset(arrays=arrays, labels=None, hashes=_array_hashes(arrays), source=str(path), format="npy-folder")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_names(path: Path, subdirs: list[Path]) -> list[str]:
    """Output index -> folder name: classes.txt (first word of each line, ImageNet's synset-list
    form) when present, else the sorted folder names."""
    listing = path / CLASSES_FILE
    if not listing.is_file():
        return [d.name for d in subdirs]
    names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    unknown = [d.name for d in subdirs if d.name not in names]
    if unknown:
        raise UserError(f"{listing}: class folder(s) {', '.join(unknown[:5])} not listed")
    return names


def _image_folder(path: Path, inputs: list[TensorSpec], preprocess: str | Path | None) -> Dataset:
    subdirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if subdirs:
        classes = _class_names(path, subdirs)
        index = {name: i for i, name in enumerate(classes)}
        files = [(f, index[d.name]) for d in subdirs for f in _images_in(d)]
        fmt = "image-folder (labelled)"
    else:
        classes = None
        files = [(f, -1) for f in _images_in(path)]
        fmt = "image-folder"
    if not files:
        raise InputFileError(f"{path}: empty folder (no images{', no .npy' if not subdirs else ''} "
                             f"{'in its class sub-folders' if subdirs else 'in it'})")
    if len(inputs) != 1:
        raise UserError(f"{path}: images feed one input, the model has {len(inputs)} "
                        f"({', '.join(s.name for s in inputs)}); give the inputs as an .npz")
    spec = inputs[0]
    _, channels, _, _ = pp.image_geometry(spec)
    resolved = pp.resolve(preprocess, spec)
    want = _sample_shape(spec)
    samples, hashes = [], []
    for f, _label in files:
        data = f.read_bytes()
        arr = pp.apply(_open_image(f, data), resolved, channels, str(f))
        if arr.shape != want:
            raise ShapeError(f"{f}: preprocessed to {arr.shape}, model input '{spec.name}' expects {want} "
                             f"(--preprocess {resolved.preset} does not resize to it)")
        samples.append(arr)
        hashes.append(hashlib.sha256(data).hexdigest())
    labels = np.array([label for _, label in files], dtype=np.int64) if classes is not None else None
    return Dataset(arrays={spec.name: np.stack(samples)}, labels=labels, hashes=hashes, source=str(path),
                   format=fmt, preprocess=resolved, classes=classes)


def _open_image(path: Path, data: bytes) -> object:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputFileError(f"{path}: unreadable image ({exc.__class__.__name__})") from None
    return img


_ROLES = {"ids": ("input_ids", "ids"), "attention_mask": ("attention", "mask"), "type_ids": ("token_type", "segment")}


def _role(name: str) -> str | None:
    low = name.lower()
    if any(k in low for k in _ROLES["type_ids"]):
        return "type_ids"
    if any(k in low for k in _ROLES["attention_mask"]):
        return "attention_mask"
    if "ids" in low:
        return "ids"
    return None


def _text(path: Path, inputs: list[TensorSpec], tokenizer: Path | None) -> Dataset:
    """One sample a line, tokenized to the model's sequence length (padded and truncated)."""
    if tokenizer is None:
        raise UserError(f"{path}: text data needs --tokenizer tokenizer.json (or give arrays as .npz / .npy)")
    from tokenizers import Tokenizer

    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: not a readable UTF-8 text file ({exc.__class__.__name__})") from None
    if not lines:
        raise InputFileError(f"{path}: empty (no non-blank lines)")
    try:
        tok = Tokenizer.from_file(str(tokenizer))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises untyped errors
        raise InputFileError(f"{tokenizer}: not a readable tokenizer.json ({exc})") from None
    roles = {s.name: _role(s.name) for s in inputs}
    unknown = [n for n, r in roles.items() if r is None]
    if unknown:
        raise UserError(f"{path}: model input(s) {', '.join(unknown)} are not input_ids / attention_mask / "
                        "token_type_ids; give the arrays as an .npz")
    lengths = {_sample_shape(s) for s in inputs}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ShapeError(f"{path}: text inputs must all be [1, L]; model inputs are "
                         f"{', '.join(f'{s.name} {s.shape}' for s in inputs)}")
    (length,), = lengths
    pad = next((t for t in ("[PAD]", "<pad>", "<|pad|>") if tok.token_to_id(t) is not None), None)
    tok.enable_truncation(max_length=length)
    tok.enable_padding(length=length, pad_id=tok.token_to_id(pad) if pad else 0, pad_token=pad or "[PAD]")
    enc = tok.encode_batch(lines)
    field = {"ids": "ids", "attention_mask": "attention_mask", "type_ids": "type_ids"}
    arrays = {s.name: np.array([getattr(e, field[roles[s.name]]) for e in enc], dtype=s.dtype)  # type: ignore[index]
              for s in inputs}
    hashes = [hashlib.sha256(ln.encode()).hexdigest() for ln in lines]
    info = {"path": str(tokenizer), "sha256": hashlib.sha256(Path(tokenizer).read_bytes()).hexdigest(),
            "max_length": length}
    return Dataset(arrays=arrays, labels=None, hashes=hashes, source=str(path), format="text", tokenizer=info)
