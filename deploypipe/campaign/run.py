"""Runs a campaign: plan the grid, build every cell (fanned out by the executor; an identical cell is
the build's own cache hit), then measure one cell at a time — here, on the farm's tracker device for
its target, or on the target's `serve-runtime` host — and estimate the rest with the cost model,
calibrated on the campaign's own host measurements. Every finished cell is written to the store at
once; a run started again skips every cell an earlier run of the campaign finished.

The build and bench functions come from `deploypipe.api` (which imports this package, so it hands
them in): `build` must be importable by reference, because process-pool and Ray workers run it.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from pydantic import BaseModel

from deploypipe import interrupt, targets
from deploypipe.artifact import Artifact
from deploypipe.backends import runs_elsewhere, why_not_runnable
from deploypipe.backends.runner import RunOptions
from deploypipe.bench.context import run_context
from deploypipe.bench.derived import add_derived, artifact_proto
from deploypipe.bench.results import BenchConfig, BenchResult, SweepConfig
from deploypipe.bench.run import not_run
from deploypipe.campaign import grid
from deploypipe.campaign.executors import Executor, Task
from deploypipe.campaign.spec import CampaignSpec
from deploypipe.campaign.store import Store
from deploypipe.errors import DeployPipeError
from deploypipe.isa import host_isa

BenchFn = Callable[..., list[BenchResult]]


@dataclass(frozen=True)
class Engine:
    """What a campaign needs from the API: `build` takes BuildConfig fields and returns a small
    picklable summary (`deploypipe.api.build_cell`), `bench` is `deploypipe.api.bench`."""

    build: Task
    bench: BenchFn


@dataclass
class CellEvent:
    """A cell that just finished (for the live table / one JSON line per cell)."""

    cell: grid.Cell
    status: str
    reason: str = ""
    figure: str = ""  # "0.42 ms measured on ..." / "3.1 ms estimated by ..."
    where: str = ""  # here, farm, remote, estimate
    cached: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.cell
        return {"model": c.model, "target": c.target, "variant": c.variant.name, "compiler": c.compiler,
                "precision": c.precision, "status": self.status, "where": self.where, "figure": self.figure,
                "cached": self.cached, "reason": self.reason, "cell": c.key}


class CampaignReport(BaseModel):
    """What a run did."""

    campaign: str
    store: str
    run_id: int
    executor: str
    wall_s: float
    build_wall_s: float  # the build phase (what the executor fans out); measurements follow, one at a time
    cells: int
    counts: dict[str, int]  # final status -> cells, this run's work and earlier runs' finished cells
    resumed: int  # cells an earlier run had finished: not redone
    builds: int  # distinct builds this run asked for
    cache_hits: int  # of which the build cache answered
    where: dict[str, int]  # measured here / on the farm / on a serve-runtime, estimated

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        return (f"campaign {self.campaign}: {self.cells} cells ({counts}); {self.resumed} finished by an earlier run; "
                f"{self.builds} builds ({self.cache_hits} cache hits) with {self.executor}; {self.wall_s:.1f} s; "
                f"results in {self.store} (run {self.run_id})")


@dataclass(eq=False)
class _Built:
    cell: grid.Cell
    path: Path
    summary: dict[str, Any]
    reason: str = ""  # why it was not measured, when it goes to the cost model


def _build_item(cell: grid.Cell, spec: CampaignSpec, out: Path) -> dict[str, Any]:
    v = cell.variant
    return {"model": cell.source, "target": cell.target, "compiler": cell.compiler,
            "quantize": None if cell.precision == "fp32" else cell.precision, "prune": v.prune, "recipe": v.recipe,
            "output": str(out), "name": cell.artifact_name, "strict": spec.strict,
            "fidelity_samples": spec.fidelity_samples,
            "import_options": {"input_shapes": cell.input_shapes, "batch": [v.batch] if v.batch != 1 else []}}


def _cell_fields(cell: grid.Cell) -> dict[str, Any]:
    v = cell.variant
    return {"model": cell.model, "target": cell.target, "variant": v.name, "compiler": cell.compiler,
            "precision": cell.precision, "prune": v.prune, "recipe": v.recipe, "threads": v.threads, "batch": v.batch}


def _build_fields(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("artifact", "build_key", "cached", "build_s", "size_mb", "cosine", "max_abs_err", "top1_agreement",
            "accuracy", "accuracy_fp32", "fidelity_where")
    return {k: summary.get(k) for k in keys}


def _figures(r: BenchResult) -> list[dict[str, Any]]:
    """The measured and the estimated figures of a result, as separate labelled rows."""
    rows = []
    energy = (r.energy.mj_per_inference, r.energy.source) if r.energy else (None, None)
    if r.ran and r.latency_ms:
        rows.append({"kind": "measured", "latency_p50_ms": r.latency_ms.p50, "latency_p90_ms": r.latency_ms.p90,
                     "samples_per_s": r.samples_per_s, "energy_mj": energy[0], "energy_source": energy[1],
                     "label": r.where})
    if r.estimated_ms:
        est_energy = (None, None) if r.ran else energy  # a measured row's energy belongs to the measurement
        rows.append({"kind": "estimated", "latency_p50_ms": r.estimated_ms, "latency_p90_ms": None,
                     "samples_per_s": 1000.0 * r.batch_size / r.estimated_ms, "energy_mj": est_energy[0],
                     "energy_source": est_energy[1], "label": r.estimate_label})
    return rows


def _figure_text(r: BenchResult) -> str:
    if r.ran and r.latency_ms:
        return f"{r.latency_ms.p50:.3g} ms {r.where}"
    return f"{r.estimated_ms:.3g} ms {r.estimate_label}" if r.estimated_ms else ""


class _Run:
    """One invocation: the store, the events, and the three phases."""

    def __init__(self, spec: CampaignSpec, engine: Engine, store: Store, run_id: int, out: Path,
                 on_cell: Callable[[CellEvent], None]) -> None:
        self.spec, self.engine, self.store, self.run_id, self.out = spec, engine, store, run_id, out
        self.on_cell = on_cell
        self.where: dict[str, int] = {}
        self.builds = self.cache_hits = 0
        self.built: list[_Built] = []

    def finish(self, cell: grid.Cell, status: str, fields: dict[str, Any], event: CellEvent,
               figures: list[dict[str, Any]] | None = None) -> None:
        self.store.put_cell(self.run_id, self.spec.name, cell.key,
                            {**_cell_fields(cell), "status": status, **fields}, figures)
        if status in ("measured", "estimated"):
            self.where[event.where] = self.where.get(event.where, 0) + 1
        self.on_cell(event)

    def build_all(self, cells: list[grid.Cell], executor: Executor) -> list[_Built]:
        """Distinct builds fanned out; every cell sharing one gets its outcome."""
        groups: dict[str, list[grid.Cell]] = {}
        for c in cells:
            groups.setdefault(c.artifact_name, []).append(c)
        items = [_build_item(g[0], self.spec, self.out) for g in groups.values()]
        built: list[_Built] = []
        for item, summary in executor.map_unordered(self.engine.build, items):
            interrupt.checkpoint()
            self.builds += 1
            self.cache_hits += bool(summary.get("cached"))
            for cell in groups[item["name"]]:
                if not summary["ok"]:
                    self.finish(cell, summary["status"], {"reason": summary["reason"], "build_s": summary.get("build_s")},
                                CellEvent(cell, summary["status"], summary["reason"]))
                    continue
                self.store.put_cell(self.run_id, self.spec.name, cell.key,
                                    {**_cell_fields(cell), "status": "built", **_build_fields(summary)})
                built.append(_Built(cell, Path(summary["artifact"]), summary))
        order = {c.key: i for i, c in enumerate(cells)}
        self.built = sorted(built, key=lambda b: order[b.cell.key])
        return self.built

    def _config(self, cell: grid.Cell, device: str | None) -> BenchConfig:
        s = self.spec.bench
        return BenchConfig(iterations=s.iterations, warmup=s.warmup, min_seconds=s.min_seconds, energy=s.energy,
                           timeout_s=s.timeout_s, threads=cell.variant.threads, device=device)

    def _route(self, b: _Built) -> tuple[str, str | None, str | None]:
        """(where, device, remote) for a cell, or ('estimate', None, None) with b.reason set."""
        target = targets.get(b.cell.target)
        device = self.spec.farm.device(target.name)
        kind = b.summary["kind"]
        if device and runs_elsewhere(kind, RunOptions(device=device)):
            return "farm", device, None
        if target.name in self.spec.farm.remote:
            return "remote", None, self.spec.farm.remote[target.name]
        why = why_not_runnable(Artifact(b.path, verify=False))
        if target.runs_here and why is None:
            return "here", None, None
        farm = f"; the farm's {target.name} device cannot run {kind} artifacts" if device else ""
        b.reason = (f"not measured: {why}" if why else f"not measured: {target.name} is not this host") + (
            farm or f"; no farm device or serve-runtime for {target.name} in the campaign file")
        return "estimate", None, None

    def measure_all(self, built: list[_Built]) -> list[_Built]:
        """One cell at a time; returns the cells left for the cost model."""
        rest = []
        for b in built:
            interrupt.checkpoint()
            where, device, remote = self._route(b)
            if where == "estimate":
                rest.append(b)
                continue
            try:
                r = self.engine.bench([b.path], self._config(b.cell, device),
                                      SweepConfig(repeats=self.spec.bench.repeats), remote=remote)[0]
            except DeployPipeError as exc:  # e.g. a serve-runtime that is down: this cell, not the campaign
                r = not_run(b.path, Artifact(b.path, verify=False), str(exc))
            if not r.ran:
                b.reason = f"not measured ({where}): {r.reason}"
                rest.append(b)
                continue
            self.finish(b.cell, "measured", {"bench_json": r.model_dump_json()},
                        CellEvent(b.cell, "measured", figure=_figure_text(r), where=where,
                                  cached=b.summary.get("cached")), _figures(r))
        return rest

    def _stand_in_graphs(self, rest: list[_Built]) -> dict[_Built, tuple[str, onnx.ModelProto]]:
        """For artifacts with no ONNX graph (TFLite, TVM, OpenVINO IR ...), the graph of another
        artifact of the same model, pruning and batch built by this run — at the same precision if
        there is one, else FP32 — which the roofline reads with the cell's own precision."""
        out = {}
        for b in rest:
            if artifact_proto(b.path) is not None:
                continue
            same = [o for o in self.built if o.cell.model == b.cell.model and o.cell.variant.prune == b.cell.variant.prune
                    and o.cell.variant.batch == b.cell.variant.batch and o.cell.precision in (b.cell.precision, "fp32")]
            for o in sorted(same, key=lambda o: o.cell.precision != b.cell.precision):
                if (proto := artifact_proto(o.path)) is not None:
                    out[b] = (o.path.name, proto)
                    break
        return out

    def estimate_all(self, rest: list[_Built]) -> None:
        """The cost model for what could not be measured, calibrated on the campaign's FP32 host
        measurements (this run's and earlier runs')."""
        if not rest:
            return
        measured = [BenchResult.model_validate_json(row["bench_json"])
                    for row in self.store.finished(self.spec.name).values() if row["status"] == "measured"]
        host = [r for r in measured if r.remote is None and " via tracker " not in r.where]  # calibrate on this host only
        rows = [not_run(b.path, Artifact(b.path, verify=False), b.reason) for b in rest]
        stand_ins = self._stand_in_graphs(rest)
        add_derived([*host, *rows], graphs={str(b.path): proto for b, (_, proto) in stand_ins.items()})
        for b, r in zip(rest, rows, strict=True):
            if b in stand_ins and r.estimated_ms is not None:
                r.estimate_label += f" (the ONNX graph of {stand_ins[b][0]}: this {b.summary['kind']} artifact carries none)"
            if r.estimated_ms is None:
                why = (f"the cost model reads an ONNX graph and this {b.summary['kind']} artifact carries none"
                       if artifact_proto(b.path) is None else f"the cost model has no figures for {b.cell.target}")
                reason = f"{b.reason}; not estimated: {why}"
                self.finish(b.cell, "unmeasured", {"reason": reason, "bench_json": r.model_dump_json()},
                            CellEvent(b.cell, "unmeasured", reason, cached=b.summary.get("cached")))
                continue
            self.finish(b.cell, "estimated", {"reason": b.reason, "bench_json": r.model_dump_json()},
                        CellEvent(b.cell, "estimated", b.reason, figure=_figure_text(r), where="estimate",
                                  cached=b.summary.get("cached")), _figures(r))


