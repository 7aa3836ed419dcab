"""Task metrics of the real-weight zoo entries, against FP32 and against ground truth.

They answer what a user of each model asks after quantization: do the sentence embeddings still
find the same neighbours (MiniLM), does the recognizer still read the same strings (PP-OCR rec,
CTC greedy decoding with the wheel's own dictionary), does the detector still mark the same
pixels as text (PP-OCR det) and the classifier the same direction (PP-OCR cls).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deploypipe.zoo.real import DET_THRESHOLD

_LINE_FOUND = 0.5  # a text line counts as found when half of its (shrunk) box is above threshold


def _stack(outputs: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(1, -1) for o in outputs])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embedding_cosine(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean cosine between each sample's embedding and its FP32 embedding."""
    return float(np.mean(np.sum(_unit(_stack(reference)) * _unit(_stack(outputs)), axis=1)))


def nearest_neighbours(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Index of each sample's nearest other sample by cosine (retrieval@1 within the set)."""
    e = _unit(_stack(embeddings))
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argmax(sim, axis=1)


def retrieval_agreement(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Share of samples whose nearest neighbour is the one FP32 finds."""
    return float(np.mean(nearest_neighbours(reference) == nearest_neighbours(outputs)))


def paraphrase_retrieval(outputs: Sequence[np.ndarray], groups: Sequence[int]) -> float:
    """Retrieval@1 against ground truth: share of sentences whose nearest neighbour is a paraphrase."""
    g = np.asarray(groups)
    return float(np.mean(g[nearest_neighbours(outputs)] == g))


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str]) -> str:
    """Best path: argmax per time step, merge repeats, drop blanks (index 0); outer spaces
    stripped (the recognizer reads a line's margin as a space)."""
    best = np.asarray(probs).reshape(-1, len(charset)).argmax(axis=1)
    keep = (best != 0) & np.concatenate([[True], best[1:] != best[:-1]])
    return "".join(charset[i] for i in best[keep]).strip()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def text_match(predicted: Sequence[str], expected: Sequence[str]) -> dict[str, float]:
    """Exact string match rate and character accuracy (1 - total edit distance / total length)."""
    errors = sum(edit_distance(p, e) for p, e in zip(predicted, expected, strict=True))
    chars = max(sum(len(e) for e in expected), 1)
    exact = np.mean([p == e for p, e in zip(predicted, expected, strict=True)])
    return {"exact_match": float(exact), "char_accuracy": max(0.0, 1 - errors / chars)}


def text_masks(outputs: Sequence[np.ndarray], threshold: float = DET_THRESHOLD) -> list[np.ndarray]:
    """The detector's binarized text maps (rapidocr's DB threshold by default)."""
    return [np.asarray(o).reshape(np.asarray(o).shape[-2:]) > threshold for o in outputs]


def mask_iou(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Intersection over union of two sets of boolean masks, pooled over all pixels."""
    inter = sum(int(np.sum(x & y)) for x, y in zip(a, b, strict=True))
    union = sum(int(np.sum(x | y)) for x, y in zip(a, b, strict=True))
    return inter / union if union else 1.0


def lines_found(masks: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> float:
    """Share of ground-truth text lines (connected rows of the truth mask) at least half covered."""
    found = total = 0
    for mask, t in zip(masks, truth, strict=True):
        rows = np.flatnonzero(t.any(axis=1))
        for band in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1) if rows.size else []:
            line = t[band[0]:band[-1] + 1]
            total += 1
            found += np.sum(mask[band[0]:band[-1] + 1] & line) >= _LINE_FOUND * np.sum(line)
    return found / total if total else 1.0


def task_metrics(task: str, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                 truth: Sequence[Any], charset: Sequence[str] | None = None) -> dict[str, float]:
    """The figures for one entry's held-out split: ``outputs`` of the artifact, ``reference`` of
    FP32 on the same inputs, ``truth`` the split's ground truth (see real_sets.RealData)."""
    if task == "sentence-embedding":
        return {"cosine_vs_fp32": embedding_cosine(reference, outputs),
                "retrieval1_agreement_vs_fp32": retrieval_agreement(reference, outputs),
                "paraphrase_retrieval1": paraphrase_retrieval(outputs, truth)}
    if task == "text-recognition":
        assert charset is not None, "text recognition needs the CTC charset (real_sets.rec_charset())"
        got = [ctc_greedy_decode(o, charset) for o in outputs]
        ref = [ctc_greedy_decode(o, charset) for o in reference]
        vs_truth, vs_ref = text_match(got, list(truth)), text_match(got, ref)
        return {"exact_match": vs_truth["exact_match"], "char_accuracy": vs_truth["char_accuracy"],
                "exact_match_vs_fp32": vs_ref["exact_match"], "char_accuracy_vs_fp32": vs_ref["char_accuracy"]}
    if task == "text-detection":
        got, ref = text_masks(outputs), text_masks(reference)
        return {"mask_iou_vs_fp32": mask_iou(got, ref), "lines_found": lines_found(got, truth)}
    if task == "text-direction":
        got = np.array([int(np.argmax(o)) for o in outputs])
        ref = np.array([int(np.argmax(o)) for o in reference])
        return {"accuracy": float(np.mean(got == np.asarray(truth))), "agreement_vs_fp32": float(np.mean(got == ref))}
    raise ValueError(f"no task metrics for task '{task}'")


def ocr_text_agreement(references: list[dict[str, np.ndarray]], outputs: list[dict[str, np.ndarray]],
                       labels: np.ndarray | None) -> dict[str, float]:
    """A `--metric` for the PP-OCR recognizer (deploypipe.data.metrics signature): the artifact's
    CTC-decoded strings against FP32's, character accuracy first (the figure a gate judges:
    smoother than exact match), then exact match."""
    from deploypipe.zoo.real_sets import rec_charset

    charset = rec_charset()
    got = [ctc_greedy_decode(next(iter(o.values())), charset) for o in outputs]
    ref = [ctc_greedy_decode(next(iter(r.values())), charset) for r in references]
    match = text_match(got, ref)
    return {"char_accuracy_vs_fp32": match["char_accuracy"], "exact_match_vs_fp32": match["exact_match"]}
