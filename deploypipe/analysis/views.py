"""Tables for `inspect`, `models` and `targets`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table

from deploypipe.tables import kib, si, table

if TYPE_CHECKING:
    from deploypipe.analysis.stats import ModelStats
    from deploypipe.model import Model
    from deploypipe.targets import TargetSpec


def render_stats(model: Model, stats: ModelStats, layers: bool) -> Group:
    head = table(model.name, ("field", "value"), fold=("value",), show_header=False)
    head.add_row("inputs", ", ".join(f"{i.name} {list(i.shape)} {i.dtype}" for i in model.inputs))
    head.add_row("outputs", ", ".join(f"{o.name} {list(o.shape)} {o.dtype}" for o in model.outputs))
    head.add_row("params", f"{si(stats.params)} ({stats.params:,})")
    head.add_row("MACs", f"{si(stats.macs)} ({stats.macs:,}); FLOPs = 2 x MACs")
    head.add_row("FLOP/param", f"{stats.flop_per_param:.2f} (seed 001 convention: MACs / params)")
    head.add_row("ops", ", ".join(f"{k} {v}" for k, v in sorted(stats.op_histogram.items(), key=lambda kv: -kv[1])))
    parts: list[Any] = [head]
    if layers:
        t = table("per-layer", ("#", "name", "op", "output shape", "output KB", "MACs", "params"),
                  right=("#", "output KB", "MACs", "params"), fold=("name",))
        for i, layer in enumerate(stats.layers):
            t.add_row(str(i), layer.name, layer.op_type, str(list(layer.output_shape or [])), kib(layer.output_bytes),
                      si(layer.macs), si(layer.params))
        parts.append(t)
    return Group(*parts)


def zoo_table(rows: list[dict[str, Any]]) -> Table:
    computed = "params" in rows[0] if rows else False
    cols = ["name", "family", "input", "published params", "published MACs"]
    cols += ["params", "MACs", "Δ params", "Δ MACs"] if computed else []
    t = table("zoo (published figures: the paper's 'FLOP' column counts multiply-accumulates)", [*cols, "note"],
              right=cols[3:], fold=("note",))
    for r in rows:
        cells = [r["name"], r["family"] + (" (trained)" if r["trained"] else ""),
                 "; ".join("x".join(map(str, v)) for v in r["inputs"].values()),
                 si(r["published_params"]), si(r["published_macs"])]
        if computed:
            def delta(a: float, b: float | None) -> str:
                return "-" if not b else f"{(a - b) / b * 100:+.1f}%"
            cells += [si(r["params"]), si(r["macs"]), delta(r["params"], r["published_params"]),
                      delta(r["macs"], r["published_macs"])]
        t.add_row(*cells, r["note"])
    return t


_SHAPE_WORDS = {"set": "listed fixed", "profiles": "profiled"}


def targets_table(specs: list[TargetSpec], shapes: dict[str, str]) -> Table:
    """One row per device; each compiler with its precisions and the input shapes it takes
    (dynamic, profiles or fixed)."""
    t = table("targets (precisions the hardware really runs, per compiler)",
              ("name", "category", "arch", "compilers: precisions", "default", "not possible", "runs here"),
              fold=("compilers: precisions", "not possible"))
    for s in specs:
        comps = "\n".join(f"{n}{'*' if n == s.default_compiler else ''}: {', '.join(c.precisions)} ({_SHAPE_WORDS.get(shapes[n], shapes[n])} shapes)"
                          for n, c in s.compilers.items())
        t.add_row(s.name, s.category, s.arch, comps, f"{s.default_compiler} {s.default_precision}",
                  "\n".join(f"{p}: {why}" for p, why in s.unsupported.items()) or "-",
                  "yes" if s.runs_here else "no")
    return t
