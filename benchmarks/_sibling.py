"""Load another benchmark script as a module: benchmarks/tvm.py cannot be imported by name (it would
shadow Apache TVM), and its zoo export is shared."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module named bench_<name>."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
