"""Typed bench configuration and results; results round-trip through JSON."""

from __future__ import annotations

import re

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from deploypipe.bench.energy import Energy


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warmup: int = 5
    iterations: int = 30
    min_seconds: float = 1.0  # keep iterating until both counts and time are reached
    max_seconds: float = 60.0
    threads: int | None = None
    affinity: list[int] | None = None  # CPU cores the worker is pinned to (os.sched_setaffinity)
    profile: bool = False
    trace_dir: str | None = None  # with profile: write a Chrome trace-event JSON per artifact here
    timeout_s: float = 900.0
    throughput_runs: int = 0  # throughput: time this many back-to-back runs (0: skip)
    batch_size: int | None = None  # feed this batch (the golden input stacked); None: the artifact's own
    seq_len: int | None = None  # token inputs (integer, rank 2) at this length (the golden ids tiled)
    workers: int = 1  # throughput with K runner instances running at once in one process
    energy: Literal["auto", "rapl", "rails", "nvidia-smi", "estimate", "off"] = "auto"
    scenario: Literal["singlestream", "offline", "server"] | None = None  # MLPerf LoadGen run
    loadgen_dir: str | None = None  # where LoadGen writes its logs
    server_qps: float = 10.0  # target QPS of the Server scenario

    # run artifacts whose runner reaches devices itself there (e.g. TVM: rpc://HOST:PORT,
    # tracker://HOST:PORT/KEY) or under emulation ("qemu": correctness, never a device timing)
    device: str | None = None

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str | None) -> str | None:
        """The generic shape of a device spec; which schemes exist is each runner's to say."""
        if v is not None and not re.fullmatch(r"qemu|[a-z][a-z0-9+.-]*://[^\s/:]+:\d{1,5}(/\S+)?", v):
            raise ValueError(f"'{v}': expected SCHEME://HOST:PORT[/KEY] (rpc://HOST:PORT, tracker://HOST:PORT/KEY) or qemu")
        return v


class SweepConfig(BaseModel):
    """What `run_bench` expands into one worker run per point (and per repeat)."""

    model_config = ConfigDict(extra="forbid")
    # None: not swept, the BenchConfig's own threads / cores hold; [None] sweeps the runtime default
    threads: list[int | None] | None = None
    affinity: list[list[int] | None] | None = None
    batches: list[int] | None = None  # batch sizes to measure (artifacts that take them); None: their own
    seq_lens: list[int] | None = None  # sequence lengths of token inputs to measure
    repeats: int = Field(default=1, ge=1)  # fresh worker processes per point: run-to-run variation
    concurrency: int = Field(default=1, ge=1)  # K artifacts at once (seed 003), memory-bounded
    memory_limit_mb: float | None = None  # default: 80% of available memory


class Latency(BaseModel):
    n: int
    mean: float
    std: float
    p50: float
    p90: float
    p99: float
    min: float


class ColdStart(BaseModel):
    """Seed 001's software-stack split of a first run."""

    library_load_s: float
    model_load_s: float
    first_inference_ms: float


class Throughput(BaseModel):
    """Inferences per second of a batch-1 artifact, and how it was obtained."""

    ips: float
    runs: int
    workers: int
    method: str


class RunToRun(BaseModel):
    """Spread of the medians of repeated fresh-process runs."""

    medians_ms: list[float]
    spread_pct: float  # (max - min) / median of medians
    cv_pct: float


class Efficiency(BaseModel):
    """Throughput per watt and per dollar from the figures of the machine the result is for."""

    ips_per_watt: float | None = None
    ips_per_usd: float | None = None
    source: str


class BenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @property
    def pruned(self) -> bool:
        return "prune" in self.passes

    @property
    def samples_per_s(self) -> float | None:
        """The --throughput-runs rate when measured, else the batch over the median latency."""
        if self.throughput:
            return self.throughput.ips
        return 1000.0 * self.batch_size / self.latency_ms.p50 if self.latency_ms and self.latency_ms.p50 > 0 else None

    artifact: str
    name: str
    model: str
    target: str
    compiler: str
    precision: str
    kind: str
    ran: bool
    reason: str = ""  # why it did not run here
    where: str = ""  # "measured on <host> (<cpu>)"
    threads: int | None = None
    affinity: list[int] | None = None
    batch_size: int = 1  # samples per inference (items/s counts samples)
    seq_len: int | None = None  # the token inputs' length, where swept
    remote: str | None = None  # "host:port" when measured by `deploypipe serve-runtime` elsewhere
    latency_ms: Latency | None = None
    run_to_run: RunToRun | None = None
    throughput: Throughput | None = None
    energy: Energy | None = None
    efficiency: Efficiency | None = None
    temperature_c: dict[str, list[float]] = Field(default_factory=dict)  # zone -> [start, end]
    concurrency: int = 1
    concurrent_with: list[str] = Field(default_factory=list)
    loadgen: dict[str, Any] = Field(default_factory=dict)
    estimated_ms: float | None = None  # cost-model prediction, never a measurement
    estimate_label: str = ""
    estimate_error: float | None = None  # |estimated - measured| / measured, for host-measured rows
    cold_start: ColdStart | None = None
    peak_rss_mb: float | None = None
    size_mb: float = 0.0
    model_stats: dict[str, float] = Field(default_factory=dict)  # params, macs, flop_per_param (manifest)
    passes: list[str] = Field(default_factory=list)  # the manifest's passes that changed the model, in order
    fidelity: dict[str, float | None] = Field(default_factory=dict)
    accuracy: str = ""  # what the build's accuracy figures rest on (deploypipe.analysis.fidelity.accuracy_label)
    layers: list[dict[str, Any]] = Field(default_factory=list)
    trace: str | None = None  # Chrome trace-event JSON of the per-layer profile (bench --trace-dir)
    context: dict[str, Any] = Field(default_factory=dict)
