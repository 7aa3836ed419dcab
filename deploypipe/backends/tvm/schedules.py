"""Default CPU schedules for kernels that have no tuned record.

Lowered TIR without a schedule is a single-threaded, scalar loop nest: TVM 0.27 ships no CPU
default schedule for convolutions (its dlight CPU rules cover GEMV and row reductions only), so an
untuned build ran 50-180x slower than ONNX Runtime. These rules give every kernel a schedule
without measuring anything:

- a reduction with a contiguous output axis (conv2d in NHWC incl. depthwise, dense/matmul,
  pooling): a register tile of `rows x lanes*k` accumulators over the two innermost output
  axes (on x86 the last tile may be shorter, peeled off by LoopPartition); the output-channel
  blocks (and as few output rows as balance the cores) are the parallel tasks; a task walks
  large weight slices in blocks of input channels so each block is reused on all its rows while
  cached; the epilogue (bias, residual add, activation) runs
  per tile from the accumulators, or per task after the last channel block;
- the weights are prepacked to [O/vec, ..., vec] (one contiguous stream per task), a repacking
  that `relax.fold_prepacking` moves out of the kernel and folds into the constants;
- a channel convolution's zero padding is a block of its own (its bounds test stays out of the
  inner loop); a depthwise one keeps it inlined;
- everything else (elementwise, layout transforms, other reductions): producers inlined, the
  outer loops fused and parallel, the innermost loop vectorized.

`convert_layout` puts convolutions in NHWC/HWIO first, so the output-channel axis is contiguous
in the output and in the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

ACCUMULATORS = {32: 28, 16: 12}  # vector registers for accumulators, by registers the ISA has (the rest: operands)
ROWS = (8, 7, 6, 5, 4, 3, 2, 1)  # tile heights tried along the second-innermost output axis
CHAINS = 10  # multiply-adds a core keeps in flight: 2 FMA ports x 5 cycles' latency (x86 since Haswell)
PARTITION_HINT = "pragma_loop_partition_hint"  # LoopPartition splits a loop so marked where its conditions flip
TAIL_GAIN = 1.1  # a tile that leaves a shorter last tile is taken only where `_slots` says this much faster


def convert_layout(mod: tvm.IRModule) -> tvm.IRModule:
    """Convolutions to NHWC data / HWIO weights (pooling and elementwise ops follow).

    The ONNX frontend emits Clip (ReLU6) as TE kernels that ConvertLayout cannot see through, so
    each would sit between two transposes in its own kernel; they become Relax
    maximum/minimum first, which follow the layout and fuse into the convolution's epilogue."""
    from tvm import relax

    mod = _clip_as_relax_ops(relax.transform.FoldConstant()(mod))  # folds the bounds' NaN guards
    mod = relax.transform.DeadCodeElimination()(mod)
    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)


