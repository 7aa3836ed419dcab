"""The `deploypipe` command: a thin Typer layer that builds the same config objects the API takes.

Every error deploypipe raises on purpose becomes one line on stderr and a distinct exit code;
anything else is an internal error (traceback only with --debug).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# add_completion: `deploypipe --install-completion` (bash, zsh, fish, PowerShell), see README
app = typer.Typer(
    add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Take DNN models to edge devices and measure what each optimization buys.",
)
# Piped output gets a wide fixed width so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, never wrapped
_state = {"debug": False}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def _progress(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the stage and its elapsed time on stderr (never stdout: --json stays clean);
    a bar with the time left when a message is a `Step` that knows its total."""
    from rich import progress as rp

    with rp.Progress(rp.SpinnerColumn(), rp.TextColumn("{task.description}"), rp.BarColumn(), rp.TimeElapsedColumn(),
                     rp.TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def say(message: str) -> None:
            total, done = getattr(message, "total", None), getattr(message, "done", 0)
            current = bar.tasks[0]
            if total != current.total or done < current.completed or (total is None and message != current.description):
                bar.reset(task, total=total)  # a new stage: its own elapsed time and rate
            bar.update(task, description=message, completed=done)

        yield say


def _parse_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    from deploypipe.errors import UserError

    shapes = {}
    for v in values:
        name, sep, dims = v.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise UserError(f"--input-shape '{v}': expected NAME=1x3x224x224") from None
    return shapes


def _parse_tolerance(values: list[str]) -> dict[str, float]:
    from deploypipe.errors import UserError

    tol = {}
    for v in values:
        key, sep, num = v.partition("=")
        try:
            tol[key] = float(num) if sep else float("nan")
        except ValueError:
            raise UserError(f"--tolerance '{v}': expected KEY=NUMBER, e.g. min_top1_agreement=0.99") from None
    return tol


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug


@app.command()
def build(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file (.onnx, .pt, .pt2, ...).")],
    target: Annotated[str, typer.Option("--target", "-t", help="Device name (see `deploypipe targets`).")] = "host-cpu",
    compiler: Annotated[str | None, typer.Option(help="Compiler; default: the target's.")] = None,
    quantize: Annotated[str | None, typer.Option(help="fp16 or int8.")] = None,
    prune: Annotated[float | None, typer.Option(help="Structured channel-pruning ratio, 0-1.")] = None,
    passes: Annotated[str | None, typer.Option("--passes", help="Pass recipe name or .toml file.")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifacts folder.")] = Path("artifacts"),
    name: Annotated[str | None, typer.Option(help="Artifact folder name.")] = None,
    weights: Annotated[Path | None, typer.Option(help="Real pretrained weights (state_dict) for a zoo model.")] = None,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224; repeatable.")] = [],  # noqa: B006
    tolerance: Annotated[list[str], typer.Option(help="Fidelity gate override KEY=VALUE; repeatable.")] = [],  # noqa: B006
    allow_pickle: Annotated[bool, typer.Option(help="Allow loading pickled modules (runs their code).")] = False,
    strict: Annotated[bool, typer.Option(help="Refuse instead of adapting an impossible precision.")] = False,
    force: Annotated[bool, typer.Option(help="Rebuild even if an identical artifact exists.")] = False,
    split: Annotated[str | None, typer.Option(help="Edge/cloud split: 'auto' or the node to cut after.")] = None,
    edge_target: Annotated[str, typer.Option(help="Edge target of a --split build.")] = "rpi4",
    cloud_target: Annotated[str, typer.Option(help="Cloud target of a --split build.")] = "server-gpu",
    network: Annotated[str, typer.Option(help="Network for --split auto: wifi, 4g, 3g, ethernet or BW,RTT.")] = "wifi",
    tune: Annotated[bool, typer.Option("--tune", help="Tune first (TVM MetaSchedule), resuming tuning_logs/.")] = False,
    trials: Annotated[int, typer.Option(help="Total tuning trials to reach with --tune.")] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Build an artifact for a target (or, with --split, an edge and a cloud artifact plus a plan)."""
    from deploypipe.api import BuildConfig
    from deploypipe.api import build as do_build
    from deploypipe.importers import ImportOptions

    cfg = BuildConfig(
        model=model, target=target, compiler=compiler, quantize=quantize, prune=prune, recipe=passes,  # type: ignore[arg-type]
        output=output, name=name, strict=strict, force=force, tolerance=_parse_tolerance(tolerance),
        tune_trials=trials if tune else 0,
        import_options=ImportOptions(weights=weights, input_shapes=_parse_shapes(input_shape), allow_pickle=allow_pickle),
    )
    if split is not None:
        from deploypipe.partition.build import build_split

        with _progress("building split") as say:
            split_report = build_split(cfg, split, edge_target, cloud_target, network, say)
        if as_json:
            _emit_json({"path": str(split_report.path), "plan": split_report.plan})
        else:
            out.print(split_report.summary(), highlight=False)
        return
    with _progress("building") as say:
        report = do_build(cfg, progress=say)
    if as_json:
        _emit_json({"path": str(report.path), "cached": report.cached, "manifest": report.manifest.model_dump()})
    else:
        out.print(report.summary(), highlight=False)


def _parse_threads(value: str | None) -> list[int | None]:
    from deploypipe.errors import UserError

    if not value:
        return [None]
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--threads '{value}': expected a number or a list like 1,2,4") from None


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
    iterations: Annotated[int, typer.Option(help="Timed runs per artifact (at least).")] = 30,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 5,
    min_seconds: Annotated[float, typer.Option(help="Keep timing for at least this long.")] = 1.0,
    threads: Annotated[str | None, typer.Option(help="Runtime threads, or a sweep: 1,2,4.")] = None,
    affinity: Annotated[list[str], typer.Option(help="Core set(s) to pin to: '0' or a sweep '0/0,1'; repeatable.")] = [],  # noqa: B006
    repeats: Annotated[int, typer.Option(help="Fresh-process runs per point; reports the spread of medians.")] = 1,
    batch: Annotated[int, typer.Option(help="Throughput: time N back-to-back batch-1 runs (0: skip).")] = 0,
    workers: Annotated[int, typer.Option(help="Throughput with K runner instances at once.")] = 1,
    concurrency: Annotated[int, typer.Option(help="Also run K artifacts at once (memory-bounded).")] = 1,
    memory_limit_mb: Annotated[float | None, typer.Option(help="Memory bound for --concurrency (default: 80% of free).")] = None,
    energy: Annotated[str, typer.Option(help="auto, rapl, rails, nvidia-smi, estimate or off.")] = "auto",
    scenario: Annotated[str | None, typer.Option(help="Also run an MLPerf LoadGen scenario: singlestream, offline or server.")] = None,
    loadgen_dir: Annotated[Path, typer.Option(help="Where LoadGen logs go.")] = Path("loadgen"),
    server_qps: Annotated[float, typer.Option(help="Target QPS of the Server scenario.")] = 10.0,
    profile: Annotated[bool, typer.Option(help="Collect per-layer times.")] = False,
    trace_dir: Annotated[Path | None, typer.Option(help="With --profile: write a Chrome trace JSON per artifact here.")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column (the default table fits 100 columns).")] = False,
    columns: Annotated[str | None, typer.Option(help="Columns to show, e.g. artifact,p50,ips,speedup (see docs/bench.md).")] = None,
    remote: Annotated[str | None, typer.Option(help="HOST:PORT of a `deploypipe serve-runtime` to run on.")] = None,
    calibration: Annotated[Path | None, typer.Option(help="Cost-model calibration JSON (default: fitted on this run).")] = None,
    json_file: Annotated[Path | None, typer.Option("--json-file", help="Also save results to this JSON file.")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also save results to this CSV file.")] = None,
    rpc: Annotated[str | None, typer.Option(help="Run TVM artifacts on this RPC server, HOST:PORT.")] = None,
    tracker: Annotated[str | None, typer.Option(help="RPC tracker HOST:PORT; with --key, any free board.")] = None,
    key: Annotated[str | None, typer.Option(help="Device key registered with the tracker.")] = None,
    emulate: Annotated[bool, typer.Option(help="Run TVM libraries for ARM boards here under qemu (correctness only).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark every artifact under PATHS and print one comparison table."""
    from deploypipe.bench import BenchConfig, SweepConfig, run_bench
    from deploypipe.bench.table import pick_columns, render, write_csv

    if rpc or tracker or key:
        from deploypipe.runtime.tvm_rpc import RemoteSpec

        RemoteSpec(rpc=rpc, tracker=tracker, key=key)  # a wrong combination is one error before any run
    from pydantic import ValidationError

    from deploypipe.errors import UserError

    shown = pick_columns(columns, wide)  # a wrong column name fails before any run
    if trace_dir is not None and not profile:
        raise UserError("--trace-dir needs --profile (the traces are the per-layer profile)")
    if trace_dir is not None and remote:
        raise UserError("--trace-dir with --remote: the traces would be written on the remote machine; drop one")

    try:
        cfg = BenchConfig(iterations=iterations, warmup=warmup, min_seconds=min_seconds, profile=profile, batch=batch,
                          workers=workers, energy=energy, scenario=scenario.lower() if scenario else None,  # type: ignore[arg-type]
                          loadgen_dir=str(loadgen_dir), server_qps=server_qps, rpc=rpc, tracker=tracker, key=key,
                          emulate=emulate, trace_dir=str(trace_dir.resolve()) if trace_dir else None)
        sweep = SweepConfig(threads=_parse_threads(threads), affinity=_parse_affinity(affinity), repeats=repeats,
                            concurrency=concurrency, memory_limit_mb=memory_limit_mb)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}") from None
    with _progress("benchmarking") as say:
        results = run_bench(paths, cfg, progress=say, sweep=sweep, remote=remote,
                            calibration=calibration)
    data = [r.model_dump() for r in results]
    if json_file:
        json_file.write_text(json.dumps(data, indent=2))
    if csv_file:
        write_csv(results, csv_file)
    if as_json:
        _emit_json(data)
    else:
        out.print(render(results, shown))


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """What this machine can build and run: backends, CPU features, toolchains, GPUs, per target.

    Run it first after installing. Missing pieces are warnings (exit 0) with their install hint.
    """
    from deploypipe.doctor import diagnose, render

    report = diagnose()
    if as_json:
        _emit_json(report)
    else:
        out.print(render(report), highlight=False)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Zoo name or model file.")],
    layers: Annotated[bool, typer.Option(help="Print the per-layer table.")] = True,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224; repeatable.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Params, MACs, FLOP/param, op histogram and per-layer output sizes of a model."""
    from deploypipe.analysis import analyze
    from deploypipe.importers import ImportOptions, import_model
    from deploypipe.inspect_view import render_stats

    m = import_model(model, ImportOptions(input_shapes=_parse_shapes(input_shape)))
    stats = analyze(m.proto)
    if as_json:
        _emit_json({"model": m.name, "inputs": [i.model_dump() for i in m.inputs], **stats.to_dict()})
    else:
        out.print(render_stats(m, stats, layers))


@app.command()
def models(as_json: JsonOpt = False, compute: Annotated[bool, typer.Option(help="Export each model and compute its figures (slow).")] = False) -> None:
    """List the zoo, with published params/MACs (and computed ones with --compute)."""
    from deploypipe.inspect_view import zoo_rows, zoo_table

    rows = zoo_rows(compute)
    if as_json:
        _emit_json(rows)
    else:
        out.print(zoo_table(rows))


@app.command("targets")
def list_targets(as_json: JsonOpt = False) -> None:
    """List devices with their compilers and the precisions each really supports."""
    from deploypipe import targets as tg
    from deploypipe.inspect_view import targets_table

    specs = tg.all_targets()
    if as_json:
        _emit_json({n: s.model_dump() for n, s in specs.items()})
    else:
        out.print(targets_table(list(specs.values())))


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
        _emit_json(result)
    else:
        out.print(f"{artifact}: {'OK' if result['passed'] else 'FAILED'} — {result['detail']}", highlight=False)
    if not result["passed"]:
        raise typer.Exit(5)


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="Results JSON saved by `deploypipe bench --json-file`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path("report.html"),
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report (tables and plots) of bench results."""
    from deploypipe.bench.report import write_report

    path = write_report(results, output, title)
    if as_json:
        _emit_json({"report": str(path)})
    else:
        out.print(f"wrote {path}", highlight=False)


@app.command("serve-runtime")
def serve_runtime(
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed).")] = 9190,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for the network).")] = "127.0.0.1",
    max_requests: Annotated[int | None, typer.Option(help="Stop after this many artifacts.")] = None,
    idle_timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds without a request.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Refuse artifacts larger than this.")] = 2048,
    as_json: JsonOpt = False,
) -> None:
    """Measure artifacts sent by `deploypipe bench --remote HOST:PORT` on this machine."""
    from deploypipe.bench.remote import serve

    def ready(h: str, p: int) -> None:
        if as_json:
            _emit_json({"listening": f"{h}:{p}"})
        else:
            out.print(f"serving deploypipe bench on {h}:{p}", highlight=False)
        sys.stdout.flush()

    served = serve(host, port, max_requests, idle_timeout, max_upload_mb, on_ready=ready)
    if not as_json:
        out.print(f"served {served} request(s)", highlight=False)


