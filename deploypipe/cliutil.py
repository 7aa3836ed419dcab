"""Pieces every deploypipe command shares (the main app's and the backends' sub-apps): the
consoles, the --json option and output, and parsers of repeated options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from deploypipe.progress import Note

# Piped output gets a wide fixed width so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_shapes(values: list[str]) -> dict[str, Any]:
    """ImportOptions fields from `NAME=1x3x224x224` or `NAME=1x32:int64` (a dtype where the source
    does not record one, e.g. TorchScript token ids)."""
    from typing import get_args

    from deploypipe.errors import UserError
    from deploypipe.importers import InputDtype

    shapes: dict[str, tuple[int | None, ...]] = {}
    dtypes: dict[str, str] = {}
    bounds: dict[str, dict[int, tuple[int, int]]] = {}
    for v in values:
        name, sep, spec = v.partition("=")
        dims, _, dtype = spec.partition(":")
        try:
            if not sep or not name:
                raise ValueError
            parsed = [parse_range(d, "--input-shape") if ".." in d else (int(d), int(d)) for d in dims.lower().split("x")]
        except ValueError:
            raise UserError(f"--input-shape '{v}': expected NAME=1x3x224x224, NAME=1..32x3x224x224 or NAME=1x32:int64") from None
        if not all(0 < lo <= hi <= 1 << 20 for lo, hi in parsed):
            raise UserError(f"--input-shape '{v}': every dimension must be between 1 and {1 << 20}")
        shapes[name] = tuple(lo if lo == hi else None for lo, hi in parsed)
        if ranged := {i: r for i, r in enumerate(parsed) if r[0] != r[1]}:
            bounds[name] = ranged
        if dtype:
            if dtype not in get_args(InputDtype):
                raise UserError(f"--input-shape '{v}': unknown dtype '{dtype}'; known: {', '.join(get_args(InputDtype))}")
            dtypes[name] = dtype
    return {"input_shapes": shapes, "input_dtypes": dtypes, "input_bounds": bounds}


def parse_range(text: str, flag: str) -> tuple[int, int]:
    """'16..256' -> (16, 256)."""
    from deploypipe.errors import UserError

    lo, sep, hi = text.partition("..")
    try:
        low, high = int(lo), int(hi)
    except ValueError:
        raise UserError(f"{flag} '{text}': expected MIN..MAX, e.g. 16..256") from None
    if not sep or not 0 < low <= high:
        raise UserError(f"{flag} '{text}': expected MIN..MAX with 0 < MIN <= MAX")
    return low, high


def parse_sizes(text: str | None, flag: str) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32)."""
    from deploypipe.errors import UserError

    if not text:
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"{flag} '{text}': expected sizes like 1,8,32") from None
    if not sizes or any(s < 1 or s > 1 << 16 for s in sizes):
        raise UserError(f"{flag} '{text}': sizes must be between 1 and 65536")
    return tuple(sorted(set(sizes)))


def parse_tolerance(values: list[str]) -> dict[str, float]:
    from deploypipe.errors import UnknownNameError, UserError
    from deploypipe.analysis.fidelity import DEFAULT_TOLERANCE, METRIC_TOLERANCE, PRUNED_TOLERANCE

    known = {k for t in (*DEFAULT_TOLERANCE.values(), PRUNED_TOLERANCE) for k in t} | {METRIC_TOLERANCE}
    tol = {}
    for v in values:
        key, sep, num = v.partition("=")
        try:
            if not sep:
                raise ValueError
            tol[key] = float(num)
        except ValueError:
            raise UserError(f"--tolerance '{v}': expected KEY=NUMBER, e.g. min_top1_agreement=0.99") from None
        if key not in known:
            raise UnknownNameError("--tolerance key", key, known)
        if tol[key] != tol[key] or tol[key] < 0:
            raise UserError(f"--tolerance '{v}': must be a number >= 0")
    return tol


def choice(option: str, allowed: tuple[str, ...]) -> Any:
    """A typer callback refusing values outside `allowed` (None passes: the option was not given)."""
    from deploypipe.errors import UnknownNameError

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise UnknownNameError(option, value, allowed)
        return value
    return check


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the stage and its elapsed time on stderr (never stdout: --json stays clean);
    a bar with the time left when a message is a `Step` that knows its total."""
    from rich import progress as rp

    with rp.Progress(rp.SpinnerColumn(), rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TimeElapsedColumn(),
                     rp.TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def say(message: str) -> None:
            if isinstance(message, Note):
                bar.console.print(f"  {message}", highlight=False, markup=False)
            total, done = getattr(message, "total", None), getattr(message, "done", 0)
            current = bar.tasks[0]
            if total != current.total or done < current.completed or (total is None and message != current.description):
                bar.reset(task, total=total)  # a new stage: its own elapsed time and rate
            bar.update(task, description=message, completed=done)

        yield say


def old_device_flags(rpc: str | None, tracker: str | None, key: str | None, emulate: bool) -> str | None:
    """The device spec the pre-0.2 flags --rpc/--tracker/--key/--emulate spelled."""
    from deploypipe.errors import UserError

    if sum(map(bool, (rpc, tracker or key, emulate))) > 1:
        raise UserError("give one of --rpc HOST:PORT, --tracker HOST:PORT --key KEY or --emulate (better: --device)")
    if tracker or key:
        if not (tracker and key):
            raise UserError("--tracker and --key go together (better: --device tracker://HOST:PORT/KEY)")
        return f"tracker://{tracker}/{key}"
    return f"rpc://{rpc}" if rpc else ("qemu" if emulate else None)