def pad_dense_outputs(mod: tvm.IRModule, lanes: int) -> tvm.IRModule:
    """A dense layer by constant weights whose output count is not a multiple of the vector lanes
    (the 1000 classes of the zoo's classifiers on AVX-512's 16, a 10-class head) gets zero weight
    columns up to the next multiple, and its output is sliced back (the slice fuses into the
    kernel): the register tile then takes full vectors and several accumulators instead of half
    vectors and one, or none at all. Runs after FoldConstant."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    matmul = tvm.ir.Op.get("relax.matmul")

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            weights = call.args[1] if call.op.same_as(matmul) and len(call.args) == 2 else None
            if isinstance(weights, relax.Var):
                weights = self.lookup_binding(weights)
            if (not isinstance(weights, tvm.ir.expr.GenericConst) or weights.ty.ndim != 2
                    or weights.ty.dtype != "float32" or int(weights.ty.shape[1]) % lanes == 0):
                return call
            w = weights.value.numpy()
            n = w.shape[1]
            padded = np.zeros((w.shape[0], -(-n // lanes) * lanes), np.float32)
            padded[:, :n] = w
            out = relax.op.matmul(call.args[0], relax.const(padded), out_dtype=call.attrs.out_dtype)
            # a positive axis: TOPI's strided_slice refuses -1 once the batch is symbolic
            return relax.op.strided_slice(out, axes=[max(call.args[0].ty.ndim, 2) - 1], begin=[0], end=[n])

    return mutate_functions(mod, Rewrite)


def subsample_pointwise(mod: tvm.IRModule) -> tvm.IRModule:
    """A strided 1x1 FP32 convolution (NHWC, unpadded: ResNet's downsampling shortcuts and its
    stride-2 bottleneck entries) becomes a strided slice of its input and a stride-1 1x1
    convolution. The slice is a kernel of its own (an injective producer does not fuse into a
    convolution), so the convolution reads a dense input: strided, its register tile took every
    other input row from memory and ran at 72-78 GFLOP/s against 105-110 for the same layer
    dense (ResNet-50, AVX2). Runs after convert_layout."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if not float_nhwc_conv(call):
                return call
            attrs, data, weights = call.attrs, call.args[0].ty, call.args[1].ty
            strides = [int(s) for s in attrs.strides]
            size, window = static_dims(data.shape, 1, 3), static_dims(weights.shape, 0, 2)
            if strides == [1, 1] or any(int(p) for p in attrs.padding) or window != [1, 1] or not size:
                return call
            dense = relax.op.strided_slice(call.args[0], axes=[1, 2], begin=[0, 0], end=size, strides=strides)
            return relax.op.nn.conv2d(dense, call.args[1], strides=[1, 1], padding=[0, 0, 0, 0],
                                      data_layout="NHWC", kernel_layout="HWIO", out_layout="NHWC",
                                      out_dtype=attrs.out_dtype)

    return mutate_functions(mod, Rewrite)


def float_nhwc_conv(call: Any) -> bool:
    """`call` is an FP32 conv2d in NHWC data / HWIO weights / NHWC output, ungrouped and
    undilated: the convolutions the graph rewrites here and in `winograd` take."""
    import tvm

    if not call.op.same_as(tvm.ir.Op.get("relax.nn.conv2d")):
        return False
    attrs = call.attrs
    return bool(attrs.data_layout == "NHWC" and attrs.kernel_layout == "HWIO" and attrs.out_layout == "NHWC"
                and int(attrs.groups) == 1 and [int(d) for d in attrs.dilation] == [1, 1]
                and call.args[0].ty.dtype == "float32" and call.args[1].ty.dtype == "float32"
                and call.ty.dtype == "float32")


def static_dims(shape: Any, start: int, stop: int) -> list[int] | None:
    """Dims start..stop-1 of a Relax shape as ints, or None where the shape or one of them is
    unknown."""
    import tvm

    if shape is None:
        return None
    dims = [shape[i] for i in range(start, stop)]
    return [int(d) for d in dims] if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


def mutate_functions(mod: tvm.IRModule, mutator_class: Any) -> tvm.IRModule:
    """`mod` with every Relax function rewritten by one instance of `mutator_class` (a
    PyExprMutator; the graph rewrites here and in `integer` share it)."""
    from tvm import relax

    rewrite = mutator_class(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gv] = rewrite.visit_expr(func)
    return mod


def _clip_as_relax_ops(mod: tvm.IRModule) -> tvm.IRModule:
    import re

    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    call_tir = tvm.ir.Op.get("relax.call_tir")
    ops = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if not (call.op.same_as(call_tir) and isinstance(call.args[0], tvm.ir.GlobalVar)):
                return call
            name = re.fullmatch(r"(maximum|minimum)\d*", call.args[0].name_hint)
            args = call.args[1]
            if not (name and isinstance(args, relax.Tuple) and len(args.fields) == 2):
                return call
            bound = args.fields[1]
            if isinstance(bound, relax.Var):
                bound = self.lookup_binding(bound)
            if isinstance(bound, tvm.ir.expr.GenericConst) and bound.ty.ndim == 0:
                return ops[name.group(1)](args.fields[0], bound)
            return call

    return mutate_functions(mod, Rewrite)


