"""`deploypipe report RESULTS.json -o report.html`: one self-contained HTML page (plots embedded as
base64 PNG, no external files or scripts) comparing bench results the way seeds 000–003 do; for a
campaign's results store, the same page plus what each variant buys on each target.

Estimated figures are drawn hatched (or hollow) and marked E; measured ones say where, once, in the
footnotes of the results table. The run context is one table, a column per distinct machine.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploypipe.bench.results import BenchResult
from deploypipe.bench.table import baseline
from deploypipe.campaign.pareto import pareto_front
from deploypipe.errors import InputFileError


def load_results(path: Path) -> list[BenchResult]:
    """Results saved by `deploypipe bench --json-file` (a list, or {"results": [...]})."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputFileError(f"results file {path}: {exc}") from exc
    rows = data.get("results", []) if isinstance(data, dict) else data
    try:
        return [BenchResult.model_validate(r) for r in rows]
    except ValueError as exc:
        raise InputFileError(f"results file {path} is not deploypipe bench output: {exc}") from exc


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _label(r: BenchResult) -> str:
    point = "" if r.threads is None and r.affinity is None else f" t{r.threads or 'd'}" + (
        f" c{','.join(map(str, r.affinity))}" if r.affinity is not None else "")
    remote = f" @{r.remote}" if r.remote else ""
    return f"{r.model} {r.target}/{r.compiler}/{r.precision}{' pruned' if r.pruned else ''}{point}{remote}"


def _bars(results: list[BenchResult]) -> list[tuple[str, float, bool]]:
    """(label, ms, measured?) bars: measured p50s, and the cost model's estimate for every row whose
    target is not the machine that measured it."""
    from deploypipe import targets

    out = []
    for r in results:
        spec = targets.all_targets().get(r.target)
        here = (spec is not None and spec.runs_here) or r.remote is not None
        if r.ran and r.latency_ms and r.concurrency == 1:
            out.append((_label(r) + ("" if here else " (run on host)"), r.latency_ms.p50, True))
        if r.estimated_ms is not None and not (r.ran and here):
            out.append((_label(r) + " (estimated)", r.estimated_ms, False))
    return out


def _latency_plot(results: list[BenchResult]) -> str | None:
    import matplotlib.pyplot as plt

    rows = _bars(results)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    for i, (_name, ms, meas) in enumerate(rows):
        ax.barh(i, ms, color="#3b7dd8" if meas else "#f2a541", hatch=None if meas else "//", edgecolor="black")
        ax.text(ms, i, f" {ms:.3g}" + ("" if meas else " (estimated)"), va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [name for name, _, _ in rows], fontsize=8)
    ax.invert_yaxis()
    values = [ms for _, ms, _ in rows]
    log = max(values) / min(values) > 30
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(f"latency p50, ms{' (log)' if log else ''}: blue measured, hatched orange estimated by the cost model")
    ax.set_title("Latency per target / precision")
    return _png(fig)


def speedups(results: list[BenchResult]) -> list[tuple[BenchResult, BenchResult, float]]:
    """(optimized, baseline, baseline p50 / optimized p50) for every optimized measured row."""
    out = []
    for r in results:
        if not (r.ran and r.latency_ms and r.concurrency == 1) or (r.precision == "fp32" and not r.pruned):
            continue
        b = baseline(r, results)
        if b and b.latency_ms:
            out.append((r, b, b.latency_ms.p50 / r.latency_ms.p50))
    return out


def _speedup_plot(results: list[BenchResult]) -> str | None:
    import matplotlib.pyplot as plt

    rows = speedups(results)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    for i, (_r, _b, s) in enumerate(rows):
        ax.barh(i, s, color="#4caf50" if s >= 1 else "#e53935", edgecolor="black")
        ax.text(s, i, f" {s:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(rows)), [_label(r) for r, _, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup vs the FP32 baseline of the same model/target/compiler (measured)")
    ax.set_title("What each optimization buys")
    return _png(fig)


def _memory_plot(results: list[BenchResult]) -> str | None:
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.ran and r.latency_ms and r.peak_rss_mb and r.concurrency == 1]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r.peak_rss_mb, r.latency_ms.p50, s=30)  # type: ignore[union-attr]
        ax.annotate(_label(r), (r.peak_rss_mb, r.latency_ms.p50), fontsize=7)  # type: ignore[arg-type,union-attr]
    ax.set_xlabel("peak RSS of the worker process, MB (measured)")
    ax.set_ylabel("latency p50, ms (measured)")
    ax.set_title("Latency vs memory")
    return _png(fig)


