"""Task metrics over paired outputs: the FP32 reference and an artifact on the same inputs.

Pure numpy, so the fidelity gate, the benchmarks and a user's own code compute the same figures.
Outputs are classified first (class scores, embeddings, other regressions) because a figure that
means something for one kind is noise for another: the argmax of a box regression or of an
embedding is not a prediction, so top-1 agreement is computed on class scores only.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from deploypipe.errors import UserError

OutputKind = Literal["class-scores", "embedding", "regression"]
Z95 = 1.959963984540054  # two-sided 95% normal quantile

# Names that say what a 2-D output is when its values cannot (logits and raw embeddings look alike).
_EMBEDDING_HINTS = ("embed", "feature", "feat", "pool", "sentence", "vector", "hidden", "descriptor")
_REGRESSION_HINTS = ("box", "bbox", "loc", "coord", "landmark", "regress", "offset", "anchor", "depth")
_CLASS_OPS = {"Softmax", "LogSoftmax"}
_EMBEDDING_OPS = {"LpNormalization"}

UserMetric = Callable[[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], np.ndarray | None], dict[str, float]]


def kind_from_shape(name: str, shape: Sequence[int | None]) -> OutputKind:
    """What an output is from its per-sample shape and name alone: [1, C>1] is class scores unless
    its name says embedding or box; every other shape (maps, sequences, boxes) is a regression."""
    if len(shape) != 2 or shape[-1] is None or shape[-1] <= 1:
        return "regression"
    low = name.lower()
    if any(h in low for h in _EMBEDDING_HINTS):
        return "embedding"
    if any(h in low for h in _REGRESSION_HINTS):
        return "regression"
    return "class-scores"


def classify_output(name: str, ref: np.ndarray, op: str | None = None) -> OutputKind:
    """Kind of an output from its stacked FP32 values `ref` [N, 1, C] (or [N, C]) and, when known,
    the op that produces it: L2-normalised rows are embeddings, softmax rows class scores."""
    kind = kind_from_shape(name, ref.shape[1:] if ref.ndim == 3 else (1, *ref.shape[1:]))
    if kind != "class-scores":
        return kind
    if op in _EMBEDDING_OPS:
        return "embedding"
    if op in _CLASS_OPS:
        return "class-scores"
    rows = ref.reshape(len(ref), -1).astype(np.float64)
    if np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        return "class-scores"  # probabilities
    if np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3):
        return "embedding"  # unit-norm rows: a normalised embedding
    return "class-scores"


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n: honest at 0/n and n/n, unlike the normal one."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Cosine similarity of two tensors flattened (1.0 when both are all zeros)."""
    a, b = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0:
        return float(np.array_equal(a, b))
    return float(np.dot(a, b) / denom)


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio 10 log10(sum ref^2 / sum (ref - out)^2); None when equal."""
    a, b = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    noise = float(np.sum((a - b) ** 2))
    if noise == 0:
        return None
    signal = float(np.sum(a * a))
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def top1_agreement(ref: np.ndarray, out: np.ndarray) -> tuple[int, int]:
    """(samples whose argmax matches, samples) over [N, C] scores."""
    r, o = ref.reshape(len(ref), -1).argmax(-1), out.reshape(len(out), -1).argmax(-1)
    return int(np.sum(r == o)), len(r)


def correct_topk(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the label among the k highest scores ([N, C] scores, [N] labels)."""
    rows = scores.reshape(len(scores), -1)
    top = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    return np.any(top == labels.reshape(-1, 1), axis=1)


def paired_drop_ci(ref_correct: np.ndarray, out_correct: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """95% interval of the accuracy drop in points on the same samples (paired differences, so
    it is much tighter than comparing two independent accuracies)."""
    d = ref_correct.astype(np.float64) - out_correct.astype(np.float64)
    n = len(d)
    half = z * float(np.std(d, ddof=1)) / math.sqrt(n) if n > 1 else 1.0
    return (100 * (float(d.mean()) - half), 100 * (float(d.mean()) + half))


def embedding_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean per-sample cosine between FP32 and artifact embeddings ([N, D])."""
    a, b = ref.reshape(len(ref), -1).astype(np.float64), out.reshape(len(out), -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / np.where(denom == 0, 1.0, denom)))


def retrieval_at_1(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Fraction of samples whose artifact embedding, searched among all FP32 embeddings by cosine,
    finds its own FP32 embedding first (None under 2 samples: nothing to confuse it with)."""
    if len(ref) < 2:
        return None
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = out.reshape(len(out), -1).astype(np.float64)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-30)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-30)
    return float(np.mean((b @ a.T).argmax(axis=1) == np.arange(len(a))))


def load_metric(spec: str) -> UserMetric:
    """The user's metric from `module:function` (an importable module or a path to a .py file).

    Signature: fn(references, outputs, labels) -> dict[str, float], where references and outputs
    are lists (one per sample) of {output name: array} from FP32 and the artifact, and labels is
    the [N] label array of a labelled evaluation set, else None."""
    module_name, sep, fn_name = spec.rpartition(":")
    if not sep or not module_name or not fn_name:
        raise UserError(f"--metric '{spec}': expected MODULE:FUNCTION (or path/to/file.py:FUNCTION)")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise UserError(f"--metric '{spec}': no such file {path}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure importing user code is the user's to fix
        raise UserError(f"--metric '{spec}': cannot import {module_name} ({exc.__class__.__name__}: {exc})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"--metric '{spec}': {module_name} has no function {fn_name}")
    return fn  # type: ignore[no-any-return]


def run_metric(fn: UserMetric, spec: str, references: list[dict[str, np.ndarray]],
               outputs: list[dict[str, np.ndarray]], labels: np.ndarray | None) -> dict[str, float]:
    """Call the user's metric and check it returned {name: number}; its failures are one line."""
    try:
        result = fn(references, outputs, labels)
    except Exception as exc:  # noqa: BLE001 - the user's code failed, not ours
        raise UserError(f"--metric '{spec}' raised {exc.__class__.__name__}: {exc}") from None
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        raise UserError(f"--metric '{spec}' returned {type(result).__name__}, expected dict[str, float]")
    try:
        return {k: float(v) for k, v in result.items()}
    except (TypeError, ValueError):
        raise UserError(f"--metric '{spec}' returned a non-numeric value; expected dict[str, float]") from None
