"""TVM compiler and runner on the tiny model: host build, cross builds, tuning database reuse."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import proto_model, tiny_classifier
from int8_models import INT8_SHAPE, classifier, int8_convnet, kernels_with, qdq_model
from onnx import TensorProto, helper

from deploypipe import backends, targets
from deploypipe.backends.tvm.facts import TvmOptions

pytestmark = pytest.mark.tvm
tvm = pytest.importorskip("tvm")


def test_every_target_tvm_options_validate() -> None:
    served = {n: s for n, s in targets.all_targets().items() if "tvm" in s.compilers}
    assert {"host-cpu", "xeon", "rpi3", "rpi4", "rpi5", "pynq-z1", "jetson-nano", "jetson-tx2"} <= set(served)
    for name, spec in served.items():
        opts = TvmOptions(**spec.compilers["tvm"].options)
        assert (opts.cross_compiler is None) == (opts.arch() == "x86_64"), name
    assert TvmOptions(**targets.get("rpi4").compilers["tvm"].options).arch() == "aarch64"
    assert TvmOptions(**targets.get("rpi5").compilers["tvm"].options).arch() == "aarch64"
    assert TvmOptions(**targets.get("rpi3").compilers["tvm"].options).arch() == "armv7l"


@pytest.mark.parametrize("target, message", [
    ({"kind": "cuda", "num-cores": 1}, "only CPU"),
    ({"kind": "llvm", "mcpu": "native", "num-cores": 2}, "native"),
    ({"kind": "llvm"}, "num-cores"),
    ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "host", "num-cores": 4}, "build host"),
])
def test_options_refuse_bad_targets(target: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        TvmOptions(target=target)


def _build(tmp_path: Path, target: str = "host-cpu", model: Path | None = None, **kw: object):
    from deploypipe.api import BuildConfig, build

    if model is None:
        model = tmp_path / "tiny.onnx"
        onnx.save_model(tiny_classifier(), str(model))
    kw.setdefault("tuning_logs", tmp_path / "tuning_logs")
    return build(BuildConfig(model=str(model), target=target, compiler="tvm", output=tmp_path / "art", **kw))


def test_host_build_runs_matches_reference_and_profiles(tmp_path: Path) -> None:
    from deploypipe.backends import load
    from deploypipe.backends.runner import RunOptions

    report = _build(tmp_path)
    m = report.manifest
    assert m.kind == "tvm" and m.files["model"].path == "model.so"
    # host-cpu names mcpu = "host": the build resolves it to this CPU (with its vector extensions)
    host_cpu = str(tvm.target.codegen.llvm_get_system_cpu())
    assert f'"mcpu":"{host_cpu}"' in m.compiler_info["target"] and m.compiler_info["library_arch"] == "x86_64"
    assert m.compiler_info["target_as_written"]["mcpu"] == "host" and m.compiler_info["target_dict"]["mcpu"] == host_cpu
    assert m.toolchain["apache-tvm"] == tvm.__version__
    assert m.fidelity.checked and m.fidelity.passed and m.fidelity.max_abs_err < 1e-4
    assert any("untuned" in n for n in m.notes)
    with load(report.path, RunOptions(profile=True, threads=1)) as runner:
        inputs, reference, _ = runner.artifact.golden()
        out = runner.infer(inputs)
        profile = runner.layer_profile()
    np.testing.assert_allclose(out["logits"], reference["logits"], rtol=1e-4, atol=1e-5)
    assert profile and any(p.op == "conv2d" for p in profile) and all(p.ms >= 0 for p in profile)


def test_default_threads_are_the_physical_cores(tmp_path: Path) -> None:
    """Without --threads a TVM artifact runs on every physical core, as ONNX Runtime does: TVM's
    own x86 default is half the logical CPUs (it assumes hyper-threading), one thread on a 2-vCPU
    VM without SMT, which made TVM look twice as slow as ORT in a default `bench`."""
    import subprocess
    import sys

    from deploypipe.backends.runner import physical_cores

    path = _build(tmp_path).path
    code = (
        "import json, tvm\n"
        "from deploypipe.artifact import Artifact\n"
        "from deploypipe.backends import load\n"
        "from deploypipe.backends.runner import RunOptions\n"
        f"art = Artifact({str(path)!r})\n"
        "with load(art.path, RunOptions()) as runner:\n"
        "    runner.infer(art.golden()[0])\n"
        "    print(json.dumps(tvm.get_global_func('runtime.NumThreads')()))\n")
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == physical_cores()
    assert 1 <= physical_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("target, arch", [("rpi4", "aarch64"), ("rpi3", "armv7l")])
def test_cross_build_carries_arm_library_and_host_stand_in(tmp_path: Path, target: str, arch: str) -> None:
    from deploypipe.artifact import Artifact
    from deploypipe.backends import why_not_runnable
    from deploypipe.backends.tvm.facts import library_arch

    opts = TvmOptions(**targets.get(target).compilers["tvm"].options)
    if shutil.which(opts.cross_compiler or "") is None:
        pytest.skip(f"{opts.cross_compiler} not installed (scripts/install.sh installs it)")
    report = _build(tmp_path, target)
    art = Artifact(report.path)
    assert library_arch(art.file("model")) == arch
    assert library_arch(art.file("host_stand_in")) == platform.machine()
    assert art.manifest.host_check is not None and "stands in" in art.manifest.host_check.why
    assert art.manifest.fidelity.passed and "host stand-in" in art.manifest.fidelity.where
    assert why_not_runnable(art) == f"{arch} library: needs an {arch} device (--device rpc://HOST:PORT) or --device qemu"
    assert opts.target["mcpu"] in art.manifest.compiler_info["target"]


def test_unsupported_op_is_named_before_work(tmp_path: Path) -> None:
    from deploypipe.backends.compiler import CompileContext
    from deploypipe.backends.tvm.compiler import TvmCompiler
    from deploypipe.errors import UnsupportedError

    proto = tiny_classifier()
    proto.graph.node.append(helper.make_node("Col2Im", ["logits", "s", "b"], ["y"], name="/head/col2im"))
    proto.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    model = proto_model(proto, "bad")
    spec = targets.get("host-cpu")
    ctx = CompileContext(workdir=tmp_path, target=spec, precision="fp32", options=backends.compiler_options("tvm", spec),
                         tuning_dir=tmp_path)
    with pytest.raises(UnsupportedError, match="node /head/col2im: op Col2Im"):
        TvmCompiler().check(model, ctx)


def test_tune_resumes_and_build_reuses_database(tmp_path: Path, cli) -> None:
    """Tiny tuning run via the CLI, an interrupted run's half-written line is repaired and counted,
    and a later build applies the database without tuning again."""
    from deploypipe.backends.tvm.relax import tuning_records

    model = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    logs = tmp_path / "tuning_logs"
    res = cli("tvm", "tune", "--model", str(model), "--trials", "2", "--trials-per-iter", "2", "--tuning-logs", str(logs))
    assert res.returncode == 0, res.stderr
    db = logs / "tiny" / "host-cpu"
    # MetaSchedule stops at the first round that reaches the total: evolutionary search may measure
    # one more candidate than asked (a task whose space is a single schedule)
    recorded = tuning_records(db)
    assert recorded >= 2 and f"now holds {recorded}/2" in res.stdout
    with (db / "database_tuning_record.json").open("a") as fh:  # what a killed run can leave
        fh.write('[0, [[[1, 2')
    res = cli("tune", "--model", str(model), "--trials", "2", "--tuning-logs", str(logs), "--json")
    assert res.returncode == 0, res.stderr
    assert '"stopped": "already tuned"' in res.stdout and tuning_records(db) == recorded
    report = _build(tmp_path, model=model)
    tuning = report.manifest.compiler_info["tuning"]
    assert tuning["records"] == recorded and tuning["database"] == str(db) and "session" not in tuning
    host_cpu = str(tvm.target.codegen.llvm_get_system_cpu())
    assert tuning["tuned_for_mcpu"] == [host_cpu] and tuning["kernels"]["tuned"] >= 1 and tuning["reused"] == []
    assert tuning["measured_on"] == [{"host_cpu": host_cpu}]  # where the candidates were timed, beside the records
    assert report.manifest.fidelity.passed and not any("measured for -mcpu" in n or "timed on a build host" in n
                                                       for n in report.manifest.notes)
    # another model with the same layers (other weights): its kernels are found by workload in tiny's database
    other_model = tmp_path / "other.onnx"
    onnx.save_model(tiny_classifier(seed=1), str(other_model))
    report = _build(tmp_path / "other", model=other_model, tuning_logs=logs)
    tuning = report.manifest.compiler_info["tuning"]
    assert tuning["database"] is None and len(tuning["reused"]) == 1, tuning
    reused = tuning["reused"][0]
    assert reused["database"] == str(db) and reused["tuned_for_mcpu"] == [host_cpu] and reused["kernels"]
    assert tuning["kernels"]["tuned"] == len(reused["kernels"]) and report.manifest.fidelity.passed
    assert any(f"reused {len(reused['kernels'])} tuned kernel(s) by workload from {db}" in n for n in report.manifest.notes)
    # tuning the other model would not measure what tiny's database already holds (de-duplicated by workload)
    from tvm.s_tir import meta_schedule as ms

    from deploypipe import passes
    from deploypipe.backends.tvm import search
    from deploypipe.backends.tvm.relax import import_relax, lower, tvm_target
    from deploypipe.importers import import_model
    from deploypipe.passes import PassContext

    target = tvm_target(TvmOptions(**targets.get("host-cpu").compilers["tvm"].options))
    other, _ = passes.run(passes.recipe_for("fp32", frozenset({"fp32"})), import_model(other_model),
                          PassContext(target="host-cpu", precision="fp32"))  # what the tuner gets
    tasks = ms.relax_integration.extract_tasks(lower(import_relax(other), target), target)
    every = search.untuned_tasks(tasks, target, tmp_path / "none" / "other" / "host-cpu")
    todo = search.untuned_tasks(tasks, target, logs / "other" / "host-cpu")
    assert len(todo) == len(every) - len(reused["kernels"]) and len(todo) < len(every)
    # ... unless that database was timed on a host with another CPU: tuning here measures them again
    (db / "measured_on.json").write_text(json.dumps([{"host_cpu": "some-other-cpu"}]))
    assert len(search.untuned_tasks(tasks, target, logs / "other" / "host-cpu")) == len(every)
    (db / "measured_on.json").write_text(json.dumps([{"host_cpu": host_cpu}]))
    # the other model's own records for those kernels, 100x slower (a few search samples): each
    # kernel still gets the fastest record of either database (its own ones shadowed tiny's)
    own = logs / "other" / "host-cpu"
    own.mkdir(parents=True)
    shutil.copy(db / "database_workload.json", own / "database_workload.json")
    slower = []
    for line in (db / "database_tuning_record.json").read_text().splitlines():
        workload, record = json.loads(line)
        record[1] = [t * 100 for t in record[1]]
        slower.append(json.dumps([workload, record]))
    (own / "database_tuning_record.json").write_text("\n".join(slower) + "\n")
    report = _build(tmp_path / "other-own", model=other_model, tuning_logs=logs)
    tuning = report.manifest.compiler_info["tuning"]
    assert tuning["database"] == str(own) and [u["database"] for u in tuning["reused"]] == [str(db)], tuning
    assert sorted(tuning["reused"][0]["kernels"]) == sorted(reused["kernels"]) and report.manifest.fidelity.passed
    # ... unless only the other model's was timed on this CPU: times from two machines do not compare
    # (tiny's faster records marked as timed on another host, as the shipped AVX2 databases are for an AVX2 CPU)
    from deploypipe.backends.tvm.relax import MEASURED_ON

    (own / MEASURED_ON).write_text(json.dumps([{"host_cpu": host_cpu}]))
    (db / MEASURED_ON).write_text(json.dumps([{"host_cpu": "some-other-cpu"}]))
    report = _build(tmp_path / "other-own-here", model=other_model, tuning_logs=logs)
    tuning = report.manifest.compiler_info["tuning"]
    assert tuning["reused"] == [] and tuning["kernels"]["tuned"] >= len(reused["kernels"]), tuning
    (db / MEASURED_ON).write_text(json.dumps([{"host_cpu": host_cpu}]))
    shutil.rmtree(logs / "other")
    # a database measured on a CPU of another class (vector width) is not applied: its tiles are
    # sized for other registers; one of the same class is applied, with a note
    from deploypipe.backends.tvm.relax import cpu_class

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu})
    wide = cpu_class(target) == cpu_class(target, "skylake-avx512")
    other = "haswell" if wide else "skylake-avx512"
    alike = next(c for c in (("znver4", "icelake-server") if wide else ("znver3", "haswell")) if c != host_cpu)
    records = db / "database_tuning_record.json"
    original = records.read_text()
    records.write_text(original.replace(f'"mcpu":"{host_cpu}"', f'"mcpu":"{other}"'))
    report = _build(tmp_path / "again", model=model, tuning_logs=logs)
    tuning = report.manifest.compiler_info["tuning"]
    assert tuning["tuned_for_mcpu"] == [other] and tuning["kernels"]["tuned"] == 0, tuning
    assert any(f"measured for -mcpu={other} ({cpu_class(target, other)})" in n and "not applied" in n
               for n in report.manifest.notes) and report.manifest.fidelity.passed
    # ... and another model does not reuse them either
    report = _build(tmp_path / "other-again", model=other_model, tuning_logs=logs)
    assert report.manifest.compiler_info["tuning"]["reused"] == [] and report.manifest.fidelity.passed
    records.write_text(original.replace(f'"mcpu":"{host_cpu}"', f'"mcpu":"{alike}"'))
    report = _build(tmp_path / "alike", model=model, tuning_logs=logs)
    assert report.manifest.compiler_info["tuning"]["kernels"]["tuned"] >= 1 and report.manifest.fidelity.passed
    assert any(f"measured for -mcpu={alike}" in n and "the same class" in n for n in report.manifest.notes)
    # records for another CPU's code that this host timed (the AVX2 databases shipped in tuning_logs/*/xeon/)
    # say so: their ranking is this host's
    assert any(f"are for -mcpu={alike} code, timed on a build host whose CPU is {host_cpu}" in n
               for n in report.manifest.notes), report.manifest.notes


def test_avx2_target_gets_avx2_tiles_on_any_host() -> None:
    """An AVX2 target (the xeon target file's broadwell) gets 8-float vectors and AVX2's register
    budget even when built on an AVX-512 host (TVM's own vector-width query answered 512 there)."""
    from deploypipe.backends.tvm import schedules

    for mcpu, bits in (("broadwell", 256), ("skylake-avx512", 512)):
        assert schedules.vector_bits(tvm.target.Target({"kind": "llvm", "mcpu": mcpu})) == bits, mcpu
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"], "mcpu": "cortex-a72"})
    assert schedules.vector_bits(arm) == 128
    proto = _mini_mobilenet()
    from deploypipe.backends.tvm.relax import import_relax, lower

    model = proto_model(proto, "mini")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "broadwell", "num-cores": 2})
    lowered = lower(import_relax(model), target)
    with target:
        mod = schedules.default_schedule()(lowered)
    convs = [f.script() for gv, f in mod.functions_items() if "conv2d" in gv.name_hint]
    assert convs and all("T.vectorized(T.int64(8))" in t and "T.vectorized(T.int64(16))" not in t for t in convs)


