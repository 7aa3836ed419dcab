"""Apache TVM (Relax + MetaSchedule) as a compiler: ONNX -> Relax -> one shared library.

The ONNX graph is imported with `tvm.relax.frontend.onnx` with the weights bound as constants (so
BatchNorm and other constant work folds at compile time and the weights travel inside the
library), convolutions moved to NHWC/HWIO, lowered with Relax's "zero" pipeline, given the tuned
schedules of the MetaSchedule databases that match its kernels by workload (this model's in
`tuning_logs/<model>/<target>/`, then other models' measured for the same -mcpu), the default CPU
schedules of `schedules.py` for every other kernel, and compiled to `model.so` for the target's
LLVM triple (cross-linked with Debian's cross g++ for ARM boards).

An artifact whose library is not for this host's CPU also carries `host_stand_in.so`, the same
Relax module compiled for the host, so its fidelity can be checked here; the ARM library itself is
checked under qemu by the tests (`tests/test_tvm_qemu.py`) or on a board over RPC.

QDQ models (the generic int8 pass's output) import as `relax.op.quantize`/`dequantize` pairs
around FP32 operators. On a CPU with a 32-bit 8-bit dot product their convolutions become integer
ones (`integer.py`: u8 x s8 -> int32 on x86 VNNI's vpdpbusd, s8 x s8 on the AArch64 dot product's
sdot); elsewhere they stay simulated quantization in float arithmetic. The
manifest's `compiler_info["int8_kernels"]` and a note say which path the build took and why.
"""

from __future__ import annotations

import platform
import shutil
from collections import Counter
from typing import Any

from deploypipe.artifact import HostCheck
from deploypipe.backends.compiler import (
    CompileContext,
    Compiler,
    CompileResult,
    TuneRequest,
    TuningReport,
)
from deploypipe.backends.tvm import integer, winograd
from deploypipe.backends.tvm import tune as tvm_tune
from deploypipe.backends.tvm.facts import (
    LIBRARY,
    STAND_IN,
    TvmOptions,
    host_target,
    library_arch,
)
from deploypipe.backends.tvm.relax import (
    apply_databases,
    compile_module,
    cpu_class,
    export,
    import_relax,
    lower,
    measured_on,
    repair_database,
    same_class,
    scheduled,
    target_string,
    timed_elsewhere,
    tuned_for,
    tuning_records,
    tvm_target,
)
from deploypipe.backends.tvm.rpc import RemoteSpec
from deploypipe.errors import BuildError, MissingBackendError, UnsupportedError
from deploypipe.model import Model
from deploypipe.toolchains import gxx_version


