"""Lazy plug-in lookup shared by the compiler, pass and runner registries: a registry maps a name
to "module:Class", and the module is imported only when that name is used, so listing plug-ins
imports nothing heavy."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(registry: dict[str, str], name: str) -> Any:
    """The class registered under `name` (the caller checks that the name exists)."""
    module, cls = registry[name].split(":")
    return getattr(importlib.import_module(module), cls)
