"""The terminal comparison table of bench results, and the flat rows behind the CSV export.

The default table is what a person reads at a glance and fits 100 columns: one line per result,
marked measured / estimated / not run, with the reasons listed beneath it one line each.
`wide=True` shows every column; `columns` picks them by key (see `COLUMNS`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.text import Text

from deploypipe.bench.results import BenchResult
from deploypipe.errors import UserError
from deploypipe.tables import fixed, num, table




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


def baseline(r: BenchResult, results: list[BenchResult], measured: bool = True) -> BenchResult | None:
    """The FP32 unpruned artifact of the same model/target/compiler at the same sweep point:
    a measured one for a measured row, else one with an estimate."""
    for b in results:
        if (b is not r and b.model == r.model and b.target == r.target and b.compiler == r.compiler
                and b.precision == "fp32" and not b.pruned and b.threads == r.threads
                and b.affinity == r.affinity and b.concurrency == 1 and b.remote == r.remote and b.batch_size == r.batch_size and b.seq_len == r.seq_len
                and (b.ran if measured else b.estimated_ms is not None)):
            return b
    return None


def status(r: BenchResult) -> str:
    """measured, estimated (nothing ran, the cost model's figure stands in) or not run."""
    if r.ran:
        return "measured"
    return "estimated" if r.estimated_ms is not None else "not run"


def _where(r: BenchResult) -> str:
    """Where the figures come from, in a word; the full label is in the table's title."""
    if not r.ran:
        return "est." if r.estimated_ms is not None else "✗"
    if "emulation" in r.where:
        return "qemu"
    if r.remote:
        return "remote"
    return "rpc" if " RPC server " in r.where or " via tracker " in r.where else "here"


def _speedup(r: BenchResult, results: list[BenchResult]) -> str:
    """Baseline time / this time, measured against measured, estimated against estimated."""
    if r.precision == "fp32" and not r.pruned:
        return "1.00x" if r.ran else "1.00x E" if r.estimated_ms is not None else "-"
    if r.ran and r.latency_ms and r.concurrency == 1:
        b = baseline(r, results)
        return f"{b.latency_ms.p50 / r.latency_ms.p50:.2f}x" if b and b.latency_ms else "-"
    if r.estimated_ms:
        b = baseline(r, results, measured=False)
        return f"{b.estimated_ms / r.estimated_ms:.2f}x E" if b and b.estimated_ms else "-"
    return "-"


def _fidelity(r: BenchResult) -> str:
    """Cosine vs FP32; '*' when the build's accuracy is unverified (synthetic inputs, too few samples)."""
    cos = r.fidelity.get("cosine")
    return "-" if cos is None else f"{cos:.5f}" + ("*" if r.accuracy.startswith("unverified") else "")


def _energy(r: BenchResult) -> str:
    if not r.energy:
        return "-"
    return f"{r.energy.mj_per_inference:.3g}" + ("" if r.energy.measured else " E")


def _lat(r: BenchResult, key: str) -> str:
    return num(getattr(r.latency_ms, key) if r.latency_ms else None)


def _artifact(r: BenchResult) -> str:
    """The artifact's name without the target (it has its own column), spaced around the compiler
    so a narrow column wraps between words: 'resnet50 onnxruntime int8-pruned50'."""
    short = r.name.replace(f"-{r.target}-", "-", 1).replace(f"-{r.compiler}-", f" {r.compiler} ", 1)
    shape = (f" b{r.batch_size}" if r.batch_size > 1 else "") + (f" s{r.seq_len}" if r.seq_len else "")
    return short + shape + (f" @{r.remote}" if r.remote else "")


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[BenchResult, list[BenchResult]], str]
    left: bool = False


def _c(header: str, get: Callable[[BenchResult], str], left: bool = False) -> Column:
    return Column(header, lambda r, _all: get(r), left)


