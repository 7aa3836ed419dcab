"""The public Python API: `build()`, `load()`, `bench()`, `partition()`, `tune()`, `run_campaign()`,
`optimize()` and `self_check()`. The CLI is a thin layer over these."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deploypipe import __version__, backends, interrupt, passes, targets, zoo
from deploypipe.analysis import reference
from deploypipe.analysis.fidelity import (
    DEFAULT_TOLERANCE,
    PRUNED_TOLERANCE,
    QUANTIZED_INPUT_TOLERANCE,
    UNCERTIFYING,
    compare,
    evidence_of,
    judge_metric,
    merge_tolerance,
)
from deploypipe.analysis.stats import analyze
from deploypipe.artifact import (
    GOLDEN,
    Artifact,
    Fidelity,
    Manifest,
    ModelInfo,
    existing_key,
    file_entry,
    staging,
    write_golden,
    write_manifest,
)
from deploypipe.backends import load as load_runner
from deploypipe.backends.compiler import (
    CompileContext,
    Compiler,
    TuneRequest,
    TuningReport,
)
from deploypipe.backends.runner import Runner, RunOptions
from deploypipe.bench import BenchConfig, BenchResult, SweepConfig, run_bench
from deploypipe.campaign import executors
from deploypipe.campaign import optimize as opt
from deploypipe.campaign import run as campaign_run
from deploypipe.campaign import spec as campaign_spec
from deploypipe.data import attach as attach_data
from deploypipe.data.metrics import UserMetric, load_metric
from deploypipe.data.record import DataRecord
from deploypipe.errors import (
    DeployPipeError,
    FidelityError,
    MissingBackendError,
    UnsupportedError,
)
from deploypipe.importers import ImportOptions, import_model
from deploypipe.isa import host_isa
from deploypipe.model import Model, stack_rows
from deploypipe.partition.analyzer import PartitionReport
from deploypipe.partition.api import PartitionConfig
from deploypipe.partition.api import partition as _partition
from deploypipe.passes import PassContext, Recipe
from deploypipe.passes.base import refusing
from deploypipe.progress import Step
from deploypipe.targets import unfused_on_host

Progress = Callable[[str], None]
REAL_EVAL_MAX = 200  # held-out real samples a build's fidelity check uses at most (enough to certify)


class BuildConfig(BaseModel):
    """Everything `deploypipe build` takes; the CLI builds exactly this object."""

    model_config = ConfigDict(extra="forbid")
    model: str
    target: str = "host-cpu"
    compiler: str | None = None
    quantize: Literal["fp16", "int8"] | None = None
    prune: float | None = Field(default=None, gt=0, lt=1)
    recipe: str | None = None  # pass recipe name or .toml path; default derived from the precision
    output: Path = Path("artifacts")
    name: str | None = None
    strict: bool = False  # refuse instead of adapting an impossible precision
    force: bool = False  # rebuild even when the cache key matches
    tolerance: dict[str, float] = Field(default_factory=dict)
    fidelity_samples: int = 8
    import_options: ImportOptions = Field(default_factory=ImportOptions)
    tuning_logs: Path = Path("tuning_logs")
    tune_trials: int = Field(default=0, ge=0)  # tune first (compilers that tune) to this many trials
    # the user's data (docs/data.md): calibration + evaluation, split by content hash unless eval_data is given
    data: Path | None = None
    eval_data: Path | None = None
    preprocess: str | None = None  # imagenet | unit | none | FILE.toml, for image folders
    tokenizer: Path | None = None  # tokenizer.json, for text files
    metric: str | None = None  # MODULE:FUNCTION, the user's own metric (deploypipe.data.metrics.load_metric)


@dataclass
class BuildReport:
    path: Path
    manifest: Manifest
    cached: bool

    def summary(self) -> str:
        m = self.manifest
        head = f"{'cache hit' if self.cached else 'built'} {self.path}: {m.model.name} for {m.target} with {m.compiler}, {m.precision}"
        lines = [head, *(f"  note: {n}" for n in m.notes)]
        f = m.fidelity
        if f.checked:
            lines += _fidelity_lines(f)
        else:
            lines.append(f"  fidelity: not checked ({f.where})")
        if m.data is not None:
            sets = [f"{role} {r.samples} (sha256 {r.sha256[:12]})" for role, r in
                    (("calibration", m.data.calibration), ("evaluation", m.data.evaluation)) if r is not None]
            prep = f", preprocess {m.data.preprocess.preset}" if m.data.preprocess else ""
            lines.append(f"  data: {m.data.format}, {', '.join(sets)}{prep}")
        return "\n".join(lines)


def _fidelity_lines(f: Fidelity) -> list[str]:
    """The fidelity figures for the build summary: headline, one line per output when there are
    several, the user's metric, and the verdict with a hint when it rests on synthetic inputs."""
    figs = [f"max abs err {f.max_abs_err:.3g}", f"cosine {f.cosine:.5f}" + (" (weakest output)" if len(f.outputs) > 1 else "")]
    if f.top1_agreement is not None:
        ci = f" [95% CI {f.top1_agreement_ci[0]:.3f}..{f.top1_agreement_ci[1]:.3f}]" if f.top1_agreement_ci else ""
        figs.append(f"top-1 agreement {f.top1_agreement:.3f}{ci}")
    if f.accuracy is not None:
        top5 = f", top-5 {f.top5_accuracy:.2f}% (FP32 {f.top5_accuracy_fp32:.2f}%)" if f.top5_accuracy is not None else ""
        figs.append(f"accuracy {f.accuracy:.2f}% (FP32 {f.accuracy_fp32:.2f}%){top5}")
    lines = [f"  fidelity vs FP32 ({f.samples} samples, {f.data}; {f.where}): {', '.join(figs)}"]
    lines += [f"    also checked at {s}" for s in f.shapes_checked]
    if len(f.outputs) > 1 or any(o.kind == "embedding" for o in f.outputs):
        for o in f.outputs:
            extra = [f"SQNR {o.sqnr_db:.1f} dB" if o.sqnr_db is not None else "bit-identical"]
            if o.top1_agreement is not None:
                extra.append(f"top-1 agreement {o.top1_agreement:.3f}")
            if o.embedding_cosine is not None:
                extra.append(f"embedding cosine {o.embedding_cosine:.4f}")
            if o.retrieval_at_1 is not None:
                extra.append(f"retrieval@1 {o.retrieval_at_1:.3f}")
            lines.append(f"    output {o.name} ({o.kind}): cosine {o.cosine:.5f}, {', '.join(extra)}")
    if f.metrics:
        fp32 = f.metrics_fp32
        lines.append("  metric: " + ", ".join(f"{k} {v:.4g}" + (f" (FP32 {fp32[k]:.4g})" if k in fp32 else "")
                                              for k, v in f.metrics.items()))
    if f.verdict:
        hint = (" (give real data with --data PATH: an image folder, .npz, .npy folder, or text with --tokenizer; "
                "see docs/data.md)") if f.evidence in UNCERTIFYING and not f.certified else ""
        lines.append(f"  {f.verdict}{hint}")
    return lines


