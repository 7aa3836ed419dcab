"""The terminal comparison table of bench results."""

from __future__ import annotations

from rich.table import Table

from deploypipe.bench.results import BenchResult


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def render(results: list[BenchResult]) -> Table:
    where = sorted({r.where for r in results if r.ran})
    t = Table(title="deploypipe bench" + (f" — {'; '.join(where)}" if where else ""))
    for col in ("artifact", "target", "compiler", "prec", "p50 ms", "p90", "p99", "mean±std", "cold load s",
                "1st ms", "peak MB", "size MB", "max|err|", "cosine"):
        t.add_column(col, justify="left" if col in ("artifact", "target", "compiler", "prec") else "right")
    for r in results:
        if not r.ran:
            t.add_row(r.name, r.target, r.compiler, r.precision, f"[yellow]not run: {r.reason}[/]",
                      *[""] * 8, _f(r.size_mb, ".2f") if r.size_mb else "")
            continue
        lat, cold = r.latency_ms, r.cold_start
        assert lat is not None and cold is not None
        t.add_row(
            r.name, r.target, r.compiler, r.precision, _f(lat.p50, ".2f"), _f(lat.p90, ".2f"),
            _f(lat.p99, ".2f"), f"{lat.mean:.2f}±{lat.std:.2f}", _f(cold.library_load_s + cold.model_load_s, ".2f"),
            _f(cold.first_inference_ms, ".1f"), _f(r.peak_rss_mb, ".0f"), _f(r.size_mb, ".2f"),
            _f(r.fidelity.get("max_abs_err"), ".2g"), _f(r.fidelity.get("cosine"), ".5f"),
        )
    return t