def _batch_plot(results: list[BenchResult]) -> str | None:
    """Throughput against latency, one line per artifact through its measured batch sizes."""
    import matplotlib.pyplot as plt

    by_art: dict[str, list[BenchResult]] = {}
    for r in results:
        if r.ran and r.latency_ms and r.concurrency == 1 and r.throughput is None:
            by_art.setdefault(r.name, []).append(r)
    series = {name: sorted(rows, key=lambda r: r.batch_size) for name, rows in by_art.items()
              if len({r.batch_size for r in rows}) > 1}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in series.items():
        xs = [r.latency_ms.p50 for r in rows]  # type: ignore[union-attr]
        ys = [r.samples_per_s for r in rows]
        ax.plot(xs, ys, marker="o", label=name)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(f"b{r.batch_size}", (x, y), fontsize=7)
    ax.set_xlabel("latency p50 per batch, ms (measured)")
    ax.set_ylabel("samples/s (measured)")
    ax.set_title("Throughput vs latency per batch size")
    ax.legend(fontsize=7)
    return _png(fig)


def _layers_plot(results: list[BenchResult], top: int = 8) -> str | None:
    import matplotlib.pyplot as plt

    rows = [r for r in results if r.ran and r.layers][:12]
    if not rows:
        return None
    per_op = []
    for r in rows:
        acc: dict[str, float] = {}
        for layer in r.layers:
            acc[layer["op"]] = acc.get(layer["op"], 0.0) + layer["ms"]
        per_op.append(acc)
    totals: dict[str, float] = {}
    for acc in per_op:
        for op, ms in acc.items():
            totals[op] = totals.get(op, 0.0) + ms
    ops = sorted(totals, key=totals.__getitem__, reverse=True)[:top]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(rows) + 1.5))
    left = [0.0] * len(rows)
    cmap = plt.get_cmap("tab10")
    for k, op in enumerate([*ops, "other"]):
        vals = [acc.get(op, 0.0) if op != "other" else sum(v for o, v in acc.items() if o not in ops) for acc in per_op]
        ax.barh(range(len(rows)), vals, left=left, color=cmap(k % 10), label=op, edgecolor="black", lw=0.3)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("per-layer time summed by op type, ms (measured by the runtime's profiler)")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.set_title("Per-layer breakdown")
    return _png(fig)


