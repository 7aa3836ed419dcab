"""A corpus of bad inputs over every command: each gets its exit code, exactly one line on stderr,
no traceback, and leaves nothing behind (issue 17). Run in-process through `cli.run`, the same
error mapping `main()` uses; a handful run as real subprocesses to hold the entry point to it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import ROOT, tiny_classifier

from deploypipe.cli import run

D = "{d}"  # the data folder
CASES: list[tuple[str, list[str], int, str]] = [
    # build
    ("build-no-model", ["build"], 2, "Missing option"),
    ("build-unknown-zoo", ["build", "-m", "resnet5"], 2, "unknown model"),
    ("build-missing-file", ["build", "-m", f"{D}/missing.onnx"], 2, "no such file"),
    ("build-bad-suffix", ["build", "-m", f"{D}/notes.xyz"], 2, "unsupported model format"),
    ("build-garbage-onnx", ["build", "-m", f"{D}/garbage.onnx"], 2, "not a valid ONNX model"),
    ("build-garbage-pt2", ["build", "-m", f"{D}/garbage.pt2"], 2, "not an ExportedProgram"),
    ("build-truncated-pt", ["build", "-m", f"{D}/truncated.pt", "--input-shape", "x=1x4"], 2, "corrupt or truncated"),
    ("build-pickled-pt", ["build", "-m", f"{D}/module.pt", "--input-shape", "x=1x4"], 2, "--allow-pickle"),
    ("build-quantize-int4", ["build", "-m", f"{D}/tiny.onnx", "--quantize", "int4"], 2, "unknown --quantize 'int4'"),
    ("build-quantize-empty", ["build", "-m", f"{D}/tiny.onnx", "--quantize", ""], 2, "--quantize"),
    ("build-prune-1.5", ["build", "-m", f"{D}/tiny.onnx", "--prune", "1.5"], 2, "--prune 1.5"),
    ("build-prune-0", ["build", "-m", f"{D}/tiny.onnx", "--prune", "0"], 2, "--prune"),
    ("build-prune-negative", ["build", "-m", f"{D}/tiny.onnx", "--prune", "-0.2"], 2, "--prune"),
    ("build-prune-text", ["build", "-m", f"{D}/tiny.onnx", "--prune", "half"], 2, "--prune"),
    ("build-shape-zero", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "input=0x3x8x8"], 2, "between 1 and"),
    ("build-shape-no-dims", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "input"], 2, "expected NAME="),
    ("build-shape-text", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "input=axb"], 2, "expected NAME="),
    ("build-shape-no-name", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "=1x3x16x16"], 2, "expected NAME="),
    ("build-shape-unknown-input", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "nope=1x3x16x16"], 2,
     "has no input 'nope'"),
    ("build-shape-wrong-rank", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "input=1x3"], 2, "rank"),
    ("build-shape-fixed-dim", ["build", "-m", f"{D}/tiny.onnx", "--input-shape", "input=1x3x8x8"], 2, "fixed"),
    ("build-tolerance-unknown", ["build", "-m", f"{D}/tiny.onnx", "--tolerance", "no_such_key=1"], 2,
     "unknown --tolerance key"),
    ("build-tolerance-no-value", ["build", "-m", f"{D}/tiny.onnx", "--tolerance", "min_cosine"], 2, "KEY=NUMBER"),
    ("build-tolerance-text", ["build", "-m", f"{D}/tiny.onnx", "--tolerance", "min_cosine=high"], 2, "KEY=NUMBER"),
    ("build-tolerance-negative", ["build", "-m", f"{D}/tiny.onnx", "--tolerance", "min_cosine=-1"], 2, ">= 0"),
    ("build-name-dotdot", ["build", "-m", f"{D}/tiny.onnx", "-o", "out", "--name", ".."], 2, "one folder name"),
    ("build-name-escape", ["build", "-m", f"{D}/tiny.onnx", "-o", "out", "--name", "../x"], 2, "one folder name"),
    ("build-name-slash", ["build", "-m", f"{D}/tiny.onnx", "-o", "out", "--name", "a/b"], 2, "one folder name"),
    ("build-name-empty", ["build", "-m", f"{D}/tiny.onnx", "-o", "out", "--name", ""], 2, "one folder name"),
    ("build-name-hidden", ["build", "-m", f"{D}/tiny.onnx", "-o", "out", "--name", ".x"], 2, "one folder name"),
    ("build-name-absolute", ["build", "-m", f"{D}/tiny.onnx", "--name", f"{D}/abs-name"], 2, "one folder name"),
    ("build-foreign-folder", ["build", "-m", f"{D}/tiny.onnx", "-o", D, "--name", "precious"], 2,
     "not a deploypipe artifact"),
    ("build-output-is-file", ["build", "-m", f"{D}/tiny.onnx", "-o", f"{D}/tiny.onnx"], 2, "is a file"),
    ("build-output-under-file", ["build", "-m", f"{D}/tiny.onnx", "-o", "/dev/null/x"], 2, "/dev/null"),
    ("build-unknown-target", ["build", "-m", f"{D}/tiny.onnx", "-t", "raspberry"], 2, "unknown target"),
    ("build-unknown-compiler", ["build", "-m", f"{D}/tiny.onnx", "--compiler", "gcc"], 3, "compiler 'gcc'"),
    ("build-unknown-recipe", ["build", "-m", f"{D}/tiny.onnx", "--passes", "turbo"], 2, "turbo"),
    ("build-trials-zero", ["build", "-m", f"{D}/tiny.onnx", "--tune", "--trials", "0"], 2, "--trials"),
    ("build-split-unknown-node", ["build", "-m", f"{D}/tiny.onnx", "--split", "nope", "--compiler", "onnxruntime",
                                  "-o", "out"], 2, "no valid cut after node 'nope'"),
    ("build-unknown-option", ["build", "-m", f"{D}/tiny.onnx", "--fast"], 2, "--fast"),
    # inspect
    ("inspect-no-model", ["inspect"], 2, "Missing argument"),
    ("inspect-unknown-zoo", ["inspect", "resnet5"], 2, "unknown model"),
    ("inspect-missing-file", ["inspect", f"{D}/missing.onnx"], 2, "no such file"),
    ("inspect-garbage-onnx", ["inspect", f"{D}/garbage.onnx"], 2, "not a valid ONNX model"),
    ("inspect-shape-unknown", ["inspect", f"{D}/tiny.onnx", "--input-shape", "nope=1x3x16x16"], 2, "no input 'nope'"),
    ("inspect-shape-zero", ["inspect", f"{D}/tiny.onnx", "--input-shape", "input=1x0x16x16"], 2, "between 1 and"),
    # diff
    ("diff-one-arg", ["diff", f"{D}/tiny.onnx"], 2, "Missing argument"),
    ("diff-missing", ["diff", f"{D}/tiny.onnx", f"{D}/missing.onnx"], 2, "missing.onnx"),
    ("diff-garbage", ["diff", f"{D}/tiny.onnx", f"{D}/garbage.onnx"], 2, "garbage.onnx"),
    ("diff-samples-zero", ["diff", f"{D}/tiny.onnx", f"{D}/tiny.onnx", "--samples", "0"], 2, "--samples"),
    ("diff-rtol-zero", ["diff", f"{D}/tiny.onnx", f"{D}/tiny.onnx", "--rtol", "0"], 2, "--rtol"),
    ("diff-top-zero", ["diff", f"{D}/tiny.onnx", f"{D}/tiny.onnx", "--top", "0"], 2, "--top"),
    ("diff-inputs-missing", ["diff", f"{D}/tiny.onnx", f"{D}/tiny.onnx", "--inputs", f"{D}/missing.npz"], 2,
     "missing.npz"),
    # bench
    ("bench-no-path", ["bench"], 2, "Missing argument"),
    ("bench-missing-path", ["bench", f"{D}/nowhere"], 2, "no such file or directory"),
    ("bench-nothing-there", ["bench", f"{D}/empty"], 2, "no artifacts"),
    ("bench-nothing-runnable", ["bench", f"{D}/arts-tpu", "--energy", "off"], 3, "nothing was measured"),
    ("bench-iterations-negative", ["bench", f"{D}/arts", "--iterations", "-5"], 2, "--iterations"),
    ("bench-iterations-zero", ["bench", f"{D}/arts", "--iterations", "0"], 2, "--iterations"),
    ("bench-warmup-negative", ["bench", f"{D}/arts", "--warmup", "-1"], 2, "--warmup"),
    ("bench-min-seconds-negative", ["bench", f"{D}/arts", "--min-seconds", "-1"], 2, "--min-seconds"),
    ("bench-threads-text", ["bench", f"{D}/arts", "--threads", "many"], 2, "--threads"),
    ("bench-threads-zero", ["bench", f"{D}/arts", "--threads", "0"], 2, "--threads"),
    ("bench-affinity-text", ["bench", f"{D}/arts", "--affinity", "0,x"], 2, "--affinity"),
    ("bench-affinity-absent-core", ["bench", f"{D}/arts", "--affinity", "4096"], 2, "--affinity"),
    ("bench-energy-unknown", ["bench", f"{D}/arts", "--energy", "solar"], 2, "energy"),
    ("bench-scenario-unknown", ["bench", f"{D}/arts", "--scenario", "burst"], 2, "scenario"),
    ("bench-repeats-zero", ["bench", f"{D}/arts", "--repeats", "0"], 2, "--repeats"),
    ("bench-concurrency-zero", ["bench", f"{D}/arts", "--concurrency", "0"], 2, "--concurrency"),
    ("bench-workers-zero", ["bench", f"{D}/arts", "--workers", "0"], 2, "--workers"),
    ("bench-remote-no-port", ["bench", f"{D}/arts", "--remote", "devicebox"], 2, "HOST:PORT"),
    ("bench-remote-bad-port", ["bench", f"{D}/arts", "--remote", "h:99999"], 2, "HOST:PORT"),
    ("bench-remote-refused", ["bench", f"{D}/arts", "--remote", "127.0.0.1:{closed}"], 2, "refused"),
    ("bench-remote-timeout-zero", ["bench", f"{D}/arts", "--remote", "h:1", "--remote-timeout", "0"], 2,
     "--remote-timeout"),
    ("bench-rpc-and-emulate", ["bench", f"{D}/arts", "--rpc", "nohostport"], 2, "rpc"),
    # check
    ("check-missing", ["check", f"{D}/nowhere"], 2, "not an artifact"),
    ("check-not-artifact", ["check", f"{D}/precious"], 2, "not an artifact"),
    ("check-corrupt", ["check", f"{D}/corrupt"], 2, "corrupt"),
    ("check-strays", ["check", f"{D}/strays"], 5, ""),
    # report
    ("report-missing", ["report", f"{D}/missing.json"], 2, "missing.json"),
    ("report-garbage", ["report", f"{D}/garbage.json"], 2, "garbage.json"),
    ("report-no-arg", ["report"], 2, "Missing argument"),
    # tune
    ("tune-no-model", ["tune"], 2, "Missing option"),
    ("tune-quantize-int4", ["tune", "-m", f"{D}/tiny.onnx", "--quantize", "int4"], 2, "--quantize"),
    ("tune-trials-zero", ["tune", "-m", f"{D}/tiny.onnx", "--trials", "0"], 2, "--trials"),
    ("tune-budget-negative", ["tune", "-m", f"{D}/tiny.onnx", "--budget", "-3"], 2, "--budget"),
    ("tune-minutes-zero", ["tune", "-m", f"{D}/tiny.onnx", "--tune-minutes", "0"], 2, "--tune-minutes"),
    ("tune-budget-and-minutes", ["tune", "-m", f"{D}/tiny.onnx", "--budget", "60", "--tune-minutes", "1"], 2,
     "one of --budget"),
    ("tune-trials-per-iter-zero", ["tune", "-m", f"{D}/tiny.onnx", "--trials-per-iter", "0"], 2, "--trials-per-iter"),
    # serve
    ("serve-no-path", ["serve"], 2, "Missing argument"),
    ("serve-missing", ["serve", f"{D}/missing.onnx"], 2, "missing.onnx"),
    ("serve-not-artifact", ["serve", f"{D}/precious"], 2, "not an artifact"),
    ("serve-port-range", ["serve", f"{D}/tiny.onnx", "--port", "70000"], 2, "--port"),
    ("serve-busy-port", ["serve", f"{D}/tiny.onnx", "--port", "{busy}"], 2, "cannot listen"),
    ("serve-insecure-public", ["serve", f"{D}/tiny.onnx", "--host", "0.0.0.0", "--insecure-no-auth"], 2,
     "loopback only"),
    ("serve-max-clients-zero", ["serve", f"{D}/tiny.onnx", "--max-clients", "0"], 2, "--max-clients"),
    ("serve-open-token", ["serve", f"{D}/tiny.onnx", "--port", "0", "--token-file", f"{D}/open-token"], 2,
     "readable by other users"),
    ("serve-client-timeout-zero", ["serve", f"{D}/tiny.onnx", "--client-timeout", "0"], 2, "--client-timeout"),
    # serve-runtime
    ("serve-runtime-port-range", ["serve-runtime", "--port", "-1"], 2, "--port"),
    ("serve-runtime-busy-port", ["serve-runtime", "--port", "{busy}"], 2, "cannot listen"),
    ("serve-runtime-insecure-public", ["serve-runtime", "--host", "0.0.0.0", "--insecure-no-auth"], 2,
     "loopback only"),
    ("serve-runtime-upload-zero", ["serve-runtime", "--max-upload-mb", "0"], 2, "--max-upload-mb"),
    ("serve-runtime-workdir-under-file", ["serve-runtime", "--port", "0", "--insecure-no-auth", "--workdir",
                                          f"{D}/tiny.onnx/w"], 2, "--workdir"),
    ("serve-runtime-open-token", ["serve-runtime", "--port", "0", "--token-file", f"{D}/open-token"], 2,
     "readable by other users"),
    ("serve-runtime-max-clients-zero", ["serve-runtime", "--max-clients", "0"], 2, "--max-clients"),
    # anything
    ("unknown-command", ["deploy"], 2, "deploy"),
]
SUBPROCESS = {"build-quantize-int4", "build-prune-1.5", "build-name-dotdot", "check-strays", "serve-busy-port"}


def _tree(*roots: Path) -> set[str]:
    return {str(p) for r in roots for p in r.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every bad input the corpus needs, made once."""
    import numpy as np
    import torch

    from deploypipe.api import BuildConfig, build
    from deploypipe.artifact import Artifact, file_entry, write_manifest

    d = tmp_path_factory.mktemp("corpus")
    onnx.save_model(tiny_classifier(), str(d / "tiny.onnx"))
    (d / "garbage.onnx").write_bytes(b"\x00not onnx" * 50)
    (d / "garbage.pt2").write_bytes(b"\x01junk" * 600)
    (d / "notes.xyz").write_text("x")
    (d / "garbage.json").write_text("{not json")
    torch.save(torch.nn.Linear(4, 2).state_dict(), d / "state.pt")
    (d / "truncated.pt").write_bytes((d / "state.pt").read_bytes()[:300])
    torch.save(torch.nn.Linear(4, 2), d / "module.pt")
    (d / "precious").mkdir()
    (d / "precious" / "thesis.txt").write_text("years of work")
    (d / "empty").mkdir()
    (d / "open-token").write_text("t" * 64)
    (d / "open-token").chmod(0o644)
    art = build(BuildConfig(model=str(d / "tiny.onnx"), output=d / "arts", name="tiny")).path
    for name in ("corrupt", "strays", "arts-tpu/tpu"):
        shutil.copytree(art.resolve(), d / name)
    (d / "corrupt" / "model.onnx").write_bytes(b"tampered")
    strays = Artifact(d / "strays")
    inputs, reference, expected = strays.golden()
    np.savez(d / "strays" / "golden.npz", **{f"input/{k}": v for k, v in inputs.items()},
             **{f"reference/{k}": v + 9 for k, v in reference.items()},
             **{f"expected/{k}": v + 9 for k, v in expected.items()})
    strays.manifest.files["golden"] = file_entry(d / "strays", "golden.npz")
    write_manifest(d / "strays", strays.manifest)
    tpu = json.loads((d / "arts-tpu" / "tpu" / "manifest.json").read_text())
    tpu["kind"] = "edgetpu"  # no Edge TPU here: listed with the reason, nothing measured
    (d / "arts-tpu" / "tpu" / "manifest.json").write_text(json.dumps(tpu))
    return d


