"""The `deploypipe` command: a thin Typer layer that builds the same config objects the API takes.

Every error deploypipe raises on purpose becomes one line on stderr and a distinct exit code;
anything else is an internal error (traceback only with --debug).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from deploypipe.cliutil import (
    JsonOpt,
    choice,
    emit_json,
    err,
    out,
    parse_range,
    parse_shapes,
    parse_sizes,
    old_device_flags,
    parse_tolerance,
    progress_bar,
)

# add_completion: `deploypipe --install-completion` (bash, zsh, fish, PowerShell), see README
app = typer.Typer(
    add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Take DNN models to edge devices and measure what each optimization buys.",
)
_state: dict[str, Any] = {"debug": False}
# the user's data options (docs/data.md), shared by build and optimize
DataOpt = Annotated[Path | None, typer.Option(help="Your data: image folder, .npz, .npy folder or text file (docs/data.md).")]
EvalDataOpt = Annotated[Path | None, typer.Option(help="Separate evaluation data (else --data is split).")]
PreprocessOpt = Annotated[str | None, typer.Option(help="Image preprocessing: imagenet, unit, none or FILE.toml.")]
TokenizerOpt = Annotated[Path | None, typer.Option(help="tokenizer.json for text data.")]
MetricOpt = Annotated[str | None, typer.Option(help="Your metric MODULE:FUNCTION (or file.py:FUNCTION).")]


def _check_prune(value: float | None) -> float | None:
    from deploypipe.errors import UserError

    if value is not None and not 0 < value < 1:
        raise UserError(f"--prune {value:g}: the pruning ratio must be between 0 and 1 (exclusive), e.g. 0.3")
    return value


def _check_name(value: str | None) -> str | None:
    from deploypipe.artifact import check_name

    return None if value is None else check_name(value)


def _check_output_folder(value: Path) -> Path:
    from deploypipe.errors import UserError

    if value.exists() and not value.is_dir():
        raise UserError(f"--output {value}: is a file, not a folder")
    return value


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


@app.command()
def build(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file (.onnx, .pt, .pt2, ...).")],
    target: Annotated[str, typer.Option("--target", "-t", help="Device name (see `deploypipe targets`).")] = "host-cpu",
    compiler: Annotated[str | None, typer.Option(help="Compiler; default: the target's.")] = None,
    quantize: Annotated[str | None, typer.Option(help="fp16 or int8.", callback=choice("--quantize", ("fp16", "int8")))] = None,
    prune: Annotated[float | None, typer.Option(help="Structured channel-pruning ratio, 0-1.", callback=_check_prune)] = None,
    passes: Annotated[str | None, typer.Option("--passes", help="Pass recipe name or .toml file.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifacts folder.", callback=_check_output_folder)] = Path("artifacts"),
    name: Annotated[str | None, typer.Option(help="Artifact folder name (one name, no '/').", callback=_check_name)] = None,
    weights: Annotated[Path | None, typer.Option(help="Real pretrained weights (state_dict) for a zoo model.")] = None,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224, NAME=1..32x3x224x224 (a range: dynamic) or NAME=1x32:int64; repeatable.")] = [],  # noqa: B006
    batch: Annotated[str | None, typer.Option(help="Batch sizes the artifact takes, e.g. 1,8,32 (dim 0 of every input).")] = None,
    seq_len: Annotated[str | None, typer.Option(help="Sequence lengths of token inputs, MIN..MAX, e.g. 16..256.")] = None,
    tolerance: Annotated[list[str], typer.Option(help="Fidelity gate override KEY=VALUE; repeatable.")] = [],  # noqa: B006
    allow_pickle: Annotated[bool, typer.Option(help="Allow loading pickled modules (runs their code).")] = False,
    strict: Annotated[bool, typer.Option(help="Refuse instead of adapting an impossible precision.")] = False,
    force: Annotated[bool, typer.Option(help="Rebuild even if an identical artifact exists.")] = False,
    split: Annotated[str | None, typer.Option(help="Edge/cloud split: 'auto' or the node to cut after.")] = None,
    edge_target: Annotated[str, typer.Option(help="Edge target of a --split build.")] = "rpi4",
    cloud_target: Annotated[str, typer.Option(help="Cloud target of a --split build.")] = "server-gpu",
    network: Annotated[str, typer.Option(help="Network for --split auto: wifi, 4g, 3g, ethernet or BW,RTT.")] = "wifi",
    tune: Annotated[bool, typer.Option("--tune", help="Tune first (TVM MetaSchedule), resuming tuning_logs/.")] = False,
    trials: Annotated[int, typer.Option(help="Total tuning trials to reach with --tune.", min=1)] = 64,
    data: DataOpt = None,
    eval_data: EvalDataOpt = None,
    preprocess: PreprocessOpt = None,
    tokenizer: TokenizerOpt = None,
    metric: MetricOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an artifact for a target (or, with --split, an edge and a cloud artifact plus a plan)."""
    from deploypipe.api import BuildConfig
    from deploypipe.api import build as do_build
    from deploypipe.importers import ImportOptions

    cfg = BuildConfig(
        model=model, target=target, compiler=compiler, quantize=quantize, prune=prune, recipe=passes,  # type: ignore[arg-type]
        output=output, name=name, strict=strict, force=force, tolerance=parse_tolerance(tolerance),
        tune_trials=trials if tune else 0,
        data=data, eval_data=eval_data, preprocess=preprocess, tokenizer=tokenizer, metric=metric,
        import_options=ImportOptions(weights=weights, **parse_shapes(input_shape), allow_pickle=allow_pickle,
                                     batch=parse_sizes(batch, "--batch"),
                                     seq_len=parse_range(seq_len, "--seq-len") if seq_len else None),
    )
    if split is not None:
        from deploypipe.partition.build import build_split

        if data or eval_data:
            from deploypipe.errors import UnsupportedError

            raise UnsupportedError("--data / --eval-data with --split: not supported yet (the halves' inputs are not the model's)")

        with progress_bar("building split") as say:
            split_report = build_split(cfg, split, edge_target, cloud_target, network, say)
        if as_json:
            emit_json({"path": str(split_report.path), "plan": split_report.plan.model_dump()})
        else:
            out.print(split_report.summary(), highlight=False)
        return
    with progress_bar("building") as say:
        report = do_build(cfg, progress=say)
    if as_json:
        emit_json({"path": str(report.path), "cached": report.cached, "manifest": report.manifest.model_dump()})
    else:
        out.print(report.summary(), highlight=False)


