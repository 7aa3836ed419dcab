"""Progress messages that can say how far a long stage has got.

Every `progress` callback in deploypipe takes one string. A `Step` is a string that also carries
`done` and `total` (calibration samples, tuning trials, files compiled), so callbacks written for
plain strings keep working while the CLI draws a bar with the time left from them. A `Note` is a
result worth keeping on screen (each step of the INT8 accuracy-aware search): the CLI prints it
above the bar instead of replacing it with the next message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

Progress = Callable[[str], None]


class Step(str):
    """A progress message with how much of a known total is done."""

    done: int
    total: int

    def __new__(cls, message: str, done: int, total: int) -> Self:
        step = super().__new__(cls, message)
        step.done, step.total = done, total
        return step


class Note(str):
    """A progress message that stays in the log (printed, not overwritten)."""