@dataclass(frozen=True)
class Knobs:
    """The default rule's choices. The defaults serve every kernel untuned; `tvm tune` measures
    variants of them per kernel (`variants`) and keeps the fastest as a tuning record."""

    accumulators: int | None = None  # vector registers for a tile's accumulators; None: ACCUMULATORS by ISA
    channel_block: int = 32  # input channels per step of a reduction's outer loop
    task_bytes: int = 64 * 1024  # most output one parallel task accumulates before its epilogue reads it back
    weight_bytes: int = 128 * 1024  # a task's weight slice beyond this is walked in blocks of input channels
    pad_block: bool = True  # a channel convolution's padding as a block of its own (else inlined)
    tails: bool | None = None  # a taller register tile that leaves a shorter last one where `_slots` says so
    # (`_tile`); None: on x86, where it was measured (docs/tvm.md, "Tiles with a tail"), off on ARM
    fit_registers: bool = True  # a tile leaves registers for its weight vectors and the broadcast (else
    # only `accumulators` bounds it and it may spill: kept as a variant so measurement decides)


def variants() -> list[Knobs]:
    """The default and each knob moved on its own (a kernel's best is rarely far from the
    default; the grid of all combinations is 200+ builds a kernel)."""
    base = Knobs()
    moves = [{"accumulators": a} for a in (8, 14, 20)]
    moves += [{"channel_block": c} for c in (16, 64)]
    moves += [{"task_bytes": t} for t in (16 * 1024, 256 * 1024)]
    moves += [{"weight_bytes": w} for w in (32 * 1024, 1024 * 1024)]
    moves += [{"pad_block": False}, {"fit_registers": False}, {"tails": False}, {"tails": True}]
    return [base, *(replace(base, **m) for m in moves)]  # type: ignore[arg-type]


def default_schedule(*first: Any) -> Any:
    """The pass scheduling every PrimFunc not already scheduled (tuned ones keep theirs); the
    rules in `first` (the integer convolutions' VNNI rule) are tried before this module's."""
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(*first, _rule())


def schedule_kernel(func: Any, target: Any, knobs: Knobs = Knobs()) -> Any:
    """The schedule of one kernel (an s_tir.Schedule, its trace replayable), or None where the
    rule does not apply (not a CPU target, or a kernel it cannot schedule)."""
    from tvm import s_tir

    if "cpu" not in target.keys:
        return None
    lanes = float_lanes(target)
    cores = int(target.attrs.get("num-cores", 1) or 1)
    triple = str(target.attrs.get("mtriple", ""))
    registers = 32 if lanes >= 16 or triple.startswith("aarch64") else 16
    knobs = knobs if knobs.accumulators else replace(knobs, accumulators=ACCUMULATORS[registers])
    if knobs.tails is None:
        knobs = replace(knobs, tails=not triple or triple.startswith(("x86_64", "i686", "i386")))
    sch = s_tir.Schedule(func)
    free = [func.params[int(i)] for i in (func.attrs or {}).get("layout_free_buffers", [])]
    try:
        _inline(sch, knobs)
        reductions = [b for b in _blocks(sch) if _is_reduction(sch, b)]
        if len(reductions) == 1 and _tile_reduction(sch, reductions[0], lanes, registers, cores, knobs, free):
            for block in _blocks(sch):
                if _is_padding(sch, block):  # serial, it took a tenth of a 3x3 convolution's time
                    _parallel_vectorize(sch, block, lanes)
        else:
            sch = s_tir.Schedule(func)
            _inline(sch, knobs)
            for block in _blocks(sch):
                _parallel_vectorize(sch, block, lanes)
    except TailInParallelLoop:
        return schedule_kernel(func, target, replace(knobs, tails=False))
    except Exception:  # noqa: BLE001 - a kernel this rule cannot schedule stays as it was
        return None
    return sch


