"""Compare an artifact's outputs with the FP32 reference on the same inputs, output by output.

Each output is classified (class scores, embedding, other regression) and judged on its own;
the weakest decides, so a bad box head cannot hide inside a good pooled cosine. Builds meant to
compute the same function (FP32, FP16: judged by max abs error) are checked for numerical
equivalence, which any inputs can show. Lossy builds (INT8, pruned: judged by cosine, agreement,
accuracy) follow an evidence ladder, recorded in the Fidelity:

- labelled: the user's labels; the accuracy drop against a budget decides (with an interval);
- real-unlabelled: top-1 agreement on class scores and cosine per output;
- stand-in: real photos that are not the user's data (deploypipe.data.natural, the default
  calibration of zoo image models), judged like synthetic inputs;
- synthetic: only a catastrophe is refused (non-finite outputs, an output's cosine under
  `synthetic_min_cosine`); such figures never certify accuracy ("accuracy unverified").
Real data certifies only from `min_samples` samples up. A build whose figures miss the gate fails.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deploypipe.artifact import Fidelity, OutputFidelity
from deploypipe.data import metrics as mt
from deploypipe.errors import FidelityError

# Defaults per precision; recipes and --tolerance override them.
DEFAULT_TOLERANCE: dict[str, dict[str, float]] = {
    "fp32": {"rel_max_abs_err": 1e-3},
    "fp16": {"rel_max_abs_err": 3e-2},
    "int8": {"min_cosine": 0.95, "min_top1_agreement": 0.90, "max_accuracy_drop": 1.0,
             "synthetic_min_cosine": 0.90, "min_samples": 200},
}
# Pruning changes the function on purpose, so a pruned artifact is judged like a lossy one
# (agreement, cosine, real accuracy drop), whatever its precision; never by max abs error.
PRUNED_TOLERANCE: dict[str, float] = {"min_cosine": 0.90, "min_top1_agreement": 0.90, "max_accuracy_drop": 1.0,
                                      "synthetic_min_cosine": 0.90, "min_samples": 200}
# A model that arrives quantized (QDQ nodes in the user's file, no --quantize) has no FP32 reference:
# its reference is ONNX Runtime running the same quantized graph. A compiler with its own integer
# kernels rounds each requantization its own way (ORT's fixed-point QLinearConv vs a float rescale),
# and a one-step difference in an intermediate tensor travels on: judged like a lossy build, by
# cosine (tighter than int8's, the graphs being equal) and agreement, never by max abs error.
QUANTIZED_INPUT_TOLERANCE: dict[str, float] = {"min_cosine": 0.99, "min_top1_agreement": 0.90, "max_accuracy_drop": 1.0,
                                               "synthetic_min_cosine": 0.99, "min_samples": 200}
METRIC_TOLERANCE = "max_metric_drop"  # the user's --metric: its first figure may fall this much below FP32's
EVIDENCE = ("labelled", "real-unlabelled", "stand-in", "synthetic")
# evidence that can refuse a catastrophe but never certify, and how the verdict names it
UNCERTIFYING = {"synthetic": "synthetic inputs", "stand-in": "stand-in natural images, not your data"}
UNVERIFIED_SYNTHETIC = f"accuracy unverified: {UNCERTIFYING['synthetic']}"


def merge_tolerance(base: Mapping[str, float], overrides: Mapping[str, float]) -> dict[str, float]:
    """The gate: base keys overridden by the user's. A cosine floor the user sets also holds on
    synthetic inputs, unless they set `synthetic_min_cosine` too: what they ask for is judged."""
    merged = {**base, **overrides}
    if "min_cosine" in overrides and "synthetic_min_cosine" not in overrides:
        merged["synthetic_min_cosine"] = overrides["min_cosine"]
    return merged


def evidence_of(labels: np.ndarray | None, evidence: str) -> str:
    """The evidence level of a set: labelled when it has labels, else its provider's own level."""
    return "labelled" if labels is not None else evidence


def _paired(name: str, references: list[dict[str, np.ndarray]],
            outputs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, bool]:
    """One output over all samples as [N, ...] arrays, or, when its shape varies from sample to
    sample (e.g. boxes after NMS), flattened end to end and flagged ragged."""
    refs = [np.asarray(r[name], dtype=np.float64) for r in references]
    outs = [np.asarray(o[name], dtype=np.float64) for o in outputs]
    for i, (a, b) in enumerate(zip(refs, outs, strict=True)):
        if a.shape != b.shape:
            raise FidelityError(f"output '{name}' has shape {b.shape}, FP32 has {a.shape} (sample {i})")
    if len({a.shape for a in refs}) > 1:
        return np.concatenate([a.ravel() for a in refs]), np.concatenate([b.ravel() for b in outs]), True
    return np.stack(refs), np.stack(outs), False