def _flop_param_plot(results: list[BenchResult]) -> str | None:
    import matplotlib.pyplot as plt

    models: dict[str, tuple[float, float, float | None]] = {}
    for r in results:
        st = r.model_stats
        if not st.get("params") or not st.get("macs"):
            continue
        ms = r.latency_ms.p50 if r.ran and r.latency_ms and r.precision == "fp32" and r.concurrency == 1 else None
        old = models.get(r.model)
        models[r.model] = (st["params"], st["macs"], ms if ms is not None else (old[2] if old else None))
    if not models:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, (params, macs, ms) in models.items():
        ax.scatter(params / 1e6, macs / 1e6, s=40, color="#3b7dd8")
        text = f"{name}\nFLOP/param {macs / params:.1f}" + (f", {ms:.3g} ms" if ms is not None else "")
        ax.annotate(text, (params / 1e6, macs / 1e6), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters, millions")
    ax.set_ylabel("MACs per inference, millions (seed 001's 'FLOP')")
    ax.set_title("Model size vs compute (FLOP/param, as in seed 001)")
    return _png(fig)


@dataclass(frozen=True)
class Cell:
    """One model x target x variant as the comparison reads it: from a campaign's store, or made
    from a plain bench result (its variant is then compiler-precision[-pruned])."""

    model: str
    target: str
    variant: str
    compiler: str
    precision: str
    pruned: bool
    status: str  # measured | estimated | refused | excluded | failed | unmeasured | not run
    reason: str = ""
    result: BenchResult | None = None
    accuracy: float | None = None  # top-1 %, on the build's labelled evaluation data
    baseline_variant: bool = False  # FP32, unpruned, default recipe

    @property
    def ms(self) -> tuple[float | None, bool]:
        """(latency, measured?): the measured p50, else the cost model's estimate."""
        r = self.result
        if r is not None and r.ran and r.latency_ms and r.concurrency == 1:
            return r.latency_ms.p50, True
        return (r.estimated_ms if r is not None else None), False


def cells_of(results: Sequence[BenchResult]) -> list[Cell]:
    """Plain bench results as cells (one per artifact at its first sweep point)."""
    out, seen = [], set()
    for r in results:
        if r.concurrency != 1 or r.name in seen:
            continue
        seen.add(r.name)
        status = "measured" if r.ran else "estimated" if r.estimated_ms is not None else "not run"
        variant = f"{r.compiler}-{r.precision}" + ("-pruned" if r.pruned else "")
        out.append(Cell(r.model, r.target, variant, r.compiler, r.precision, r.pruned, status, r.reason, r,
                        baseline_variant=r.precision == "fp32" and not r.pruned))
    return out


def _baseline(c: Cell, cells: Sequence[Cell]) -> Cell | None:
    """The target's FP32 baseline for a cell: same model and target, FP32 unpruned default recipe
    at the same measurement point, with the target's default compiler (so a compiler is compared
    with the target's usual one), else with the cell's own compiler, else any."""
    from deploypipe import targets

    def point(x: Cell) -> tuple[Any, ...]:
        r = x.result
        return (r.threads, r.batch_size) if r else (None, 1)

    same = [b for b in cells if b.model == c.model and b.target == c.target and b.baseline_variant and b.result is not None]
    spec = targets.all_targets().get(c.target)
    default = spec.default_compiler if spec else None
    for pick in (lambda b: b.compiler == default and point(b) == point(c),
                 lambda b: b.compiler == c.compiler and point(b) == point(c), lambda b: point(b) == point(c)):
        found = [b for b in same if pick(b)]
        if found:
            return found[0]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _quality(c: Cell) -> tuple[float | None, str]:
    """(figure, name) of a cell's accuracy: top-1 % on labelled data, else top-1 agreement with
    FP32 (%), else cosine to FP32."""
    r = c.result
    if c.accuracy is not None:
        return c.accuracy, "top-1 accuracy, %"
    if r is not None and r.fidelity.get("top1_agreement") is not None:
        return 100.0 * r.fidelity["top1_agreement"], "top-1 agreement with FP32, %"  # type: ignore[operator]
    if r is not None and r.fidelity.get("cosine") is not None:
        return r.fidelity["cosine"], "cosine to FP32"
    return None, ""


def _entry(c: Cell, cells: Sequence[Cell]) -> str:
    """One matrix entry: speed-up, accuracy change, size and energy against the target's FP32 baseline."""
    if c.result is None or c.status not in ("measured", "estimated"):
        return f'<td class="off" title="{html.escape(c.reason)}">{html.escape(c.status)}</td>'
    b = _baseline(c, cells)
    ms, measured = c.ms
    lines = []
    if b is None:
        lines.append("no FP32 baseline")
    elif b is c:
        lines.append(f"baseline {ms:.3g} ms{'' if measured else ' E'}" if ms else "baseline")
    else:
        bms, bmeasured = b.ms
        if ms and bms and measured == bmeasured:
            lines.append(f"<b>{bms / ms:.2f}x</b>{'' if measured else ' E'}")
        else:
            lines.append("speed-up: –")
        q, qname = _quality(c)
        bq, _ = _quality(b)
        if q is not None and bq is not None:
            unit = " pt" if "%" in qname else ""
            lines.append(f"Δ{'acc' if 'accuracy' in qname else 'agr' if 'agreement' in qname else 'cos'} "
                         f"{q - bq:+.3g}{unit}")
        size = _ratio(c.result.size_mb, b.result.size_mb if b.result else None)
        if size is not None:
            lines.append(f"size {size:.2f}x")
        e, be = c.result.energy, b.result.energy if b.result else None
        if e and be and be.mj_per_inference:
            est = "" if e.measured and be.measured else " E"
            lines.append(f"energy {e.mj_per_inference / be.mj_per_inference:.2f}x{est}")
    return f"<td>{'<br>'.join(lines)}</td>"


def _matrices(cells: Sequence[Cell]) -> str:
    """Per model, a targets x variants matrix of what each variant buys against the target's FP32
    baseline (measured against measured, estimated against estimated: E)."""
    parts = []
    for model in dict.fromkeys(c.model for c in cells):
        mine = [c for c in cells if c.model == model]
        if not any(c.status in ("measured", "estimated") and not c.baseline_variant for c in mine):
            continue
        variants = list(dict.fromkeys(c.variant for c in sorted(mine, key=lambda c: not c.baseline_variant)))
        head = "".join(f"<th>{html.escape(v)}</th>" for v in variants)
        rows = []
        for target in dict.fromkeys(c.target for c in mine):
            by = {c.variant: c for c in mine if c.target == target}
            tds = "".join(_entry(by[v], cells) if v in by else "<td class='off'>–</td>" for v in variants)
            rows.append(f"<tr><th>{html.escape(target)}</th>{tds}</tr>")
        parts.append(f"<h3>{html.escape(model)}</h3><table class='matrix'><thead><tr><th>target \\ variant</th>{head}</tr>"
                     f"</thead><tbody>{''.join(rows)}</tbody></table>")
    if not parts:
        return ""
    return ("<h2>What each variant buys, per target</h2><p>Against the target's FP32 baseline (same model, "
            "FP32, unpruned, default recipe; with the target's default compiler where there is one): speed-up "
            "(baseline latency / variant latency), change of accuracy (or of top-1 agreement / cosine "
            "with FP32 where there is no labelled data), artifact size and energy per inference as ratios. "
            "E: from the cost model or a power figure, never a measurement; estimates are compared "
            "only with estimates.</p>" + "".join(parts))


_COLUMNS = [("artifact", lambda r: r.name), ("target", lambda r: r.target), ("prec", lambda r: r.precision),
            ("p50 ms", lambda r: r.latency_ms.p50 if r.ran and r.latency_ms else None),
            ("p90 ms", lambda r: r.latency_ms.p90 if r.ran and r.latency_ms else None),
            ("items/s", lambda r: r.samples_per_s if r.ran else None),
            ("peak MB", lambda r: r.peak_rss_mb), ("size MB", lambda r: r.size_mb or None),
            ("mJ/inf", lambda r: r.energy.mj_per_inference if r.energy else None),
            ("cosine", lambda r: r.fidelity.get("cosine")), ("est ms", lambda r: r.estimated_ms),
            ("est err", lambda r: r.estimate_error)]


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(results: list[BenchResult]) -> str:
    """The results, a fixed set of short columns that fit the page; where each figure comes from
    (measured on ..., estimated by ..., the energy source, why a row did not run, what the build's
    accuracy rests on: verified on labelled data, unverified: synthetic, ...) is a numbered
    footnote, written once however many rows share it."""
    notes: dict[str, int] = {}

    def mark(label: str) -> str:
        if not label:
            return ""
        notes.setdefault(label, len(notes) + 1)
        return f"<sup>{notes[label]}</sup>"

    head = "".join(f"<th>{c}</th>" for c, _ in _COLUMNS) + "<th>source</th>"
    body = []
    for r in results:
        src = mark(r.where if r.ran else f"not run: {r.reason}") + mark(r.estimate_label) + mark(
            r.energy.source if r.energy else "") + mark(f"accuracy {r.accuracy}" if r.accuracy else "")
        tds = "".join(f"<td>{_cell(get(r))}</td>" for _, get in _COLUMNS)
        body.append(f"<tr{'' if r.ran else ' class=est'}>{tds}<td>{src}</td></tr>")
    foot = "".join(f"<li value='{i}'>{html.escape(label)}</li>" for label, i in notes.items())
    return (f"<table class='results'><col style='width:16%'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<ol class='notes'>{foot}</ol>")


def _traces(results: list[BenchResult], page_dir: Path | None) -> str:
    """Links to the Chrome trace files written by `bench --profile --trace-dir` (open them in
    Perfetto or chrome://tracing), relative to the page when they sit below it."""
    items = []
    for r in results:
        if not r.trace:
            continue
        href = Path(r.trace)
        if page_dir is not None and href.is_absolute() and href.is_relative_to(page_dir.resolve()):
            href = href.relative_to(page_dir.resolve())
        items.append(f'<li><a href="{html.escape(href.as_uri() if href.is_absolute() else str(href))}">'
                     f"{html.escape(r.name)}</a></li>")
    if not items:
        return ""
    return ("<h2>Per-layer traces</h2><p>Chrome trace-event files: open in https://ui.perfetto.dev or "
            f"chrome://tracing.</p><ul>{''.join(items)}</ul>")


def _costmodel_summary(results: list[BenchResult]) -> str:
    errs = [r.estimate_error for r in results if r.estimate_error is not None]
    if not errs:
        return "<p>No host-measured FP32 artifacts with an ONNX graph to check the cost model against.</p>"
    return (f"<p>Cost model error on host-measured artifacts (leave-one-out, model level): median "
            f"<b>{statistics.median(errs):.0%}</b> over {len(errs)} models (max {max(errs):.0%}). "
            f"Estimates for other targets use the calibration fitted on all of them.</p>")


def _context(results: list[BenchResult]) -> str:
    """One table: a row per context field, a column per distinct machine/software set (the load
    average, which differs on every run, is given as its range)."""
    def flat(ctx: dict[str, Any]) -> dict[str, str]:
        out = {k: str(v) for k, v in ctx.items() if k not in ("versions", "loadavg")}
        out |= {f"version: {k}": str(v) for k, v in ctx.get("versions", {}).items()}
        return out

    columns: list[dict[str, str]] = []
    loads: list[list[float]] = []
    counts: list[int] = []
    for r in results:
        if not (r.ran and r.context):
            continue
        f = flat(r.context)
        if f not in columns:
            columns.append(f)
            loads.append([])
            counts.append(0)
        i = columns.index(f)
        loads[i].append(float(r.context.get("loadavg", [0.0])[0]))
        counts[i] += 1
    if not columns:
        return "<p>No measurements.</p>"
    keys = list(dict.fromkeys(k for c in columns for k in c))
    head = "".join(f"<th>context {i + 1} ({n} result{'s' if n != 1 else ''})</th>" for i, n in enumerate(counts))
    rows = "".join(f"<tr><th>{html.escape(k)}</th>" + "".join(f"<td>{_cell(c.get(k))}</td>" for c in columns) + "</tr>"
                   for k in keys)
    rows += "<tr><th>load average (1 min)</th>" + "".join(f"<td>{min(v):.2f}–{max(v):.2f}</td>" for v in loads) + "</tr>"
    return f"<table class='context'><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _pareto_plot(cells: Sequence[Cell]) -> str | None:
    """Latency against accuracy (or fidelity) per target, with the Pareto front of each."""
    import matplotlib.pyplot as plt

    per_target: dict[str, list[tuple[float, float, bool, str]]] = {}
    qname = ""
    for c in cells:
        ms, measured = c.ms
        q, name = _quality(c)
        if ms and q is not None:
            qname = qname or name
            if name == qname:
                per_target.setdefault(c.target, []).append((ms, q, measured, f"{c.model} {c.variant}"))
    per_target = {t: pts for t, pts in per_target.items() if len(pts) >= 2}
    if not per_target:
        return None
    n = len(per_target)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
    for ax, (target, pts) in zip(axes[0], per_target.items(), strict=True):
        for ms, q, measured, label in pts:
            ax.scatter(ms, q, s=36, color="#3b7dd8" if measured else "none", edgecolors="#3b7dd8" if measured else "#f2a541",
                       linewidths=1.5)
            ax.annotate(label, (ms, q), fontsize=6)
        front = sorted(pts[i] for i in pareto_front([(p[0], -p[1]) for p in pts]))  # lower latency, higher accuracy
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#e53935", lw=1.2, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("latency, ms (log; filled: measured, hollow: estimated)")
        ax.set_ylabel(qname)
        ax.set_title(target)
        ax.legend(fontsize=7)
    fig.suptitle("Latency vs accuracy per target")
    return _png(fig)


def _devices_plot(cells: Sequence[Cell]) -> str | None:
    """Per model, the FP32 baseline's latency on every target (edgeBench's figures): one group of
    bars per model, one bar per target, estimated bars hatched."""
    import matplotlib.pyplot as plt

    base = [c for c in cells if c.baseline_variant and c.ms[0]]
    models = list(dict.fromkeys(c.model for c in base))
    devices = list(dict.fromkeys(c.target for c in base))
    if len(devices) < 2 or not models:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(models) * len(devices) / 2 + 2), 4.5))
    width = 0.8 / len(devices)
    cmap = plt.get_cmap("tab10")
    for j, device in enumerate(devices):
        for i, model in enumerate(models):
            c = next((c for c in base if c.model == model and c.target == device), None)
            if c is None:
                continue
            ms, measured = c.ms
            ax.bar(i + j * width, ms, width, color=cmap(j % 10), hatch=None if measured else "//", edgecolor="black",
                   label=device if i == 0 or not ax.get_legend_handles_labels()[1].count(device) else None)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    ax.set_xticks([i + width * (len(devices) - 1) / 2 for i in range(len(models))], models, fontsize=8, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("FP32 latency, ms (log; hatched: estimated)")
    ax.set_title("Per-model latency across devices")
    return _png(fig)


def _not_built(cells: Sequence[Cell]) -> str:
    rows = [c for c in cells if c.result is None and c.reason]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(c.model)}</td><td>{html.escape(c.target)}</td><td>{html.escape(c.variant)}</td>"
                   f"<td>{html.escape(c.status)}</td><td>{html.escape(c.reason)}</td></tr>" for c in rows)
    return ("<h2>Cells not built</h2><table class='results'><col span='4' style='width:12%'><thead><tr><th>model</th><th>target</th><th>variant</th>"
            f"<th>status</th><th>reason</th></tr></thead><tbody>{body}</tbody></table>")