@functools.cache
def code_hash() -> str:
    """Hash of deploypipe's own source and data files: a code change must invalidate cached
    artifacts even when the version number did not move."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _key(model: Model, config: BuildConfig, res: targets.Resolution, recipe: Recipe,
         versions: dict[str, str], data: DataRecord | None = None) -> str:
    payload = {
        "deploypipe": __version__, "code": code_hash(), "source": model.content_hash(), "target": targets.get(config.target).model_dump(),
        "resolution": res.model_dump(), "recipe": recipe.model_dump(), "toolchain": versions,
        "tolerance": config.tolerance, "samples": config.fidelity_samples,
        "data": data.model_dump() if data else None, "metric": config.metric,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _tuning_state(tuning_dir: Path, trials: int) -> dict[str, str]:
    """A tuning database changes what a tuning compiler builds, so its content is part of the key:
    this model's and every other model's under the same tuning_logs (their records are reused by
    workload)."""
    state = {"tune_trials": str(trials)} if trials else {}
    found = sorted(tuning_dir.parent.parent.glob("*/*/database_tuning_record.json"))  # this one among them
    if found:
        digest = hashlib.sha256()
        for records in found:
            digest.update(str(records).encode() + records.read_bytes())
        state["tuning_db"] = digest.hexdigest()[:16]
    return state


def _reference(model: Model, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """FP32 reference outputs: the imported model, before any pass, on ONNX Runtime."""
    qdq = any(n.op_type == "DequantizeLinear" for n in model.proto.graph.node)
    return reference.run(model.proto, feeds, optimize=not (qdq and unfused_on_host(None)))  # a QDQ graph's exact semantics


def _fidelity_inputs(model: Model, n: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None, str, str]:
    """Held-out inputs, their labels, what they are and the evidence level: the evaluation set
    (the user's --data / --eval-data, or real labelled data for trained models), else synthetic
    (seeded apart from the calibration seeds)."""
    ev = model.evaluation
    if ev is not None:
        feeds = list(ev.samples(len(ev.x)))
        return feeds, ev.labels, ev.description, evidence_of(ev.labels, ev.evidence)
    provider = model.calibration
    if provider.held_out:  # a real held-out split (shipped data): all of it, not a handful
        n = max(n, REAL_EVAL_MAX)
    return list(provider.samples(n, seed=10_000)), None, provider.description, provider.evidence


def _producers(model: Model) -> dict[str, str]:
    """Output name -> op type that produces it (a Softmax output is class scores, an
    LpNormalization one an embedding)."""
    outs = {o.name for o in model.proto.graph.output}
    return {o: n.op_type for n in model.proto.graph.node for o in n.output if o in outs}


def check_fidelity(runner: Runner, model: Model, precision: str, tolerance: dict[str, float], n: int,
                   metric: tuple[str, UserMetric] | None = None,
                   ) -> tuple[Fidelity, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Run the artifact and the reference on the same inputs; returns figures and a golden pair."""
    feeds, labels, data, evidence = _fidelity_inputs(model, n)
    refs = _reference(model, feeds)
    outs = [runner.infer(f, check=False) for f in feeds]
    fid = compare(refs, outs, precision, tolerance, labels, evidence=evidence, ops=_producers(model))
    fid.data = data
    if metric is not None:
        judge_metric(fid, metric[0], metric[1], refs, outs, labels, tolerance)
    _check_batches(runner, model, precision, tolerance, feeds, fid)
    return fid, feeds[0], refs[0], outs[0]


def _check_batches(runner: Runner, model: Model, precision: str, tolerance: dict[str, float],
                   feeds: list[dict[str, np.ndarray]], fid: Fidelity) -> None:
    """Every batch size the build was asked for, checked against the reference at that size (the
    same samples stacked): an artifact that is right at batch 1 and wrong at 32 fails its gate."""
    for b in model.batches:
        stacked = stack_rows(feeds, b)
        at_b = compare(_reference(model, [stacked]), [runner.infer(stacked)], precision,
                       {k: v for k, v in tolerance.items() if k != "max_accuracy_drop"}, evidence=fid.evidence or None)
        fid.shapes_checked.append(f"batch {b}: max abs err {at_b.max_abs_err:.3g}, cosine {at_b.cosine:.5f}")
        if at_b.passed is False:
            fid.passed = False
            fid.reasons += [f"at batch {b}: {r}" for r in at_b.reasons]


def build(config: BuildConfig, progress: Progress | None = None) -> BuildReport:
    """Import, run passes, compile for the target, check fidelity, write the artifact atomically.
    A signal during the build stops it at the next stage or progress message (deploypipe.interrupt)."""
    with interrupt.deferred():
        return _build(config, _checking(progress))


def _checking(progress: Progress | None) -> Progress:
    """The progress callback with an interrupt checkpoint in front of every message."""
    def say(message: str) -> None:
        interrupt.checkpoint()
        if progress is not None:
            progress(message)
    return say


def _check_shapes_request(options: ImportOptions, name: str, compiler: Compiler) -> None:
    """Refuse, before any work, shape ranges a compiler cannot build (it says why)."""
    if compiler.shapes == "set" and options.ranged and not options.listed:
        raise UnsupportedError(f"{name} builds a set of fixed shapes, one model each: give the batch sizes as a list "
                               f"(--batch 1,8,32), not --seq-len or MIN..MAX in --input-shape ({compiler.fixed_why})")
    if options.ranged and compiler.shapes == "fixed":
        raise UnsupportedError(f"{name} cannot take a range of input shapes (--batch with several sizes, "
                               f"--seq-len, or MIN..MAX in --input-shape): {compiler.fixed_why}")


def _build(config: BuildConfig, say: Progress) -> BuildReport:
    metric = (config.metric, load_metric(config.metric)) if config.metric else None  # a bad one fails first
    spec = targets.get(config.target)
    res = spec.resolve(config.compiler, config.quantize, config.strict)
    compiler = backends.get_compiler(res.compiler)
    _check_shapes_request(config.import_options, res.compiler, compiler)
    say(f"importing {config.model}")
    model = import_model(config.model, config.import_options)
    if config.data or config.eval_data:
        say("reading data")
    model, data_record = attach_data(model, config.data, config.eval_data, config.preprocess, config.tokenizer)
    if data_record is not None:
        data_record.metric = config.metric
    recipe = passes.recipe_for(res.precision, compiler.native_precisions, config.recipe, config.prune, config.tolerance)
    versions = {"deploypipe": __version__, **compiler.versions()}
    tuning_dir = config.tuning_logs / model.name / spec.name
    key = _key(model, config, res, recipe, {**versions, **_tuning_state(tuning_dir, config.tune_trials)}, data_record)
    quantized = _quantize_nodes(model.proto) if res.precision == "fp32" else 0
    suffix = f"-pruned{round(config.prune * 100)}" if config.prune else ""
    # a model that arrives quantized is built as it is (no precision pass), but it is not FP32
    label = "qdq" if quantized else res.precision
    name = config.name or f"{model.name}-{spec.name}-{res.compiler}-{label}{suffix}"
    dest = config.output / name
    if not config.force and existing_key(dest) == key:
        return BuildReport(dest, Artifact(dest).manifest, cached=True)

    base = PRUNED_TOLERANCE if config.prune else QUANTIZED_INPUT_TOLERANCE if quantized else DEFAULT_TOLERANCE[res.precision]
    tolerance = merge_tolerance(base, config.tolerance)
    input_note = [(f"the model arrives quantized ({quantized} QuantizeLinear/DequantizeLinear nodes): its reference is "
                   "ONNX Runtime running the same quantized graph, judged by cosine and agreement (compilers round "
                   "requantizations their own way), not max abs error")] if quantized else []
    with staging(dest) as tmp:
        current, records = passes.run(recipe, model, PassContext(target=spec.name, precision=res.precision, progress=say,
                                                                  compiler=res.compiler, metric=metric))
        ctx = CompileContext(
            workdir=tmp, target=spec, precision=res.precision,
            options=backends.compiler_options(res.compiler, spec),
            tuning_dir=tuning_dir, progress=say, tune_trials=config.tune_trials, tolerance=tolerance, metric=metric,
        )
        with refusing(f"{res.compiler} cannot compile {model.name} for {spec.name}", current.proto):
            compiler.check(current, ctx)
            say(f"compiling with {res.compiler}")
            out = compiler.compile(current, ctx)
        manifest = Manifest(
            name=name, kind=out.kind, build_key=key,
            model=ModelInfo(name=model.name, source=model.provenance.source,
                            importer=model.provenance.importer, source_hash=model.provenance.source_hash,
                            notes=list(model.provenance.notes), stats=_stats(analyze(model.proto))),
            target=spec.name, compiler=res.compiler, precision=res.precision,
            requested_precision=res.requested, passes=records, toolchain={**versions, **out.toolchain},
            inputs=out.inputs, outputs=out.outputs,
            files={role: file_entry(tmp, rel) for role, rel in out.files.items()},
            fidelity=Fidelity(checked=False, where="pending"), host_check=out.host_check,
            compiler_info=out.info, notes=[*res.notes, *input_note, *out.notes], data=data_record,
        )
        write_manifest(tmp, manifest)
        say("checking fidelity against ONNX Runtime running the quantized input graph" if quantized
            else "checking fidelity against the FP32 reference")
        with refusing(f"the {res.compiler} artifact of {model.name} does not run here", current.proto):
            manifest.fidelity = _build_fidelity(tmp, model, res.precision, tolerance, config.fidelity_samples, metric)
        manifest.files["golden"] = file_entry(tmp, GOLDEN)
        write_manifest(tmp, manifest)
        if manifest.fidelity.passed is False:
            kept = [shutil.copy(tmp / rel, config.output / f"{name}-{Path(rel).name}")
                    for role, rel in out.files.items() if role.endswith("_report")]  # most useful exactly now
            raise FidelityError(
                f"{name} fails its fidelity gate ({'; '.join(manifest.fidelity.reasons)}); nothing was written"
                + (f" except the compiler's report: {', '.join(map(str, kept))}" if kept else "")
            )
        interrupt.checkpoint()  # the last safe point: after it the new version is switched in whole
    return BuildReport(dest, manifest, cached=False)


def _quantize_nodes(proto: Any) -> int:
    """QuantizeLinear/DequantizeLinear nodes in the graph (a model quantized before it came here)."""
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def _stats(stats: object) -> dict[str, float]:
    """Headline figures of the analysis for the manifest (the per-layer table stays in `inspect`)."""
    return {k: getattr(stats, k) for k in ("params", "macs", "flop_per_param")}


def _build_fidelity(root: Path, model: Model, precision: str, tolerance: dict[str, float], n: int,
                    metric: tuple[str, UserMetric] | None = None) -> Fidelity:
    art = Artifact(root)
    reason = backends.why_not_runnable(art)
    if reason is not None and art.manifest.host_check is None:
        feeds = _fidelity_inputs(model, 1)[0][:1]
        write_golden(root, feeds[0], _reference(model, feeds[:1])[0], None)
        return Fidelity(checked=False, where=f"artifact cannot run here: {reason}")
    with load_runner(root, RunOptions(), host_check=True) as runner:
        fid, golden_in, golden_ref, golden_out = check_fidelity(runner, model, precision, tolerance, n, metric)
    stand_in = f" (host stand-in: {art.manifest.host_check.file})" if reason is not None else ""
    fid.where = f"measured on {platform.node()} ({platform.machine()}, INT8 ISA {host_isa()}) with {runner.kind}{stand_in}"
    write_golden(root, golden_in, golden_ref, golden_out)
    return fid


class TuneConfig(BaseModel):
    """Everything `deploypipe tvm tune` takes: the model and target, the compiler whose schedule
    search runs (TVM is the one that tunes today), and the request."""

    model_config = ConfigDict(extra="forbid")
    model: str
    target: str = "host-cpu"
    compiler: str = "tvm"
    trials: int = Field(default=64, ge=1)
    quantize: Literal["fp16", "int8"] | None = None
    budget_s: float | None = Field(default=None, gt=0)
    trials_per_iter: int = Field(default=16, ge=1)
    device: str | None = None  # where candidates are measured: rpc://HOST:PORT, tracker://HOST:PORT/KEY
    retime: bool = False  # time the database's records again first (a new host, or an older evaluator)
    tuning_logs: Path = Path("tuning_logs")
    import_options: ImportOptions = Field(default_factory=ImportOptions)


def tune(cfg: TuneConfig, progress: Progress | None = None) -> TuningReport:
    """Import the model and run the build's passes for the precision (so the tuned kernels are the
    ones `build` compiles), then tune into tuning_logs/<model>/<target>/ (resuming; an interrupt
    stops at the next progress message and keeps what was measured)."""
    with interrupt.deferred():
        return _tune(cfg, _checking(progress))


def _tune(cfg: TuneConfig, say: Progress) -> TuningReport:
    spec = targets.get(cfg.target)
    res = spec.resolve(cfg.compiler, cfg.quantize)
    compiler = backends.get_compiler(res.compiler)
    request = TuneRequest(trials=cfg.trials, budget_s=cfg.budget_s, trials_per_iter=cfg.trials_per_iter, device=cfg.device,
                          retime=cfg.retime)
    say(f"importing {cfg.model}")
    model = import_model(cfg.model, cfg.import_options)
    recipe = passes.recipe_for(res.precision, compiler.native_precisions)
    current, _ = passes.run(recipe, model, PassContext(target=spec.name, precision=res.precision, progress=say))
    work_dir = cfg.tuning_logs / model.name / spec.name
    ctx = CompileContext(workdir=work_dir, target=spec, precision=res.precision,
                         options=backends.compiler_options(res.compiler, spec), tuning_dir=work_dir, progress=say)
    return compiler.tune(current, ctx, request)


def bench(paths: list[Path], config: BenchConfig | None = None, sweep: SweepConfig | None = None,
          progress: Progress | None = None, remote: str | None = None) -> list[BenchResult]:
    """Measure every artifact under `paths` (each in a fresh worker process) at every sweep point;
    with `remote` (HOST:PORT) on that `deploypipe serve-runtime` instead."""
    return run_bench(paths, config, progress=progress, sweep=sweep, remote=remote)


def build_cell(fields: dict[str, Any]) -> dict[str, Any]:
    """One campaign build, as process-pool and Ray workers run it: BuildConfig fields in, a small
    picklable summary out. A cell that cannot be built is an outcome of the campaign, not an error
    of it: refusals (unsupported, missing backend) and failures come back as text."""
    started = time.perf_counter()
    try:
        report = build(BuildConfig.model_validate(fields))
    except (UnsupportedError, MissingBackendError) as exc:
        return {"ok": False, "status": "refused", "reason": str(exc), "build_s": time.perf_counter() - started}
    except DeployPipeError as exc:
        return {"ok": False, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "build_s": time.perf_counter() - started}
    except Exception as exc:  # noqa: BLE001 - one broken cell must not stop the other cells of a campaign
        return {"ok": False, "status": "failed", "reason": f"internal error: {type(exc).__name__}: {exc}",
                "build_s": time.perf_counter() - started}
    m = report.manifest
    f = m.fidelity
    return {"ok": True, "artifact": str(report.path), "cached": report.cached, "build_key": m.build_key,
            "build_s": time.perf_counter() - started, "kind": m.kind,
            "size_mb": sum(e.bytes for role, e in m.files.items() if role != "golden") / 1e6,
            "cosine": f.cosine, "max_abs_err": f.max_abs_err, "top1_agreement": f.top1_agreement,
            "accuracy": f.accuracy, "accuracy_fp32": f.accuracy_fp32, "fidelity_where": f.where}


def run_campaign(file: str | Path, output: str | Path = "artifacts", store: str | Path | None = None,
             executor: str = "pool", workers: int | None = None,
             on_cell: Callable[[campaign_run.CellEvent], None] | None = None,
             redo: bool = False) -> campaign_run.CampaignReport:
    """Run a campaign file (docs/campaign.md): every cell built, measured here / on the farm or
    estimated, into the results store (default OUTPUT/results.db); cells an earlier run finished are
    not redone unless `redo`."""
    spec = campaign_spec.load(Path(file))
    ex = executors.make(executor, workers)
    out = Path(output)
    engine = campaign_run.Engine(build=build_cell, bench=bench)
    with interrupt.deferred():
        return campaign_run.run(spec, str(file), engine, ex, out, Path(store) if store else out / "results.db",
                                on_cell, redo)


def optimize(config: opt.OptimizeConfig, progress: Progress | None = None) -> opt.OptimizeReport:
    """Search the target's compilers x precisions x pruning ratios x FP32-layer counts: build every
    candidate (under OUTPUT/.optimize/, cached), measure what runs here and estimate the rest, and
    build the best objective within the accuracy budget into OUTPUT (deploypipe.campaign.optimize).
    The report's `winner` is None when no candidate meets the budget; nothing is written then."""
    with interrupt.deferred():
        return _optimize(config, _checking(progress))


def _optimize(cfg: opt.OptimizeConfig, say: Progress) -> opt.OptimizeReport:
    spec = targets.get(cfg.target)
    points = opt.search_space(cfg)
    work = cfg.output / opt.WORK / f"{Path(cfg.model).stem}-{spec.name}"
    todo = [p for p in points if not p.refused]
    deadline = time.monotonic() + cfg.budget_minutes * 60 if cfg.budget_minutes else None
    for i, point in enumerate(todo):
        if deadline is not None and time.monotonic() > deadline:
            point.refused = f"not tried: the {cfg.budget_minutes:g}-minute budget was spent"
            continue

        def step(message: str, i: int = i, name: str = point.name) -> None:
            say(Step(f"candidate {i + 1}/{len(todo)} {name}: {message}", i, len(todo)))
        try:
            built = _build(BuildConfig(**opt.build_fields(cfg, point, work)), step)
        except DeployPipeError as exc:
            opt.refuse(point, exc)
            continue
        opt.record_build(point, built.path, built.manifest)
    paths = [Path(p.path) for p in points if p.path]
    if paths and not spec.runs_here:  # one FP32 model measured here calibrates the cost model's estimates
        ref = _build(BuildConfig(model=cfg.model, target="host-cpu", compiler="onnxruntime", output=work,
                                 name="host-calibration", import_options=cfg.import_options), say)
        paths.append(ref.path)
    results = {r.artifact: r for r in run_bench(paths, cfg.bench, progress=say)} if paths else {}
    for point in points:
        if point.path and str(point.path) in results:
            opt.record_bench(point, results[str(point.path)], cfg.objective, spec)
    opt.share_estimates(points)
    report = opt.conclude(cfg, points)
    if report.winner is not None:
        say(f"copying the winner {report.winner} into {cfg.output}")
        report.winner_path = str(_install(Path(report.point(report.winner).path), cfg.output, spec.name))  # type: ignore[arg-type]
    return report


def _install(candidate: Path, output: Path, target: str) -> Path:
    """The winning candidate as an ordinary artifact of `output`, named like a build of it, through
    the same atomic staging. Its build key does not depend on the folder, so this is what a rebuild
    would write (a later identical `build` into `output` is a cache hit), without building again."""
    art = Artifact(candidate)
    name = f"{art.manifest.model.name}-{target}-{candidate.name}"
    with staging(output / name) as tmp:
        shutil.copytree(candidate.resolve(), tmp, dirs_exist_ok=True)
        manifest = Artifact(tmp).manifest
        manifest.name = name
        write_manifest(tmp, manifest)
    return output / name


def partition(config: PartitionConfig) -> PartitionReport:
    """Cost every edge/cloud cut of a model over a network and pick the best (Neurosurgeon)."""
    return _partition(config)


def load(path: str | Path, options: RunOptions | None = None) -> Runner:
    """A runner for a built artifact: `with deploypipe.load(p) as r: r.infer(feeds)`."""
    return load_runner(path, options)


class SelfCheck(BaseModel):
    """What `deploypipe check` found: the golden input through the artifact on this machine, against
    the FP32 reference (judged by the build's own gate) and against what the build host got."""

    passed: bool
    detail: str
    reasons: list[str]
    vs_reference: Fidelity
    vs_build_host: Fidelity | None


def self_check(path: str | Path) -> SelfCheck:
    """Run the golden input through the artifact and compare with what the build host got
    (and with the FP32 reference), so a device can prove its runtime computes the same thing."""
    art = Artifact(Path(path))
    inputs, ref_out, expected = art.golden()
    with load_runner(path, RunOptions()) as runner:
        outs = runner.infer(inputs)
    m = art.manifest
    tolerance = m.fidelity.tolerance or DEFAULT_TOLERANCE[m.precision]  # the build's own, complete gate
    vs_ref = compare([ref_out], [outs], m.precision, {k: v for k, v in tolerance.items() if k != "max_accuracy_drop"},
                     evidence=m.fidelity.evidence or None)
    vs_expected = compare([expected], [outs], m.precision, {}) if expected else None
    detail = f"vs FP32 reference: max abs err {vs_ref.max_abs_err:.3g}, cosine {vs_ref.cosine:.5f}"
    if vs_expected is not None:
        detail += f"; vs build host: max abs err {vs_expected.max_abs_err:.3g}"
    return SelfCheck(passed=bool(vs_ref.passed), detail=detail, reasons=vs_ref.reasons, vs_reference=vs_ref,
                     vs_build_host=vs_expected)


def zoo_rows(compute: bool) -> list[dict[str, Any]]:
    """The zoo with its published figures, and with `compute` the figures of the exported ONNX."""

    rows = []
    for name in zoo.names():
        e = zoo.get(name)
        row: dict[str, Any] = {
            "name": name, "family": e.family, "inputs": {k: list(v) for k, v in e.inputs.items()},
            "trained": e.trained, "published_params": e.published.params if e.published else None,
            "published_macs": e.published.macs if e.published else None,
            "source": e.published.source if e.published else "", "note": e.published.note if e.published else "",
        }
        if compute:
            stats = analyze(import_model(name).proto)
            row |= {"params": stats.params, "macs": stats.macs}
        rows.append(row)
    return rows
