"""deploypipe: import -> ONNX -> passes -> per-target compilers -> artifacts -> bench.

The public API (`build`, `load`, `bench`, `BuildConfig`) is resolved lazily so that importing
the package, and `deploypipe --help`, stay instant.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "build": "deploypipe.api",
    "load": "deploypipe.api",
    "BuildConfig": "deploypipe.api",
    "tune": "deploypipe.api",
    "TuneConfig": "deploypipe.api",
    "self_check": "deploypipe.api",
    "bench": "deploypipe.api",
    "optimize": "deploypipe.api",
    "OptimizeConfig": "deploypipe.campaign.optimize",
    "run_campaign": "deploypipe.api",  # `deploypipe.campaign` is the package (deploypipe/campaign/)
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    raise AttributeError(f"module 'deploypipe' has no attribute {name!r}")


__all__ = ["BuildConfig", "OptimizeConfig", "TuneConfig", "__version__", "bench", "build", "load", "optimize",
           "run_campaign", "self_check", "tune"]