class TvmCompiler(Compiler):
    shapes = "dynamic"  # Relax keeps a symbolic dim: one library for every size in the bounds
    name = "tvm"
    extra = "tvm"

    Options = TvmOptions

    def check(self, model: Model, ctx: CompileContext) -> None:
        opts: TvmOptions = ctx.options
        _require_tvm()
        if opts.cross_compiler and shutil.which(opts.cross_compiler) is None:
            raise MissingBackendError(
                "tvm", self.extra,
                f"cross compiler {opts.cross_compiler} for {ctx.target.name} is not on PATH "
                "(apt-get install g++-aarch64-linux-gnu g++-arm-linux-gnueabihf, or run scripts/install.sh)",
            )
        if opts.arch() != platform.machine() and not opts.cross_compiler:
            raise UnsupportedError(f"target {ctx.target.name} is {opts.arch()}: its options need a cross_compiler")
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

        known = _get_convert_map()
        bad = [f"node {n.name or '(unnamed)'}: op {n.op_type}" for n in model.proto.graph.node
               if n.domain in ("", "ai.onnx") and n.op_type not in known]
        bad += [f"node {n.name or '(unnamed)'}: op {n.domain}.{n.op_type}" for n in model.proto.graph.node
                if n.domain not in ("", "ai.onnx")]
        if bad:
            raise UnsupportedError(f"TVM's ONNX frontend cannot import {model.name}: " + "; ".join(bad[:10]))

    def compile(self, model: Model, ctx: CompileContext) -> CompileResult:
        opts: TvmOptions = ctx.options
        target = tvm_target(opts)
        ctx.progress("TVM: importing ONNX into Relax")
        relax_mod = import_relax(model)
        lowered = lower(relax_mod, target, winograd_convs=opts.use_winograd())
        notes: list[str] = []
        winograd_layers = winograd.layers(lowered)
        if winograd_layers:
            shapes = Counter(winograd_layers)
            notes.append(f"Winograd form for {len(winograd_layers)} stride-1 3x3 convolution(s) "
                         f"({', '.join(f'{n}x {s}' for s, n in shapes.items())}); the others direct")
        tuning: dict[str, Any] = {"database": None, "records": 0}
        if ctx.tune_trials > 0:
            _static_for_tuning(model)
            report = tvm_tune.tune(model, opts, ctx.tuning_dir, ctx.tune_trials, progress=ctx.progress)
            tuning["session"] = report.model_dump()
        repair_database(ctx.tuning_dir)
        records = tuning_records(ctx.tuning_dir)
        mcpu = str(target.mcpu) if target.mcpu else "generic"
        if records and not model.dynamic:
            cpus = tuned_for(ctx.tuning_dir)
            tuning |= {"database": str(ctx.tuning_dir), "records": records, "tuned_for_mcpu": cpus,
                       "measured_on": measured_on(ctx.tuning_dir)}
            if cpus and cpus != [mcpu]:
                cls = cpu_class(target)
                if same_class(target, cpus):
                    notes.append(f"the tuning database's schedules were measured for -mcpu={','.join(cpus)}, this build "
                                 f"is for -mcpu={mcpu}, the same class ({cls}): applied, but their speed was not "
                                 f"measured on this CPU; retune into a new tuning_logs directory for it")
                else:
                    notes.append(f"the tuning database's schedules were measured for -mcpu={','.join(cpus)} "
                                 f"({cpu_class(target, cpus[0])}), this build is for -mcpu={mcpu} ({cls}): not applied "
                                 "(tiles sized for other vector registers), default schedules used; retune for this CPU")
        if not model.dynamic:
            ctx.progress("TVM: looking up tuning records by workload")
            lowered, used = apply_databases(lowered, target, ctx.tuning_dir)
            reused = [u for u in used if u["database"] != str(ctx.tuning_dir)]
            tuning["reused"] = reused
            for u in reused:
                notes.append(f"reused {len(u['kernels'])} tuned kernel(s) by workload from {u['database']} "
                             f"(measured for -mcpu={','.join(u['tuned_for_mcpu'])}, class {cpu_class(target)})")
            for u in used:
                elsewhere = timed_elsewhere(u["measured_on"], u["tuned_for_mcpu"])
                if elsewhere:
                    notes.append(f"the records from {u['database']} are for -mcpu={','.join(u['tuned_for_mcpu'])} code, "
                                 f"timed on a build host whose CPU is {', '.join(elsewhere)}: their ranking is that "
                                 "host's, not that CPU's; retune on the CPU itself")
        kernels = [gv.name_hint for gv, f in lowered.functions_items() if type(f).__name__ == "PrimFunc"]
        tuned = scheduled(lowered)
        tuning["kernels"] = {"total": len(kernels), "tuned": len(tuned), "default_schedule": len(kernels) - len(tuned)}
        if model.dynamic:
            notes.append("dynamic shapes: one library takes every size in the bounds; its kernels get the default "
                         "CPU schedules (MetaSchedule tunes static shapes: build a fixed shape to use tuning records)")
        elif not tuned:
            notes.append(f"untuned: no tuning record matched (looked in {ctx.tuning_dir.parent.parent}); every kernel "
                         "has deploypipe's default CPU schedule (NHWC, register-tiled, parallel, vectorized); "
                         f"`deploypipe tvm tune --model {model.name} --target {ctx.target.name}` searches for faster ones")
        ctx.progress(f"TVM: compiling for {target_string(target)}")
        try:
            executable = compile_module(lowered, target)
            export(executable, ctx.workdir / LIBRARY, opts.cross_compiler)
        except Exception as exc:  # TVM raises its own error types from C++; keep the message
            raise BuildError(f"TVM failed to compile {model.name} for {ctx.target.name}: {type(exc).__name__}: {exc}") from exc
        arch = library_arch(ctx.workdir / LIBRARY)
        files = {"model": LIBRARY}
        host_check = None
        if arch != platform.machine():
            ctx.progress("TVM: compiling the host stand-in for the fidelity check")
            stand_in_target = tvm_target(TvmOptions(target=host_target()))
            stand_in = compile_module(lower(relax_mod, stand_in_target, winograd_convs=opts.use_winograd()),
                                      stand_in_target)
            export(stand_in, ctx.workdir / STAND_IN, None)
            files["host_stand_in"] = STAND_IN
            host_check = HostCheck(
                kind="tvm", file=STAND_IN,
                why=(f"{arch} library cannot run on this {platform.machine()} host: the same Relax module "
                     f"compiled for the host ({target_string(stand_in_target)}, untuned) stands in. "
                     "The ARM library itself is checked under qemu (tests/test_tvm_qemu.py) or over --device rpc://HOST:PORT."),
            )
        int8_kernels = None
        if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.proto.graph.node):
            int8_kernels, note = integer.report(lowered, target)
            notes.append(note)
        return CompileResult(
            kind="tvm", files=files, inputs=model.inputs, outputs=model.outputs,
            toolchain=self.versions() | ({"cross_compiler": f"{opts.cross_compiler} {gxx_version(opts.cross_compiler) or ''}"} if opts.cross_compiler else {}),
            info={"target": target_string(target), "target_dict": opts.resolved_target(),
                  "target_as_written": opts.target, "library_arch": arch,
                  "cross_compiler": opts.cross_compiler, "params": "bound as constants inside model.so",
                  "input_order": [s.name for s in model.inputs], "tuning": tuning,
                  "winograd": winograd_layers,
                  **({"int8_kernels": int8_kernels} if int8_kernels else {})},
            notes=notes, host_check=host_check,
        )

    def tune(self, model: Model, ctx: CompileContext, request: TuneRequest) -> TuningReport:
        """MetaSchedule tuning into ctx.tuning_dir, measured here or on the RPC device."""
        _static_for_tuning(model)
        opts: TvmOptions = ctx.options
        remote = RemoteSpec.from_device(request.device)
        tvm_tune.check_measurable(opts, remote)
        self.check(model, ctx)
        return tvm_tune.tune(model, opts, ctx.tuning_dir, request.trials, remote=remote, budget_s=request.budget_s,
                             trials_per_iter=request.trials_per_iter, retime=request.retime, progress=ctx.progress)

    def versions(self) -> dict[str, str]:
        try:
            import tvm
        except ImportError:
            return {}
        return {"apache-tvm": tvm.__version__}


def _require_tvm() -> None:
    try:
        import tvm  # noqa: F401
    except ImportError as exc:
        raise MissingBackendError("tvm", "tvm", str(exc)) from exc


def _static_for_tuning(model: Model) -> None:
    if model.dynamic:
        raise UnsupportedError(f"{model.name} has dynamic input dims: MetaSchedule tunes static shapes; "
                               "tune and build a fixed shape (--input-shape NAME=8x3x224x224)")
