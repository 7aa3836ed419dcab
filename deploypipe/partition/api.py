"""`partition(PartitionConfig) -> PartitionReport`: what `deploypipe partition` runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from deploypipe.importers import ImportOptions, import_model
from deploypipe.model import Model
from deploypipe.partition import network as networks
from deploypipe.partition.analyzer import DEFAULT_INTER_ARRIVAL_MS, Objective, PartitionReport, analyze
from deploypipe.partition.profile import costs_for


class PartitionConfig(BaseModel):
    """Everything `deploypipe partition` takes."""

    model_config = ConfigDict(extra="forbid")
    model: str
    edge: str = "rpi4"
    cloud: str = "server-gpu"
    network: str = "wifi"
    objective: Objective = "latency"
    deadline_ms: float | None = None
    inter_arrival_ms: float = Field(default=DEFAULT_INTER_ARRIVAL_MS, gt=0)  # between offloaded requests: the radio's tail
    compression: str = "none"
    max_tensors: int | None = Field(default=None, ge=1)
    edge_precision: str = "fp32"
    cloud_precision: str = "fp32"
    threads: int = 1  # ORT threads for host measurements
    import_options: ImportOptions = Field(default_factory=ImportOptions)


def partition_model(model: Model, config: PartitionConfig) -> PartitionReport:
    """Analyze an already imported model (the build and the benchmark reuse this)."""
    feeds = next(model.calibration.samples(1, seed=0))
    net = networks.get(config.network)
    edge = costs_for(config.edge, model.proto, feeds, config.edge_precision, config.threads)
    same = config.cloud == config.edge and config.cloud_precision == config.edge_precision
    cloud = edge if same else costs_for(config.cloud, model.proto, feeds, config.cloud_precision, config.threads)
    report = analyze(model.proto, model.name, edge, cloud, net, feeds, config.objective, config.deadline_ms,
                     config.compression, config.max_tensors, config.inter_arrival_ms)
    if not model.calibration.real:
        report.notes.append(f"crossing-tensor sample from {model.calibration.description}")
    return report


def partition(config: PartitionConfig) -> PartitionReport:
    """Import the model, cost every cut on both sides of the link, and pick the best."""
    networks.get(config.network)  # fail on a bad --network before the (slow) import
    return partition_model(import_model(config.model, config.import_options), config)