def _split_list(value: str | None, flag: str, kind: type = str) -> list[Any] | None:
    """'a,b' -> ['a', 'b'] (or numbers), None when the option was not given."""
    from deploypipe.errors import UserError

    if value is None:
        return None
    try:
        items = [kind(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} '{value}': expected a comma-separated list like {'0,0.25,0.5' if kind is float else '2,4'}") from None
    if not items:
        raise UserError(f"{flag} '{value}': empty list")
    return items


@app.command()
def optimize(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Device name (see `deploypipe targets`).")] = "host-cpu",
    objective: Annotated[str, typer.Option(help="latency, energy or size.", callback=choice("--objective", ("latency", "energy", "size")))] = "latency",
    max_accuracy_drop: Annotated[float, typer.Option(help="Accuracy budget in points (top-1 drop on labelled data, else disagreement with FP32).", min=0)] = 1.0,
    compilers: Annotated[str | None, typer.Option(help="Compilers to try, e.g. onnxruntime,openvino (default: all the target's).")] = None,
    precisions: Annotated[str | None, typer.Option(help="Precisions to try, e.g. fp32,int8 (default: all each compiler runs there).")] = None,
    prune: Annotated[str, typer.Option(help="Pruning ratios to try (0: unpruned).")] = "0,0.5",
    prune_all_compilers: Annotated[bool, typer.Option(help="Prune with every compiler (default: the target's default compiler only).")] = False,
    fp32_layers: Annotated[str, typer.Option(help="INT8 with the N most sensitive layers kept in FP32, e.g. 2,4 (0: none).")] = "2",
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the winner goes (candidates: OUTPUT/.optimize/).", callback=_check_output_folder)] = Path("artifacts"),
    budget_minutes: Annotated[float | None, typer.Option(help="Start no new build after this many minutes.", min=0.01)] = None,
    fidelity_samples: Annotated[int, typer.Option(help="Synthetic inputs per fidelity check when no data is given.", min=1)] = 100,
    data: DataOpt = None,
    eval_data: EvalDataOpt = None,
    preprocess: PreprocessOpt = None,
    tokenizer: TokenizerOpt = None,
    metric: MetricOpt = None,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224 or NAME=1x32:int64; repeatable.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Search compilers x precisions x pruning x FP32 layers for a target, print the frontier and build the winner.

    Exit code 5 when no candidate meets --max-accuracy-drop (no winner is built).
    """
    from deploypipe.api import optimize as do_optimize
    from deploypipe.campaign.optimize import OptimizeConfig, render
    from deploypipe.errors import FidelityError, UserError
    from deploypipe.importers import ImportOptions

    wanted = _split_list(precisions, "--precisions")
    for p in wanted or []:
        choice("--precisions", ("fp32", "fp16", "int8"))(p)
    layers = _split_list(fp32_layers, "--fp32-layers", int) or [0]
    if any(n < 0 for n in layers):
        raise UserError(f"--fp32-layers '{fp32_layers}': layer counts must be >= 0")
    cfg = OptimizeConfig(
        model=model, target=target, objective=objective, max_accuracy_drop=max_accuracy_drop,  # type: ignore[arg-type]
        compilers=_split_list(compilers, "--compilers"), precisions=wanted,  # type: ignore[arg-type]
        prune_ratios=_split_list(prune, "--prune", float) or [0.0], prune_all_compilers=prune_all_compilers,
        fp32_layers=layers, output=output,
        budget_minutes=budget_minutes, fidelity_samples=fidelity_samples, data=data, eval_data=eval_data,
        preprocess=preprocess, tokenizer=tokenizer, metric=metric, import_options=ImportOptions(**parse_shapes(input_shape)),
    )
    with progress_bar("optimizing") as say:
        report = do_optimize(cfg, progress=say)
    if as_json:
        emit_json(report.model_dump())
    else:
        out.print(render(report), highlight=False)
    if report.winner is None:
        raise FidelityError(report.no_winner())


def _parse_threads(value: str | None) -> list[int | None]:
    from deploypipe.errors import UserError

    if not value:
        return [None]
    try:
        threads = [int(v) for v in value.split(",") if v.strip()]
        if not all(t >= 1 for t in threads):
            raise ValueError
    except ValueError:
        raise UserError(f"--threads '{value}': expected a positive number or a list like 1,2,4") from None
    return threads


def _parse_affinity(values: list[str]) -> list[list[int] | None]:
    """'0' / '0,1' / '0-3', several sets separated by '/' or given as repeated options."""
    import os

    from deploypipe.errors import UserError

    sets: list[list[int] | None] = []
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    for value in values:
        for part in value.split("/"):
            cores: list[int] = []
            try:
                for item in filter(None, (x.strip() for x in part.split(","))):
                    lo, _, hi = item.partition("-")
                    cores.extend(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                raise UserError(f"--affinity '{part}': expected core lists like 0 / 0,1 / 0-3") from None
            if not cores or not set(cores) <= allowed:
                raise UserError(f"--affinity '{part}': cores must be among {sorted(allowed)}")
            sets.append(cores)
    return sets or [None]


@app.command()
def bench(
    paths: Annotated[list[Path], typer.Argument(help="Artifact folders or folders holding them.")],
    iterations: Annotated[int, typer.Option(help="Timed runs per artifact (at least).", min=1)] = 30,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.", min=0)] = 5,
    min_seconds: Annotated[float, typer.Option(help="Keep timing for at least this long.", min=0)] = 1.0,
    threads: Annotated[str | None, typer.Option(help="Runtime threads, or a sweep: 1,2,4.")] = None,
    affinity: Annotated[list[str], typer.Option(help="Core set(s) to pin to: '0' or a sweep '0/0,1'; repeatable.")] = [],  # noqa: B006
    repeats: Annotated[int, typer.Option(help="Fresh-process runs per point; reports the spread of medians.", min=1)] = 1,
    batch: Annotated[str | None, typer.Option(help="Batch sizes to measure, e.g. 1,8,32 (artifacts built to take them).")] = None,
    seq_len: Annotated[str | None, typer.Option(help="Token-input lengths to measure, e.g. 16,64,256 (artifacts built with --seq-len).")] = None,
    throughput_runs: Annotated[int, typer.Option(help="Throughput: time N back-to-back runs (0: skip).", min=0)] = 0,
    workers: Annotated[int, typer.Option(help="Throughput with K runner instances at once.", min=1)] = 1,
    concurrency: Annotated[int, typer.Option(help="Also run K artifacts at once (memory-bounded).", min=1)] = 1,
    memory_limit_mb: Annotated[float | None, typer.Option(help="Memory bound for --concurrency (default: 80% of free).")] = None,
    energy: Annotated[str, typer.Option(help="auto, rapl, rails, nvidia-smi, estimate or off.")] = "auto",
    scenario: Annotated[str | None, typer.Option(help="Also run an MLPerf LoadGen scenario: singlestream, offline or server.")] = None,
    loadgen_dir: Annotated[Path, typer.Option(help="Where LoadGen logs go.")] = Path("loadgen"),
    server_qps: Annotated[float, typer.Option(help="Target QPS of the Server scenario.", min=0.001)] = 10.0,
    profile: Annotated[bool, typer.Option(help="Collect per-layer times.")] = False,
    trace_dir: Annotated[Path | None, typer.Option(help="With --profile: write a Chrome trace JSON per artifact here.")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column (the default table fits 100 columns).")] = False,
    columns: Annotated[str | None, typer.Option(help="Columns to show, e.g. artifact,p50,ips,speedup (see docs/bench.md).")] = None,
    remote: Annotated[str | None, typer.Option(help="HOST:PORT of a `deploypipe serve-runtime` to run on.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="--remote: the server's token file (default: $DEPLOYPIPE_TOKEN_FILE, then ~/.config/deploypipe/token).")] = None,
    remote_timeout: Annotated[float | None, typer.Option(help="--remote: give up after this many seconds without a sign of life (default 30).", min=0.1)] = None,
    calibration: Annotated[Path | None, typer.Option(help="Cost-model calibration JSON (default: fitted on this run).")] = None,
    json_file: Annotated[Path | None, typer.Option("--json-file", help="Also save results to this JSON file.")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also save results to this CSV file.")] = None,
    device: Annotated[str | None, typer.Option(help="Run where the artifact's runner can reach: rpc://HOST:PORT, "
                                                   "tracker://HOST:PORT/KEY (TVM RPC) or qemu (emulation, correctness only).")] = None,
    rpc: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --device rpc://HOST:PORT.")] = None,
    tracker: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --device tracker://HOST:PORT/KEY.")] = None,
    key: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --device tracker://HOST:PORT/KEY.")] = None,
    emulate: Annotated[bool, typer.Option(hidden=True, help="Deprecated: --device qemu.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark every artifact under PATHS and print one comparison table."""
    from deploypipe.bench import BenchConfig, SweepConfig, run_bench
    from deploypipe.bench.table import pick_columns, render, write_csv

    from pydantic import ValidationError

    from deploypipe.errors import UserError

    device = device or old_device_flags(rpc, tracker, key, emulate)
    shown = pick_columns(columns, wide)  # a wrong column name fails before any run
    if trace_dir is not None and not profile:
        raise UserError("--trace-dir needs --profile (the traces are the per-layer profile)")
    if trace_dir is not None and remote:
        raise UserError("--trace-dir with --remote: the traces would be written on the remote machine; drop one")

    try:
        cfg = BenchConfig(iterations=iterations, warmup=warmup, min_seconds=min_seconds, profile=profile, throughput_runs=throughput_runs,
                          workers=workers, energy=energy, scenario=scenario.lower() if scenario else None,  # type: ignore[arg-type]
                          loadgen_dir=str(loadgen_dir), server_qps=server_qps, device=device,
                          trace_dir=str(trace_dir.resolve()) if trace_dir else None)
        sweep = SweepConfig(threads=_parse_threads(threads), affinity=_parse_affinity(affinity), repeats=repeats,
                            concurrency=concurrency, memory_limit_mb=memory_limit_mb,
                            batches=list(parse_sizes(batch, "--batch")) or None,
                            seq_lens=list(parse_sizes(seq_len, "--seq-len")) or None)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg'].removeprefix('Value error, ')}") from None
    if remote:
        import os

        from deploypipe import net
        from deploypipe.bench.remote import TIMEOUT_ENV, parse_address

        parse_address(remote)
        if token_file is not None:  # bench_remote reads these; run_bench passes only the address
            os.environ[net.TOKEN_ENV] = str(token_file)
        if remote_timeout is not None:
            os.environ[TIMEOUT_ENV] = str(remote_timeout)
    with progress_bar("benchmarking") as say:
        results = run_bench(paths, cfg, progress=say, sweep=sweep, remote=remote,
                            calibration=calibration)
    data = [r.model_dump() for r in results]
    if json_file:
        json_file.write_text(json.dumps(data, indent=2))
    if csv_file:
        write_csv(results, csv_file)
    if as_json:
        emit_json(data)
    else:
        out.print(render(results, shown))
    if not any(r.ran for r in results):
        from deploypipe.errors import UnsupportedError

        if not results:
            raise UserError(f"no artifacts (folders with manifest.json) under {', '.join(map(str, paths))}")
        raise UnsupportedError(f"nothing was measured: none of the {len(results)} artifact(s) can run here "
                               "(the table says why)")


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """What this machine can build and run: backends, CPU features, toolchains, GPUs, per target.

    Run it first after installing. Missing pieces are warnings (exit 0) with their install hint.
    """
    from deploypipe.doctor import diagnose, render

    report = diagnose()
    if as_json:
        emit_json(report)
    else:
        out.print(render(report), highlight=False)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Zoo name or model file.")],
    layers: Annotated[bool, typer.Option(help="Print the per-layer table.")] = True,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224, NAME=1..32x3x224x224 (a range: dynamic) or NAME=1x32:int64; repeatable.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Params, MACs, FLOP/param, op histogram and per-layer output sizes of a model."""
    from deploypipe.analysis.stats import analyze
    from deploypipe.importers import ImportOptions, import_model
    from deploypipe.analysis.views import render_stats

    m = import_model(model, ImportOptions(**parse_shapes(input_shape)))
    stats = analyze(m.proto)
    if as_json:
        emit_json({"model": m.name, "inputs": [i.model_dump() for i in m.inputs], **stats.to_dict()})
    else:
        out.print(render_stats(m, stats, layers))


@app.command()
def models(as_json: JsonOpt = False, compute: Annotated[bool, typer.Option(help="Export each model and compute its figures (slow).")] = False) -> None:
    """List the zoo, with published params/MACs (and computed ones with --compute)."""
    from deploypipe.analysis.views import zoo_table
    from deploypipe.api import zoo_rows

    rows = zoo_rows(compute)
    if as_json:
        emit_json(rows)
    else:
        out.print(zoo_table(rows))


@app.command("targets")
def list_targets(as_json: JsonOpt = False) -> None:
    """List devices with their compilers and the precisions each really supports."""
    from deploypipe import backends
    from deploypipe import targets as tg
    from deploypipe.analysis.views import targets_table

    specs = tg.all_targets()
    for spec in specs.values():  # every compiler's options in every target file, typed
        backends.check_target(spec)
    shapes = {name: backends.compiler_class(name).shapes for name in backends.compiler_names()}
    if as_json:
        emit_json({n: {**s.model_dump(), "shapes": {c: shapes[c] for c in s.compilers}} for n, s in specs.items()})
    else:
        out.print(targets_table(list(specs.values()), shapes))


@app.command()
def check(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder.")],
    as_json: JsonOpt = False,
) -> None:
    """Self-check an artifact on the device: hashes, then the golden input vs the build's outputs.

    Exit code 5 when the outputs stray beyond the build's tolerance.
    """
    from deploypipe.api import self_check

    result = self_check(artifact)
    if as_json:
        emit_json(result.model_dump())
    else:
        out.print(f"{artifact}: {'OK' if result.passed else 'FAILED'} — {result.detail}", highlight=False)
    if not result.passed:
        raise typer.Exit(5)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="Results JSON saved by `deploypipe bench --json-file`, or a campaign results store.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
    campaign: Annotated[str | None, typer.Option(help="With a results store: only this campaign.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (tables and plots) of bench results or of a campaign."""
    from deploypipe.bench.report import write_report

    cells = None
    if results.is_file() and results.read_bytes()[:16] == b"SQLite format 3\x00":
        from deploypipe.campaign.store import Store
        from deploypipe.campaign.view import report_cells

        with Store(results) as db:
            cells = report_cells(db.query(campaign=campaign))
    path = write_report(results, output, title, cells)
    if as_json:
        emit_json({"report": str(path)})
    else:
        out.print(f"wrote {path}", highlight=False)


@app.command("campaign")
def campaign_cmd(
    file: Annotated[Path, typer.Argument(help="Campaign file (TOML): models x targets x variants (docs/campaign.md).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifacts go to OUTPUT/<campaign>/.", callback=_check_output_folder)] = Path("artifacts"),
    store: Annotated[Path | None, typer.Option(help="Results store (SQLite); default OUTPUT/results.db.")] = None,
    executor: Annotated[str, typer.Option(help="Where builds run: serial, pool (local processes) or ray[://HOST:PORT].")] = "pool",
    workers: Annotated[int | None, typer.Option(help="Build workers (default: the cores this process may use).", min=1)] = None,
    redo: Annotated[bool, typer.Option(help="Redo cells an earlier run of this campaign finished.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Only list the cells (planned, excluded, refused with the reason).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build, measure (here, on the farm) or estimate every cell of a campaign into the results store.

    Builds fan out over the executor; measurements run one at a time, after the builds. A campaign
    stopped half-way and started again redoes nothing that finished.
    """
    if plan:
        from deploypipe.campaign import grid, spec
        from deploypipe.campaign.view import plan_table

        cells = grid.expand(spec.load(file))
        if as_json:
            emit_json([{**c.model_dump(), "cell": c.key} for c in cells])
        else:
            out.print(plan_table(cells))
        return
    from deploypipe.api import run_campaign
    from deploypipe.campaign.run import CellEvent

    if as_json:
        def line(event: CellEvent) -> None:
            sys.stdout.write(json.dumps(event.to_dict()) + "\n")
            sys.stdout.flush()

        report = run_campaign(file, output, store, executor, workers, on_cell=line, redo=redo)
        emit_json(report.model_dump())
        return
    from rich.live import Live

    from deploypipe.campaign import grid, spec
    from deploypipe.campaign.view import LiveCells

    live_rows = LiveCells(f"campaign {file.name}", len(grid.expand(spec.load(file))))
    with Live(live_rows.render(), console=out, refresh_per_second=4, transient=True) as live:
        def show(event: CellEvent) -> None:
            live_rows.add(event)
            live.update(live_rows.render())

        report = run_campaign(file, output, store, executor, workers, on_cell=show, redo=redo)
    out.print(live_rows.render(last=None))
    out.print(report.summary(), highlight=False)


@app.command()
def results(
    store: Annotated[Path, typer.Argument(help="Results store written by `deploypipe campaign`.")] = Path("artifacts/results.db"),
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model (as the campaign names it).")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Only this target.")] = None,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Query the results store: the latest figures of every cell, measured and estimated apart."""
    from deploypipe.campaign.store import Store
    from deploypipe.campaign.view import flat_rows, results_table, to_csv
    from deploypipe.errors import UserError

    if as_csv and as_json:
        raise UserError("give one of --json and --csv")
    if not store.is_file():
        raise UserError(f"results store {store}: no such file (run `deploypipe campaign FILE.toml` first)")
    with Store(store) as db:
        rows = db.query(model, target, campaign)
    if as_json:
        emit_json(flat_rows(rows))
    elif as_csv:
        sys.stdout.write(to_csv(rows))
    else:
        out.print(results_table(rows))


TokenFileOpt = Annotated[Path | None, typer.Option(
    help="Shared-token file (created 0600 on first start; default: $DEPLOYPIPE_TOKEN_FILE, then ~/.config/deploypipe/token).")]
InsecureOpt = Annotated[bool, typer.Option(help="No authentication (allowed on a loopback --host only).")]
ClientTimeoutOpt = Annotated[float, typer.Option(help="Drop a client silent for this many seconds (also the time a started frame may take).", min=0.1)]


@app.command("serve-runtime")
def serve_runtime(
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed).", min=0, max=65535)] = 9190,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for the network).")] = "127.0.0.1",
    max_requests: Annotated[int | None, typer.Option(help="Stop after this many artifacts.", min=1)] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds without a request.", min=0.1)] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Refuse artifacts larger than this (compressed).", min=0.001)] = 2048,
    max_unpacked_mb: Annotated[float | None, typer.Option(help="Refuse uploads that unpack to more than this (default: --max-upload-mb).", min=0.001)] = None,
    workdir: Annotated[Path, typer.Option(help="Work folder: uploads are unpacked and LoadGen logs written only here.")] = Path("serve-runtime"),
    trust_uploads: Annotated[bool, typer.Option(help="Run uploaded native code (TVM model.so, hls4ml csim libraries); refused otherwise.")] = False,
    token_file: TokenFileOpt = None,
    insecure_no_auth: InsecureOpt = False,
    max_clients: Annotated[int, typer.Option(help="Clients served at once (measurements still run one at a time).", min=1)] = 4,
    client_timeout: ClientTimeoutOpt = 60.0,
    as_json: JsonOpt = False,
) -> None:
    """Measure artifacts sent by `deploypipe bench --remote HOST:PORT` on this machine."""
    from deploypipe.bench.serve import serve

    def ready(h: str, p: int) -> None:
        if as_json:
            emit_json({"listening": f"{h}:{p}"})
        else:
            out.print(f"serving deploypipe bench on {h}:{p}", highlight=False)
        sys.stdout.flush()

    served = serve(host, port, max_requests, idle_timeout, max_upload_mb, on_ready=ready, token_file=token_file,
                   insecure_no_auth=insecure_no_auth, trust_uploads=trust_uploads, workdir=workdir,
                   max_unpacked_mb=max_unpacked_mb, max_clients=max_clients, client_timeout=client_timeout)
    if not as_json:
        out.print(f"served {served} request(s)", highlight=False)


