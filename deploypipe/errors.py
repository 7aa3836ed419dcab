"""The exception hierarchy and exit codes.

User mistakes, missing optional backends, unsupported combinations and our own bugs are told
apart so the CLI can print one clear line (never a traceback) and exit with a distinct code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DeployPipeError(Exception):
    """Base class: every error deploypipe raises on purpose."""

    exit_code = 1


class UserError(DeployPipeError):
    """The input is wrong (name, file, shape, flag); fixing the input fixes the run."""

    exit_code = 2


class UnknownNameError(UserError):
    """A model/target/compiler/pass name that is not registered; suggests the nearest names."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.choices = sorted(choices)
        near = difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        listing = "" if near else f" Known: {', '.join(self.choices)}."
        super().__init__(f"unknown {kind} '{name}'.{hint}{listing}")


class InputFileError(UserError):
    """A file is missing, unreadable, corrupt or of an unsupported format."""


class ShapeError(UserError):
    """Inputs whose names, shapes or dtypes do not match the model's."""


class UnsafeInputError(UserError):
    """Loading this file would execute code (pickle) and the user did not allow it."""


class UnsupportedError(DeployPipeError):
    """The model/target/precision combination cannot be built; names nodes and ops where known."""

    exit_code = 3


class MissingBackendError(DeployPipeError):
    """An optional backend is not installed; carries the install hint."""

    exit_code = 4

    def __init__(self, backend: str, extra: str, detail: str = "", install: str | None = None) -> None:
        self.backend, self.extra = backend, extra
        install = install or f"pip install 'deploypipe[{extra}]'"
        super().__init__(f"{backend} is not installed. Install it with: {install}" + (f" ({detail})" if detail else ""))


class FidelityError(DeployPipeError):
    """A built artifact strays from the FP32 reference beyond its tolerance: it is not shipped."""

    exit_code = 5


class BuildError(DeployPipeError):
    """A compiler or pass failed on valid input."""

    exit_code = 6


class InternalError(DeployPipeError):
    """A bug in deploypipe itself; please report it."""

    exit_code = 70