COLUMNS: dict[str, Column] = {
    "artifact": _c("artifact", _artifact, left=True),
    "name": _c("name", lambda r: r.name, left=True),
    "target": _c("target", lambda r: r.target, left=True),
    "compiler": _c("compiler", lambda r: r.compiler, left=True),
    "precision": _c("prec", lambda r: r.precision, left=True),
    "status": _c("status", status, left=True),
    "where": _c("where", _where, left=True),
    "point": _c("thr/cores", lambda r: _point(r) if r.ran else "", left=True),
    "p50": _c("p50 ms", lambda r: _lat(r, "p50")),
    "p90": _c("p90", lambda r: _lat(r, "p90")),
    "p99": _c("p99", lambda r: _lat(r, "p99")),
    "std": _c("std", lambda r: fixed(r.latency_ms.std if r.latency_ms else None, ".2g")),
    "r2r": _c("r2r %", lambda r: fixed(r.run_to_run.spread_pct if r.run_to_run else None, ".1f")),
    "load": _c("lib+load s", lambda r: fixed(r.cold_start.library_load_s + r.cold_start.model_load_s
                                          if r.cold_start else None, ".2f")),
    "first": _c("1st ms", lambda r: fixed(r.cold_start.first_inference_ms if r.cold_start else None, ".1f")),
    "ips": _c("items/s", lambda r: num(r.samples_per_s)),
    "speedup": Column("vs fp32", _speedup),
    "fidelity": _c("cosine", _fidelity),
    "accuracy": _c("accuracy", lambda r: r.accuracy or "-", left=True),
    "max_err": _c("max|err|", lambda r: fixed(r.fidelity.get("max_abs_err"), ".2g")),
    "peak_mb": _c("peak MB", lambda r: fixed(r.peak_rss_mb, ".0f")),
    "size": _c("MB", lambda r: fixed(r.size_mb or None, ".3g")),
    "energy": _c("mJ/inf", _energy),
    "ips_w": _c("ips/W", lambda r: fixed(r.efficiency.ips_per_watt if r.efficiency else None, ".3g")),
    "ips_usd": _c("ips/$", lambda r: fixed(r.efficiency.ips_per_usd if r.efficiency else None, ".3g")),
    "est": _c("est ms", lambda r: num(r.estimated_ms)),
    "est_err": _c("est err", lambda r: f"{r.estimate_error:.0%}" if r.estimate_error is not None else "-"),
    "trace": _c("trace", lambda r: Path(r.trace).name if r.trace else "", left=True),
}
DEFAULT = ("artifact", "target", "where", "p50", "p90", "ips", "speedup", "fidelity", "size", "energy", "est")
WIDE = ("name", "target", "compiler", "precision", "status", "where", "point", "p50", "p90", "p99", "std", "r2r",
        "load", "first", "ips", "speedup", "peak_mb", "size", "energy", "ips_w", "ips_usd", "max_err", "fidelity",
        "accuracy", "est", "est_err", "trace")


def pick_columns(spec: str | None, wide: bool = False) -> tuple[str, ...]:
    """The column keys for `--columns a,b,c` (or the wide / default set)."""
    if not spec:
        return WIDE if wide else DEFAULT
    keys = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in keys if k not in COLUMNS]
    if unknown or not keys:
        raise UserError(f"--columns '{spec}': unknown column(s) {', '.join(unknown) or '(none)'}; "
                        f"choose from {', '.join(COLUMNS)}")
    return keys


class _Notes:
    """Lines that each fit the console: cut at its width with an ellipsis, never wrapped."""

    def __init__(self, lines: list[Text]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines:
            line = line.copy()
            line.truncate(options.max_width, overflow="ellipsis")
            yield line


def render(results: list[BenchResult], columns: tuple[str, ...] = DEFAULT) -> Group:
    """The table, then one line per result that did not run here saying why, then what the marks mean."""
    where = sorted({r.where for r in results if r.ran})
    cols = [COLUMNS[k] for k in columns]
    # names identify a row: fold them rather than cut; figures stay on one line
    t = table("deploypipe bench" + (f" — {'; '.join(where)}" if where else ""), [c.header for c in cols],
              right=[c.header for c in cols if not c.left], fold=[COLUMNS[k].header for k in columns if k in ("artifact", "name")])
    for r in results:
        t.add_row(*(COLUMNS[k].cell(r, results) for k in columns),
                  style=None if r.ran else ("yellow" if r.estimated_ms is not None else "red"))
    notes = [Text.assemble((f"{status(r)}: ", "yellow" if r.estimated_ms is not None else "red"), r.name,
                           f" — {r.reason}") for r in results if not r.ran]
    legend = ("where: here = this host, rpc/remote = on the device, qemu = emulated (correctness only), "
              "est. = cost-model estimate only. E = estimated, not measured; est ms is never a measurement. "
              "items/s: samples/s (--throughput-runs, else batch x 1000/p50); bN: batch N. vs fp32: speed-up over the same model/target FP32. "
              "cosine*: the build's accuracy is unverified (synthetic inputs or too few samples: --columns accuracy).")
    return Group(t, _Notes(notes), Text(legend, style="dim"))