@app.command("partition")
def partition_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file.")],
    edge: Annotated[str, typer.Option(help="Edge target (measured if it is this host, else predicted).")] = "rpi4",
    cloud: Annotated[str, typer.Option(help="Cloud target.")] = "server-gpu",
    network: Annotated[str, typer.Option(help="wifi, 4g, 3g, ethernet or BW_MBPS,RTT_MS.")] = "wifi",
    objective: Annotated[str, typer.Option(help="latency or energy.")] = "latency",
    deadline: Annotated[float | None, typer.Option(help="Latency budget in ms (Edgent).")] = None,
    inter_arrival_ms: Annotated[float, typer.Option(help="Time between offloaded requests: further apart than the "
                                                         "radio's tail, each pays promotion + tail energy.", min=0.001)] = 60_000.0,
    compression: Annotated[str, typer.Option(help="none, int8, zlib, int8+zlib (lz4 if installed).")] = "none",
    max_tensors: Annotated[int | None, typer.Option(help="Only cuts where at most N tensors cross.")] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for host measurements.")] = 1,
    best_only: Annotated[bool, typer.Option(help="Print only the best, edge-only and cloud-only rows.")] = False,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224, NAME=1..32x3x224x224 (a range: dynamic) or NAME=1x32:int64; repeatable.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Cost every edge/cloud cut point of a model over a network and pick the best (Neurosurgeon)."""
    from deploypipe.errors import UserError
    from deploypipe.importers import ImportOptions
    from deploypipe.partition.api import PartitionConfig, partition
    from deploypipe.partition.table import render

    if objective not in ("latency", "energy"):
        raise UserError(f"--objective '{objective}': expected latency or energy")
    cfg = PartitionConfig(
        model=model, edge=edge, cloud=cloud, network=network, objective=objective, deadline_ms=deadline,  # type: ignore[arg-type]
        inter_arrival_ms=inter_arrival_ms,
        compression=compression, max_tensors=max_tensors, threads=threads,
        import_options=ImportOptions(**parse_shapes(input_shape)),
    )
    with progress_bar("profiling cut points"):
        report = partition(cfg)
    if as_json:
        emit_json(report.model_dump())
    else:
        out.print(render(report, all_rows=not best_only))


@app.command()
def serve(
    paths: Annotated[list[Path], typer.Argument(help="Cloud artifact folders, split build folders or .onnx files.")],
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for the network; clients need the token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one (printed).", min=0, max=65535)] = 8765,
    threads: Annotated[int | None, typer.Option(help="Runtime threads per model.", min=1)] = None,
    token_file: TokenFileOpt = None,
    insecure_no_auth: InsecureOpt = False,
    max_clients: Annotated[int, typer.Option(help="Edge clients connected at once; more are told 'busy'.", min=1)] = 16,
    client_timeout: ClientTimeoutOpt = 60.0,
    max_frame_mb: Annotated[float, typer.Option(help="Cap on a request's decoded tensors for models with dynamic dims "
                                                     "(static ones are capped by their shapes).", min=0.001)] = 256,
    max_batch: Annotated[int, typer.Option(help="Batch concurrent requests up to N rows (models with a dynamic batch).", min=1)] = 1,
    max_wait_ms: Annotated[float, typer.Option(help="How long a request waits for others to batch with.", min=0)] = 2.0,
) -> None:
    """Serve cloud halves of split models over TCP for `deploypipe.partition.client` edges."""
    from contextlib import ExitStack

    from deploypipe.partition.server import CloudServer, load_executors

    with ExitStack() as stack:
        server = CloudServer(load_executors(paths, threads, stack), host, port, token_file=token_file,
                             insecure_no_auth=insecure_no_auth, max_clients=max_clients,
                             client_timeout=client_timeout, max_frame_bytes=int(max_frame_mb * 2**20),
                             max_batch=max_batch, max_wait_ms=max_wait_ms)
        batched = f" (batching {', '.join(server.batchers)} up to {max_batch})" if server.batchers else ""
        sys.stdout.write(f"serving {', '.join(server.executors)} on {host}:{server.port}{batched}\n")
        sys.stdout.flush()
        server.serve_forever()


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="Reference model: .onnx file or artifact folder (usually FP32).")],
    b: Annotated[Path, typer.Argument(help="Model to check: .onnx file or artifact folder (e.g. FP16/INT8).")],
    samples: Annotated[int, typer.Option(help="Synthetic input samples (ignored with --inputs).", min=1)] = 4,
    inputs: Annotated[Path | None, typer.Option(help=".npz with one array per input name.")] = None,
    rtol: Annotated[float, typer.Option(help="Relative L2 error beyond which a layer diverges.", min=1e-9)] = 0.05,
    top: Annotated[int, typer.Option(help="How many most-harmful layers to name.", min=1)] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Run two models layer by layer on the same input and name the first layer that diverges."""
    from deploypipe.analysis.layerdiff import diff_paths, render

    report = diff_paths(a, b, samples=samples, rtol=rtol, inputs=inputs)
    if as_json:
        emit_json(report.to_dict())
    else:
        out.print(render(report, top), highlight=False)


