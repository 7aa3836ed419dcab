"""Typed bench configuration and results; results round-trip through JSON."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warmup: int = 5
    iterations: int = 30
    min_seconds: float = 1.0  # keep iterating until both counts and time are reached
    max_seconds: float = 60.0
    threads: int | None = None
    profile: bool = False
    timeout_s: float = 900.0
    rpc: str | None = None  # run remote-capable artifacts on this RPC server (HOST:PORT)
    tracker: str | None = None  # or on a free device with `key` from this RPC tracker
    key: str | None = None


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


class BenchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
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
    latency_ms: Latency | None = None
    cold_start: ColdStart | None = None
    peak_rss_mb: float | None = None
    size_mb: float = 0.0
    fidelity: dict[str, float | None] = Field(default_factory=dict)
    layers: list[dict[str, Any]] = Field(default_factory=list)
    context: dict[str, Any] = Field(default_factory=dict)
