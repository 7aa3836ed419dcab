"""The pass contract: precondition -> transform -> postcondition, returning a result that says
whether anything changed. Passes take and return `Model`s; they never mutate their input."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx
from pydantic import BaseModel

from deploypipe.errors import BuildError
from deploypipe.model import Model


@dataclass
class PassContext:
    """What passes may need besides the model."""

    target: str
    precision: str
    progress: Callable[[str], None] = lambda _msg: None


@dataclass
class PassResult:
    model: Model
    modified: bool
    details: dict[str, Any] = field(default_factory=dict)  # figures for the manifest (node counts, kept layers...)


class Pass(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    def requires(self, model: Model) -> None:
        """Precondition; raise a UserError/UnsupportedError explaining why the pass cannot run."""

    def ensures(self, before: Model, result: PassResult) -> None:
        """Postcondition: the output is a valid ONNX model with the same inputs."""
        try:
            onnx.checker.check_model(result.model.proto)
        except onnx.checker.ValidationError as exc:
            raise BuildError(f"pass {self.name} produced an invalid model: {exc}") from exc
        if [i.name for i in before.inputs] != [i.name for i in result.model.inputs]:
            raise BuildError(f"pass {self.name} changed the model inputs")

    @abstractmethod
    def call(self, model: Model, ctx: PassContext) -> PassResult: ...

    def __call__(self, model: Model, ctx: PassContext) -> PassResult:
        self.requires(model)
        result = self.call(model, ctx)
        self.ensures(model, result)
        return result
