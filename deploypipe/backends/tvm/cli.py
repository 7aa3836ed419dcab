"""`deploypipe tvm ...`: MetaSchedule tuning and the no-Python device app.

Mounted by `deploypipe --help`, so this module imports only Typer and the CLI helpers; what a
command needs (the registry imports onnx and numpy) is imported when it runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from deploypipe.cliutil import JsonOpt, choice, emit_json, old_device_flags, out, parse_shapes, progress_bar
from deploypipe.errors import UserError

app = typer.Typer(no_args_is_help=True, help="Apache TVM: tune schedules, build the device app.")


@app.command()
def tune(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo name or model file.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Device name.")] = "host-cpu",
    trials: Annotated[int, typer.Option(help="Total measured schedules to reach (resumes the database).", min=1)] = 64,
    quantize: Annotated[str | None, typer.Option(help="Tune the fp16/int8 graph instead of FP32.",
                                                 callback=choice("--quantize", ("fp16", "int8")))] = None,
    budget: Annotated[float | None, typer.Option(help="Stop after this many seconds (resume later).", min=0.1)] = None,
    tune_minutes: Annotated[float | None, typer.Option(help="Stop after this many minutes (same as --budget in minutes).",
                                                       min=0.01)] = None,
    trials_per_iter: Annotated[int, typer.Option(help="Candidates measured per task per round.", min=1)] = 16,
    device: Annotated[str | None, typer.Option(help="Measure on a board: rpc://HOST:PORT or tracker://HOST:PORT/KEY.")] = None,
    rpc: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --device rpc://HOST:PORT.")] = None,
    tracker: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --device tracker://HOST:PORT/KEY.")] = None,
    key: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --device tracker://HOST:PORT/KEY.")] = None,
    tuning_logs: Annotated[Path, typer.Option(help="Root of the tuning databases.")] = Path("tuning_logs"),
    retime: Annotated[bool, typer.Option(help="First time every record in the database again where this run measures "
                                         "(a database from another host, or timed by an older deploypipe).")] = False,
    input_shape: Annotated[list[str], typer.Option(help="NAME=1x3x224x224; repeatable.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Tune a model for a target with TVM MetaSchedule into tuning_logs/<model>/<target>/."""
    from deploypipe.api import TuneConfig
    from deploypipe.api import tune as do_tune
    from deploypipe.backends.tvm.rpc import RemoteSpec
    from deploypipe.importers import ImportOptions

    if budget is not None and tune_minutes is not None:
        raise UserError("give one of --budget SECONDS or --tune-minutes MINUTES")
    if tune_minutes is not None:
        budget = tune_minutes * 60
    device = device or old_device_flags(rpc, tracker, key, emulate=False)
    RemoteSpec.from_device(device)  # a malformed spec is one error before any work
    cfg = TuneConfig(model=model, target=target, trials=trials, quantize=quantize, budget_s=budget,  # type: ignore[arg-type]
                     trials_per_iter=trials_per_iter, device=device, tuning_logs=tuning_logs, retime=retime,
                     import_options=ImportOptions(**parse_shapes(input_shape)))
    with progress_bar("tuning") as say:
        report = do_tune(cfg, progress=say)
    if as_json:
        emit_json(report.model_dump())
    else:
        out.print(report.summary(), highlight=False)


@app.command("device-app")
def device_app(
    target: Annotated[str, typer.Option("--target", "-t", help="Device whose CPU the app is for (its TVM options).")] = "rpi3",
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write deploypipe-run into.")] = Path("device-app"),
    as_json: JsonOpt = False,
) -> None:
    """Build deploypipe-run, the no-Python app that runs a TVM artifact's model.so on the device."""
    from deploypipe import targets
    from deploypipe.backends import compiler_options
    from deploypipe.backends.tvm import native
    from deploypipe.backends.tvm.facts import TvmOptions
    from deploypipe.errors import UnsupportedError

    spec = targets.get(target)
    if "tvm" not in spec.compilers:
        raise UnsupportedError(f"target {target} has no TVM compiler: deploypipe-run runs TVM artifacts only")
    opts: TvmOptions = compiler_options("tvm", spec)
    with progress_bar(f"building deploypipe-run for {target} ({opts.arch()})") as say:
        binary = native.build_runner(opts.arch(), opts.cross_compiler, progress=say)
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / f".{native.RUNNER}.tmp"
    shutil.copy2(binary, tmp)
    tmp.replace(output / native.RUNNER)
    facts = {"path": str(output / native.RUNNER), "arch": opts.arch(), "compiler": native.compiler_for(opts.arch(), opts.cross_compiler)}
    if as_json:
        emit_json(facts)
    else:
        out.print(f"wrote {facts['path']} ({facts['arch']}, {facts['compiler']}); on the board: "
                  f"{native.RUNNER} model.so --input float32:1x3x224x224:input.bin --output-dir out "
                  "[--repeat N --threads T] (see docs/tvm.md)", highlight=False)