@contextmanager
def _token(path: Path | None) -> Iterator[None]:
    """The serve-runtime token file named by the campaign, where bench_remote reads it, for the run only."""
    from deploypipe import net

    old = os.environ.get(net.TOKEN_ENV)
    if path is not None:
        os.environ[net.TOKEN_ENV] = str(path)
    try:
        yield
    finally:
        if path is not None:
            if old is None:
                os.environ.pop(net.TOKEN_ENV, None)
            else:
                os.environ[net.TOKEN_ENV] = old


def run(spec: CampaignSpec, file: str, engine: Engine, executor: Executor, output: Path, store_path: Path,
        on_cell: Callable[[CellEvent], None] | None = None, redo: bool = False) -> CampaignReport:
    """Plan, build, measure, estimate; every finished cell is in the store before the next starts."""
    started = time.perf_counter()
    cells = grid.expand(spec)
    out = output / spec.name
    say = on_cell or (lambda _e: None)
    with _token(spec.farm.token_file), Store(store_path) as store:
        done = {} if redo else store.finished(spec.name)
        ctx = run_context()
        run_id = store.start_run(spec.name, file, spec.digest(), executor.describe(), platform.node(), host_isa(), ctx)
        job = _Run(spec, engine, store, run_id, out, say)
        todo = []
        for cell in cells:
            if cell.key in done:
                continue
            if cell.status != "planned":
                job.finish(cell, cell.status, {"reason": cell.reason}, CellEvent(cell, cell.status, cell.reason))
            else:
                todo.append(cell)
        build_started = time.perf_counter()
        try:
            built = job.build_all(todo, executor)
        finally:
            executor.close()
        build_wall = time.perf_counter() - build_started
        job.estimate_all(job.measure_all(built))
        store.finish_run(run_id)
        latest = {r["cell_key"]: r["status"] for r in store.query(campaign=spec.name)}
    counts: dict[str, int] = {}
    for cell in cells:
        status = latest.get(cell.key, "unfinished")
        counts[status] = counts.get(status, 0) + 1
    return CampaignReport(campaign=spec.name, store=str(store_path), run_id=run_id, executor=executor.describe(),
                          wall_s=time.perf_counter() - started, build_wall_s=build_wall, cells=len(cells), counts=counts,
                          resumed=sum(1 for c in cells if c.key in done), builds=job.builds,
                          cache_hits=job.cache_hits, where=job.where)
