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
from rich.console import Console

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Take DNN models to edge devices and measure what each optimization buys.",
)
# Piped output gets a wide fixed width so tables are not cut to 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)
_state = {"debug": False}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


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
    as_json: JsonOpt = False,
) -> None:
    """Build an artifact for a target."""
    from deploypipe.api import BuildConfig
    from deploypipe.api import build as do_build
    from deploypipe.importers import ImportOptions

    cfg = BuildConfig(
        model=model, target=target, compiler=compiler, quantize=quantize, prune=prune, recipe=passes,  # type: ignore[arg-type]
        output=output, name=name, strict=strict, force=force, tolerance=_parse_tolerance(tolerance),
        import_options=ImportOptions(weights=weights, input_shapes=_parse_shapes(input_shape), allow_pickle=allow_pickle),
    )
    with err.status("building") as status:
        report = do_build(cfg, progress=lambda m: status.update(m))
    if as_json:
        _emit_json({"path": str(report.path), "cached": report.cached, "manifest": report.manifest.model_dump()})
    else:
        out.print(report.summary(), highlight=False)


@app.command()
def bench(
    paths: Annotated[list[Path], typer.Argument(help="Artifact folders or folders holding them.")],
    iterations: Annotated[int, typer.Option(help="Timed runs per artifact (at least).")] = 30,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 5,
    threads: Annotated[int | None, typer.Option(help="Runtime threads.")] = None,
    profile: Annotated[bool, typer.Option(help="Collect per-layer times.")] = False,
    json_file: Annotated[Path | None, typer.Option("--json-file", help="Also save results to this JSON file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark every artifact under PATHS and print one comparison table."""
    from deploypipe.bench import BenchConfig, run_bench
    from deploypipe.bench.table import render

    cfg = BenchConfig(iterations=iterations, warmup=warmup, threads=threads, profile=profile)
    with err.status("benchmarking") as status:
        results = run_bench(paths, cfg, progress=lambda m: status.update(m))
    data = [r.model_dump() for r in results]
    if json_file:
        json_file.write_text(json.dumps(data, indent=2))
    if as_json:
        _emit_json(data)
    else:
        out.print(render(results))


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
        app(standalone_mode=False)
    except DeployPipeError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted: nothing was written")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if _state["debug"]:
            raise
        err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} (re-run with --debug for the traceback)",
                  highlight=False)
        sys.exit(InternalError.exit_code)