@app.command("trt-build")
def trt_build(
    artifact: Annotated[Path, typer.Argument(help="A TensorRT artifact folder (from `build --target jetson-*/server-gpu`).")],
    any_gpu: Annotated[bool, typer.Option(help="Build even if this GPU is not the target's architecture.")] = False,
    implicit: Annotated[bool, typer.Option(help="INT8 only: implicit INT8 from the FP32 ONNX + calibration cache.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """On the device: build the TensorRT engine of an artifact and record GPU and TensorRT in its manifest."""
    from deploypipe.compilers.trt_engine import trt_build as do_trt_build

    with err.status("building the TensorRT engine"):
        facts = do_trt_build(artifact, any_gpu=any_gpu, implicit=implicit)
    if as_json:
        _emit_json(facts)
    else:
        g = facts["golden_check"]
        out.print(f"built {artifact}/model.engine on {facts['gpu']} (SM {facts['sm']}), TensorRT {facts['tensorrt']} "
                  f"({facts['built_with']}); golden check: max abs err {g['max_abs_err']:.3g}, cosine {g['cosine']:.5f} "
                  f"({g['where']})", highlight=False)


@app.command("device-app")
def device_app(
    target: Annotated[str, typer.Option("--target", "-t", help="Device whose CPU the app is for (its TVM options).")] = "rpi3",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write deploypipe-run into.")] = Path("device-app"),
    as_json: JsonOpt = False,
) -> None:
    """Build deploypipe-run, the no-Python app that runs a TVM artifact's model.so on the device."""
    import shutil

    from deploypipe import native, targets
    from deploypipe.compilers.tvm import TvmOptions
    from deploypipe.errors import UnsupportedError

    spec = targets.get(target)
    if "tvm" not in spec.compilers:
        raise UnsupportedError(f"target {target} has no TVM compiler: deploypipe-run runs TVM artifacts only")
    opts = TvmOptions(**spec.compilers["tvm"].options)
    with _progress(f"building deploypipe-run for {target} ({opts.arch()})") as say:
        binary = native.build_runner(opts.arch(), opts.cross_compiler, progress=say)
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{native.RUNNER}.tmp"
    shutil.copy2(binary, tmp)
    tmp.replace(output / native.RUNNER)
    facts = {"path": str(output / native.RUNNER), "arch": opts.arch(), "compiler": native.compiler_for(opts.arch(), opts.cross_compiler)}
    if as_json:
        _emit_json(facts)
    else:
        out.print(f"wrote {facts['path']} ({facts['arch']}, {facts['compiler']}); on the board: "
                  f"{native.RUNNER} model.so --input float32:1x3x224x224:input.bin --output-dir out "
                  "[--repeat N --threads T] (see docs/tvm.md)", highlight=False)


@app.command("partition")
def partition_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file.")],
    edge: Annotated[str, typer.Option(help="Edge target (measured if it is this host, else predicted).")] = "rpi4",
    cloud: Annotated[str, typer.Option(help="Cloud target.")] = "server-gpu",
    network: Annotated[str, typer.Option(help="wifi, 4g, 3g, ethernet or BW_MBPS,RTT_MS.")] = "wifi",
    objective: Annotated[str, typer.Option(help="latency or energy.")] = "latency",
    deadline: Annotated[float | None, typer.Option(help="Latency budget in ms (Edgent).")] = None,
    compression: Annotated[str, typer.Option(help="none, int8, zlib, int8+zlib (lz4 if installed).")] = "none",
    max_tensors: Annotated[int | None, typer.Option(help="Only cuts where at most N tensors cross.")] = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads for host measurements.")] = 1,
    best_only: Annotated[bool, typer.Option(help="Print only the best, edge-only and cloud-only rows.")] = False,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224; repeatable.")] = [],  # noqa: B006
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
        compression=compression, max_tensors=max_tensors, threads=threads,
        import_options=ImportOptions(input_shapes=_parse_shapes(input_shape)),
    )
    with err.status("profiling cut points"):
        report = partition(cfg)
    if as_json:
        _emit_json(report.model_dump())
    else:
        out.print(render(report, all_rows=not best_only))


@app.command()
def serve(
    paths: Annotated[list[Path], typer.Argument(help="Cloud artifact folders, split build folders or .onnx files.")],
    host: Annotated[str, typer.Option(help="Address to bind (no authentication: keep it local).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one (printed).")] = 8765,
    threads: Annotated[int | None, typer.Option(help="Runtime threads per model.")] = None,
) -> None:
    """Serve cloud halves of split models over TCP for `deploypipe.partition.client` edges."""
    from contextlib import ExitStack

    from deploypipe.partition.server import CloudServer, load_executors

    with ExitStack() as stack:
        server = CloudServer(load_executors(paths, threads, stack), host, port)
        sys.stdout.write(f"serving {', '.join(server.executors)} on {host}:{server.port}\n")
        sys.stdout.flush()
        try:
            server.serve_forever()
        finally:
            server.server_close()


@app.command("edgetpu-report")
def edgetpu_report(
    path: Annotated[Path, typer.Argument(help="A .tflite file or a tflite/edgetpu artifact folder.")],
    onchip_mib: Annotated[float, typer.Option(help="Edge TPU on-chip parameter memory, MiB.")] = 8.0,
    as_json: JsonOpt = False,
) -> None:
    """Which ops of an int8 TFLite model map to the Edge TPU and which fall back to the CPU, by node."""
    from rich.table import Table

    from deploypipe.compilers.edgetpu import report_for, report_table

    report = report_for(path, onchip_mib)
    if as_json:
        _emit_json(report.model_dump())
        return
    table = Table(title=f"{report.summary()} (predicted offline from Coral's published rules)")
    for col in ("#", "op", "v", "runs on", "node", "reason"):
        table.add_column(col)
    for row in report_table(report):
        table.add_row(*row, style=None if row[3] == "TPU" else "yellow")
    out.print(table)
    for issue in report.model_issues:
        out.print(f"model: {issue}")
    out.print(f"TPU parameters {report.parameter_bytes / 2**20:.2f} MiB; on-chip {report.onchip_memory_bytes / 2**20:g} MiB; "
              f"streamed off-chip {report.offchip_parameter_bytes / 2**20:.2f} MiB")


@app.command()
def tune(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Device name.")] = "host-cpu",
    trials: Annotated[int, typer.Option(help="Total measured schedules to reach (resumes the database).")] = 64,
    quantize: Annotated[str | None, typer.Option(help="Tune the fp16/int8 graph instead of FP32.")] = None,
    budget: Annotated[float | None, typer.Option(help="Stop after this many seconds (resume later).")] = None,
    trials_per_iter: Annotated[int, typer.Option(help="Candidates measured per task per round.")] = 16,
    rpc: Annotated[str | None, typer.Option(help="Measure candidates on this RPC server, HOST:PORT.")] = None,
    tracker: Annotated[str | None, typer.Option(help="RPC tracker HOST:PORT; with --key.")] = None,
    key: Annotated[str | None, typer.Option(help="Device key registered with the tracker.")] = None,
    tuning_logs: Annotated[Path, typer.Option(help="Root of the tuning databases.")] = Path("tuning_logs"),
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224; repeatable.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Tune a model for a target with TVM MetaSchedule into tuning_logs/<model>/<target>/."""
    from deploypipe.compilers.tvm_tune import TuneConfig, tune_model
    from deploypipe.importers import ImportOptions
    from deploypipe.runtime.tvm_rpc import RemoteSpec

    cfg = TuneConfig(model=model, target=target, trials=trials, quantize=quantize, budget_s=budget,  # type: ignore[arg-type]
                     trials_per_iter=trials_per_iter, remote=RemoteSpec(rpc=rpc, tracker=tracker, key=key),
                     tuning_logs=tuning_logs, import_options=ImportOptions(input_shapes=_parse_shapes(input_shape)))
    with _progress("tuning") as say:
        report = tune_model(cfg, progress=say)
    if as_json:
        _emit_json(report.model_dump())
    else:
        out.print(report.summary(), highlight=False)


@app.command()
def diff(
    a: Annotated[Path, typer.Argument(help="Reference model: .onnx file or artifact folder (usually FP32).")],
    b: Annotated[Path, typer.Argument(help="Model to check: .onnx file or artifact folder (e.g. FP16/INT8).")],
    samples: Annotated[int, typer.Option(help="Synthetic input samples (ignored with --inputs).")] = 4,
    inputs: Annotated[Path | None, typer.Option(help=".npz with one array per input name.")] = None,
    rtol: Annotated[float, typer.Option(help="Relative L2 error beyond which a layer diverges.")] = 0.05,
    top: Annotated[int, typer.Option(help="How many most-harmful layers to name.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Run two models layer by layer on the same input and name the first layer that diverges."""
    from deploypipe.layerdiff import diff_paths, render

    report = diff_paths(a, b, samples=samples, rtol=rtol, inputs=inputs)
    if as_json:
        _emit_json(report.to_dict())
    else:
        out.print(render(report, top), highlight=False)


def main() -> None:
    """Entry point: run the app, turning deploypipe errors into one line and an exit code."""
    from deploypipe.errors import DeployPipeError, InternalError

    try:
        app(standalone_mode=False, prog_name="deploypipe")  # also under `python -m deploypipe` (completion)
    except DeployPipeError as exc:
        if _state["debug"]:
            raise
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # '[extra]' is not markup
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted: nothing was written")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        # typer >= 0.20 raises its vendored copy of click's exceptions (typer._click), not click's
        if any(cls.__name__ == "ClickException" for cls in type(exc).__mro__):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
                  highlight=False)
        sys.exit(InternalError.exit_code)