def _output_figures(name: str, ref: np.ndarray, out: np.ndarray, ragged: bool, op: str | None) -> OutputFidelity:
    finite = bool(np.all(np.isfinite(out)))
    kind = "regression" if ragged else mt.classify_output(name, ref, op)
    diff = np.abs(ref - out)
    fig = OutputFidelity(
        name=name, kind=kind, cosine=mt.cosine(ref, out) if finite else float("nan"),
        sqnr_db=mt.sqnr_db(ref, out) if finite else None,
        max_abs_err=float(np.max(diff)) if diff.size else 0.0,
        scale=max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0,
    )
    if kind == "class-scores":
        k, n = mt.top1_agreement(ref, out)
        fig.top1_agreement, fig.top1_agreement_ci = k / n, mt.wilson(k, n)
    elif kind == "embedding" and finite:
        fig.embedding_cosine = mt.embedding_cosine(ref, out)
        fig.retrieval_at_1 = mt.retrieval_at_1(ref, out)
    return fig


def compare(
    references: list[dict[str, np.ndarray]],
    outputs: list[dict[str, np.ndarray]],
    precision: str,
    tolerance: dict[str, float],
    labels: np.ndarray | None = None,
    evidence: str | None = None,
    ops: Mapping[str, str] | None = None,
) -> Fidelity:
    """Fidelity figures over paired samples (one dict of outputs per sample); `precision` is what
    the artifact is (the tolerance already says how to judge it). `evidence` is what
    the inputs are (see EVIDENCE); None judges every tolerance key as given and certifies nothing
    (device self-checks, benchmarks). `ops` maps output names to the op producing them."""
    names = list(references[0])
    paired = {n: _paired(n, references, outputs) for n in names}
    figs = [_output_figures(n, *paired[n], (ops or {}).get(n)) for n in names]
    fid = Fidelity(checked=True, where="", samples=len(references), evidence=evidence or "", tolerance=tolerance,
                   outputs=figs, max_abs_err=max(f.max_abs_err or 0.0 for f in figs),
                   cosine=min((f.cosine for f in figs), key=lambda c: -np.inf if np.isnan(c) else c))  # type: ignore[arg-type]
    weakest_cls = min((f for f in figs if f.top1_agreement is not None), key=lambda f: f.top1_agreement,  # type: ignore[arg-type,return-value]
                      default=None)
    if weakest_cls is not None:
        fid.top1_agreement, fid.top1_agreement_ci = weakest_cls.top1_agreement, weakest_cls.top1_agreement_ci
    if labels is not None:
        _accuracy(fid, figs, paired, np.asarray(labels).ravel())
    fid.reasons = _judge(fid, figs, tolerance, evidence)
    fid.passed = not fid.reasons
    fid.certified, fid.verdict = _verdict(fid, tolerance, evidence)
    return fid


def judge_metric(fid: Fidelity, spec: str, fn: mt.UserMetric, references: list[dict[str, np.ndarray]],
                 outputs: list[dict[str, np.ndarray]], labels: np.ndarray | None,
                 tolerance: Mapping[str, float]) -> None:
    """Add the user's metric to `fid`, for the artifact and for FP32 itself (its outputs as the
    artifact's), and judge it: with `max_metric_drop` in the tolerance, the metric's first figure
    (higher is better) may fall at most that much below FP32's, on real evidence only."""
    fid.metrics = mt.run_metric(fn, spec, references, outputs, labels)
    fid.metrics_fp32 = mt.run_metric(fn, spec, references, references, labels)
    budget = tolerance.get(METRIC_TOLERANCE)
    if not fid.metrics or budget is None or fid.evidence in UNCERTIFYING or not fid.evidence:
        return
    key = next(iter(fid.metrics))
    drop = fid.metrics_fp32[key] - fid.metrics[key]
    if drop > budget:
        fid.reasons.append(f"metric {key} {fid.metrics[key]:.4g} is {drop:.4g} below FP32's "
                           f"{fid.metrics_fp32[key]:.4g} > {METRIC_TOLERANCE} {budget:g}")
        fid.passed = False
        fid.certified, fid.verdict = _verdict(fid, dict(tolerance), fid.evidence)


def _accuracy(fid: Fidelity, figs: list[OutputFidelity], paired: dict[str, tuple[np.ndarray, np.ndarray, bool]],
              labels: np.ndarray) -> None:
    """Top-1/top-5 accuracy of FP32 and the artifact on the output the labels index (the first
    class-score output by shape and name, as the data loader chose it)."""
    target = next((f for f in figs if not paired[f.name][2]
                   and mt.kind_from_shape(f.name, paired[f.name][0].shape[1:]) == "class-scores"), None)
    if target is None:
        return
    ref, out, _ = paired[target.name]
    ref_ok, out_ok = mt.correct_topk(ref, labels, 1), mt.correct_topk(out, labels, 1)
    fid.accuracy_fp32, fid.accuracy = 100 * float(ref_ok.mean()), 100 * float(out_ok.mean())
    fid.accuracy_drop_ci = mt.paired_drop_ci(ref_ok, out_ok)
    if ref.reshape(len(ref), -1).shape[1] >= 5:
        fid.top5_accuracy_fp32 = 100 * float(mt.correct_topk(ref, labels, 5).mean())
        fid.top5_accuracy = 100 * float(mt.correct_topk(out, labels, 5).mean())


