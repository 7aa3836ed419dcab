"""Pass registry and recipes. Listing passes imports nothing heavy."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploypipe.errors import InputFileError, UnknownNameError
from deploypipe.registry import resolve
from deploypipe.passes.base import Pass, PassContext, PassResult

# name -> "module:Class"
_REGISTRY: dict[str, str] = {
    "simplify": "deploypipe.passes.simplify:Simplify",
    "fp16": "deploypipe.passes.fp16:Fp16",
    "int8": "deploypipe.passes.int8:Int8",
    "prune": "deploypipe.passes.prune:Prune",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, params: dict[str, Any] | None = None) -> Pass:
    if name not in _REGISTRY:
        raise UnknownNameError("pass", name, _REGISTRY)
    klass: type[Pass] = resolve(_REGISTRY, name)
    try:
        return klass(klass.Config(**(params or {})))
    except ValidationError as exc:
        raise InputFileError(f"pass {name}: invalid parameters: {exc}") from exc


class PassStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(BaseModel):
    """An ordered list of passes with parameters, from `passes/<name>.toml`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    passes: list[PassStep]


def _recipes_dir() -> Path:
    checkout = Path(__file__).resolve().parent.parent.parent / "passes"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("deploypipe._recipes")))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in _recipes_dir().glob("*.toml"))


def load_recipe(name_or_path: str) -> Recipe:
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if name_or_path not in recipe_names():
            raise UnknownNameError("pass recipe", name_or_path, recipe_names())
        path = _recipes_dir() / f"{name_or_path}.toml"
    try:
        return Recipe(name=path.stem, **tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError, TypeError) as exc:
        raise InputFileError(f"recipe {path}: {exc}") from exc


__all__ = ["Pass", "PassContext", "PassResult", "Recipe", "create", "load_recipe", "names", "recipe_names"]
