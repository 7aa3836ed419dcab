"""The split-point search of Neurosurgeon / DNNTune / Edgent over every cut of a DAG.

For each cut p: T(p) = T_edge(p) + T_transfer(p) + T_cloud(p) and E(p) = E_edge(p) + E_transfer(p),
with T_edge/T_cloud summed from per-layer costs (measured here or predicted, labelled), T_transfer
from the network profile and the *measured* size of the crossing set (optionally compressed),
E_edge from the edge target's active power (an estimate, labelled) and E_transfer from the
network's radio model: promotion + sending + tail for requests further apart than the radio's tail,
sending + the tail until the next request otherwise (`inter_arrival_ms`, see
deploypipe.partition.network). An idle radio's promotion delay is part of T_transfer. The best cut
minimizes the objective, subject to a deadline if given.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from deploypipe import targets
from deploypipe.analysis import reference
from deploypipe.errors import UserError
from deploypipe.partition import compress
from deploypipe.partition.graph import CutPoint, enumerate_cuts
from deploypipe.partition.network import NetworkProfile, RadioEnergy
from deploypipe.partition.profile import LayerCosts

Objective = Literal["latency", "energy"]
# One request a minute: longer than every profile's radio tail (LTE's is 11.6 s), so each request
# pays promotion and a whole tail, as a device classifying now and then does.
DEFAULT_INTER_ARRIVAL_MS = 60_000.0


class TensorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int]
    dtype: str
    bytes: int


class CutCost(BaseModel):
    """Every figure of one cut point (ms, bytes, mJ)."""

    model_config = ConfigDict(extra="forbid")
    index: int
    after: str
    after_op: str
    tensors: list[TensorInfo]
    raw_bytes: int
    sent_bytes: int
    codec: str
    codec_ms: float  # encode on the edge + decode in the cloud, measured on this host
    codec_max_abs_err: float
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    total_ms: float
    edge_mj: float
    transfer_mj: float  # all the radio's energy for this request: promotion_mj + sending + tail_mj
    promotion_mj: float = 0.0
    tail_mj: float = 0.0
    energy_mj: float
    meets_deadline: bool | None = None

    @property
    def kind(self) -> str:
        if not self.tensors and self.index > 0:
            return "edge-only"
        return "cloud-only" if self.index == 0 else "split"


class PartitionReport(BaseModel):
    """The table the analyzer prints, the chosen cut, and where every figure came from."""

    model_config = ConfigDict(extra="forbid")
    model: str
    nodes: int
    edge_target: str
    cloud_target: str
    edge_label: str
    cloud_label: str
    network: NetworkProfile
    objective: Objective
    deadline_ms: float | None
    inter_arrival_ms: float
    codec: str
    energy_label: str
    cuts: list[CutCost]
    best: int  # position in `cuts`
    notes: list[str] = Field(default_factory=list)

    @property
    def best_cut(self) -> CutCost:
        return self.cuts[self.best]

    @property
    def edge_only(self) -> CutCost:
        return self.cuts[-1]

    @property
    def cloud_only(self) -> CutCost:
        return self.cuts[0]


def crossing_values(proto: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One real sample of every tensor in `names` (the model run once here with them as outputs)."""
    values = {n: feeds[n] for n in names if n in feeds}
    wanted = [n for n in names if n not in values]
    if wanted:
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        existing = {o.name for o in probe.graph.output}
        probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in existing)
        sess = reference.session(probe, level="basic")
        values.update(zip(wanted, sess.run(wanted, feeds), strict=True))
    return values


def _edge_power(edge: str) -> tuple[float, str]:
    fig = targets.get(edge).figure("active_power_w")
    if fig is None:
        return 0.0, f"{edge} has no active_power_w figure: edge energy counted as 0"
    return fig.value, f"edge energy = {fig.value:g} W active power x edge time (estimate; {fig.source})"


