"""Compare an artifact's outputs with the FP32 reference on the same inputs.

FP32/FP16 are judged by max abs error relative to the output's scale; INT8 by top-1 agreement
and cosine similarity; models with labelled data also by real accuracy drop. A build whose
figures miss the tolerance fails: it never ships silently.
"""

from __future__ import annotations

import numpy as np

from deploypipe.artifact import Fidelity

# Defaults per precision; recipes and --tolerance override them.
DEFAULT_TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"rel_max_abs_err": 1e-3},
    "fp16": {"rel_max_abs_err": 3e-2},
    "int8": {"min_cosine": 0.95, "min_top1_agreement": 0.90, "max_accuracy_drop": 1.0},
}
# Pruning changes the function on purpose, so a pruned artifact is judged like a lossy one
# (agreement, cosine, real accuracy drop), whatever its precision; never by max abs error.
PRUNED_TOLERANCE: dict[str, float] = {"min_cosine": 0.90, "min_top1_agreement": 0.90, "max_accuracy_drop": 1.0}


def _is_classifier(ref: np.ndarray) -> bool:
    return ref.ndim == 2 and ref.shape[-1] > 1


def compare(
    references: list[dict[str, np.ndarray]],
    outputs: list[dict[str, np.ndarray]],
    precision: str,
    tolerance: dict[str, float],
    labels: np.ndarray | None = None,
) -> Fidelity:
    """Fidelity figures over paired samples (one dict of outputs per sample)."""
    names = list(references[0])
    ref_flat = np.concatenate([np.concatenate([r[n].ravel() for n in names]) for r in references])
    out_flat = np.concatenate(
        [np.concatenate([o[n].astype(np.float64).ravel() for n in names]) for o in outputs]
    )
    ref_flat = ref_flat.astype(np.float64)
    max_abs = float(np.max(np.abs(ref_flat - out_flat)))
    denom = float(np.linalg.norm(ref_flat) * np.linalg.norm(out_flat))
    cosine = float(np.dot(ref_flat, out_flat) / denom) if denom > 0 else float(np.array_equal(ref_flat, out_flat))
    first = names[0]
    top1 = acc_ref = acc = None
    if _is_classifier(references[0][first]):
        ref_cls = np.array([r[first].argmax(-1) for r in references]).ravel()
        out_cls = np.array([o[first].argmax(-1) for o in outputs]).ravel()
        top1 = float(np.mean(ref_cls == out_cls))
        if labels is not None:
            acc_ref = float(np.mean(ref_cls == labels) * 100)
            acc = float(np.mean(out_cls == labels) * 100)
    scale = max(1.0, float(np.max(np.abs(ref_flat))))
    reasons = []
    if "rel_max_abs_err" in tolerance and max_abs > tolerance["rel_max_abs_err"] * scale:
        reasons.append(f"max abs error {max_abs:.3g} > {tolerance['rel_max_abs_err']:.3g} x output scale {scale:.3g}")
    if "min_cosine" in tolerance and cosine < tolerance["min_cosine"]:
        reasons.append(f"cosine {cosine:.4f} < {tolerance['min_cosine']}")
    if top1 is not None and "min_top1_agreement" in tolerance and top1 < tolerance["min_top1_agreement"]:
        reasons.append(f"top-1 agreement {top1:.3f} < {tolerance['min_top1_agreement']}")
    if acc is not None and acc_ref is not None and "max_accuracy_drop" in tolerance:
        if acc_ref - acc > tolerance["max_accuracy_drop"]:
            reasons.append(f"accuracy drop {acc_ref - acc:.2f} points > {tolerance['max_accuracy_drop']}")
    return Fidelity(
        checked=True, where="", samples=len(references), max_abs_err=max_abs, cosine=cosine,
        top1_agreement=top1, accuracy_fp32=acc_ref, accuracy=acc, tolerance=tolerance,
        passed=not reasons, reasons=reasons,
    )
