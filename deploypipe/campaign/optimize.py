"""`deploypipe optimize`: the search space, the figures of each candidate and the choice.

A candidate is one build of the model for the target: a compiler the target file lists × a
precision that compiler really runs there × a pruning ratio × (INT8 only) a number of layers kept
in FP32. `api.optimize` builds each one (cached, so a second run redoes nothing), measures those
that run here and lets the cost model estimate the rest (`api.bench` does both, and labels which),
then this module reads every candidate's objective and accuracy drop, draws the Pareto front
(`pareto.py`) and picks the winner: the best objective within the accuracy budget.

Accuracy drop, in points, from the build's own fidelity check against FP32 (its evidence level is
kept with it): the top-1 accuracy drop on labelled data; else the top-1 disagreement with FP32
(100 × (1 - agreement)); else 100 × (1 - cosine) for outputs that are not class scores. Figures on
synthetic inputs can refuse a candidate but never certify one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Group
from rich.text import Text

from deploypipe import backends, targets
from deploypipe.artifact import Manifest
from deploypipe.bench import BenchConfig, BenchResult
from deploypipe.bench import energy as en
from deploypipe.campaign.pareto import pareto_front
from deploypipe.errors import DeployPipeError, FidelityError, MissingBackendError, UserError
from deploypipe.importers import ImportOptions
from deploypipe.tables import table
from deploypipe.targets import Precision, TargetSpec

Objective = Literal["latency", "energy", "size"]
UNITS: dict[str, str] = {"latency": "ms", "energy": "mJ", "size": "MB"}
CERTIFYING = ("labelled", "real-unlabelled")  # evidence that can certify (deploypipe.analysis.fidelity)
WORK = ".optimize"  # candidates live under OUTPUT/.optimize/ (hidden: `bench OUTPUT` skips them)


class OptimizeConfig(BaseModel):
    """Everything `deploypipe optimize` takes. Defaults give a search that finishes in minutes for a
    small model on 2 cores: every compiler × precision unpruned, the pruning ratios with the
    target's default compiler only (the first compiler searched when the default is not), and INT8 with FP32 layers with the compilers quantizing through
    the int8 pass (docs/optimize.md)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    target: str = "host-cpu"
    objective: Objective = "latency"
    max_accuracy_drop: float = Field(default=1.0, ge=0)  # points, see the module docstring
    compilers: list[str] | None = None  # None: every compiler the target file lists
    precisions: list[Precision] | None = None  # None: each compiler's precisions for the target
    prune_ratios: list[float] = Field(default_factory=lambda: [0.0, 0.5])
    prune_all_compilers: bool = False  # prune with every compiler, not only the target's default
    fp32_layers: list[int] = Field(default_factory=lambda: [2])  # INT8 with the N most sensitive layers in FP32
    output: Path = Path("artifacts")
    budget_minutes: float | None = Field(default=None, gt=0)  # stop starting builds after this long
    fidelity_samples: int = Field(default=100, ge=1)  # synthetic inputs when no data: 100 resolve 1 point
    data: Path | None = None
    eval_data: Path | None = None
    preprocess: str | None = None
    tokenizer: Path | None = None
    metric: str | None = None
    import_options: ImportOptions = Field(default_factory=ImportOptions)
    bench: BenchConfig = Field(default_factory=lambda: BenchConfig(warmup=3, iterations=20, min_seconds=0.5))


class Point(BaseModel):
    """One candidate and what became of it."""

    model_config = ConfigDict(extra="forbid")
    name: str
    compiler: str
    precision: Precision
    prune: float = 0.0
    fp32_layers: int = 0
    path: str | None = None  # the built candidate (under OUTPUT/.optimize/)
    refused: str = ""  # why it was not built, failed its gate, or has no figure
    objective: float | None = None
    objective_source: str = ""  # "measured on <host>" / "estimated by <model>"
    latency_ms: float | None = None
    energy_mj: float | None = None
    size_mb: float | None = None
    accuracy_drop: float | None = None  # points
    accuracy_basis: str = ""
    evidence: str = ""  # labelled | real-unlabelled | synthetic | "" (not checked)
    certified: bool | None = None
    metrics: dict[str, float] = Field(default_factory=dict)  # the user's --metric
    fp32_layer_names: list[str] = Field(default_factory=list)
    within_budget: bool | None = None
    on_front: bool = False

    @property
    def measured(self) -> bool:
        return self.objective_source.startswith("measured")


class OptimizeReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    target: str
    objective: Objective
    unit: str
    max_accuracy_drop: float
    points: list[Point]
    front: list[str]  # names on the Pareto front, by objective
    winner: str | None = None
    winner_path: str | None = None
    baseline: str | None = None  # the default compiler's FP32 candidate, for the ratio
    notes: list[str] = Field(default_factory=list)

    def point(self, name: str) -> Point:
        return next(p for p in self.points if p.name == name)

    def no_winner(self) -> str:
        """The one-line error when no candidate meets the budget."""
        figured = [p for p in self.points if p.accuracy_drop is not None and p.objective is not None]
        best = min((p.accuracy_drop for p in figured), default=None)  # type: ignore[type-var]
        near = f"; the smallest drop was {best:.2f} points" if best is not None else ""
        return (f"no candidate of {self.model} for {self.target} meets --max-accuracy-drop {self.max_accuracy_drop:g} "
                f"({len(figured)} of {len(self.points)} candidates have figures{near}); no winner was built")


def _name(compiler: str, precision: str, prune: float, fp32_layers: int) -> str:
    return (f"{compiler}-{precision}" + (f"-fp32x{fp32_layers}" if fp32_layers else "")
            + (f"-pruned{round(prune * 100)}" if prune else ""))


def search_space(cfg: OptimizeConfig) -> list[Point]:
    """Every candidate, those impossible before any work already refused with the reason."""
    spec = targets.get(cfg.target)
    names = cfg.compilers or list(spec.compilers)
    bad = [r for r in cfg.prune_ratios if not 0 <= r < 1]
    if bad:
        raise UserError(f"--prune {bad[0]:g}: pruning ratios must be in [0, 1)")
    known = [c for c in names if c in spec.compilers]
    # pruning is searched with one compiler: the target's default, else the first one searched
    pruned_with = spec.default_compiler if spec.default_compiler in known else (known[0] if known else "")
    points: list[Point] = []
    for compiler in names:
        if compiler not in spec.compilers:
            points.append(Point(name=compiler, compiler=compiler, precision="fp32",
                                refused=f"target {spec.name} cannot be built with {compiler}; its compilers: "
                                        f"{', '.join(spec.compilers)}"))
            continue
        supported = spec.compilers[compiler].precisions
        native = backends.compiler_class(compiler).native_precisions
        ratios = cfg.prune_ratios if cfg.prune_all_compilers or compiler == pruned_with else [0.0]
        for precision in cfg.precisions or supported:
            if precision not in supported:
                why = spec.unsupported.get(precision, f"{compiler} runs only {', '.join(supported)} on {spec.name}")
                points.append(Point(name=_name(compiler, precision, 0, 0), compiler=compiler, precision=precision,
                                    refused=why))
                continue
            for ratio in sorted(set(ratios)):
                points.append(Point(name=_name(compiler, precision, ratio, 0), compiler=compiler,
                                    precision=precision, prune=ratio))
                if precision != "int8":
                    continue
                for n in sorted(set(cfg.fp32_layers) - {0}):
                    p = Point(name=_name(compiler, precision, ratio, n), compiler=compiler, precision=precision,
                              prune=ratio, fp32_layers=n)
                    if "int8" in native:
                        p.refused = f"{compiler} quantizes INT8 itself: layers cannot be kept in FP32 through the int8 pass"
                    points.append(p)
    return points


MIXED_RECIPE = '''description = "INT8 with the {n} layers that add the most error kept in FP32 (deploypipe optimize)"

[[passes]]
name = "simplify"

[[passes]]
name = "int8"
# The int8 pass keeps the layers that add the most error in FP32, one step at a time, until its own
# gate passes. A gate no INT8 graph meets (cosine 1.0), switched off (gate = false), makes it keep
# exactly max_fp32_layers of them; the build's fidelity gate still judges the artifact.
params = {{ calibration = "minmax", calibration_samples = 32, mixed_precision = true, max_fp32_layers = {n}, gate = false, tolerance = {{ min_cosine = 1.0, synthetic_min_cosine = 1.0, min_top1_agreement = 1.0, max_accuracy_drop = 0.0, min_samples = 200 }} }}
'''


def build_fields(cfg: OptimizeConfig, point: Point, work: Path) -> dict[str, Any]:
    """The BuildConfig fields of one candidate, built in `work`. The build's gate gets the budget as
    its accuracy-drop tolerance: on labelled data it refuses what misses it."""
    recipe = None
    if point.fp32_layers:
        recipe_path = work / f"int8-fp32x{point.fp32_layers}.toml"
        work.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(MIXED_RECIPE.format(n=point.fp32_layers))
        recipe = str(recipe_path)
    return {
        "model": cfg.model, "target": cfg.target, "compiler": point.compiler,
        "quantize": None if point.precision == "fp32" else point.precision, "prune": point.prune or None,
        "recipe": recipe, "output": work, "name": point.name, "strict": True,
        "tolerance": {"max_accuracy_drop": cfg.max_accuracy_drop}, "fidelity_samples": cfg.fidelity_samples,
        "import_options": cfg.import_options, "data": cfg.data, "eval_data": cfg.eval_data,
        "preprocess": cfg.preprocess, "tokenizer": cfg.tokenizer, "metric": cfg.metric,
    }