def analyze(proto: onnx.ModelProto, name: str, edge_costs: LayerCosts, cloud_costs: LayerCosts,
            network: NetworkProfile, feeds: dict[str, np.ndarray], objective: Objective = "latency",
            deadline_ms: float | None = None, codec: str = "none", max_tensors: int | None = None,
            inter_arrival_ms: float = DEFAULT_INTER_ARRIVAL_MS) -> PartitionReport:
    """Cost every cut and pick the best one (see the module docstring for the formulas)."""
    if codec not in compress.available():
        raise UserError(f"compression '{codec}' is not available here; choose from {', '.join(compress.available())}")
    if deadline_ms is not None and deadline_ms <= 0:
        raise UserError(f"--deadline must be > 0 ms, got {deadline_ms:g}")
    if inter_arrival_ms <= 0:
        raise UserError(f"--inter-arrival-ms must be > 0, got {inter_arrival_ms:g}")
    cuts = enumerate_cuts(proto, max_tensors)
    names = sorted({t for c in cuts for t in c.names})
    values = crossing_values(proto, names, feeds)
    power_w, energy_label = _edge_power(edge_costs.target)
    rows = [_cost(c, values, edge_costs, cloud_costs, network, codec, power_w, deadline_ms, inter_arrival_ms)
            for c in cuts]
    best = _pick(rows, objective, deadline_ms)
    notes = []
    if deadline_ms is not None and not rows[best].meets_deadline:
        notes.append(f"no cut meets the {deadline_ms:g} ms deadline: the fastest one is shown")
    if codec != "none":
        notes.append(f"crossing tensors sent as {codec}: sizes, codec time and error measured on this host "
                     "on one real sample")
    return PartitionReport(
        model=name, nodes=len(proto.graph.node), edge_target=edge_costs.target, cloud_target=cloud_costs.target,
        edge_label=edge_costs.label, cloud_label=cloud_costs.label, network=network, objective=objective,
        deadline_ms=deadline_ms, inter_arrival_ms=inter_arrival_ms, codec=codec, energy_label=energy_label, cuts=rows, best=best, notes=notes,
    )


def _cost(cut: CutPoint, values: dict[str, np.ndarray], edge: LayerCosts, cloud: LayerCosts,
          network: NetworkProfile, codec: str, power_w: float, deadline_ms: float | None,
          inter_arrival_ms: float) -> CutCost:
    tensors = [TensorInfo(name=t.name, shape=list(t.shape), dtype=t.dtype, bytes=t.nbytes) for t in cut.tensors]
    radio = RadioEnergy(promotion_mj=0.0, transfer_mj=0.0, tail_mj=0.0)
    if cut.tensors:
        figs = compress.measure({t.name: values[t.name] for t in cut.tensors}, codec)
        sent, codec_ms, err = figs.nbytes, figs.encode_ms + figs.decode_ms, figs.max_abs_err
        transfer = network.promotion_delay_ms(sent, inter_arrival_ms) + network.transfer_ms(sent)
        radio = network.radio(sent, inter_arrival_ms)
    else:
        sent, codec_ms, err, transfer = 0, 0.0, 0.0, 0.0
    edge_ms, cloud_ms = edge.prefix_ms(cut.index), cloud.suffix_ms(cut.index)
    total = edge_ms + codec_ms + transfer + cloud_ms
    edge_mj = power_w * edge_ms
    return CutCost(
        index=cut.index, after=cut.after, after_op=cut.after_op, tensors=tensors, raw_bytes=cut.nbytes,
        sent_bytes=sent, codec=codec, codec_ms=codec_ms, codec_max_abs_err=err, edge_ms=edge_ms,
        transfer_ms=transfer, cloud_ms=cloud_ms, total_ms=total, edge_mj=edge_mj, transfer_mj=radio.total_mj,
        promotion_mj=radio.promotion_mj, tail_mj=radio.tail_mj, energy_mj=edge_mj + radio.total_mj,
        meets_deadline=None if deadline_ms is None else total <= deadline_ms,
    )


def _pick(rows: list[CutCost], objective: Objective, deadline_ms: float | None) -> int:
    """Minimize the objective among cuts meeting the deadline; if none does, the fastest cut."""
    key = (lambda r: r.total_ms) if objective == "latency" else (lambda r: (r.energy_mj, r.total_ms))
    pool = [i for i, r in enumerate(rows) if deadline_ms is None or r.total_ms <= deadline_ms]
    if not pool:
        return min(range(len(rows)), key=lambda i: rows[i].total_ms)
    return min(pool, key=lambda i: key(rows[i]))