def render_html(results: list[BenchResult], title: str = "deploypipe bench report",
                page_dir: Path | None = None, cells: Sequence[Cell] | None = None) -> str:
    """The page; `cells` (a campaign's, from its store) adds the refused/excluded cells and
    campaign names; without them the cells are made from the results."""
    cells = list(cells) if cells is not None else cells_of(results)
    plots = [("Latency per target / precision", _latency_plot(results)),
             ("Speedup of each optimization vs its FP32 baseline", _speedup_plot(results)),
             ("Latency vs accuracy per target, with the Pareto front", _pareto_plot(cells)),
             ("Per-model latency across devices", _devices_plot(cells)),
             ("Latency vs memory", _memory_plot(results)), ("Throughput vs latency per batch", _batch_plot(results)),
             ("Per-layer breakdown", _layers_plot(results)),
             ("FLOP/param (seed 001)", _flop_param_plot(results))]
    figs = "".join(f'<figure><figcaption>{t}</figcaption><img alt="{t}" src="data:image/png;base64,{b}"></figure>'
                   for t, b in plots if b)
    missing = [t for t, b in plots if not b]
    note = f"<p class='note'>No data for: {', '.join(missing)}.</p>" if missing else ""
    loadgen = [r for r in results if r.loadgen]
    lg_html = "".join(
        f"<li>{html.escape(r.name)} {html.escape(r.loadgen.get('scenario', ''))}: "
        f"{html.escape(str(r.loadgen.get('Result is', '?')))}, logs in {html.escape(r.loadgen.get('log_dir', ''))}</li>"
        for r in loadgen)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: DejaVu Sans, sans-serif; margin: 24px; color: #222; max-width: 1400px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }} h3 {{ font-size: 14px; }}