def refuse(point: Point, exc: DeployPipeError) -> None:
    kind = ("fails its gate" if isinstance(exc, FidelityError) else
            "backend missing" if isinstance(exc, MissingBackendError) else "cannot be built")
    point.refused = f"{kind}: {exc}"


def record_build(point: Point, path: Path, manifest: Manifest) -> None:
    """The candidate's accuracy drop from its build (see the module docstring for the rules)."""
    point.path = str(path)
    f = manifest.fidelity
    int8 = next((r.details for r in manifest.passes if r.name == "int8"), {})
    point.fp32_layer_names = list(int8.get("fp32_layers", []))
    if f.checked:
        point.evidence, point.certified, point.metrics = f.evidence, f.certified, dict(f.metrics)
        n, agree, cosine = f.samples, f.top1_agreement, f.cosine
        where = f"on {n} {f.evidence or 'reference'} inputs"
        if f.accuracy is not None and f.accuracy_fp32 is not None:
            point.accuracy_drop = f.accuracy_fp32 - f.accuracy
            point.accuracy_basis = f"top-1 accuracy drop on {n} labelled samples"
            return
    elif int8.get("gate"):  # the artifact does not run here: the INT8 graph's own check on ONNX Runtime
        gate = int8["gate"]
        point.evidence, n = gate.get("evidence", ""), gate.get("samples", 0)
        agree, cosine = gate.get("top1_agreement"), gate.get("cosine")
        where = f"on {n} {point.evidence} inputs, the INT8 graph on ONNX Runtime (the artifact cannot run here)"
    else:
        point.refused = f"accuracy unknown: {f.where}"
        return
    if agree is not None:
        point.accuracy_drop, point.accuracy_basis = 100 * (1 - agree), f"top-1 disagreement with FP32 {where}"
    elif cosine is not None:
        point.accuracy_drop, point.accuracy_basis = 100 * (1 - cosine), f"100 x (1 - cosine) vs FP32 {where}"
    else:
        point.refused = f"accuracy unknown: no figure {where}"


def record_bench(point: Point, r: BenchResult, objective: Objective, spec: TargetSpec) -> None:
    """Latency, energy and size of one candidate: measured where the target is this host (or a
    remote that ran it), else the cost model's estimate for the target. An artifact for an absent
    device that happens to run here is timed by bench on this host: that is no figure of the device,
    so the estimate is used."""
    point.size_mb = r.size_mb
    if r.ran and r.latency_ms and (spec.runs_here or r.remote):
        point.latency_ms, latency_source = r.latency_ms.p50, r.where
        energy = r.energy
    elif r.estimated_ms is not None:
        point.latency_ms, latency_source = r.estimated_ms, r.estimate_label
        energy = en.estimated(r.estimated_ms, spec)
    else:
        latency_source, energy = "", None
    point.energy_mj = energy.mj_per_inference if energy else None
    energy_source = energy.source if energy else ""
    if energy and not energy.measured and latency_source.startswith("estimated"):
        energy_source += f" x a latency {latency_source}"
    sources = {"latency": latency_source, "energy": energy_source,
               "size": "measured: the artifact's files on disk"}
    values = {"latency": point.latency_ms, "energy": point.energy_mj, "size": point.size_mb}
    point.objective, point.objective_source = values[objective], sources[objective]
    if point.objective is None and not point.refused:
        why = r.reason or ("no cost-model estimate (no ONNX graph in the artifact, or the target file lacks the figures)"
                           if latency_source == "" else f"the target file of {spec.name} has no active_power_w figure")
        point.refused = f"no {objective} figure: {why}"


def share_estimates(points: list[Point]) -> None:
    """The roofline estimates an ONNX graph, not what a compiler makes of it: a candidate whose
    artifact holds no graph (a TFLite flatbuffer, a TVM library) takes the estimate of a candidate
    built from the same passes (precision, pruning, FP32 layers) that has one, and says so."""
    estimated = {(p.precision, p.prune, p.fp32_layers): p for p in points
                 if p.objective is not None and p.objective_source.startswith("estimated")}
    for p in points:
        twin = estimated.get((p.precision, p.prune, p.fp32_layers))
        if p.path and p.objective is None and twin is not None and p.refused.startswith("no "):
            p.latency_ms, p.energy_mj, p.objective = twin.latency_ms, twin.energy_mj, twin.objective
            p.objective_source = (f"{twin.objective_source}; on the graph of {twin.name}, as the artifact holds "
                                  "none (the roofline does not tell compilers apart)")
            p.refused = ""


