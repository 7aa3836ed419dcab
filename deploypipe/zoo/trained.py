"""Small models trained here on packaged data (sklearn digits), so their accuracy is real.

Training is seeded, single-threaded and takes seconds; the weights are cached under
``${DEPLOYPIPE_CACHE:-~/.cache/deploypipe}/zoo/<name>-<hash of the training config>.pt`` so a change
of architecture or recipe never picks up stale weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from deploypipe.zoo.datasets import digits

# Bump "version" when an architecture changes: it is part of the cache key.
CONFIGS: dict[str, dict[str, object]] = {
    "digits-cnn": {"version": 1, "widths": [16, 32, 32], "epochs": 15, "lr": 3e-3, "batch": 64, "seed": 0},
    "digits-mlp": {"version": 1, "widths": [64, 128, 64, 10], "epochs": 60, "lr": 3e-3, "batch": 64, "seed": 0},
}


class DigitsCnn(nn.Module):
    """Three conv+BN+ReLU stages (one 2x2 pool) and a linear head: prunable and quantizable."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False), nn.BatchNorm2d(c3), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c3 * 4 * 4, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _build(name: str) -> nn.Module:
    widths = list(CONFIGS[name]["widths"])  # type: ignore[call-overload]
    if name == "digits-cnn":
        return DigitsCnn(widths)
    from deploypipe.zoo.nets import Mlp

    return Mlp(widths)


def cache_path(name: str) -> Path:
    """Where the trained weights of ``name`` live; the file name carries the config hash."""
    root = Path(os.environ.get("DEPLOYPIPE_CACHE") or Path.home() / ".cache" / "deploypipe")
    key = hashlib.sha256(json.dumps({name: CONFIGS[name]}, sort_keys=True).encode()).hexdigest()[:12]
    return root / "zoo" / f"{name}-{key}.pt"


def load(name: str) -> nn.Module:
    """The trained model in eval mode, from the cache or trained now (and cached)."""
    path = cache_path(name)
    module = _build(name)
    if path.is_file():
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return module.eval()
    train(name, module)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(module.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return module.eval()


def train(name: str, module: nn.Module) -> None:
    """Adam with a one-cycle schedule on the fixed training split; deterministic (seeded, one thread)."""
    cfg = CONFIGS[name]
    split = digits(flat=name == "digits-mlp")
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    epochs, batch = int(cfg["epochs"]), int(cfg["batch"])  # type: ignore[call-overload]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(int(cfg["seed"]))  # type: ignore[call-overload]
            opt = torch.optim.Adam(module.parameters(), lr=float(cfg["lr"]))  # type: ignore[arg-type]
            steps = epochs * ((len(x) + batch - 1) // batch)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(cfg["lr"]) * 3, total_steps=steps)  # type: ignore[arg-type]
            module.train()
            for _ in range(epochs):
                order = torch.randperm(len(x))
                for i in range(0, len(x), batch):
                    idx = order[i : i + batch]
                    opt.zero_grad()
                    nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
                    opt.step()
                    sched.step()
    finally:
        torch.set_num_threads(threads)
    module.eval()
