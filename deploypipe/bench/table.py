"""The terminal comparison table of bench results, and the flat rows behind the CSV export."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.table import Table

from deploypipe.bench.results import BenchResult


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _point(r: BenchResult) -> str:
    cores = ",".join(map(str, r.affinity)) if r.affinity is not None else "all"
    conc = f" x{r.concurrency}" if r.concurrency > 1 else ""
    return f"{r.threads or 'def'}/{cores}{conc}"


def flat(r: BenchResult) -> dict[str, Any]:
    """One CSV row: the headline figures, each estimate column named as such."""
    lat, cold = r.latency_ms, r.cold_start
    return {
        "name": r.name, "model": r.model, "target": r.target, "compiler": r.compiler, "precision": r.precision,
        "ran": r.ran, "reason": r.reason, "where": r.where, "remote": r.remote or "",
        "threads": r.threads, "affinity": " ".join(map(str, r.affinity)) if r.affinity is not None else "",
        "concurrency": r.concurrency, "concurrent_with": " ".join(r.concurrent_with),
        "p50_ms": lat.p50 if lat else None, "p90_ms": lat.p90 if lat else None, "p99_ms": lat.p99 if lat else None,
        "mean_ms": lat.mean if lat else None, "std_ms": lat.std if lat else None, "n": lat.n if lat else None,
        "run_to_run_spread_pct": r.run_to_run.spread_pct if r.run_to_run else None,
        "library_load_s": cold.library_load_s if cold else None, "model_load_s": cold.model_load_s if cold else None,
        "first_inference_ms": cold.first_inference_ms if cold else None,
        "throughput_ips": r.throughput.ips if r.throughput else None,
        "throughput_method": r.throughput.method if r.throughput else "",
        "peak_rss_mb": r.peak_rss_mb, "size_mb": r.size_mb,
        "energy_mj": r.energy.mj_per_inference if r.energy else None,
        "energy_source": r.energy.source if r.energy else "",
        "ips_per_watt": r.efficiency.ips_per_watt if r.efficiency else None,
        "ips_per_usd": r.efficiency.ips_per_usd if r.efficiency else None,
        "efficiency_source": r.efficiency.source if r.efficiency else "",
        "max_abs_err": r.fidelity.get("max_abs_err"), "cosine": r.fidelity.get("cosine"), "accuracy": r.accuracy,
        "estimated_ms": r.estimated_ms, "estimate_label": r.estimate_label, "estimate_error": r.estimate_error,
        "loadgen_result": r.loadgen.get("Result is", ""),
    }


def write_csv(results: list[BenchResult], path: Path) -> None:
    rows = [flat(r) for r in results]
    with Path(path).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["name"])
        writer.writeheader()
        writer.writerows(rows)


def render(results: list[BenchResult]) -> Table:
    where = sorted({r.where for r in results if r.ran})
    t = Table(title="deploypipe bench" + (f" — {'; '.join(where)}" if where else ""),
              caption="E: energy estimated from target figures, not measured. est ms: estimated by the cost model "
                      "(host rows: leave-one-out, with its error), never a measurement.")
    cols = ("artifact", "target", "compiler", "prec", "thr/cores", "p50 ms", "p90", "p99", "std", "r2r %",
            "lib+load s", "1st ms", "ips", "peak MB", "size MB", "mJ/inf", "ips/W", "ips/$", "max|err|", "cosine",
            "accuracy", "est ms", "est err")
    for col in cols:
        # the artifact name is what identifies a row: wrap it onto several lines rather than cut it
        t.add_column(col, justify="left" if col in cols[:5] else "right",
                     overflow="fold" if col == "artifact" else "ellipsis", min_width=24 if col == "artifact" else None)
    for r in results:
        energy = ""
        if r.energy:
            energy = f"{r.energy.mj_per_inference:.3g}" + ("" if r.energy.measured else " E")
        eff = r.efficiency
        tail = [energy, _f(eff.ips_per_watt if eff else None, ".3g"), _f(eff.ips_per_usd if eff else None, ".3g")]
        est = [_f(r.estimated_ms, ".3g"), f"{r.estimate_error:.0%}" if r.estimate_error is not None else "-"]
        if not r.ran:
            t.add_row(f"{r.name}\n[yellow]not run: {r.reason}[/]", r.target, r.compiler, r.precision, "", "-",
                      *[""] * 8, _f(r.size_mb, ".2f") if r.size_mb else "", *tail, "", "", r.accuracy, *est)
            continue
        lat, cold = r.latency_ms, r.cold_start
        assert lat is not None and cold is not None
        t.add_row(
            r.name + (f" @{r.remote}" if r.remote else ""), r.target, r.compiler, r.precision, _point(r),
            _f(lat.p50, ".3g"), _f(lat.p90, ".3g"), _f(lat.p99, ".3g"), _f(lat.std, ".2g"),
            _f(r.run_to_run.spread_pct if r.run_to_run else None, ".1f"),
            _f(cold.library_load_s + cold.model_load_s, ".2f"), _f(cold.first_inference_ms, ".1f"),
            _f(r.throughput.ips if r.throughput else None, ".4g"), _f(r.peak_rss_mb, ".0f"), _f(r.size_mb, ".2f"),
            *tail, _f(r.fidelity.get("max_abs_err"), ".2g"), _f(r.fidelity.get("cosine"), ".5f"), r.accuracy, *est,
        )
    return t
