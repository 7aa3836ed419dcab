"""Integer INT8 convolutions for QDQ models on CPUs with a 32-bit u8 x s8 dot product (VNNI).

TVM's ONNX frontend imports a QDQ graph as `dequantize(x_q) -> conv2d <- dequantize(w_q)` in
float: simulated quantization, no faster than FP32. Relax 0.27 has no pass that turns it into
integer arithmetic (Relay's FakeQuantizationToInteger is gone), so this module does it for the
convolutions the generic int8 pass makes (u8 activations, per-tensor; s8 weights, per-channel
symmetric, zero point 0):

    conv2d(pad(x_q, z_x), w_q, out_dtype=int32)          exact integer dot products
    (acc - z_x * sum_window(w_q)[o]) * (s_x * s_w[o])     back to float, per output channel

The input is padded with its zero point (a dequantized zero), so the zero-point correction is one
constant per output channel. Everything after the convolution (bias, activation, the next
quantize) is unchanged and fuses into the kernel's epilogue.

`vnni_rule` is the schedule for those int32 convolutions: output channels in blocks of 16, input
channels in steps of 4, weights prepacked to [O/16, KH, KW, I/4, 16, 4] (folded at build time like
the FP32 prepacking), the 16x4 block tensorized with vpdpbusd. Only CPUs whose dot product
accumulates in 32 bits get the rewrite: x86 without VNNI sums u8 x s8 pairs in 16 bits with
saturation (see deploypipe/isa.py), there the float path stays.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from deploypipe.backends.tvm import schedules

if TYPE_CHECKING:
    import tvm

LANES = 16  # int32 accumulators of one vpdpbusd
STEP = 4  # u8 x s8 products summed into each accumulator
INTRIN = "deploypipe_dot_16x4_vnni"


def integer_path(target: tvm.target.Target) -> tuple[bool, str]:
    """(use integer kernels, why) for this target's CPU."""
    from tvm.target.codegen import target_has_features

    mcpu = str(target.attrs.get("mcpu", "generic"))
    if "cpu" not in target.keys or str(target.attrs.get("mtriple", "")).startswith(("aarch64", "arm")):
        return False, f"float-simulated: integer kernels are written for x86 VNNI only (not {target.attrs.get('mtriple', target.kind.name)})"
    from deploypipe.isa import ENV, host_isa

    if os.environ.get(ENV) and host_isa() != "x86-vnni":  # the override that checks the other path anywhere
        return False, f"float-simulated: {ENV}={host_isa()} (no VNNI)"
    if not target_has_features("avx512vnni", target):
        return False, (f"float-simulated: no AVX-512 VNNI on -mcpu={mcpu} (u8 x s8 without VNNI sums in 16 bits "
                       "with saturation)")
    return True, f"integer kernels: vnni (vpdpbusd, -mcpu={mcpu})"


