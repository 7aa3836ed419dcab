"""How a tuning candidate is timed: as the model runs it, weights cold and activations warm.

A kernel in a model reads its weights from memory (a model's weights outgrow the caches, and the
other layers' pass through them between two calls) but its input has just been written by the
layer before and its output buffer is one the VM recycles. MetaSchedule's cache flush evicts every
argument but the first, outputs and residual inputs included, so a kernel that writes its output
in many scattered streams paid for cold stores it does not pay in the model: ResNet-18's Winograd
input transforms (AVX-512 EPYC, session 13) ranked a schedule that evaluates a 36-way select per
element (0.28 ms timed that way) above their unrolled default (0.34 ms), and in the model the
selected one took 0.15 ms a call against the default's 0.05. Here each candidate runs after only
its weight arguments (the kernel's `layout_free_buffers`) are flushed; a kernel whose weights are
not known is flushed as MetaSchedule does.

This module is imported by MetaSchedule's runner worker processes: it imports TVM only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

PREPROC = "deploypipe.tvm.flush_weights"


def kernel_key(shapes: Sequence[Sequence[int]]) -> str:
    """A kernel's arguments as the runner sees them: their count, the first's and the last's shape
    (the activations: weight arguments change shape when a schedule prepacks them)."""
    return f"{len(shapes)}|{tuple(int(d) for d in shapes[0])}|{tuple(int(d) for d in shapes[-1])}"


def weight_positions(tasks: Sequence[Any]) -> dict[str, list[int]]:
    """Per kernel key, the positions of its weight arguments (MetaSchedule tasks of one model).
    Two kernels with the same key and different weights get no entry (flushed as by default)."""
    from tvm.s_tir import meta_schedule as ms

    found: dict[str, list[int] | None] = {}
    for task in tasks:
        mod = task.dispatched[0]
        func = mod[mod.get_global_vars()[0]]
        shapes = [a.shape for a in ms.arg_info.ArgInfo.from_entry_func(mod, remove_preproc=True)]
        positions = sorted(int(i) for i in (func.attrs or {}).get("layout_free_buffers", []))
        key = kernel_key(shapes)
        found[key] = positions if found.get(key, positions) == positions else None
    return {k: v for k, v in found.items() if v is not None}


def cold_arguments(weights: dict[str, list[int]], shapes: Sequence[Sequence[int]]) -> list[int]:
    """Which arguments a candidate runs with flushed from the caches: its weights where the kernel
    is known, else every one but the first (MetaSchedule's way)."""
    positions = weights.get(kernel_key(shapes))
    return list(range(1, len(shapes))) if positions is None else positions


def run_evaluator(weights: dict[str, list[int]], rt_mod: Any, device: Any, evaluator_config: Any,
                  repeated_args: list[list[Any]]) -> list[float]:
    """MetaSchedule's `f_run_evaluator` (bind `weights` with functools.partial): its timing loop
    with a pre-run hook that flushes the kernel's weights only."""
    import tvm

    flush = tvm.get_global_func("cache_flush_cpu_non_first_arg")

    def flush_weights(*args: Any) -> None:
        cold = cold_arguments(weights, [a.shape for a in args])
        if cold:
            flush(args[0], *(args[i] for i in cold))  # flushes every argument it gets but the first

    tvm.register_global_func(PREPROC, flush_weights, override=True)
    evaluator = rt_mod.time_evaluator(
        func_name=rt_mod.entry_name, dev=device, number=evaluator_config.number,
        repeat=evaluator_config.repeat, min_repeat_ms=evaluator_config.min_repeat_ms, f_preproc=PREPROC)
    costs: list[list[float]] = []
    for args in repeated_args:
        device.sync()
        costs.append(list(evaluator(*args).results))
    return [float(c) for c in itertools.chain.from_iterable(costs)]