class TailInParallelLoop(Exception):  # noqa: N818 - a signal to schedule again, not an error
    """A tile with a tail whose rows loop joined the parallel loop (too few output-channel blocks
    for the cores): LoopPartition cannot peel a fused loop, so every full tile would keep its
    bounds test. The kernel is scheduled again with exact-divisor tiles."""


def partition_tails(mod: tvm.IRModule) -> tvm.IRModule:
    """Kernels whose register tiles leave a shorter last tile get 32-bit loop indices, so that
    LoopPartition peels that tile off (`_tile_reduction` marks the loop). With 64-bit ones the
    hint is lost: NarrowDataType, which runs before LoopPartition, renames the loop's variable
    but not the hint's, and every full tile kept a bounds test per row inside its channel loop
    (the 7x7 stage's Winograd matmul took 1.16 ms against 0.91 without tails: -mcpu=broadwell on
    an AVX-512 EPYC, docs/tvm.md "Tiles with a tail")."""
    import tvm
    from tvm import s_tir, tirx

    def hinted(func: Any) -> bool:
        try:
            sch = s_tir.Schedule(func)
        except Exception:  # noqa: BLE001 - a kernel without block structure carries no mark of ours
            return False
        return any(PARTITION_HINT in sch.get(loop).annotations for block in _blocks(sch)
                   for loop in sch.get_loops(block))

    marked = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc) and hinted(f)]
    if not marked:
        return mod
    out = mod.clone()
    for gv, func in marked:
        out.update_func(gv, tirx.transform.ForceNarrowIndexToInt32()(tvm.IRModule({gv: func}))[gv])
    return out


