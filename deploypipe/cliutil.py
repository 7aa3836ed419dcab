"""Pieces every deploypipe command shares (the main app's and the backends' sub-apps): the
consoles, the --json option and output, and parsers of repeated options."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

# Piped output gets a wide fixed width so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    from deploypipe.errors import UserError

    shapes = {}
    for v in values:
        name, sep, dims = v.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise UserError(f"--input-shape '{v}': expected NAME=1x3x224x224") from None
    return shapes


def parse_tolerance(values: list[str]) -> dict[str, float]:
    from deploypipe.errors import UserError

    tol = {}
    for v in values:
        key, sep, num = v.partition("=")
        try:
            tol[key] = float(num) if sep else float("nan")
        except ValueError:
            raise UserError(f"--tolerance '{v}': expected KEY=NUMBER, e.g. min_top1_agreement=0.99") from None
    return tol
