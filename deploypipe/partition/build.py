"""`deploypipe build --split auto|LAYER --edge-target A --cloud-target B`: two artifacts and a plan.

The model is cut (at the analyzer's best point, or after the named node), each half is saved as an
ONNX file and built by `api.build` for its own target (so each is compiled, quantized and
fidelity-checked like any artifact); the edge also gets the whole model for its fallback. The two
halves are then run back to back here against the whole FP32 model, and `plan.json` records the
cut, the crossing tensors, the predicted figures and that check. The folder appears atomically,
through the same versioned staging as a single artifact (`artifact.staging`).
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploypipe.api import BuildConfig, BuildReport, Progress, build
from deploypipe.analysis import reference
from deploypipe.artifact import staging
from deploypipe.backends import load as load_runner
from deploypipe.backends.runner import RunOptions
from deploypipe.importers import import_model
from deploypipe.partition import graph
from deploypipe.partition.analyzer import CutCost, PartitionReport
from deploypipe.partition.api import PartitionConfig, partition_model
from deploypipe.partition.plan import BackToBack, CrossingTensor, Cut, Predicted, SplitPlan



@dataclass
class SplitReport:
    path: Path
    plan: SplitPlan
    edge: BuildReport | None
    cloud: BuildReport | None
    full: BuildReport

    def summary(self) -> str:
        p = self.plan
        where = ("edge-only (nothing crosses)" if p.cloud is None else "cloud-only (the input crosses)"
                 if p.edge is None else f"cut after {p.cut.after}")
        lines = [f"built split {self.path}: {p.model} {where}: {len(p.cut.tensors)} tensor(s), {p.cut.bytes} bytes cross"]
        for role, rep in (("edge", self.edge), ("cloud", self.cloud), ("edge fallback (whole model)", self.full)):
            if rep is not None:
                lines.append(f"  {role}: {rep.path} ({rep.manifest.target}, {rep.manifest.compiler}, "
                             f"{rep.manifest.precision}; fidelity {'passed' if rep.manifest.fidelity.passed else rep.manifest.fidelity.where})")
        chk = p.back_to_back
        lines.append(f"  halves back to back vs whole FP32 model: max abs err {chk.max_abs_err:.3g} ({chk.where})")
        if p.predicted:
            pr = p.predicted
            lines.append(f"  predicted: {pr.total_ms:.2f} ms over {p.network} (edge {pr.edge_ms:.2f}, "
                         f"transfer {pr.transfer_ms:.2f}, cloud {pr.cloud_ms:.2f}); {pr.edge_label}")
        return "\n".join(lines)


def _sub(base: BuildConfig, model: Path, target: str, name: str, output: Path) -> BuildConfig:
    return base.model_copy(update={"model": str(model), "target": target, "name": name, "output": output,
                                   "force": True})


def build_split(base: BuildConfig, split: str, edge_target: str, cloud_target: str, network: str = "wifi",
                progress: Progress | None = None) -> SplitReport:
    """Cut, build both halves (and the whole model for the edge's fallback), check, write the plan."""
    say = progress or (lambda _m: None)
    say(f"importing {base.model}")
    model = import_model(base.model, base.import_options)
    analysis: PartitionReport | None = None
    if split == "auto":
        say("choosing the cut")
        analysis = partition_model(model, PartitionConfig(model=base.model, edge=edge_target, cloud=cloud_target,
                                                          network=network))
        chosen: CutCost | None = analysis.best_cut
        cut = next(c for c in graph.enumerate_cuts(model.proto) if c.index == chosen.index)
    else:
        chosen = None
        cut = graph.find_cut(graph.enumerate_cuts(model.proto), split)
    edge_proto, cloud_proto = graph.split(model.proto, cut)
    name = base.name or f"{model.name}-split-{edge_target}-{cloud_target}"
    dest = base.output / name
    with staging(dest) as tmp:
        src = tmp / "src"
        src.mkdir()
        model.save(src / f"{model.name}.onnx")
        say("building the whole model for the edge's fallback")
        full = build(_sub(base, src / f"{model.name}.onnx", edge_target, "edge-full", tmp), progress)
        edge = cloud = None
        if edge_proto is not None:
            import onnx

            onnx.save_model(edge_proto, str(src / f"{model.name}-edge.onnx"))
            say("building the edge half")
            edge = build(_sub(base, src / f"{model.name}-edge.onnx", edge_target, "edge", tmp), progress)
        if cloud_proto is not None:
            import onnx

            onnx.save_model(cloud_proto, str(src / f"{model.name}-cloud.onnx"))
            say("building the cloud half")
            cloud = build(_sub(base, src / f"{model.name}-cloud.onnx", cloud_target, "cloud", tmp), progress)
        check = _back_to_back(model, tmp if edge else None, tmp if cloud else None)
        plan = SplitPlan(
            model=model.name, source=base.model, nodes=len(model.proto.graph.node), split=split, network=network,
            edge_target=edge_target, cloud_target=cloud_target,
            cut=Cut(index=cut.index, after=cut.after, bytes=cut.nbytes,
                    tensors=[CrossingTensor(name=t.name, shape=list(t.shape), dtype=t.dtype, bytes=t.nbytes)
                             for t in cut.tensors]),
            edge="edge" if edge else None, cloud="cloud" if cloud else None, edge_full="edge-full",
            inputs=model.inputs, outputs=model.outputs, back_to_back=check,
            predicted=None if chosen is None or analysis is None else Predicted(
                total_ms=chosen.total_ms, edge_ms=chosen.edge_ms, transfer_ms=chosen.transfer_ms,
                cloud_ms=chosen.cloud_ms, energy_mj=chosen.energy_mj,
                edge_label=analysis.edge_label, cloud_label=analysis.cloud_label),
        )
        shutil.rmtree(src)
        plan.write(tmp)

    def moved(rep: BuildReport | None) -> BuildReport | None:
        return None if rep is None else BuildReport(dest / rep.path.name, rep.manifest, rep.cached)

    return SplitReport(dest, plan, moved(edge), moved(cloud), moved(full))  # type: ignore[arg-type]


def _back_to_back(model: Any, edge_dir: Path | None, cloud_dir: Path | None) -> BackToBack:
    """Edge artifact then cloud artifact on the same input vs the whole model on ONNX Runtime."""
    feeds = next(model.calibration.samples(1, seed=10_000))
    ref = reference.run(model.proto, [feeds])[0]
    mid = feeds
    kinds = []
    for folder, role in ((edge_dir, "edge"), (cloud_dir, "cloud")):
        if folder is None:
            continue
        with load_runner(folder / role, RunOptions(), host_check=True) as runner:
            mid = runner.infer(mid, check=False)
            kinds.append(runner.kind)
    err = max(float(np.abs(mid[k].astype(np.float64) - v).max()) for k, v in ref.items())
    return BackToBack(max_abs_err=err, where=f"measured on {platform.node()} with {' then '.join(kinds)}; "
                                             f"input: {model.calibration.description}")