figure {{ display: inline-block; margin: 8px; vertical-align: top; }}
figcaption {{ font-weight: bold; font-size: 13px; }}
img {{ max-width: 100%; border: 1px solid #ccc; }}
table {{ border-collapse: collapse; font-size: 11px; }}
table.results {{ width: 100%; table-layout: fixed; }}
table.results td {{ overflow-wrap: anywhere; }}
td, th {{ border: 1px solid #bbb; padding: 2px 5px; vertical-align: top; }} th {{ background: #eef; }}
tr.est td {{ color: #8a5a00; }} td.off {{ color: #999; }}
table.matrix td {{ min-width: 90px; }} ol.notes {{ font-size: 10px; color: #555; }}
.note {{ color: #a60; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(results)} results. Measured figures say where they were measured; estimated ones say "estimated" and by what (E).</p>
{_matrices(cells)}
<h2>Plots</h2>{figs}{note}
<h2>Cost model</h2>{_costmodel_summary(results)}
<h2>Results</h2>{_table(results)}
{_not_built(cells)}
{_traces(results, page_dir)}
{"<h2>MLPerf LoadGen</h2><ul>" + lg_html + "</ul>" if loadgen else ""}
<h2>Run context</h2>{_context(results)}
</body></html>
"""


def save(page: str, output: Path) -> Path:
    """Write the page whole (a reader never sees half of it)."""
    tmp = Path(output).with_suffix(".tmp")
    tmp.write_text(page)
    tmp.replace(output)
    return Path(output)


def write_report(results_json: Path, output: Path, title: str | None = None,
                 cells: Sequence[Cell] | None = None) -> Path:
    """The page for a results JSON, or (with `cells`, read from a campaign store) a campaign's."""
    import matplotlib

    matplotlib.use("Agg")
    if cells is None:
        results = load_results(results_json)
    else:
        results = [c.result for c in cells if c.result is not None]
    page = render_html(results, title or f"deploypipe report: {Path(results_json).name}", Path(output).parent, cells)
    return save(page, output)
