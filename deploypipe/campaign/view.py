"""How campaigns and stored results read: the plan, the live table of finished cells, the results
table and its CSV. Measured and estimated figures stay in separate columns."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from deploypipe.bench import report
from deploypipe.bench.results import BenchResult
from deploypipe.campaign.grid import Cell
from deploypipe.campaign.run import CellEvent
from deploypipe.tables import num, table

_STYLE = {"measured": "green", "estimated": "yellow", "refused": "red", "failed": "red", "excluded": "dim",
          "unmeasured": "magenta"}


def plan_table(cells: list[Cell]) -> Table:
    t = table(f"campaign plan: {len(cells)} cells", ["model", "target", "variant", "compiler", "prec", "status", "reason"],
              fold=["reason"])
    for c in cells:
        t.add_row(c.model, c.target, c.variant.name, c.compiler, c.precision, c.status, c.reason,
                  style=_STYLE.get(c.status))
    return t


class LiveCells:
    """The rows of the live table: one per finished cell, newest last."""

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total = title, total
        self.events: list[CellEvent] = []

    def add(self, event: CellEvent) -> None:
        self.events.append(event)

    def render(self, last: int | None = 30) -> Table:
        shown = self.events[-last:] if last else self.events
        t = table(f"{self.title}: {len(self.events)}/{self.total} cells finished", ["model", "target", "variant", "status",
                  "where", "figure / reason"], fold=["figure / reason"])
        for e in shown:
            t.add_row(e.cell.model, e.cell.target, e.cell.variant.name, e.status, e.where,
                      e.figure or e.reason, style=_STYLE.get(e.status))
        return t


RESULT_COLUMNS = ("campaign", "model", "target", "variant", "compiler", "precision", "prune", "threads", "batch",
                  "status", "measured_p50_ms", "measured_p90_ms", "measured_samples_per_s", "measured_energy_mj",
                  "measured_label", "estimated_ms", "estimated_energy_mj", "estimate_label", "size_mb", "cosine",
                  "top1_agreement", "accuracy", "accuracy_fp32", "cached", "build_s", "artifact", "build_key",
                  "host", "isa", "reason")


def flat_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r.get(k) for k in RESULT_COLUMNS} for r in rows]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS))
    writer.writeheader()
    writer.writerows(flat_rows(rows))
    return buf.getvalue()


def results_table(rows: list[dict[str, Any]]) -> Group:
    """One line per cell: measured p50 and estimated ms in their own columns; the labels beneath."""
    t = table(f"{len(rows)} cells", ["campaign", "model", "target", "variant", "status", "meas. p50 ms", "est. ms",
                                     "mJ/inf", "MB", "cosine", "acc %"],
              right=["meas. p50 ms", "est. ms", "mJ/inf", "MB", "cosine", "acc %"], fold=["model", "variant"])
    labels: dict[str, int] = {}
    for r in rows:
        for label in (r["measured_label"], r["estimate_label"]):
            if label and label not in labels:
                labels[label] = len(labels) + 1
        mark = (f" [{labels[r['measured_label']]}]" if r["measured_label"] else "")
        emark = (f" [{labels[r['estimate_label']]}]" if r["estimate_label"] else "")
        if r["measured_energy_mj"] is not None:  # its source may be an estimate from the power figure
            estimated = not str(r["measured_energy_source"] or "").startswith("measured")
            energy = num(r["measured_energy_mj"]) + (" E" if estimated else "")
        else:
            energy = num(r["estimated_energy_mj"]) + (" E" if r["estimated_energy_mj"] is not None else "")
        t.add_row(r["campaign"], r["model"], r["target"], r["variant"], r["status"],
                  num(r["measured_p50_ms"]) + mark if r["measured_p50_ms"] is not None else "-",
                  num(r["estimated_ms"]) + emark if r["estimated_ms"] is not None else "-",
                  energy, num(r["size_mb"]), "-" if r["cosine"] is None else f"{r['cosine']:.5f}",
                  "-" if r["accuracy"] is None else f"{r['accuracy']:.1f}", style=_STYLE.get(r["status"]))
    notes = [Text(f"[{i}] {label}", style="dim") for label, i in labels.items()]
    notes.append(Text("E: estimated, not measured (energy from a power figure, or latency from the cost model)", style="dim"))
    reasons = [Text(f"{r['status']}: {r['model']} {r['target']} {r['variant']} — {r['reason']}", style="dim")
               for r in rows if r["status"] not in ("measured",) and r["reason"]]
    return Group(t, *notes, *reasons)


def report_cells(rows: list[dict[str, Any]]) -> list[report.Cell]:
    """Stored rows as the report's cells (refused and excluded ones too, with their reasons)."""
    out = []
    for r in rows:
        result = BenchResult.model_validate_json(r["bench_json"]) if r["bench_json"] else None
        out.append(report.Cell(model=r["model"], target=r["target"], variant=r["variant"], compiler=r["compiler"],
                               precision=r["precision"], pruned=bool(r["prune"]), status=r["status"],
                               reason=r["reason"] or "", result=result, accuracy=r["accuracy"],
                               baseline_variant=r["precision"] == "fp32" and not r["prune"] and not r["recipe"]))
    return out