def test_register_tiles_fit_the_register_file() -> None:
    """A tile's accumulators, one register per weight vector and one for the broadcast input fit
    in the ISA's vector registers (7 rows x 4 vectors took 33 of AVX-512's 32: the compiled loop
    moved every accumulator through registers and the stack on each input channel)."""
    from deploypipe.backends.tvm import schedules

    for lanes, registers in ((16, 32), (8, 16), (4, 32)):  # AVX-512, AVX2, NEON
        accumulators = schedules.ACCUMULATORS[registers]
        for channels in (16, 24, 32, 48, 64, 96, 128, 144, 256, 512, 1000):
            for width in (1, 7, 14, 28, 56, 112):
                vec, rows = schedules._tile(channels, width, lanes, accumulators, registers)
                vectors = -(-vec // lanes)
                assert channels % vec == 0 and width % rows == 0, (lanes, channels, width)
                assert rows * vectors + vectors + 1 <= registers, (lanes, channels, width, vec, rows)
                vec, rows = schedules._tile(channels, width, lanes, accumulators, registers, tails=True)
                vectors = -(-vec // lanes)  # a tile with a tail fits too
                assert channels % vec == 0 and rows * vectors + vectors + 1 <= registers, (lanes, channels, width)
    assert schedules._tile(64, 56, 16, 28, 32) == (64, 4)  # was 64 x 7
    assert schedules._tile(512, 7, 16, 28, 32) == (32, 7)  # 14 accumulators, 2 weight vectors


def test_tuning_starts_from_the_default_schedules(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tvm tune` first measures each kernel's default-rule variants (costliest kernels first) and
    commits them as tuning records; a resumed run seeds the kernels still without records, then
    MetaSchedule's search takes the trials left (its population must not replay the seeded traces:
    that failed); a build replays the fastest record per kernel, prepacked weights included.
    Candidates are measured with the target's cores as threads (they were measured with TVM's
    default, one thread on a 2-vCPU VM, for artifacts that run on two)."""
    from tvm.s_tir import meta_schedule as ms

    from deploypipe.backends.tvm import schedules
    from deploypipe.backends.tvm.relax import tuning_records
    from deploypipe.backends.tvm.tune import measuring_threads

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    model = tmp_path / "mini.onnx"
    onnx.save_model(_mini_mobilenet(), str(model))
    logs = tmp_path / "tuning_logs"
    res = cli("tvm", "tune", "--model", str(model), "--trials", "3", "--tuning-logs", str(logs))
    assert res.returncode == 0, res.stderr
    db = logs / "mini" / "host-cpu"
    log = (db / "logs" / "deploypipe_tune.log").read_text()
    seeded = [line for line in log.splitlines() if line.startswith("default-rule variants:")]
    assert seeded and "measured, best" in seeded[0] and "conv2d" in seeded[0], log[-2000:]
    assert tuning_records(db) == 3 and "TaskScheduler" not in log
    threads = measuring_threads(TvmOptions(**targets.get("host-cpu").compilers["tvm"].options))
    assert f"measuring with {threads} TVM threads" in log and f"LocalRunner, {threads} threads" in res.stdout
    assert schedules.variants()[0] == schedules.Knobs() and len(set(schedules.variants())) == len(schedules.variants())
    records = ms.database.JSONDatabase(work_dir=str(db)).get_all_tuning_records()
    assert any("layout_rewrite_preproc" in str(r.trace) for r in records)  # prepacking is in the replayed trace
    res = cli("tvm", "tune", "--model", str(model), "--trials", "14", "--trials-per-iter", "4", "--tuning-logs", str(logs))
    assert res.returncode == 0, res.stderr
    log = (db / "logs" / "deploypipe_tune.log").read_text()
    again = [line for line in log.splitlines() if line.startswith("default-rule variants:")][len(seeded):]
    assert again and not {line.split(":")[1] for line in again} & {line.split(":")[1] for line in seeded}
    assert "TaskScheduler" in log and tuning_records(db) >= 14
    report = _build(tmp_path, model=model, tuning_logs=logs)
    kernels = report.manifest.compiler_info["tuning"]["kernels"]
    assert kernels["tuned"] >= 1 and kernels["tuned"] + kernels["default_schedule"] == kernels["total"]
    assert report.manifest.fidelity.passed and report.manifest.fidelity.max_abs_err < 1e-4


@pytest.mark.skipif(platform.machine() != "x86_64", reason="these integer kernels are x86 ones")
def test_qdq_layers_run_integer_x86_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    """A QDQ graph (what the int8 pass produces): on a VNNI CPU its convolutions and its dense
    layer, channel counts that need padding included, become u8 x s8 -> int32 kernels on vpdpbusd,
    matching ONNX Runtime running the same QDQ graph; as a CPU without VNNI gets it (DEPLOYPIPE_ISA),
    7-bit weights run on vpmaddubsw, exactly, and 8-bit ones, which could saturate it, stay float."""
    import subprocess

    import onnxruntime as ort

    from deploypipe.analysis.fidelity import QUANTIZED_INPUT_TOLERANCE
    from deploypipe.backends import load
    from deploypipe.backends.runner import RunOptions
    from deploypipe.backends.tvm.integer import VNNI, integer_path
    from deploypipe.isa import ENV

    qdq = qdq_model(tmp_path, int8_convnet(), INT8_SHAPE)
    target = tvm.target.Target(TvmOptions(**targets.get("host-cpu").compilers["tvm"].options).resolved_target())
    vnni = integer_path(target)[0] is VNNI
    from deploypipe.api import BuildConfig, build

    said: list[str] = []
    report = build(BuildConfig(model=str(qdq), compiler="tvm", output=tmp_path / "host" / "art",
                               tuning_logs=tmp_path / "host" / "tuning_logs"), progress=lambda m: said.append(str(m)))
    m = report.manifest
    # named and announced for what it is: a quantized graph judged against ORT running it, not FP32
    assert report.path.name == f"{qdq.stem}-host-cpu-tvm-qdq", report.path
    assert "checking fidelity against ONNX Runtime running the quantized input graph" in said, said
    # the reference, ORT's optimized run, sums u8 x s8 pairs saturating in 16 bits on CPUs without VNNI
    assert m.fidelity.passed and (m.fidelity.max_abs_err < 1e-3 or not vnni), m.fidelity
    # a model that arrives quantized is judged against ORT's run of the same graph by cosine, not by
    # FP32's max abs error (ResNet-18's QDQ graph: 0.024 > 1e-3 x its output scale, requantizations
    # rounded differently, and the build was refused)
    assert m.fidelity.tolerance == QUANTIZED_INPUT_TOLERANCE
    assert any(n.startswith("the model arrives quantized") for n in m.notes), m.notes
    kernels = m.compiler_info["int8_kernels"]
    asm = subprocess.run(["objdump", "-d", str(report.path / m.files["model"].path)], capture_output=True, text=True,
                         check=True).stdout
    if vnni:
        assert kernels["path"] == "integer" and kernels["instruction"] == "vpdpbusd"
        assert (kernels["integer_convolutions"], kernels["convolutions"]) == (4, 4)  # the depthwise one too
        assert (kernels["integer_dense_layers"], kernels["dense_layers"]) == (1, 1)
        assert kernels_with(asm, "vpdpbusd") == {"conv2d": 3, "matmul": 1}  # padded channels included
        assert any("integer kernels: vnni" in n and "4 of 4 convolutions and 1 of 1 dense layers" in n
                   for n in m.notes), m.notes
        # tuning keeps them: an integer convolution's seeded candidate is its VNNI kernel (a tuned
        # record without the intrinsic would replace it), and the build replays its tensorized trace
        logs = tmp_path / "tuning_logs"
        res = cli("tvm", "tune", "--model", str(qdq), "--trials", "2", "--tuning-logs", str(logs))
        assert res.returncode == 0, res.stderr
        from tvm.s_tir import meta_schedule as ms

        records = ms.database.JSONDatabase(work_dir=str(logs / qdq.stem / "host-cpu")).get_all_tuning_records()
        assert len(records) == 2 and all(VNNI.intrin in str(r.trace) for r in records)  # the VNNI kernels, measured
        report = _build(tmp_path / "tuned", model=qdq, tuning_logs=logs)
        m = report.manifest
        assert m.compiler_info["tuning"]["kernels"]["tuned"] >= 1 and m.fidelity.passed and m.fidelity.max_abs_err < 1e-3
        asm = subprocess.run(["objdump", "-d", str(report.path / m.files["model"].path)], capture_output=True,
                             text=True, check=True).stdout
        assert "vpdpbusd" in asm
    # a CPU without VNNI (forced with DEPLOYPIPE_ISA; natively on AVX2-only hosts): vpmaddubsw (AVX2 or
    # AVX512BW) sums u8 x s8 pairs in 16 bits with saturation, so 8-bit weights stay float-simulated
    # and 7-bit ones (the int8 pass's reduce_range there) run integer kernels, exactly
    from deploypipe.backends.tvm.integer import AVX2, AVX512BW, integer_layers
    from deploypipe.backends.tvm.relax import import_relax
    from deploypipe.importers import import_model

    seven_bit = qdq_model(tmp_path, int8_convnet(), INT8_SHAPE, reduce_range=True)
    for dot in (AVX2, AVX512BW):  # the depthwise layer sums no pairs: integer either way
        assert integer_layers(import_relax(import_model(qdq)), dot, depthwise=True)[1] == 1  # the rest could saturate
        assert integer_layers(import_relax(import_model(seven_bit)), dot, depthwise=True)[1] == 5
    monkeypatch.setenv(ENV, "x86-avx2")
    report = _build(tmp_path / "novnni", model=seven_bit, force=True)
    m = report.manifest
    kernels = m.compiler_info["int8_kernels"]
    assert m.fidelity.passed, m.fidelity
    assert (kernels["path"], kernels["instruction"]) == ("integer", "vpmaddubsw")
    assert (kernels["integer_convolutions"], kernels["integer_dense_layers"]) == (4, 1)
    note = next(n for n in m.notes if "integer kernels: avx" in n)  # avx512bw on AVX-512 hosts, else avx2
    assert "4 of 4 convolutions and 1 of 1 dense layers" in note and "could saturate" in note
    asm = subprocess.run(["objdump", "-d", str(report.path / m.files["model"].path)], capture_output=True,
                         text=True, check=True).stdout
    assert "vpdpbusd" not in asm and kernels_with(asm, "vpmaddubsw") == {"conv2d": 3, "matmul": 1}
    x = np.random.default_rng(3).standard_normal(INT8_SHAPE).astype(np.float32)
    with load(report.path, RunOptions()) as runner:
        out = runner.infer({"input": x})["logits"]
    # ORT unoptimized computes the QDQ graph dequantized in float: no saturating kernels on any host
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    (expected,) = ort.InferenceSession(str(seven_bit), plain, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert np.abs(out - expected).max() <= 1e-4  # the same integer sums, the same rescale


def test_pair_saturation_is_judged_from_the_weights() -> None:
    """vpmaddubsw's 16-bit pair sums: 255 x (a pair's positive, or negative, weights) must stay
    within int16, i.e. each sum within 128; pairs are neighbouring input channels (axis 1), never
    across output channels or window positions."""
    from deploypipe.backends.tvm.integer import _saturates

    def weights(*pair: int, shape: tuple = (1, 2, 1, 1)) -> np.ndarray:
        return np.array(pair, np.int8).reshape(shape)

    assert not _saturates(weights(64, 64)) and not _saturates(weights(-64, -64)) and not _saturates(weights(127, -128))
    assert _saturates(weights(100, 29)) and _saturates(weights(-128, -1))
    assert not _saturates(np.array([[127, 0, 0, 127]], np.int8).reshape(1, 4))  # two pairs of 127
    assert not _saturates(np.full((2, 2, 3, 3), 64, np.int8))  # the window's taps sum in 32 bits
    assert not _saturates(np.array([[127, 0], [0, 127]], np.int8))  # across output channels: no pair


def test_integer_rewrite_matches_float_simulation(tmp_path: Path) -> None:
    """The integer rewrite of convolutions and dense layers (zero-point padding, channels padded to
    the instruction's multiples, per-channel correction and rescale) computes what
    the float-simulated graph computes, for both operand kinds: u8 activations (vpdpbusd) and
    activations shifted to s8 with the shift folded into the correction (sdot). Compiled for a
    CPU without either (generic x86-64, the int32 kernels on the default schedules), the outputs
    differ from the float-simulated build's by at most one step of the output's quantization
    (float rounding can move a value across a rounding boundary)."""
    from onnx import numpy_helper

    from deploypipe.backends.tvm import integer
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower

    proto = onnx.load(str(qdq_model(tmp_path, int8_convnet(), INT8_SHAPE)))
    model = proto_model(proto, "q")
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})  # no VNNI: the int32 kernels get the default rule
    x = np.random.default_rng(1).standard_normal(INT8_SHAPE).astype(np.float32)
    step = next(float(numpy_helper.to_array(i)) for i in proto.graph.initializer
                if i.name == next(n.input[1] for n in proto.graph.node if n.output[0] == "logits"))

    def run(mod: tvm.IRModule) -> np.ndarray:
        vm = tvm.relax.VirtualMachine(compile_module(lower(mod, target), target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    simulated = run(import_relax(model))
    for dot in (integer.VNNI, integer.SDOT):
        rewritten, count = integer.integer_layers(import_relax(model), dot, depthwise=True)
        assert count == 5  # 4 convolutions (one depthwise), 1 dense layer
        if dot.shift:  # the convolutions read int8, shifted in the producers' kernels
            assert "int8" in str(rewritten["main"]) and "int16" in str(rewritten["main"])
        assert np.abs(simulated - run(rewritten)).max() <= step * 1.001, dot.name


def test_integer_path_per_cpu_says_which_instruction_or_why_not() -> None:
    """rpi5's Cortex-A76 has the ARMv8.2 dot product: sdot kernels. rpi4's A72 and the Jetsons'
    A57 (ARMv8.0) have none: the float path, and the note says a kernel without it was not
    measured against the float one (that needs the board)."""
    from deploypipe.backends.tvm.integer import AVX2, AVX512BW, SDOT, integer_path

    def path(name: str) -> tuple:
        return integer_path(tvm.target.Target(TvmOptions(**targets.get(name).compilers["tvm"].options).resolved_target()))

    dot, why = path("rpi5")
    assert dot is SDOT and why == "integer kernels: sdot (ARMv8.2 dot product, -mcpu=cortex-a76)"
    assert targets.get("rpi5").int8_isa == "arm-dotprod"
    for name, cpu in (("rpi4", "cortex-a72"), ("jetson-nano", "cortex-a57"), ("jetson-tx2", "cortex-a57")):
        dot, why = path(name)
        assert dot is None and f"no dot-product extension (sdot/udot) on -mcpu={cpu}" in why and "not measured" in why
    dot, why = path("rpi3")  # armv7
    assert dot is None and "not armv7" in why
    dot, why = path("xeon")  # Broadwell: AVX2, no VNNI
    assert dot is AVX2 and why.startswith("integer kernels: avx2 (vpmaddubsw + vpmaddwd, -mcpu=broadwell; no VNNI")
    assert targets.get("xeon").int8_isa == "x86-avx2"  # so the int8 pass makes 7-bit weights, which never saturate
    dot, why = integer_path(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}))
    assert dot is AVX512BW and why.startswith("integer kernels: avx512bw (vpmaddubsw")  # AVX-512 without VNNI


def _mini_mobilenet() -> onnx.ModelProto:
    """Every operator class of the zoo's CNNs: strided conv + ReLU6, depthwise conv + ReLU6,
    1x1 conv with a residual add, padded max pool (ResNet's), global average pool, dense."""
    from onnx import numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [const("w0", 16, 3, 3, 3), const("b0", 16), const("wd", 16, 1, 3, 3), const("bd", 16),
             const("w1", 16, 16, 1, 1), const("b1", 16), const("fc_w", 10, 16), const("fc_b", 10),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Clip", ["c0", "lo", "hi"], ["r0"]),
        helper.make_node("Conv", ["r0", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Clip", ["cd", "lo", "hi"], ["rd"]),
        helper.make_node("Conv", ["rd", "w1", "b1"], ["c1"]),
        helper.make_node("Add", ["c1", "r0"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["mp"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    return classifier("mini", nodes, inits, [1, 3, 32, 32])


def test_untuned_kernels_get_parallel_vectorized_default_schedules(tmp_path: Path) -> None:
    """Without tuning records every kernel still gets a schedule: convolutions (incl. depthwise)
    in NHWC, register-tiled, parallel and vectorized, the ReLU6 fused into them; the build
    matches the reference and the manifest counts the default-scheduled kernels."""
    from deploypipe.backends.tvm import schedules
    from deploypipe.backends.tvm.relax import fold_prepacking, import_relax, lower, scheduled, tvm_target

    proto = _mini_mobilenet()
    model = proto_model(proto, "mini")
    target = tvm_target(TvmOptions(**targets.get("host-cpu").compilers["tvm"].options))
    lowered = lower(import_relax(model), target)
    with target:
        mod = schedules.default_schedule()(lowered)
    kernels = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert scheduled(mod) == set(kernels), set(kernels) - scheduled(mod)
    convs = {n: f.script() for n, f in kernels.items() if "conv2d" in n}
    assert len(convs) == 3 and not any("transpose" in n for n in convs)  # NHWC through, no layout flips
    assert sum("maximum" in n and "minimum" in n for n in convs) == 2  # ReLU6 in the conv epilogue
    for name, text in convs.items():
        assert "T.parallel" in text and "T.vectorized" in text, name
    name, dense = next((n, f.script()) for n, f in kernels.items() if "matmul" in n or "dense" in n)
    assert "T.parallel" in dense and "T.vectorized" in dense
    # its 10 outputs padded to whole vectors (zero weight columns), the slice back fused in
    lanes = schedules.vector_bits(target) // 32
    assert f"T.Buffer((T.int64(16), T.int64({-(-10 // lanes) * lanes})), \"float32\")" in dense, dense
    assert "strided_slice" in name
    # every convolution reads prepacked [O/vec, H, W, I, vec] weights; padding is a block of its
    # own for the channel convolutions, inlined for the depthwise one (pointwise ones have none)
    assert all("layout_rewrite_preproc" in t for t in convs.values())
    padded = sorted(('T.sblock("pad_temp")' in t, "T.if_then_else" in t) for t in convs.values())
    assert padded == [(False, False), (False, True), (True, True)], padded
    for name, func in kernels.items():  # the padding block runs on all cores (it ran serial: a tenth of the conv)
        sch = tvm.s_tir.Schedule(func)
        pads = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if sch.get(b).name_hint == "pad_temp"]
        assert all(sch.get(sch.get_loops(b)[0]).kind == tvm.tirx.ForKind.PARALLEL for b in pads), name
    pool = next(f.script() for n, f in kernels.items() if "pool" in n)
    assert 'T.sblock("pad_temp")' not in pool and "T.if_then_else" in pool  # a window reduction: bounds test inlined
    folded = fold_prepacking(mod)
    scripts = [f.script() for _, f in folded.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not any("layout_rewrite_preproc" in t for t in scripts)  # repacked once, at build time
    assert sum(gv.name_hint.endswith("_prepacked") for gv, _ in folded.functions_items()) >= 3
    path = tmp_path / "mini.onnx"
    onnx.save_model(proto, str(path))
    report = _build(tmp_path, model=path)
    m = report.manifest
    assert m.fidelity.passed and m.fidelity.max_abs_err < 1e-4
    assert m.compiler_info["tuning"]["kernels"]["default_schedule"] == m.compiler_info["tuning"]["kernels"]["total"] > 0
    assert any("default CPU schedule" in n for n in m.notes)


def test_strided_pointwise_convolutions_read_a_dense_slice() -> None:
    """A strided 1x1 convolution (ResNet's downsampling shortcut, odd input size included) is
    rewritten as a strided slice and a stride-1 convolution in a kernel of its own; a padded
    strided 1x1 one and a strided 3x3 one keep their stride. The build equals ONNX Runtime."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.2, n) for n, s in
             [("short", (16, 8, 1, 1)), ("b", (16,)), ("pad", (16, 8, 1, 1)), ("k3", (16, 8, 3, 3))]]
    nodes = [helper.make_node("Conv", ["x", "short", "b"], ["s"], strides=[2, 2]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Conv", ["x", "pad"], ["p"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "k3"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["r", "c"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "strided", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 15, 15])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 8, 8]),
                               helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 16, 9, 9])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = proto_model(proto, "strided")
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    lowered = lower(import_relax(model), target)
    kernels = {gv.name_hint: f.script() for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    convs = [t for n, t in kernels.items() if "conv2d" in n]
    assert len(convs) == 3 and any("strided_slice" in n for n in kernels)
    assert not any("strided_slice" in n for n in kernels if "conv2d" in n)  # the slice stays out of the conv
    strided = [t for t in convs if "* T.int64(2)" in t]
    assert len(strided) == 2, strided  # the padded 1x1 and the 3x3 keep their stride
    x = rng.standard_normal((1, 8, 15, 15)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    vm = tvm.relax.VirtualMachine(compile_module(lowered, target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-4, rtol=1e-4)


def test_tuning_times_candidates_with_weights_cold_and_activations_warm() -> None:
    """The tuner's evaluator flushes a kernel's weights (its layout-free arguments) and nothing
    else: flushing the output too ranked ResNet-18's Winograd transforms the wrong way round."""
    from tvm.s_tir import meta_schedule as ms

    from deploypipe.backends.tvm import evaluate
    from deploypipe.backends.tvm.relax import import_relax, lower, tvm_target

    target = tvm_target(TvmOptions(**targets.get("host-cpu").compilers["tvm"].options))
    tasks = ms.relax_integration.extract_tasks(lower(import_relax(proto_model(tiny_classifier(), "tiny")), target), target)
    weights = evaluate.weight_positions(tasks)
    conv = next(t for t in tasks if "conv2d" in t.task_name)
    shapes = [a.shape for a in ms.arg_info.ArgInfo.from_entry_func(conv.dispatched[0], remove_preproc=True)]
    # the convolution's weights (conv and batch-norm constants) are cold, its input and output warm
    cold = evaluate.cold_arguments(weights, shapes)
    assert cold == sorted(int(i) for i in conv.dispatched[0]["main"].attrs["layout_free_buffers"]), (conv.task_name, shapes)
    assert 1 in cold and 0 not in cold and len(shapes) - 1 not in cold
    # a kernel without weights runs warm; one the tuner does not know is flushed as MetaSchedule does
    plain = next(t for t in tasks if not t.dispatched[0]["main"].attrs.get("layout_free_buffers"))
    plain_shapes = [a.shape for a in ms.arg_info.ArgInfo.from_entry_func(plain.dispatched[0], remove_preproc=True)]
    assert evaluate.cold_arguments(weights, plain_shapes) == []
    assert evaluate.cold_arguments(weights, [[1, 7], [7, 7], [1, 7]]) == [1, 2]
    # two kernels with the same activations and other weights: neither is guessed
    assert evaluate.kernel_key(shapes) in weights
    clash = evaluate.weight_positions([conv, _with_layout_free(conv, [1])])
    assert evaluate.kernel_key(shapes) not in clash


def _with_layout_free(task, positions: list[int]):
    """A stand-in task: `task`'s kernel with other weight positions."""
    from types import SimpleNamespace

    mod = task.dispatched[0]
    func = mod["main"].with_attr("layout_free_buffers", positions)
    return SimpleNamespace(dispatched=[tvm.IRModule({"main": func})])


def test_retime_times_every_record_again_here(tmp_path: Path, cli) -> None:
    """`tvm tune --retime`: a database whose times come from elsewhere (another host, an older
    evaluator) is timed again here, record for record, and says it was measured here only; trials
    asked for beyond its records go first to the default-rule variants it lacks."""
    from deploypipe.backends.tvm.relax import MEASURED_ON, measured_on, tuning_records

    model = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_classifier(), str(model))
    logs = tmp_path / "tuning_logs"
    assert cli("tvm", "tune", "--model", str(model), "--trials", "2", "--trials-per-iter", "2",
               "--tuning-logs", str(logs)).returncode == 0
    db = logs / "tiny" / "host-cpu"
    recorded = tuning_records(db)
    lines = []
    for line in (db / "database_tuning_record.json").read_text().splitlines():
        workload, record = json.loads(line)
        record[1] = [t * 1000 for t in record[1]]  # as if timed on a far slower machine
        lines.append(json.dumps([workload, record]))
    (db / "database_tuning_record.json").write_text("\n".join(lines) + "\n")
    (db / MEASURED_ON).write_text(json.dumps([{"host_cpu": "some-other-cpu"}]))
    before = sorted(json.loads(line)[1][1][0] for line in lines)
    res = cli("tvm", "tune", "--model", str(model), "--trials", "2", "--retime", "--tuning-logs", str(logs), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["retimed"] == recorded and report["stopped"] == "already tuned", report
    assert report["records_after"] == recorded
    after = sorted(json.loads(line)[1][1][0] for line in (db / "database_tuning_record.json").read_text().splitlines())
    assert len(after) == recorded and all(a < b / 10 for a, b in zip(after, before, strict=True)), (before, after)
    assert measured_on(db) == [{"host_cpu": str(tvm.target.codegen.llvm_get_system_cpu())}]
    assert not (db / ".retiming").exists() and not (db / ".retimed").exists()
    report = _build(tmp_path, model=model)  # the re-timed database applies
    assert report.manifest.compiler_info["tuning"]["kernels"]["tuned"] >= 1 and report.manifest.fidelity.passed
    # --retime on a model without a database yet just tunes
    fresh = tmp_path / "fresh_logs"
    res = cli("tvm", "tune", "--model", str(model), "--trials", "1", "--retime", "--tuning-logs", str(fresh), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["records_before"] == 0 and report["records_after"] >= 1 and report["stopped"] == "done", report
    # a trial beyond the records goes to a default-rule variant the database lacks (one trial
    # seeded one of the convolution's two), not to one of the schedules it holds
    res = cli("tvm", "tune", "--model", str(model), "--trials", "2", "--retime", "--tuning-logs", str(fresh), "--json")
    assert res.returncode == 0, res.stderr
    assert "timing 1 default-rule variants the database lacks" in (
        fresh / "tiny" / "host-cpu" / "logs" / "deploypipe_tune.log").read_text()
    report = json.loads(res.stdout)
    assert report["retimed"] == 1 and report["records_after"] == 2, report
    lines = (fresh / "tiny" / "host-cpu" / "database_tuning_record.json").read_text().splitlines()
    assert len({json.dumps(json.loads(line)[1][0]) for line in lines}) == 2  # two different traces


def test_default_candidates_know_their_records_back_from_json(tmp_path: Path) -> None:
    """A default-rule candidate a database holds is known once its record comes back from the
    JSON file: the weight repacking's annotation came back as 1 where the rule wrote True, so no
    kernel with prepacked weights matched, and `--retime` timed again variants the database had."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from deploypipe.backends.tvm import search
    from deploypipe.backends.tvm.relax import import_relax, lower, tvm_target

    target = tvm_target(TvmOptions(**targets.get("host-cpu").compilers["tvm"].options))
    tasks = ms.relax_integration.extract_tasks(lower(import_relax(proto_model(tiny_classifier(), "tiny")), target), target)
    candidates = {t.task_name: search.default_candidates(t.dispatched[0], target) for t in tasks}
    dense = next(cs for name, cs in candidates.items() if "matmul" in name)
    assert any("layout_rewrite_preproc" in c.mod.script() for c in dense)  # its weights are repacked
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    for c in (c for cs in candidates.values() for c in cs):
        db.commit_tuning_record(ms.database.TuningRecord(c.trace, db.commit_workload(c.workload), [1e-3], c.target,
                                                         c.args_info))
    records = ms.database.JSONDatabase(work_dir=str(tmp_path)).get_all_tuning_records()  # from the file
    known = frozenset(tvm_ffi.structural_hash(search.replayed(r)) for r in records)
    assert len(records) == sum(map(len, candidates.values()))
    assert {t.task_name: search.default_candidates(t.dispatched[0], target, known) for t in tasks} == {
        t.task_name: [] for t in tasks}


def test_tiles_with_a_tail_are_peeled_and_match_onnxruntime() -> None:
    """On x86 the default rule takes a register tile taller than any divisor of the rows allows
    where it saves issue slots (AVX2, 14 rows x 16 channels: 5 x 2 vectors and a last tile of 4
    rows, not 7 x 1), marks the rows loop for LoopPartition and the build gives the kernel 32-bit
    indices, so the mark survives to the pass (on 64-bit ones NarrowDataType dropped it and every
    full tile kept a bounds test); the output equals ONNX Runtime's. ARM targets, where no core
    has timed it, keep exact divisors."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from deploypipe.backends.tvm import schedules
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower

    assert schedules._tile(16, 14, 8, 12, 16) == (8, 7)
    assert schedules._tile(16, 14, 8, 12, 16, tails=True) == (16, 5)
    assert schedules._tile(128, 49, 8, 12, 16, tails=True) == (16, 5)  # a 28x28 Winograd matmul's 49 tiles
    assert schedules._tile(64, 56, 16, 28, 32, tails=True) == (64, 4)  # AVX-512: the divisor tile is as good
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8, 1, 1)).astype(np.float32) * 0.3, "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
                              "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 14, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 14, 14])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "broadwell", "num-cores": 2})
    lowered = lower(import_relax(proto_model(proto, "tail")), target)
    (gv, conv), = [(gv, f) for gv, f in lowered.functions_items() if "conv2d" in gv.name_hint]
    with target:
        sch = schedules.schedule_kernel(conv, target)
        unmarked = schedules.schedule_kernel(conv, target, schedules.Knobs(tails=False))
    assert schedules.PARTITION_HINT in sch.mod["main"].script()
    assert schedules.PARTITION_HINT not in unmarked.mod["main"].script()
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "armv7a-linux-gnueabihf", "mattr": ["+neon"], "num-cores": 4})
    with arm:
        assert schedules.PARTITION_HINT not in schedules.schedule_kernel(conv, arm).mod["main"].script()
    lowered[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    narrowed = schedules.partition_tails(lowered)[gv].script()
    assert "T.int64" not in narrowed and schedules.PARTITION_HINT in narrowed
    assert "T.int64" in schedules.partition_tails(lower(import_relax(proto_model(proto, "tail")), target))[gv.name_hint].script()
    x = rng.standard_normal((1, 8, 14, 14)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    vm = tvm.relax.VirtualMachine(compile_module(lowered, target), tvm.cpu())
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mcpu,cores", [("broadwell", 2), ("broadwell", 8), ("host", 2)])
def test_tiles_with_a_tail_hold_across_shapes(mcpu: str, cores: int) -> None:
    """Convolutions (1x1 and 3x3, strided or not, odd maps) and a batched dense layer, built
    with the x86 default for AVX2 (which runs on every x86 host here; the parallel split differs
    with the cores) and for this host's CPU: the kernels that take a tile with a tail equal
    ONNX Runtime."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from deploypipe.backends.tvm import schedules
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower

    rng = np.random.default_rng(0)
    if mcpu == "host":
        mcpu = str(tvm.target.codegen.llvm_get_system_cpu())
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": cores})
    marked = 0
    for hw, cin, cout, k, stride in ((7, 24, 64, 1, 1), (13, 8, 16, 3, 1), (14, 24, 40, 1, 2), (17, 8, 64, 3, 2)):
        out = (hw + 2 * (k // 2) - k) // stride + 1
        inits = [numpy_helper.from_array(rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.2, "w"),
                 numpy_helper.from_array(rng.standard_normal((cout * out * out, 16)).astype(np.float32) * 0.05, "m")]
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[k // 2] * 4, strides=[stride] * 2),
                 helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
                 helper.make_node("MatMul", ["f", "m"], ["y"])]
        graph = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, cin, hw, hw])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 16])], inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        lowered = lower(import_relax(proto_model(proto, "shapes")), target)
        with target:
            scheduled = schedules.default_schedule()(lowered)
        marked += sum(schedules.PARTITION_HINT in f.script() for _, f in scheduled.functions_items()
                      if isinstance(f, tvm.tirx.PrimFunc))
        x = rng.standard_normal((3, cin, hw, hw)).astype(np.float32)
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = tvm.relax.VirtualMachine(compile_module(lowered, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()), rtol=1e-4)
    assert marked >= (2 if mcpu == "broadwell" else 0), marked


def test_a_tail_the_parallel_loop_would_take_falls_back_to_divisor_tiles() -> None:
    """A 49-row dense layer with one block of output channels: its rows must feed the parallel
    loop, where LoopPartition cannot peel a short tile, so the rule schedules it again with
    exact-divisor tiles (no bounds test in the kernel) rather than keep a test in every tile."""
    from onnx import numpy_helper

    from deploypipe.backends.tvm import schedules
    from deploypipe.backends.tvm.relax import compile_module, import_relax, lower

    rng = np.random.default_rng(0)
    m = rng.standard_normal((64, 16)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "m"], ["y"])], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [49, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [49, 16])],
                              [numpy_helper.from_array(m, "m")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    target = tvm.target.Target({"kind": "llvm", "mcpu": "broadwell", "num-cores": 8})
    lowered = lower(import_relax(proto_model(proto, "dense")), target)
    with target:
        kernels = [f.script() for gv, f in schedules.default_schedule()(lowered).functions_items()
                   if "matmul" in gv.name_hint]
    assert kernels and all("T.where" not in k and "T.parallel" in k for k in kernels)
    x = rng.standard_normal((49, 64)).astype(np.float32)
    got = tvm.relax.VirtualMachine(compile_module(lowered, target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, x @ m, atol=1e-4, rtol=1e-4)
