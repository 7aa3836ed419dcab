"""The one place deploypipe's tables get their look: a compact rich Table (title on the left, no
box, bold header, names folded rather than cut, figures kept on one line) and the number formats
every table shares. Commands build rows; this module decides how they read."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table


def table(title: str, columns: Iterable[str], *, right: Iterable[str] = (), fold: Iterable[str] = (),
          show_header: bool = True) -> Table:
    """A table with `columns`; those in `right` are right-aligned figures, those in `fold` wrap
    onto several lines instead of being cut (names, reasons)."""
    right, fold = set(right), set(fold)
    t = Table(title=title, title_justify="left", box=None, pad_edge=False, padding=(0, 1), collapse_padding=True,
              header_style="bold", show_header=show_header)
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", no_wrap=col not in fold,
                     overflow="fold" if col in fold else "ellipsis")
    return t


def fixed(v: float | None, spec: str) -> str:
    """`format(v, spec)`, '-' for a missing figure."""
    return "-" if v is None else format(v, spec)


def num(v: float | None) -> str:
    """Three significant digits, never in e-notation (a person reads 17500, not 1.75e+04)."""
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def si(v: float | None) -> str:
    """Counts with an SI suffix: 4.12G MACs, 25.56M params."""
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def kib(n: float | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f}"
