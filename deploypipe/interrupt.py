"""Ctrl-C and SIGTERM that never tear native code apart.

Python raises KeyboardInterrupt wherever the main thread happens to be, also inside a Python
callback that C++ is calling (ONNX Runtime, TVM, onnx), where pybind11 may turn it into
std::terminate (exit 134, nothing cleaned up). Inside `deferred()` sections (a build, a tuning run)
the first signal is only recorded and raised at the next `checkpoint()`, which the build calls
between stages and on every progress message, all plain Python; a second signal raises at once.
Outside those sections a signal interrupts as usual (servers stop on the first Ctrl-C).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class _Signals:
    signal: str | None = None  # the first signal received
    deferring: int = 0  # nesting depth of deferred() sections


_state = _Signals()


def install() -> None:
    """Route SIGINT and SIGTERM through this module (the CLI's entry point calls it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)


def _handler(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    if _state.signal is not None or not _state.deferring:
        _state.signal = _state.signal or name
        raise KeyboardInterrupt
    _state.signal = name
    sys.stderr.write(f"{name}: stopping at the next safe point (send it again to stop at once)\n")


def received() -> str | None:
    """SIGINT / SIGTERM if one arrived, else None."""
    return _state.signal


def checkpoint() -> None:
    """Raise KeyboardInterrupt here if a signal arrived during a deferred section."""
    if _state.signal is not None:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section in which a first signal waits for the next `checkpoint()`."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
