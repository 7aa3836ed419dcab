"""The pass contract: precondition -> transform -> postcondition, returning a result that says
whether anything changed. Passes take and return `Model`s; they never mutate their input."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx
from pydantic import BaseModel

from deploypipe.data.metrics import UserMetric
from deploypipe.errors import BuildError, DeployPipeError, UnsupportedError
from deploypipe.model import Model


@dataclass
class PassContext:
    """What passes may need besides the model."""

    target: str
    precision: str
    progress: Callable[[str], None] = lambda _msg: None
    compiler: str | None = None  # None: the target's default compiler
    metric: tuple[str, UserMetric] | None = None  # the user's --metric (spec, function): lossy passes judge by it


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
        try:
            result = self.call(model, ctx)
        except DeployPipeError:
            raise
        except Exception as exc:
            raise refusal(f"pass {self.name} cannot handle {model.name}", model.proto, exc) from exc
        self.ensures(model, result)
        return result


def failing_node(proto: onnx.ModelProto, message: str) -> onnx.NodeProto | None:
    """The node a tool's error message is about: the longest node name it quotes, else the node
    producing or consuming the longest tensor name it quotes (tools name nodes they inserted
    after the tensor, e.g. `b1_DequantizeLinear`, `/up/Resize_output_cast0`)."""
    nodes = [n for n in proto.graph.node if n.name and _mentions(message, n.name)]
    if nodes:
        return max(nodes, key=lambda n: len(n.name))
    best: tuple[int, onnx.NodeProto] | None = None
    for node in proto.graph.node:
        for tensor in [*node.output, *node.input]:
            if tensor and (best is None or len(tensor) > best[0]) and _mentions(message, tensor, suffixed=True):
                best = (len(tensor), node)
    return best[1] if best else None


def _mentions(message: str, name: str, suffixed: bool = False) -> bool:
    """`name` occurs as a whole token (or, with `suffixed`, as the start of one such as `b1_quantized`)."""
    import re

    end = r"(?![\w/.:@-])" if not suffixed else r"(?![\w/.:@-]*[/.:@-])"
    return re.search(r"(?<![\w/.:@-])" + re.escape(name) + end, message) is not None


@contextmanager
def refusing(what: str, proto: onnx.ModelProto) -> Iterator[None]:
    """Turn a tool's untyped failure on a well-formed graph into a `refusal`; deploypipe's own
    errors and the environment's (OSError: a full disk, permissions) pass through."""
    try:
        yield
    except (DeployPipeError, OSError):
        raise
    except Exception as exc:
        raise refusal(what, proto, exc) from exc


def refusal(what: str, proto: onnx.ModelProto, exc: BaseException) -> UnsupportedError:
    """UnsupportedError (exit 3) for a tool that failed on a well-formed graph: one line naming the
    node, its op and the tool's reason, instead of an internal error."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    node = failing_node(proto, str(exc))
    where = f" at node '{node.name}' (op {node.op_type})" if node is not None else ""
    return UnsupportedError(f"{what}{where}: {reason[:400]}")
