"""A zoo entry: how to build one named model, its inputs and what its paper says it costs, and
loading real weights into it (kept apart from the registry so entry kinds can subclass it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deploypipe.errors import InputFileError

if TYPE_CHECKING:
    import torch

_BN_PASSES, _BN_BATCH = 3, 2

@dataclass(frozen=True)
class Published:
    """A figure a paper/table reports; ``macs`` is multiply-accumulates whatever the paper called it."""

    params: float
    macs: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class ZooEntry:
    """One named model: how to build it, its static inputs, and what its paper says it costs."""

    name: str
    description: str
    family: str  # cnn | detection | video | rnn | mlp | transformer
    inputs: dict[str, tuple[int, ...]]
    input_dtypes: dict[str, str]
    published: Published | None
    builder: Callable[[], torch.nn.Module] = field(repr=False)
    trained: bool = False

    def module(self, weights: Path | None = None) -> torch.nn.Module:
        """The model in eval mode: seeded random weights, trained weights, or those in ``weights``."""
        import torch

        with torch.random.fork_rng():
            torch.manual_seed(0)
            module = self.builder()
            if weights is not None:
                load_weights(module, Path(weights))
            elif not self.trained:
                self._recalibrate_batchnorm(module)
        return module.eval()

    def _recalibrate_batchnorm(self, module: torch.nn.Module) -> None:
        """Re-estimate BN running stats on N(0,1) inputs: random-init stats make outputs ~1e-9."""
        import torch

        norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or any(dtype != "float32" for dtype in self.input_dtypes.values()):
            return
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the passes
        module.train()
        with torch.no_grad():
            for _ in range(_BN_PASSES):
                module(*(torch.randn(_BN_BATCH, *shape[1:]) for shape in self.inputs.values()))
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a state_dict file (or a checkpoint wrapping one) into ``module``, strictly.

    Reads with ``weights_only=True`` (no pickle code runs); accepts {'state_dict': ...} and
    {'model': ...} wrappers and DataParallel 'module.' prefixes.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise InputFileError(f"cannot read weights file {path}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputFileError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise InputFileError(
            f"{path} does not fit this model: missing keys {_few(missing)}; unexpected keys {_few(unexpected)}"
        )
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise InputFileError(f"{path} has tensors of the wrong shape: {_few(wrong)}")
    module.load_state_dict(state, strict=True)


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
