"""`deploypipe edgetpu ...`: the op-by-op Edge TPU compatibility report of an int8 TFLite model.

Mounted by `deploypipe --help`: the compiler module (numpy, onnx) is imported when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from deploypipe.cliutil import JsonOpt, emit_json, out
from deploypipe.tables import table as new_table

app = typer.Typer(no_args_is_help=True, help="Coral Edge TPU: compatibility report.")


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A .tflite file or a tflite/edgetpu artifact folder.")],
    onchip_mib: Annotated[float, typer.Option(help="Edge TPU on-chip parameter memory, MiB.")] = 8.0,
    as_json: JsonOpt = False,
) -> None:
    """Which ops of an int8 TFLite model map to the Edge TPU and which fall back to the CPU, by node."""
    from deploypipe.backends.edgetpu.compiler import report_for, report_table

    rep = report_for(path, onchip_mib)
    if as_json:
        emit_json(rep.model_dump())
        return
    table = new_table(f"{rep.summary()} (predicted offline from Coral's published rules)",
                      ("#", "op", "v", "runs on", "node", "reason"), right=("#", "v"), fold=("node", "reason"))
    for row in report_table(rep):
        table.add_row(*row, style=None if row[3] == "TPU" else "yellow")
    out.print(table)
    for issue in rep.model_issues:
        out.print(f"model: {issue}")
    out.print(f"TPU parameters {rep.parameter_bytes / 2**20:.2f} MiB; on-chip {rep.onchip_memory_bytes / 2**20:g} MiB; "
              f"streamed off-chip {rep.offchip_parameter_bytes / 2**20:.2f} MiB")