def _judge(fid: Fidelity, figs: list[OutputFidelity], tol: dict[str, float], evidence: str | None) -> list[str]:
    """Reasons to refuse, each naming its output."""
    reasons = [f"output '{f.name}': non-finite values (NaN/inf)" for f in figs if f.cosine is None or np.isnan(f.cosine)]
    lossy = "rel_max_abs_err" not in tol
    if "rel_max_abs_err" in tol:
        reasons += [f"output '{f.name}': max abs error {f.max_abs_err:.3g} > {tol['rel_max_abs_err']:.3g} x output "
                    f"scale {f.scale:.3g}" for f in figs if f.max_abs_err > tol["rel_max_abs_err"] * f.scale]  # type: ignore[operator]
    synthetic = lossy and evidence in UNCERTIFYING
    floor_key = "synthetic_min_cosine" if synthetic and "synthetic_min_cosine" in tol else "min_cosine"
    if floor_key in tol:
        on = f" (on {UNCERTIFYING[evidence]})" if synthetic else ""  # type: ignore[index]
        reasons += [f"output '{f.name}': cosine {_below(f.cosine, tol[floor_key])} < {tol[floor_key]}{on}" for f in figs
                    if f.cosine is not None and not np.isnan(f.cosine) and f.cosine < tol[floor_key]]
    if synthetic:
        return reasons  # agreement and accuracy on synthetic inputs are noise, never a verdict
    judge_agreement = "min_top1_agreement" in tol and not (lossy and evidence == "labelled")
    if judge_agreement:
        reasons += [f"output '{f.name}': top-1 agreement {f.top1_agreement:.3f} < {tol['min_top1_agreement']}"
                    for f in figs if f.top1_agreement is not None and f.top1_agreement < tol["min_top1_agreement"]]
    if fid.accuracy is not None and fid.accuracy_fp32 is not None and "max_accuracy_drop" in tol:
        drop = fid.accuracy_fp32 - fid.accuracy
        if drop > tol["max_accuracy_drop"]:
            reasons.append(f"accuracy drop {drop:.2f} points > {tol['max_accuracy_drop']} ({fid.samples} labelled samples)")
    return reasons


def accuracy_label(f: Fidelity) -> str:
    """A short cell for tables: what the build's accuracy rests on ('' for older manifests)."""
    if not f.checked:
        return "not checked"
    if not f.evidence:
        return ""
    if f.certified:
        return f"verified ({f.evidence}, n={f.samples})"
    return f"unverified: {f.evidence}" if f.evidence in UNCERTIFYING else f"unverified ({f.evidence}, n={f.samples})"


def _below(value: float, floor: float) -> str:
    """`value` with enough digits to show it under `floor` (0.999993, not 1.0000, under 0.999995)."""
    for digits in range(4, 10):
        if round(value, digits) < floor:
            return f"{value:.{digits}f}"
    return f"{value:.10f}"


def _verdict(fid: Fidelity, tol: dict[str, float], evidence: str | None) -> tuple[bool | None, str]:
    """(certified, one line) for the manifest and the build summary."""
    if evidence is None:
        return None, ""
    if not fid.passed:
        return False, "refused: " + "; ".join(fid.reasons)
    n = fid.samples
    if "rel_max_abs_err" in tol:
        return True, f"verified: matches FP32 within max abs error on {n} {evidence} input(s)"
    if evidence in UNCERTIFYING:
        return False, f"accuracy unverified: {UNCERTIFYING[evidence]}"
    need = int(tol.get("min_samples", 0))
    if n < need:
        return False, f"accuracy unverified: {n} real samples, {need} needed to certify"
    if evidence == "labelled" and fid.accuracy is not None and fid.accuracy_drop_ci is not None:
        lo, hi = fid.accuracy_drop_ci
        return True, (f"verified on {n} labelled samples: accuracy drop {fid.accuracy_fp32 - fid.accuracy:.2f} "  # type: ignore[operator]
                      f"points (95% CI {lo:.2f}..{hi:.2f}), budget {tol.get('max_accuracy_drop', '-')}")
    agree = f", top-1 agreement {fid.top1_agreement:.3f}" if fid.top1_agreement is not None else ""
    return True, f"verified on {n} real samples: weakest output cosine {fid.cosine:.4f}{agree}"