def _mount_backends() -> None:
    """Each backend's sub-commands as `deploypipe <backend> ...`, plus the old top-level spellings
    (`tune`, `device-app`, `trt-build`, `edgetpu-report`) as hidden aliases, kept for one release."""
    from deploypipe.backends import CLI_APPS
    from deploypipe.registry import resolve

    for name in CLI_APPS:
        app.add_typer(resolve(CLI_APPS, name), name=name)
    aliases = {"tune": ("tvm", "tune"), "device-app": ("tvm", "device-app"),
               "trt-build": ("tensorrt", "build-engine"), "edgetpu-report": ("edgetpu", "report")}
    for old, (backend, new) in aliases.items():
        sub = resolve(CLI_APPS, backend)
        cmd = next(c for c in sub.registered_commands if (c.name or c.callback.__name__.replace("_", "-")) == new)
        app.command(old, hidden=True, help=f"Old spelling of `deploypipe {backend} {new}`.")(cmd.callback)


_mount_backends()


def _fail(message: str, code: int) -> int:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # '[extra]' is not markup
    return code


def _interrupted() -> int:
    from deploypipe import interrupt

    sig = interrupt.received() or "SIGINT"
    err.print(f"interrupted ({sig}): stopped; nothing half-written was left", highlight=False)
    return 143 if sig == "SIGTERM" else 130