def conclude(cfg: OptimizeConfig, points: list[Point]) -> OptimizeReport:
    """The Pareto front over (objective, accuracy drop) and the winner within the budget."""
    spec = targets.get(cfg.target)
    figured = [p for p in points if not p.refused and p.objective is not None and p.accuracy_drop is not None]
    for p in figured:
        p.within_budget = p.accuracy_drop <= cfg.max_accuracy_drop + 1e-9  # type: ignore[operator]
    front = [figured[i] for i in pareto_front([(p.objective, p.accuracy_drop) for p in figured])]  # type: ignore[misc]
    for p in front:
        p.on_front = True
    eligible = [p for p in figured if p.within_budget]
    winner = min(eligible, key=lambda p: (p.objective, p.accuracy_drop), default=None)  # type: ignore[arg-type,return-value]
    plain = sorted((p for p in figured if p.precision == "fp32" and not p.prune),
                   key=lambda p: p.compiler != spec.default_compiler)
    baseline = plain[0] if plain else None  # the default compiler's FP32, else another compiler's
    report = OptimizeReport(
        model=cfg.model, target=cfg.target, objective=cfg.objective, unit=UNITS[cfg.objective],
        max_accuracy_drop=cfg.max_accuracy_drop, points=points,
        front=[p.name for p in sorted(front, key=lambda p: p.objective)],  # type: ignore[arg-type,return-value]
        winner=winner.name if winner else None, baseline=baseline.name if baseline else None,
    )
    weak = sorted({p.evidence for p in figured if p.evidence and p.evidence not in CERTIFYING})
    if weak:
        report.notes.append(f"accuracy figures on {' and '.join(weak)} inputs can refuse a candidate but never certify "
                            "one: give labelled data with --data/--eval-data to verify the winner")
    kinds = {p.measured for p in figured}
    if kinds == {True, False}:
        report.notes.append("the frontier mixes measured and estimated figures: each row says which")
    if cfg.objective == "energy" and any(p.energy_mj is not None and "estimated" in p.objective_source for p in figured):
        report.notes.append("energy without a power sensor is latency x the target's active_power_w figure "
                            "(estimated, as each row's source says)")
    return report


def render(report: OptimizeReport) -> Group:
    """The frontier table, the refused candidates with their reasons, and the winner."""
    unit = report.unit
    cols = ("candidate", report.objective + f" {unit}", "vs base", "drop pts", "budget", "front", "source",
            "accuracy basis")
    t = table(f"optimize {report.model} for {report.target}: {report.objective} vs accuracy drop "
              f"(budget {report.max_accuracy_drop:g} points)", cols,
              right=cols[1:4], fold=("source", "accuracy basis"))
    base = report.point(report.baseline).objective if report.baseline else None
    ok = sorted((p for p in report.points if p.objective is not None and p.accuracy_drop is not None and not p.refused),
                key=lambda p: p.objective)  # type: ignore[arg-type,return-value]
    for p in ok:
        ratio = f"{base / p.objective:.2f}x" if base and p.objective else "-"
        style = "bold green" if p.name == report.winner else None
        t.add_row(p.name + (" *" if p.name == report.winner else ""), f"{p.objective:.4g}", ratio,
                  f"{p.accuracy_drop:.2f}", "yes" if p.within_budget else "over", "yes" if p.on_front else "",
                  p.objective_source, p.accuracy_basis + ("" if p.certified else " (unverified)"), style=style)
    lines = []
    refused = [p for p in report.points if p.refused]
    if refused:
        lines.append(f"{len(refused)} candidate(s) without figures:")
        lines += [f"  {p.name}: {p.refused}" for p in refused]
    if report.winner:
        w = report.point(report.winner)
        held = f", FP32 layers: {', '.join(w.fp32_layer_names)}" if w.fp32_layer_names else ""
        lines.append(f"winner: {w.name} — {w.objective:.4g} {unit} ({w.objective_source}), accuracy drop "
                     f"{w.accuracy_drop:.2f} points ({w.evidence or 'unchecked'}){held}; built into {report.winner_path}")
    if report.baseline:
        lines.append(f"vs base: {report.baseline}'s {report.objective} / the candidate's (above 1: better)")
    lines += [f"note: {n}" for n in report.notes]
    return Group(t, Text("\n".join(lines)))
