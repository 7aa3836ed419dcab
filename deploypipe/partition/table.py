"""Rich rendering of a `PartitionReport` for the CLI (library code returns data; this formats it)."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from deploypipe.partition.analyzer import PartitionReport
from deploypipe.tables import kib, table


def render(report: PartitionReport, all_rows: bool = True) -> Group:
    net = report.network
    cols = ("cut after", "op", "crossing tensors", "raw KB", f"sent KB ({report.codec})", "edge ms",
            "transfer ms", "cloud ms", "total ms", "energy mJ")
    rows = table(f"{report.model}: {report.edge_target} -> {net.label} -> {report.cloud_target}, "
                 f"objective {report.objective}" + (f", deadline {report.deadline_ms:g} ms" if report.deadline_ms else ""),
                 cols, right=cols[3:], fold=("cut after", "crossing tensors"))
    best = report.best_cut
    for row in report.cuts:
        if not all_rows and row is not best and row.kind == "split":
            continue
        name = {"cloud-only": "(cloud-only)", "edge-only": "(edge-only)"}.get(row.kind, row.after)
        crossing = ", ".join(t.name for t in row.tensors) if len(row.tensors) <= 2 else f"{len(row.tensors)} tensors"
        style = "bold green" if row is best else None
        rows.add_row(name, row.after_op if row.kind == "split" else "", crossing, kib(row.raw_bytes), kib(row.sent_bytes), f"{row.edge_ms:.2f}",
                      f"{row.transfer_ms:.2f}", f"{row.cloud_ms:.2f}", f"{row.total_ms:.2f}", f"{row.energy_mj:.1f}",
                      style=style)
    eo, co = report.edge_only, report.cloud_only
    lines = [
        f"best: {'after ' + best.after if best.kind == 'split' else best.kind} — {best.total_ms:.2f} ms, "
        f"{best.energy_mj:.1f} mJ ({eo.total_ms / best.total_ms:.2f}x vs edge-only, "
        f"{co.total_ms / best.total_ms:.2f}x vs cloud-only latency)",
        f"edge times: {report.edge_label}",
        f"cloud times: {report.cloud_label}",
        f"network: {net.label}; uplink source: {net.uplink_mbps.source}; RTT source: {net.rtt_ms.source}",
        f"energy: {report.energy_label}; radio: {net.radio_mw_per_mbps.source}",
        *(f"note: {n}" for n in report.notes),
    ]
    return Group(rows, Text("\n".join(lines)))