def run(args: list[str] | None = None) -> int:
    """Run the app and map every outcome to an exit code, each failure to one line on stderr.

    typer (standalone_mode=False) *returns* the code of `typer.Exit` and of an interrupt (130)
    instead of exiting, so the code is taken from its return value too. Tests call this in-process.
    """
    from deploypipe.errors import DeployPipeError, InternalError

    _state["debug"] = False
    try:
        code = app(args=args, standalone_mode=False, prog_name="deploypipe")  # also under `python -m deploypipe` (completion)
    except DeployPipeError as exc:
        if _state["debug"]:
            raise
        return _fail(str(exc), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted()
    except typer.Exit as exc:
        return exc.exit_code
    except OSError as exc:  # disk full, read-only, permissions, a busy port: the environment, not a bug
        if _state["debug"]:
            raise
        from deploypipe.artifact import os_error

        mapped = os_error(exc, Path(exc.filename or "?"))
        return _fail(str(mapped), mapped.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        # typer >= 0.20 raises its vendored copy of click's exceptions (typer._click), not click's
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            return _fail(exc.format_message(), exc.exit_code)  # type: ignore[attr-defined]
        if _state["debug"]:
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (re-run as `deploypipe --debug {' '.join((args or sys.argv[1:])[:1]) or 'COMMAND'} ...` for the traceback)",
                     InternalError.exit_code)
    if code == 130:
        return _interrupted()
    return code if isinstance(code, int) else 0


def main() -> None:
    """Entry point: `run()` with SIGINT/SIGTERM routed through deploypipe.interrupt (a build stops at
    its next safe point, so no native call is torn apart; staging folders are removed)."""
    from deploypipe import interrupt

    interrupt.install()
    sys.exit(run())
