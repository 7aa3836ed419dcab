"""Runs TVM artifacts (a Relax VM shared library) here, or on a device over TVM RPC.

Locally the library is loaded into a Relax VM on `tvm.cpu()`; with `RunOptions.rpc` or
`tracker`+`key` it is uploaded to the remote server and run there (the RPC engine that scales to a
farm of boards). The per-layer profile times every kernel call of the VM through its instrument
hook (TVM 0.27's Relax VM has no built-in profiler); it works for local runs.

With `RunOptions.emulate`, a library for another CPU (an armv7 or aarch64 board) runs on this host
through `deploypipe-run` (deploypipe.backends.tvm.native: TVM's C++ runtime cross-compiled for that CPU) under
qemu user-mode emulation, one process per inference: a correctness check of the device library
itself, whose timings are labelled as emulated and never taken for device timings.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import time
from typing import Any

import numpy as np

from deploypipe.backends.runner import LayerTime, Runner, RunOptions, physical_cores
from deploypipe.backends.tvm import native
from deploypipe.backends.tvm.facts import library_arch
from deploypipe.backends.tvm.rpc import RemoteSpec, connect, emulation


def _library_arch(artifact: Any) -> str:
    return artifact.manifest.compiler_info.get("library_arch") or library_arch(artifact.file("model"))


def _op_of(symbol: str) -> str:
    """The leading operator of a fused kernel's name: fused_conv2d_add_relu1 -> conv2d."""
    core = re.sub(r"\d+$", "", symbol.removeprefix("fused_"))
    for op in ("conv2d_transpose", "conv2d", "matmul", "dense", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
               "softmax", "reshape", "transpose", "concatenate", "layer_norm", "batch_norm"):
        if core.startswith(op):
            return op
    return core.split("_")[0] or symbol


class TvmRunner(Runner):
    kind = "tvm"
    library = "tvm"

    @classmethod
    def runs_elsewhere(cls, options: RunOptions) -> bool:
        """An RPC server or tracker (rpc://, tracker://) or qemu emulation (`qemu`)."""
        RemoteSpec.from_device(options.device)  # a malformed spec is the user's one-line error
        return options.device is not None

    @classmethod
    def why_not_runnable(cls, artifact: Any) -> str | None:
        if importlib.util.find_spec("tvm") is None:
            return "apache-tvm is not installed (pip install 'deploypipe[tvm]')"
        arch = _library_arch(artifact)
        if arch != platform.machine():
            return f"{arch} library: needs an {arch} device (--device rpc://HOST:PORT) or --device qemu"
        return None

    def activate(self) -> None:
        # read by TVM's thread pool when it starts, on the first run. Left to itself, TVM's x86
        # runtime takes half the logical CPUs (it assumes hyper-threading): one thread on a 2-vCPU
        # VM without SMT, where ONNX Runtime uses both, so an unset --threads gets the physical cores
        if self.options.threads or "TVM_NUM_THREADS" not in os.environ:
            os.environ["TVM_NUM_THREADS"] = str(self.options.threads or physical_cores())
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self._tvm = tvm
        self.spec = RemoteSpec.from_device(self.options.device)
        self.emulated: str | None = None
        self.native: tuple[Any, list[str] | None] | None = None
        order = self.artifact.manifest.compiler_info.get("input_order")
        self.input_order: list[str] = order or [s.name for s in self.artifact.manifest.inputs]
        self.output_names = [s.name for s in self.artifact.manifest.outputs]
        self._calls: dict[int, tuple[str, list[float]]] = {}
        arch = _library_arch(self.artifact)
        if self.options.device == "qemu" and arch != platform.machine():
            self._activate_native(arch)
            return
        if self.spec.enabled and self.model_path == self.artifact.file("model"):
            self.session = connect(self.spec)
            self.session.upload(str(self.model_path))
            lib = self.session.load_module(self.model_path.name)
            self.dev = self.session.cpu()
            self.emulated = emulation(self.session)
        else:
            self.session = None
            lib = tvm.runtime.load_module(str(self.model_path))
            self.dev = tvm.cpu()
        self.remote_run = self.session is not None
        self.vm = VirtualMachine(lib, self.dev)
        self._call_index = 0
        if self.options.profile and self.session is None:
            self._started: dict[int, float] = {}
            self.vm.set_instrument(self._instrument)
        self.main = self.vm["main"]

    def _activate_native(self, arch: str) -> None:
        info = self.artifact.manifest.compiler_info
        binary = native.build_runner(arch, info.get("cross_compiler"))
        prefix = native.emulator(arch)
        self.native = (binary, prefix)
        self.emulated = f"qemu-user {arch}, deploypipe-run"
        self.session = None
        self.remote_run = True  # not this host's own execution: no local profile, labelled in where()

    def _instrument(self, _func: Any, symbol: str, before_run: bool, _ret: Any, *_args: Any) -> int:
        """Times each VM call; calls are keyed by their position in the run, so two layers that
        share a kernel are still two rows."""
        if before_run:
            self._started[self._call_index] = time.perf_counter()
            return 0
        i = self._call_index
        self._call_index += 1
        dt = (time.perf_counter() - self._started.pop(i)) * 1000
        self._calls.setdefault(i, (str(symbol), []))[1].append(dt)
        return 0

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.native is not None:
            binary, prefix = self.native
            run = native.run(binary, self.model_path, [feeds[n] for n in self.input_order], prefix=prefix,
                             warmup=0, repeat=1, threads=self.options.threads)
            return dict(zip(self.output_names, run.outputs, strict=True))
        tvm = self._tvm
        self._call_index = 0
        out = self.main(*[tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), self.dev) for n in self.input_order])
        outs = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
        return {n: o.numpy() for n, o in zip(self.output_names, outs, strict=True)}

    def deactivate(self) -> None:
        """Drop every handle on the VM: a remote session closes only when nothing refers to it, and
        an RPC server serves one session at a time."""
        self.main = self.vm = self.dev = None  # type: ignore[assignment]
        self.session = None
        super().deactivate()

    def where(self) -> str | None:
        if not self.remote_run:
            return None
        if self.native is not None:
            return (f"run on this host by deploypipe-run under emulation ({self.emulated}), one process per "
                    "inference: NOT a device timing, correctness only")
        if self.emulated:
            return (f"measured on the {self.spec.describe()} under emulation ({self.emulated}): "
                    "NOT a device timing, correctness only")
        return f"measured on the {self.spec.describe()} (input/output copies over RPC included)"

    def under_emulation(self) -> bool:
        return bool(self.emulated)

    def layer_profile(self) -> list[LayerTime] | None:
        if not self.options.profile or self.remote_run or not self._calls:
            return None
        seen: dict[str, int] = {}
        rows = []
        builtin_ms = 0.0
        for i in sorted(self._calls):
            symbol, times = self._calls[i]
            if symbol.startswith("vm.builtin."):  # allocation/shape checks: one row of VM overhead
                builtin_ms += float(np.mean(times))
                continue
            seen[symbol] = seen.get(symbol, 0) + 1
            name = symbol if seen[symbol] == 1 else f"{symbol}#{seen[symbol]}"
            rows.append(LayerTime(name=name, op=_op_of(symbol), ms=float(np.mean(times))))
        rows.append(LayerTime(name="vm.builtin.*", op="vm.builtin", ms=builtin_ms))
        return rows