@pytest.fixture(scope="module")
def ports() -> dict[str, str]:
    busy = socket.create_server(("127.0.0.1", 0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    yield {"busy": str(busy.getsockname()[1]), "closed": str(closed)}
    busy.close()


@pytest.fixture(autouse=True)
def _token_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("DEPLOYPIPE_TOKEN_FILE", raising=False)


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 70 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert {"build", "bench", "check", "inspect", "diff", "tune", "serve", "serve-runtime", "report"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: tuple[str, list[str], int, str], data: Path, ports: dict[str, str], tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    case_id, args, code, needle = case
    args = [a.replace(D, str(data)).format(**ports) if "{" in a else a for a in args]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _tree(data)
    if case_id in SUBPROCESS:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's deploypipe, whatever the cwd
        proc = subprocess.run([sys.executable, "-m", "deploypipe", *args], capture_output=True, text=True,
                              timeout=120, env=env, check=False)
        rc, stderr = proc.returncode, proc.stderr
    else:
        capfd.readouterr()
        rc = run(args)
        stderr = capfd.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == code, stderr
    if code != 5:  # check prints its FAILED verdict on stdout, nothing on stderr
        assert len(lines) == 1, stderr
        assert needle.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in stderr
    assert _tree(data) == before, "something was written next to the inputs"
    assert not any(cwd.iterdir()), f"left behind: {sorted(p.name for p in cwd.iterdir())}"
