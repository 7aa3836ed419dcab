"""Structured channel pruning at the source (torch-pruning), then re-export to ONNX.

Removing whole channels makes every layer smaller, so kernels do less work on any backend (unlike
unstructured sparsity, which dense kernels ignore). Models trained here get an optional short
fine-tune on their training split; random-weight models have nothing to recover towards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from deploypipe.errors import BuildError, UnsupportedError
from deploypipe.model import Model
from deploypipe.analysis import reference as _ort
from deploypipe.passes.base import Pass, PassContext, PassResult

if TYPE_CHECKING:
    import torch


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ratio: float = Field(gt=0, lt=1)  # fraction of channels removed per prunable layer
    importance: Literal["l1", "l2", "bn_scale"] = "l2"
    # Keep channel counts a multiple of this: odd widths fall off the fast SIMD kernels (pruned
    # MobileNet-v2 without it ran slower than unpruned, see docs/passes.md). "auto": 8 when the
    # median prunable layer has >= 64 channels, else none (rounding small layers prunes far more than asked).
    round_to: int | Literal["auto"] | None = "auto"
    finetune_epochs: int = Field(default=3, ge=0)  # models trained here only
    finetune_lr: float = Field(default=1e-3, gt=0)


class Prune(Pass):
    name = "prune"
    Config = PruneConfig

    def requires(self, model: Model) -> None:
        if model.torch_source is None:
            raise UnsupportedError(
                f"prune: {model.name} has no PyTorch source (imported from {model.provenance.importer}); "
                "structured pruning works on zoo models, before export"
            )
        if model.content_hash() != model.provenance.source_hash:
            raise UnsupportedError("prune: must run first (it rebuilds the model from its PyTorch source)")

    def call(self, model: Model, ctx: PassContext) -> PassResult:
        import torch
        import torch_pruning as tp

        from deploypipe.importers.pytorch import export_module

        cfg: PruneConfig = self.config  # type: ignore[assignment]
        entry: Any = model.torch_source
        shapes = {s.name: s.concrete_shape() for s in model.inputs}
        dtypes = {s.name: s.dtype for s in model.inputs}
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the importer's seed: same random weights as the imported model
            module = entry.module()
        _check_reproduces(module, model, shapes, dtypes)
        example = tuple(_example(shapes[n], dtypes[n]) for n in shapes)
        macs0, params0 = tp.utils.count_ops_and_params(module, example)
        importance = {"l1": tp.importance.GroupMagnitudeImportance(p=1),
                      "l2": tp.importance.GroupMagnitudeImportance(p=2),
                      "bn_scale": tp.importance.BNScaleImportance()}[cfg.importance]
        ignored = _output_layers(module, example)
        round_to = _round_to(module) if cfg.round_to == "auto" else cfg.round_to
        ctx.progress(f"prune: removing {cfg.ratio:.0%} of channels (keeping {len(ignored)} output layer(s))")
        try:
            pruner = tp.pruner.MetaPruner(module, example if len(example) > 1 else example[0], importance=importance,
                                          pruning_ratio=cfg.ratio, ignored_layers=ignored, round_to=round_to)
            pruner.step()
        except Exception as exc:  # noqa: BLE001 - torch-pruning raises untyped errors on unsupported graphs
            raise UnsupportedError(f"prune: torch-pruning cannot prune {model.name}: {exc}") from exc
        macs1, params1 = tp.utils.count_ops_and_params(module, example)
        details: dict[str, Any] = {
            "ratio": cfg.ratio, "importance": cfg.importance, "round_to": round_to,
            "params": {"before": int(params0), "after": int(params1), "ratio": params1 / params0},
            "macs": {"before": int(macs0), "after": int(macs1), "ratio": macs1 / macs0, "counted_by": "torch-pruning"},
        }
        if getattr(entry, "trained", False):
            details["finetune"] = _finetune(module, entry.name, cfg, ctx)
        opset = next(o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx"))
        proto = onnx.shape_inference.infer_shapes(export_module(module.eval(), shapes, dtypes, opset=opset))
        return PassResult(model.with_proto(proto), modified=True, details=details)


def _example(shape: tuple[int, ...], dtype: str) -> torch.Tensor:
    import torch

    if dtype.startswith("int"):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    return torch.randn(shape)


def _check_reproduces(module: torch.nn.Module, model: Model, shapes: dict[str, tuple[int, ...]],
                      dtypes: dict[str, str]) -> None:
    """The torch source must compute what the ONNX does (not so if the user gave --weights,
    which the zoo entry does not carry): pruning another model's weights would be a silent lie."""
    import torch

    feeds = model.sample_inputs(seed=1)
    with torch.no_grad():
        out = module(*(torch.from_numpy(feeds[n]) for n in shapes))
    first = (out[0] if isinstance(out, (tuple, list)) else out).numpy()
    ref = next(iter(_ort.run(model.proto, [feeds])[0].values()))
    if ref.shape != first.shape or not np.allclose(ref, first, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(ref).max())):
        raise UnsupportedError(
            f"prune: the PyTorch source of {model.name} does not reproduce the imported ONNX "
            "(custom --weights?); pruning needs the module the ONNX came from"
        )


def _round_to(module: torch.nn.Module) -> int | None:
    import torch

    widths = sorted(m.out_channels if isinstance(m, torch.nn.modules.conv._ConvNd) else m.out_features
                    for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)))
    return 8 if widths and widths[len(widths) // 2] >= 64 else None


def _output_layers(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> list[torch.nn.Module]:
    """Conv/Linear layers whose output width is a model output width (classifier heads, box
    predictors): pruning them would change what the model returns."""
    import torch

    with torch.no_grad():
        out = module(*example)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    widths = {int(o.shape[1]) for o in outs if o.ndim >= 2} | {int(o.shape[-1]) for o in outs if o.ndim >= 2}
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    heads = [m for m in layers if (m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels) in widths]
    return heads or layers[-1:]


def _finetune(module: torch.nn.Module, name: str, cfg: PruneConfig, ctx: PassContext) -> dict[str, Any]:
    """A few epochs of Adam on the model's training split; accuracy on the held-out split before
    and after, so the report shows what fine-tuning recovered."""
    import torch

    from deploypipe.zoo import trained
    from deploypipe.zoo.datasets import accuracy, digits

    if name not in trained.CONFIGS:
        raise BuildError(f"prune: no training data is known for trained model {name}")
    split = digits(flat=name == "digits-mlp")
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)

    def test_acc() -> float:
        module.eval()
        with torch.no_grad():
            return accuracy(module(torch.from_numpy(split.x_test)).numpy(), split.y_test) * 100

    before = test_acc()
    if cfg.finetune_epochs == 0:
        return {"epochs": 0, "accuracy_before": before, "data": "scikit-learn digits held-out split (real)"}
    ctx.progress(f"prune: fine-tuning {cfg.finetune_epochs} epoch(s) on the digits training split")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            opt = torch.optim.Adam(module.parameters(), lr=cfg.finetune_lr)
            module.train()
            for _ in range(cfg.finetune_epochs):
                order = torch.randperm(len(x))
                for i in range(0, len(x), 64):
                    idx = order[i : i + 64]
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    return {"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr, "accuracy_before": before,
            "accuracy_after": test_acc(), "data": "scikit-learn digits held-out split (real)"}