def report(lowered: tvm.IRModule, target: tvm.target.Target) -> tuple[dict[str, Any], str]:
    """For a QDQ build: which path its convolutions took and why (the manifest's
    `compiler_info["int8_kernels"]`), and the build note saying so."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    called: list[str] = []  # one entry per call: equal kernels are one PrimFunc called from several places
    relax.analysis.post_order_visit(lowered["main"].body, lambda e: called.append(e.args[0].name_hint) if (
        isinstance(e, relax.Call) and e.op.same_as(call_tir) and isinstance(e.args[0], tvm.ir.GlobalVar)) else None)
    kernels = {name: lowered[name] for name in set(called) if "conv2d" in name}
    is_integer = {name: any(_is_integer_reduction(b) for b in _sblocks(f)) for name, f in kernels.items()}
    convs = [name for name in called if name in kernels]
    integer = sum(is_integer[name] for name in convs)
    use, why = integer_path(target)
    info = {"path": "integer" if use else "float-simulated", "why": why,
            "integer_convolutions": integer, "convolutions": len(convs)}
    if not use:
        return info, (f"QDQ graph, {why}: quantize/dequantize stay simulated quantization around FP32 kernels "
                      "(int8 accuracy, FP32 speed or slower)")
    others = (f"; the others (depthwise, input channels not a multiple of {STEP}, output channels not of {LANES})"
              if integer < len(convs) else "")
    return info, (f"QDQ graph, {why}: {integer} of {len(convs)} convolutions in integer arithmetic "
                  f"(u8 x s8 -> int32){others}; dense layers stay float-simulated")


def _sblocks(func: Any) -> list[Any]:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return [sch.get(b) for b in schedules._blocks(sch)]


def _is_integer_reduction(stmt: Any) -> bool:
    """A block accumulating uint8 x int8 products in int32 (an integer convolution's)."""
    return (any(int(iv.iter_type) != 0 for iv in stmt.iter_vars) and len(stmt.writes) == 1
            and stmt.writes[0].source.dtype == "int32" and {r.source.dtype for r in stmt.reads} >= {"uint8", "int8"})


def convolutions(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """The QDQ convolutions as integer ones where this target's CPU has a 32-bit integer dot
    product (see `integer_path`); any other module is returned as it is."""
    return integer_convolutions(mod)[0] if integer_path(target)[0] else mod


def integer_convolutions(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """Rewrite every QDQ conv2d this module handles into an integer one; returns the module and
    how many were rewritten. Runs on the imported module, before constants fold (the weights are
    still int8 constants under a dequantize) and before ConvertLayout."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")
    dequantize = tvm.ir.Op.get("relax.dequantize")
    count = 0

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            nonlocal count
            call = self.visit_expr_post_order(call)
            if not call.op.same_as(conv2d):
                return call
            attrs = call.attrs
            x, w = _bound(self, call.args[0]), _bound(self, call.args[1])
            if not (_is_call(x, dequantize) and _is_call(w, dequantize)):
                return call
            if (attrs.groups != 1 or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW"
                    or attrs.out_layout != "NCHW"):
                return call
            x_q, s_x, z_x = x.args
            w_q, s_w, z_w = w.args
            consts = [_const(_bound(self, e)) for e in (s_x, z_x, w_q, s_w, z_w)]
            if any(c is None for c in consts) or x_q.ty.dtype != "uint8":
                return call
            s_x, z_x, w_q, s_w, z_w = consts
            if (w_q.dtype != np.int8 or s_x.size != 1 or z_x.size != 1 or np.any(z_w != 0)
                    or w_q.ndim != 4 or w_q.shape[1] % STEP or w_q.shape[0] % LANES
                    or (s_w.size != 1 and (s_w.size != w_q.shape[0] or int(w.attrs.axis) != 0))):
                return call
            out = w_q.shape[0]
            zero = int(z_x.reshape(()))
            top, left, bottom, right = (int(p) for p in attrs.padding)
            data = relax.op.nn.pad(x_q, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(zero)) \
                if (top, left, bottom, right) != (0, 0, 0, 0) else x_q
            acc = relax.op.nn.conv2d(data, relax.const(w_q), strides=attrs.strides, padding=[0, 0, 0, 0],
                                     dilation=attrs.dilation, groups=1, data_layout="NCHW", kernel_layout="OIHW",
                                     out_dtype="int32")
            correction = (zero * w_q.astype(np.int64).sum(axis=(1, 2, 3))).astype(np.int32).reshape(1, out, 1, 1)
            scale = (float(s_x.reshape(())) * np.broadcast_to(s_w.astype(np.float64).reshape(-1), (out,)))
            exact = relax.op.subtract(acc, relax.const(correction)) if zero else acc
            count += 1
            return relax.op.multiply(relax.op.astype(exact, "float32"),
                                     relax.const(scale.astype(np.float32).reshape(1, out, 1, 1)))

    mod = relax.transform.DeadCodeElimination()(_mutate(mod, Rewrite))
    return _elementwise_qdq(mod), count


def _elementwise_qdq(mod: tvm.IRModule) -> tvm.IRModule:
    """Per-tensor quantize/dequantize as elementwise ops: clip(round(x * (1/s)) + z), (x - z) * s.
    The ops carry a channel axis that ConvertLayout does not follow, so in NHWC each sat between
    two transposes in a kernel of its own; as elementwise ops they follow the layout and fuse into
    the integer convolution's epilogue. The legalized quantize divides by s: a vector division per
    output in the epilogue (MobileNet-v2's 24->144 1x1 convolution: 2.2 -> 1.0-1.3 ms with the
    reciprocal; outputs as far from ONNX Runtime's QDQ execution as before, 3.2e-2)."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    quantize, dequantize = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.dequantize")

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if not (call.op.same_as(quantize) or call.op.same_as(dequantize)):
                return call
            scale, zero = (_const(_bound(self, a)) for a in call.args[1:])
            if scale is None or zero is None or scale.size != 1 or zero.size != 1:
                return call
            s = relax.const(np.float32(scale.reshape(())))
            z = relax.const(np.float32(zero.reshape(())))
            x = call.args[0]
            if call.op.same_as(dequantize):
                return relax.op.multiply(relax.op.subtract(relax.op.astype(x, "float32"), z), s)
            dtype = str(call.attrs.out_dtype)
            info = np.iinfo(dtype)
            q = relax.op.add(relax.op.round(relax.op.multiply(x, relax.const(np.float32(1.0 / scale.reshape(()))))), z)
            q = relax.op.minimum(relax.op.maximum(q, relax.const(np.float32(info.min))), relax.const(np.float32(info.max)))
            return relax.op.astype(q, dtype)

    return relax.transform.DeadCodeElimination()(_mutate(mod, Rewrite))


def nhwc_padding(mod: tvm.IRModule) -> tvm.IRModule:
    """`permute_dims(pad(permute_dims(x, NHWC->NCHW)), NCHW->NHWC)` as `pad(x)` in NHWC: Relax's
    ConvertLayout does not move `nn.pad` (the zero-point padding of the integer convolutions), so
    it left the pad in NCHW between two transposes. Runs after ConvertLayout."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    permute, pad = tvm.ir.Op.get("relax.permute_dims"), tvm.ir.Op.get("relax.nn.pad")

    def axes(call: Any) -> list[int] | None:
        return [int(a) for a in call.attrs.axes] if _is_call(call, permute) and call.attrs.axes is not None else None

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if axes(call) != [0, 2, 3, 1]:
                return call
            padded = _bound(self, call.args[0])
            inner = _bound(self, padded.args[0]) if _is_call(padded, pad) else None
            if inner is None or axes(inner) != [0, 3, 1, 2] or str(padded.attrs.pad_mode) != "constant":
                return call
            widths = [int(w) for w in padded.attrs.pad_width]
            nhwc = widths[0:2] + widths[4:8] + widths[2:4]
            return relax.op.nn.pad(inner.args[0], nhwc, pad_value=padded.attrs.pad_value)

    return relax.transform.DeadCodeElimination()(_mutate(mod, Rewrite))


def _mutate(mod: tvm.IRModule, mutator_class: Any) -> tvm.IRModule:
    from tvm import relax

    rewrite = mutator_class(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gv] = rewrite.visit_expr(func)
    return mod


def _bound(mutator: Any, expr: Any) -> Any:
    """What a variable is bound to (the expression itself if it is not a bound variable)."""
    from tvm import relax

    bound = mutator.lookup_binding(expr) if isinstance(expr, relax.Var) else None
    return expr if bound is None else bound


def _is_call(expr: Any, op: Any) -> bool:
    from tvm import relax

    return isinstance(expr, relax.Call) and expr.op.same_as(op)


def _const(expr: Any) -> Any:
    """The numpy value of a constant, else None."""
    import tvm

    return expr.value.numpy() if isinstance(expr, tvm.ir.expr.GenericConst) else None


def vnni_rule() -> Any:
    """The dlight rule for the integer convolutions (tried before the default CPU rule)."""
    from tvm import s_tir
    from tvm.s_tir import dlight

    class IntegerConv(dlight.ScheduleRule):
        """Register-tiled u8 x s8 -> int32 reduction, its 16x4 blocks on vpdpbusd."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            dtypes = {str(getattr(p, "dtype", "")) for p in func.params}
            if not {"uint8", "int8"} <= dtypes or "cpu" not in target.keys or not integer_path(target)[0]:
                return None  # not an integer convolution (FP32 models' kernels leave at once)
            sch = s_tir.Schedule(func)
            free = [func.params[int(i)] for i in (func.attrs or {}).get("layout_free_buffers", [])]
            try:
                schedules._inline(sch, schedules.Knobs())
                reductions = [b for b in schedules._blocks(sch) if schedules._is_reduction(sch, b)]
                if len(schedules._blocks(sch)) > 2 or len(reductions) != 1 or not _vnni_tile(sch, reductions[0], free):
                    return None
            except Exception:  # noqa: BLE001 - a kernel this rule cannot schedule goes to the default rule
                return None
            return sch

    return IntegerConv()


def _vnni_tile(sch: Any, block: Any, free: list[Any]) -> bool:
    """Tile `C[..., o] += int32(A[..., c]) * int32(W[..., c, o])` (u8 A, s8 W constant):
    parallel over output-channel blocks and rows, a register tile of rows x k*16 int32
    accumulators, input channels in steps of 4 inside it; W prepacked to
    [O/16, ..., C/4, 16, 4] so each 16x4 step reads 64 contiguous bytes; the 16x4 step is
    vpdpbusd. False if the block is not such a reduction."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    kinds = [int(iv.iter_type) for iv in stmt.iter_vars]
    spatial = [i for i, k in enumerate(kinds) if k == 0]
    reduce = [i for i, k in enumerate(kinds) if k != 0]
    extents = [schedules._extent(sch, lp) for lp in loops]
    if (len(loops) != len(kinds) or len(stmt.writes) != 1 or stmt.writes[0].source.dtype != "int32"
            or None in extents or not spatial or not reduce or max(spatial) > min(reduce)):
        return False
    out_var, chan_var = stmt.iter_vars[spatial[-1]].var, stmt.iter_vars[reduce[-1]].var
    weight = next((i for i, r in enumerate(stmt.reads) if r.source.dtype == "int8"
                   and any(r.source.same_as(p) for p in free)), None)
    data = [r for r in stmt.reads if r.source.dtype == "uint8"]
    if weight is None or len(data) != 1 or not stmt.writes[0].region[-1].min.same_as(out_var):
        return False
    w_dims = [r.min for r in stmt.reads[weight].region]
    if (len(w_dims) < 2 or not w_dims[-1].same_as(out_var) or not w_dims[-2].same_as(chan_var)
            or not data[0].region[-1].min.same_as(chan_var)
            or extents[spatial[-1]] % LANES or extents[reduce[-1]] % STEP):
        return False
    register_intrinsic()
    rows_axis = next((i for i in reversed(spatial[:-1]) if extents[i] > 1), None)
    vec, rows = schedules._tile(extents[spatial[-1]], extents[rows_axis] if rows_axis is not None else 1,
                                LANES, schedules.ACCUMULATORS[32])
    o_o, o_k, o_i = sch.split(loops[spatial[-1]], [None, vec // LANES, LANES])
    c_o, c_i = sch.split(loops[reduce[-1]], [None, STEP])
    outer = [loops[i] for i in spatial[:-1]]
    tile = [o_k, o_i]
    if rows_axis is not None and rows > 1:
        r_o, r_i = sch.split(loops[rows_axis], [None, rows])
        outer[spatial.index(rows_axis)] = r_o
        tile = [r_i, o_k, o_i]
    window = [loops[i] for i in reduce[:-1]]
    sch.reorder(o_o, *outer, *window, c_o, *tile, c_i)
    parallel = sch.fuse(o_o, *outer[:-1]) if len(outer) > 1 else o_o
    sch.parallel(parallel)
    at = outer[-1] if len(outer) > 1 else parallel
    consumers = sch.get_consumers(block)
    epilogue = consumers[0] if consumers else sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(epilogue, at, preserve_unit_loops=True)
    sch.vectorize(sch.split(sch.get_loops(epilogue)[-1], [None, LANES])[1])
    init = sch.decompose_reduction(block, (window or [c_o])[0])
    schedules._unroll_vectorize_tile(sch, sch.get_loops(init)[-len(tile):])
    weight = next(i for i, r in enumerate(sch.get(block).reads) if r.source.same_as(stmt.reads[weight].source))
    schedules.repack_weights(sch, block, weight,
                             lambda *ix: (ix[-1] // LANES, *ix[:-2], ix[-2] // STEP, ix[-1] % LANES, ix[-2] % STEP))
    update = sch.get_loops(block)
    sch.tensorize(update[-2], INTRIN)
    for lp in update[-len(tile) - 1:-2]:
        sch.unroll(lp)
    return True


def register_intrinsic() -> None:
    """vpdpbusd as a tensor intrinsic: `C[16] += A[4] (u8) . B[16, 4] (s8)`. TVM's own
    `dot_16x4_vnni` passes the operands as <16 x i32>, which the LLVM that apache-tvm 0.27 links
    rejects (its vpdpbusd takes <64 x i8>: "Call parameter type does not match function
    signature"); importing `tvm.s_tir.tensor_intrin` also takes 53 s here (CUDA's intrinsics)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(INTRIN, allow_missing=True) is not None:
        return

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_x16 = T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16)
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), T.reinterpret(a_x16, dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(INTRIN, desc, impl)
