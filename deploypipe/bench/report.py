"""`deploypipe report RESULTS.json -o report.html`: one self-contained HTML page (plots embedded as
base64 PNG, no external files or scripts) comparing bench results the way seeds 000–003 do.

Estimated figures are drawn hatched and labelled "estimated"; measured ones say where.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path
from typing import Any

from deploypipe.bench.results import BenchResult
from deploypipe.bench.table import baseline, flat
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


_COLUMNS = ["name", "target", "precision", "where", "threads", "affinity", "concurrency", "p50_ms", "p90_ms",
            "run_to_run_spread_pct", "library_load_s", "model_load_s", "first_inference_ms", "throughput_ips",
            "peak_rss_mb", "size_mb", "energy_mj", "energy_source", "ips_per_watt", "ips_per_usd", "cosine",
            "accuracy", "estimated_ms", "estimate_error", "estimate_label", "reason"]


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(results: list[BenchResult]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_cell(flat(r).get(c))}</td>" for c in _COLUMNS) + "</tr>" for r in results)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    seen = []
    for r in results:
        if r.ran and r.context and r.context not in seen:
            seen.append(r.context)
    items = "".join(f"<pre>{html.escape(json.dumps(c, indent=1))}</pre>" for c in seen)
    return items or "<p>No measurements.</p>"


def render_html(results: list[BenchResult], title: str = "deploypipe bench report",
                page_dir: Path | None = None) -> str:
    plots = [("Latency per target / precision", _latency_plot(results)),
             ("Speedup of each optimization vs its FP32 baseline", _speedup_plot(results)),
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
body {{ font-family: DejaVu Sans, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
figure {{ display: inline-block; margin: 8px; vertical-align: top; }}
figcaption {{ font-weight: bold; font-size: 13px; }}
img {{ max-width: 880px; border: 1px solid #ccc; }}
table {{ border-collapse: collapse; font-size: 11px; }}
td, th {{ border: 1px solid #bbb; padding: 2px 5px; }} th {{ background: #eef; }}
.note {{ color: #a60; }} pre {{ font-size: 10px; background: #f6f6f6; padding: 6px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(results)} results. Measured figures say where they were measured; estimated ones say "estimated" and by what.</p>
<h2>Plots</h2>{figs}{note}
<h2>Cost model</h2>{_costmodel_summary(results)}
<h2>Results</h2>{_table(results)}
{_traces(results, page_dir)}
{"<h2>MLPerf LoadGen</h2><ul>" + lg_html + "</ul>" if loadgen else ""}
<h2>Run context</h2>{_context(results)}
</body></html>
"""


def write_report(results_json: Path, output: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    results = load_results(results_json)
    page = render_html(results, title or f"deploypipe bench report: {Path(results_json).name}",
                       Path(output).parent)
    tmp = Path(output).with_suffix(".tmp")
    tmp.write_text(page)
    tmp.replace(output)
    return Path(output)