def float_lanes(target: Any) -> int:
    """float32 lanes of the target's widest vector (at least 4)."""
    return max(vector_bits(target) // 32, 4)


def vector_bits(target: Any) -> int:
    """The widest float vector of the target's CPU. Asked of LLVM per -mcpu (TVM 0.27's
    llvm_get_vector_width answers 512 for every x86 -mcpu on an AVX-512 host, haswell included,
    which gave AVX2 targets tiles twice too wide for their registers)."""
    from tvm.target.codegen import llvm_cpu_has_features

    triple = str(target.attrs.get("mtriple", "")) or "x86_64"
    if triple.startswith(("x86_64", "i686", "i386")):
        if llvm_cpu_has_features(["avx512f"], target):
            return 512
        return 256 if llvm_cpu_has_features(["avx"], target) else 128
    return 128  # NEON on aarch64 and armv7 (SVE is not used)


def _rule() -> Any:
    from tvm.s_tir import dlight

    class CpuDefault(dlight.ScheduleRule):
        """Tile, parallelize and vectorize one CPU kernel (see the module docstring)."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            return schedule_kernel(func, target)

    return CpuDefault()


def _blocks(sch: Any) -> list[Any]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _is_reduction(sch: Any, block: Any) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)


def _inline(sch: Any, knobs: Knobs) -> None:
    """Inline every spatial block that is not written to an output (transposes, epilogue
    intermediates), so each kernel is at most one reduction, its padded input and one output
    block. Padding stays a block of its own: inlined, its bounds test sits in the innermost
    loop of the convolution (measured 2x slower on ResNet-18's 3x3 convolutions)."""
    changed = True
    while changed:
        changed = False
        for block in _blocks(sch)[:-1] if len(_blocks(sch)) > 1 else []:
            if _is_reduction(sch, block) or (knobs.pad_block and _is_padding(sch, block)):
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001, S112 - a block that cannot be inlined stays
                continue
            changed = True
            break


def _is_padding(sch: Any, block: Any) -> bool:
    """A block that copies its input with a zero border (`if_then_else(in bounds, x, 0)`) for a
    convolution that reduces over input channels. A depthwise convolution or a pooling (window only) keeps
    its padding inlined: there the bounds test is cheaper than another pass over the input
    (measured 2x either way on MobileNet-v2's depthwise layers)."""
    import tvm

    value = getattr(sch.get(block).body, "value", None)
    if not (isinstance(value, tvm.ir.Call) and str(getattr(value.op, "name", "")).endswith("if_then_else")):
        return False
    return any(_channel_reduction(sch.get(c)) for c in sch.get_consumers(block))


def _channel_reduction(stmt: Any) -> bool:
    """The block reduces over input channels: its innermost reduction axis indexes the last
    (contiguous) dimension of an input, as in an NHWC convolution or the K of a matmul. A
    depthwise convolution or a pooling reduces over the window only: the channel axis of its
    input is an output axis (a 3x3 max-pool with its padding block took 0.50 ms on ResNet-18's
    stem, 0.18 with the bounds test inlined, single-threaded)."""
    from tvm.tirx.analysis import undefined_vars

    reduce = [iv for iv in stmt.iter_vars if int(iv.iter_type) != 0]
    if not reduce or getattr(reduce[-1].dom.extent, "value", 2) == 1:  # depthwise: one channel per group
        return False
    return any(r.region and any(v.same_as(reduce[-1].var) for v in undefined_vars(r.region[-1].min))
               for r in stmt.reads)


def _factor(extent: int, candidates: tuple[int, ...]) -> int:
    return next((c for c in candidates if extent % c == 0), 1)


def _tile(channels: int, width: int, lanes: int, accumulators: int, registers: int | None,
          tails: bool = False) -> tuple[int, int]:
    """(tile width along the contiguous axis, tile height): the most accumulators that fit in
    `accumulators` vector registers and leave, of the ISA's `registers`, one for each weight
    vector of the tile and one for the broadcast input (7 rows x 4 vectors took 33 of AVX-512's
    32 registers: LLVM rotated the 28 accumulators through registers and the stack on every input
    channel; `registers` None: only `accumulators` bounds the tile); exact divisors of `width`
    (no tails), wider tiles first on ties. With `tails`, a height that does not divide `width`
    (the last tile shorter) is taken where `_slots` counts it at least TAIL_GAIN faster."""
    best = (0, 0, 0)
    fits = []
    for vectors in (4, 3, 2, 1):
        if channels % (vectors * lanes):
            continue
        budget = accumulators if registers is None else min(accumulators, registers - vectors - 1)
        heights = tuple(r for r in ROWS if r * vectors <= budget)
        rows = _factor(width, heights)
        best = max(best, (rows * vectors, vectors, rows))
        fits += [(vectors, r) for r in heights if r < width]
    if not best[0]:
        half = lanes // 2
        return (half, _factor(width, ROWS)) if channels % half == 0 else (1, 1)
    if tails and fits:
        cost, _, vectors, rows = min((_slots(v, r, width), -v * r, v, r) for v, r in fits)
        if cost * TAIL_GAIN <= _slots(best[1], best[2], width):
            return vectors * lanes, rows
    return best[1] * lanes, best[2]


def _slots(vectors: int, rows: int, width: int) -> float:
    """Issue slots per multiply-add of `width` rows in tiles of `rows` x `vectors` (the last tile
    shorter where `rows` does not divide `width`): per input channel a tile loads its weight
    vectors, broadcasts one input per row and issues vectors x rows multiply-adds, and takes at
    least CHAINS slots, as a multiply-add waits for the previous one into its accumulator (about
    2 ports x 5 cycles on x86 cores since Haswell). AVX2's 7-row tiles of 1 vector issue 7 FMAs
    in 10 slots; 5 x 2 tiles over 49 rows, 98 in 100."""
    full, tail = divmod(width, rows)
    slots = full * max(vectors + rows, vectors * rows, CHAINS)
    if tail:
        slots += max(vectors + tail, vectors * tail, CHAINS)
    return slots / (width * vectors)


@dataclass(frozen=True)
class Axes:
    """A reduction block's loops classified: spatial (output) and reduction axes by position,
    every loop's constant extent. The output axes come first, the innermost reduction axis is
    the one a dot product or a channel block walks."""

    stmt: Any
    loops: list[Any]
    spatial: list[int]
    reduce: list[int]
    extents: list[int]

    def writes_along(self, axis: int) -> bool:
        """The block's output is indexed by this axis in its last (contiguous) dimension."""
        return bool(self.stmt.writes[0].region[-1].min.same_as(self.stmt.iter_vars[axis].var))

    def rows_axis(self) -> int | None:
        """The output axis a register tile stacks rows along: the innermost but one over 1."""
        return next((i for i in reversed(self.spatial[:-1]) if self.extents[i] > 1), None)


def reduction_axes(sch: Any, block: Any) -> Axes | None:
    """The block's axes if it is a reduction with one output, one loop per axis, constant
    extents and every output axis outside every reduction axis; else None."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars) or len(stmt.writes) != 1:
        return None
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    spatial = [i for i, k in enumerate(kinds) if k == 0]
    reduce = [i for i, k in enumerate(kinds) if k != 0]
    extents = [_extent(sch, lp) for lp in loops]
    if None in extents or not spatial or not reduce or max(spatial) > min(reduce):
        return None
    return Axes(stmt, list(loops), spatial, reduce, extents)  # type: ignore[arg-type]


def register_tile(sch: Any, axes: Axes, lanes: int, accumulators: int, registers: int | None,
                  tails: bool = False) -> tuple[Any, list[Any], list[Any], int, int] | None:
    """Split the innermost output axis into blocks of `vec` (vectors of `lanes`) and the rows
    axis into tiles of `rows` (`_tile`: as many accumulators as fit in `accumulators` of the
    ISA's `registers`). Returns (the output-block loop, the other output loops outermost first, the
    tile's loops `[rows, vectors, lanes]`, vec, rows), or None where no tile of at least half a
    vector fits."""
    loops, spatial, extents = axes.loops, axes.spatial, axes.extents
    rows_axis = axes.rows_axis()
    vec, rows = _tile(extents[spatial[-1]], extents[rows_axis] if rows_axis is not None else 1, lanes,
                      accumulators, registers, tails)
    if vec < lanes // 2:
        return None
    width = min(vec, lanes)  # one machine vector: LLVM handles <48 x float> badly
    v_o, v_k, v_i = sch.split(loops[spatial[-1]], [None, vec // width, width])
    outer = [loops[i] for i in spatial[:-1]]
    inner = [v_k, v_i]
    if rows_axis is not None and rows > 1:
        r_o, r_i = sch.split(loops[rows_axis], [None, rows])
        outer[spatial.index(rows_axis)] = r_o
        inner = [r_i, v_k, v_i]
    return v_o, outer, inner, vec, rows


def _extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _tile_reduction(sch: Any, block: Any, lanes: int, registers: int, cores: int, knobs: Knobs,
                    free: list[Any]) -> bool:
    """Register-tile a reduction whose innermost output axis is contiguous; False if it is not
    such a reduction (the caller then uses the plain parallel/vectorize schedule).

    Loop order, outermost first: one parallel loop over output-channel blocks (and as many
    leading output rows as it takes to give every core two tasks), the outer block of the
    innermost reduction axis (input channels: `knobs.channel_block` at a time), the task's remaining
    output rows, the other reduction axes (kernel window), the channel block, the register tile.
    A task thus reuses one slice of weights across all its rows while it is in cache instead of
    streaming all weights once per row (measured 2.4x on ResNet-18's 512-channel 3x3 layers)."""
    axes = reduction_axes(sch, block)
    if axes is None:
        return False
    loops, spatial, reduce, extents = axes.loops, axes.spatial, axes.reduce, axes.extents
    vec_axis = spatial[-1]
    if extents[vec_axis] < lanes or not axes.writes_along(vec_axis):
        return False
    tiled = register_tile(sch, axes, lanes, knobs.accumulators or 1, registers if knobs.fit_registers else None,
                          bool(knobs.tails))
    if tiled is None:
        return False
    v_o, outer, inner, vec, rows = tiled
    width = min(vec, lanes)
    rows_axis = axes.rows_axis()
    window = [loops[i] for i in reduce[:-1]]
    channels = [loops[reduce[-1]]]
    step = knobs.channel_block
    block_size = _factor(extents[reduce[-1]], (step, step // 2, step // 4))
    weight_bytes = vec * 4 * _product(sch, [loops[i] for i in reduce])
    if weight_bytes > knobs.weight_bytes and extents[reduce[-1]] > 2 * step and block_size > 1:
        channels = list(sch.split(channels[0], [None, block_size]))
    row_bytes = vec * rows * 4 * (-(-extents[rows_axis] // rows) if rows_axis is not None else 1)
    task, rest = _parallel_tasks(sch, extents[vec_axis] // vec, outer, 2 * cores, row_bytes, knobs.task_bytes)
    sch.reorder(v_o, *task, *channels[:-1], *rest, *window, channels[-1], *inner)
    if rows_axis is not None and extents[rows_axis] % rows:  # the last tile is shorter: LoopPartition
        rows_loop = outer[spatial.index(rows_axis)]  # peels it off the serial rows loop, so full tiles
        if not any(loop.same_as(rows_loop) for loop in rest):  # run without a bounds test
            raise TailInParallelLoop
        for loop in rest:
            sch.annotate(loop, PARTITION_HINT, 1)
    fused = sch.fuse(v_o, *task)
    sch.parallel(fused)

    # The epilogue (bias, residual, activation) runs where the reduction completes: per register
    # tile from the accumulators, or, when input channels come in blocks, per task after the last
    # block (the task's output is within knobs.task_bytes, still in cache)
    consumers = sch.get_consumers(block)
    epilogue = consumers[0] if consumers else sch.cache_write(block, 0, "global")
    blocked = len(channels) > 1
    sch.reverse_compute_at(epilogue, fused if blocked or not rest else rest[-1], preserve_unit_loops=True)
    _unroll_vectorize_tile(sch, sch.get_loops(block)[-len(inner):])
    epi = sch.get_loops(epilogue)
    tile = epi[len(rest) + 1:] if not blocked and rest else epi[1:]
    if tile and (_extent(sch, tile[-1]) or 0) % width == 0 and (_extent(sch, tile[-1]) or 0) > width:
        tile = [*tile[:-1], *sch.split(tile[-1], [None, width])]  # one machine vector per vectorized loop
    _unroll_vectorize_tile(sch, tile if not blocked else tile[-1:])
    init_at = 1 if blocked or not rest else 1 + len(rest)
    sch.decompose_reduction(block, sch.get_loops(block)[init_at])  # after vectorizing: it needs the init
    _prepack(sch, block, free, spatial.index(vec_axis), vec)
    return True


def _prepack(sch: Any, block: Any, free: list[Any], out_axis: int, vec: int) -> None:
    """Weight prepacking: the weights (a layout-free parameter: a constant of the model) are
    read as [O/vec, ..., vec], so a task's slice of weights is one contiguous stream instead of
    `vec`-float pieces strided by O (see repack_weights)."""
    stmt = sch.get(block)  # the update block, after decompose_reduction
    out_var = stmt.iter_vars[out_axis].var
    for index, region in enumerate(stmt.reads):
        dims = [r.min for r in region.region]
        if len(dims) < 2 or not dims[-1].same_as(out_var) or not any(region.source.same_as(p) for p in free):
            continue
        repack_weights(sch, block, index, lambda *ix: (ix[-1] // vec, *ix[:-1], ix[-1] % vec))
        return


def repack_weights(sch: Any, block: Any, index: int, layout: Any) -> None:
    """Read the block's `index`-th input (constant weights) in `layout` (a function of its
    indices): the repacking is a block marked as layout-rewrite preproc, which
    `relax.fold_prepacking` moves out of the kernel and runs once at build time."""
    from tvm import tirx

    region = sch.get(block).reads[index].region
    cached = sch.cache_read(block, index, "global")
    # 1, not True: a tuning record stores the trace as JSON, which gives a bool back as 1, and a
    # default-rule candidate must equal its record replayed (`search.replayed`) to be known
    sch.annotate(cached, "meta_schedule.layout_rewrite_preproc", 1)
    sch.transform_layout(block, ("read", index), tirx.IndexMap.from_func(
        layout, ndim=len(region), index_dtype=str(region[0].min.ty.dtype)))


def _parallel_tasks(sch: Any, blocks: int, outer: list[Any], want: int, row_bytes: int,
                    task_bytes: int) -> tuple[list[Any], list[Any]]:
    """Split the leading output loops into those that join the parallel loop (with the channel
    blocks) and the rest: just enough leading rows that there are `want` tasks and a task's
    output (`row_bytes` per innermost output row) stays within `task_bytes`, so its epilogue
    reads it from cache; every row more per task is one more reuse of the task's weights."""
    task: list[Any] = []
    rest = list(outer)
    tasks = blocks
    while rest:
        size = row_bytes * _product(sch, rest[:-1])
        if tasks >= want and size <= task_bytes:
            break
        loop = rest.pop(0)
        ext = _extent(sch, loop) or 1
        need = max(-(-want // tasks), -(-size // task_bytes))
        if ext <= need:
            task.append(loop)
            tasks *= ext
            continue
        parts = next(d for d in range(need, ext + 1) if ext % d == 0)
        if parts == ext:
            task.append(loop)
        else:
            lo, hi = sch.split(loop, [parts, None])
            task.append(lo)
            rest.insert(0, hi)
        tasks *= parts
    return task, rest


def _product(sch: Any, loops: list[Any]) -> int:
    out = 1
    for lp in loops:
        out *= _extent(sch, lp) or 1
    return out


def _unroll_vectorize_tile(sch: Any, loops: list[Any]) -> None:
    """A tile's loops: vectorize the innermost, unroll the ones outside it."""
    if not loops:
        return
    sch.vectorize(loops[-1])
    for lp in loops[:-1]:
        ext = _extent(sch, lp)
        if ext is not None and ext <= 16:
            sch.unroll(lp)


def _parallel_vectorize(sch: Any, block: Any, lanes: int) -> None:
    """Fuse the leading spatial loops into one parallel loop; vectorize the innermost loop of an
    all-spatial block when its reads are contiguous (or constant) along it: a gather, such as
    the NCHW->NHWC input transpose, stays scalar."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars):
        return
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    lead = next((i for i, k in enumerate(kinds) if k != 0), len(kinds))
    if lead == 0:
        return
    if lead < len(kinds):
        sch.parallel(sch.fuse(*loops[:lead]))
        return
    ext = _extent(sch, loops[-1])
    if len(loops) > 1 and ext is not None and ext >= lanes // 2 and _contiguous(stmt, stmt.iter_vars[-1].var):
        vec = _factor(ext, (lanes, lanes // 2))
        if vec > 1:
            outer, inner = sch.split(loops[-1], [None, vec])
            sch.parallel(sch.fuse(*loops[:-1], outer))
            sch.vectorize(inner)
            return
    sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 1 else loops[0])


def _contiguous(stmt: Any, var: Any) -> bool:
    """Every buffer the block touches is indexed by `var` only in its last dimension, as `var`
    itself, or not at all."""
    from tvm.tirx.analysis import undefined_vars

    for region in list(stmt.reads) + list(stmt.writes):
        dims = [r.min for r in region.region]
        if any(any(v.same_as(var) for v in undefined_vars(d)) for d in dims[:-1]):
            return False
        if dims and not dims[-1].same_as(var) and any(v.same_as(var) for v in undefined_vars(dims[-1])):
            return False
    return True
