"""Pass registry, recipes and the one pass runner (`run`) that build, tune and the benchmarks
share. Listing passes imports nothing heavy."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deploypipe.analysis.fidelity import merge_tolerance
from deploypipe.artifact import PassRecord
from deploypipe.errors import InputFileError, UnknownNameError, UnsupportedError
from deploypipe.model import Model
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


def recipe_for(precision: str, native: frozenset[str], recipe: str | None = None, prune: float | None = None,
               tolerance: dict[str, float] | None = None) -> Recipe:
    """The recipe named by the user, else the one for the precision; precision passes are dropped
    when the compiler quantizes itself, pruning is prepended when asked, and gate overrides are
    handed to the int8 pass."""
    base = load_recipe(recipe) if recipe else load_recipe(precision if precision in recipe_names() else "default")
    steps = [s for s in base.passes if not (s.name in ("fp16", "int8") and s.name in native)]
    if precision != "fp32" and precision not in native and precision not in (s.name for s in steps):
        raise UnsupportedError(
            f"recipe '{base.name}' has no {precision} pass and the compiler does not quantize itself: "
            f"the artifact would not be {precision}"
        )
    if prune:
        steps.insert(0, PassStep(name="prune", params={"ratio": prune}))
    if tolerance:
        steps = [s.model_copy(update={"params": {**s.params, "tolerance": merge_tolerance(s.params.get("tolerance", {}), tolerance)}})
                 if s.name == "int8" else s for s in steps]
    return Recipe(name=base.name, description=base.description, passes=steps)


def run(recipe: Recipe, model: Model, ctx: PassContext) -> tuple[Model, list[PassRecord]]:
    """Run a recipe's passes in order; returns the final model and what each pass did."""
    records: list[PassRecord] = []
    for step in recipe.passes:
        ctx.progress(f"pass {step.name}")
        result = create(step.name, step.params)(model, ctx)
        model = result.model
        records.append(PassRecord(name=step.name, params=step.params, modified=result.modified, details=result.details))
    return model, records


__all__ = ["Pass", "PassContext", "PassResult", "PassStep", "Recipe", "create", "load_recipe", "names", "recipe_for",
           "recipe_names", "run"]
