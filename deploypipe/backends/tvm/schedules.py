"""Default CPU schedules for kernels that have no tuned record.

Lowered TIR without a schedule is a single-threaded, scalar loop nest: TVM 0.27 ships no CPU
default schedule for convolutions (its dlight CPU rules cover GEMV and row reductions only), so an
untuned build ran 50-180x slower than ONNX Runtime. These rules give every kernel a schedule
without measuring anything:

- a reduction with a contiguous output axis (conv2d in NHWC incl. depthwise, dense/matmul,
  pooling): a register tile of `rows x lanes*k` accumulators over the two innermost output
  axes, the reduction loops outside the tile, the outer output loops fused and parallel, the
  epilogue (bias, residual add, activation) computed per tile from the accumulators;
- everything else (elementwise, layout transforms, other reductions): producers inlined, the
  outer loops fused and parallel, the innermost loop vectorized.

`convert_layout` puts convolutions in NHWC/HWIO first, so the output-channel axis is contiguous
in the output and in the weights (the weight transpose folds into the constant at build time:
weight prepacking).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tvm

ACCUMULATORS = 24  # vector registers to hold accumulators: of 32 (AVX-512, NEON aarch64), leaving room
ROWS = (8, 7, 6, 5, 4, 3, 2, 1)  # tile heights tried along the second-innermost output axis


def convert_layout(mod: tvm.IRModule) -> tvm.IRModule:
    """Convolutions to NHWC data / HWIO weights (pooling and elementwise ops follow).

    The ONNX frontend emits Clip (ReLU6) as TE kernels that ConvertLayout cannot see through, so
    each would sit between two transposes in its own kernel; they become Relax
    maximum/minimum first, which follow the layout and fuse into the convolution's epilogue."""
    from tvm import relax

    mod = _clip_as_relax_ops(relax.transform.FoldConstant()(mod))  # folds the bounds' NaN guards
    mod = relax.transform.DeadCodeElimination()(mod)
    return relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)


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

    rewrite = Rewrite(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gv] = rewrite.visit_expr(func)
    return mod


def default_schedule() -> Any:
    """The pass scheduling every PrimFunc not already scheduled (tuned ones keep theirs)."""
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(_rule())


def _rule() -> Any:
    from tvm import s_tir
    from tvm.s_tir import dlight
    from tvm.target.codegen import llvm_get_vector_width

    class CpuDefault(dlight.ScheduleRule):
        """Tile, parallelize and vectorize one CPU kernel (see the module docstring)."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            if "cpu" not in target.keys:
                return None
            lanes = max((llvm_get_vector_width(target) or 128) // 32, 4)
            sch = s_tir.Schedule(func)
            try:
                _inline(sch)
                reductions = [b for b in _blocks(sch) if _is_reduction(sch, b)]
                tiled = len(reductions) == 1 and _tile_reduction(sch, reductions[0], lanes)
                if not tiled:
                    sch = s_tir.Schedule(func)
                    _inline(sch)
                    for block in _blocks(sch):
                        _parallel_vectorize(sch, block, lanes)
            except Exception:  # noqa: BLE001 - a kernel this rule cannot schedule stays as it was
                return None
            return sch

    return CpuDefault()


def _blocks(sch: Any) -> list[Any]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _is_reduction(sch: Any, block: Any) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)


def _inline(sch: Any) -> None:
    """Inline every spatial block that is not written to an output (pads, transposes, epilogue
    intermediates), so each kernel is at most one reduction and one output block."""
    changed = True
    while changed:
        changed = False
        for block in _blocks(sch)[:-1] if len(_blocks(sch)) > 1 else []:
            if _is_reduction(sch, block):
                continue
            try:
                sch.compute_inline(block)
            except Exception:  # noqa: BLE001, S112 - a block that cannot be inlined stays
                continue
            changed = True
            break


def _factor(extent: int, candidates: tuple[int, ...]) -> int:
    return next((c for c in candidates if extent % c == 0), 1)


def _tile(channels: int, width: int, lanes: int) -> tuple[int, int]:
    """(tile width along the contiguous axis, tile height): the most accumulators that fit in
    ACCUMULATORS vector registers, exact divisors only (no tails), wider tiles first on ties."""
    best = (0, 0, 0)
    for vectors in (4, 3, 2, 1):
        if channels % (vectors * lanes):
            continue
        rows = _factor(width, tuple(r for r in ROWS if r * vectors <= ACCUMULATORS))
        best = max(best, (rows * vectors, vectors, rows))
    if best[0]:
        return best[1] * lanes, best[2]
    half = lanes // 2
    return (half, _factor(width, ROWS)) if channels % half == 0 else (1, 1)


def _extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext) if isinstance(ext, tirx.IntImm) else None


def _tile_reduction(sch: Any, block: Any, lanes: int) -> bool:
    """Register-tile a reduction whose innermost output axis is contiguous; False if it is not
    such a reduction (the caller then uses the plain parallel/vectorize schedule)."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(loops) != len(stmt.iter_vars) or len(stmt.writes) != 1:
        return False
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    spatial = [i for i, k in enumerate(kinds) if k == 0]
    reduce = [i for i, k in enumerate(kinds) if k != 0]
    extents = [_extent(sch, lp) for lp in loops]
    if None in extents or not spatial or max(spatial) > min(reduce):
        return False
    out_idx = stmt.writes[0].region[-1].min
    vec_axis = spatial[-1]
    if extents[vec_axis] < lanes or not out_idx.same_as(stmt.iter_vars[vec_axis].var):
        return False
    rows_axis = next((i for i in reversed(spatial[:-1]) if extents[i] > 1), None)
    vec, rows = _tile(extents[vec_axis], extents[rows_axis] if rows_axis is not None else 1, lanes)
    if vec < lanes // 2:
        return False

    width = min(vec, lanes)  # one machine vector: LLVM handles <48 x float> badly
    v_o, v_k, v_i = sch.split(loops[vec_axis], [None, vec // width, width])
    outer = [loops[i] for i in spatial[:-1]]
    inner = [v_k, v_i]
    if rows_axis is not None and rows > 1:
        r_o, r_i = sch.split(loops[rows_axis], [None, rows])
        outer[spatial.index(rows_axis)] = r_o
        inner = [r_i, v_k, v_i]
    sch.reorder(v_o, *outer, *[loops[i] for i in reduce], *inner)  # a weight slice stays cached across rows
    fused = sch.fuse(v_o, *outer)
    sch.parallel(fused)

    consumers = sch.get_consumers(block)
    if consumers:
        epilogue = consumers[0]
    else:
        epilogue = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(epilogue, fused, preserve_unit_loops=True)
    _unroll_vectorize_tile(sch, sch.get_loops(block)[-len(inner):])
    _unroll_vectorize_tile(sch, sch.get_loops(epilogue)[1:])
    sch.decompose_reduction(block, sch.get_loops(block)[1])  # after vectorizing: it needs the init
    return True


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
