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
        f"radio per offloaded request: {_radio_line(report)}",
        *(f"note: {n}" for n in report.notes),
    ]
    return Group(rows, Text("\n".join(lines)))


def _radio_line(report: PartitionReport) -> str:
    """What an offloaded request's radio energy holds at this inter-arrival time, and why."""
    net, gap = report.network, report.inter_arrival_ms
    if net.tail_ms.value == 0 and net.promotion_ms.value == 0:
        return f"sending only ({net.promotion_ms.source})"
    best = report.best_cut if report.best_cut.tensors else report.cloud_only
    if net.radio_idle(best.sent_bytes, gap):
        return (f"promotion {net.promotion_ms.value:g} ms at {net.promotion_mw.value:g} mW + sending + tail "
                f"{net.tail_ms.value:g} ms at {net.tail_mw.value:g} mW (requests every {gap:g} ms, further apart "
                f"than the tail; --inter-arrival-ms); source: {net.tail_ms.source}")
    return (f"sending + tail until the next request {gap:g} ms later, no promotion (the radio stays connected "
            f"between requests closer than its {net.tail_ms.value:g} ms tail); source: {net.tail_ms.source}")
