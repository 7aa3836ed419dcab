"""Export every zoo entry to ONNX, run deploypipe.analysis on it and print computed vs published.

Writes the markdown table kept in docs/zoo.md: python benchmarks/zoo_figures.py [names...]
"""

from __future__ import annotations

import io
import sys

import onnx
import torch

from deploypipe import zoo
from deploypipe.analysis import ModelStats, analyze


def export(entry: zoo.ZooEntry) -> onnx.ModelProto:
    """Legacy (TorchScript) exporter at opset 17: fast, and folds weights into initializers."""
    module = entry.module()
    args = tuple(
        torch.zeros(shape, dtype=torch.int64) if entry.input_dtypes[name] == "int64" else torch.randn(shape)
        for name, shape in entry.inputs.items()
    )
    buf = io.BytesIO()
    torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, input_names=list(entry.inputs))
    return onnx.load_from_string(buf.getvalue())


def stats(name: str) -> ModelStats:
    return analyze(export(zoo.get(name)))


def _delta(computed: float, published: float) -> str:
    return f"{100 * (computed / published - 1):+.1f}%"


def row(name: str) -> str:
    entry, s = zoo.get(name), stats(name)
    shape = "x".join(map(str, next(iter(entry.inputs.values()))[1:]))
    pub = entry.published
    if pub is None:
        return f"| {name} | {shape} | {s.params / 1e6:.2f} M | – | {s.macs / 1e9:.3f} G | – | – | – | |"
    return (
        f"| {name} | {shape} | {s.params / 1e6:.2f} M | {pub.params / 1e6:.2f} M | {s.macs / 1e9:.3f} G | "
        f"{pub.macs / 1e9:.3f} G | {_delta(s.params, pub.params)} | {_delta(s.macs, pub.macs)} | {pub.note} |"
    )


if __name__ == "__main__":
    print("| model | input | params | published params | MACs | published MACs | Δ params | Δ MACs | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sys.argv[1:] or zoo.names():
        print(row(n), flush=True)
