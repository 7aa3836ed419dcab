"""Integer INT8 convolutions and dense layers for QDQ models on CPUs with an 8-bit dot product:
x86 VNNI (vpdpbusd, u8 x s8 -> int32), the AArch64 dot-product extension (ARMv8.2 sdot, s8 x s8
-> int32) and x86 without VNNI (AVX512BW or AVX2 vpmaddubsw + vpmaddwd: u8 x s8 pairs summed in
int16, then int32).

TVM's ONNX frontend imports a QDQ graph as `dequantize(x_q) -> conv2d <- dequantize(w_q)` in
float: simulated quantization, no faster than FP32. Relax 0.27 has no pass that turns it into
integer arithmetic (Relay's FakeQuantizationToInteger is gone), so this module does it for the
convolutions (groups 1) and dense layers (Gemm/MatMul by a constant) the generic int8 pass makes
(u8 activations, per-tensor; s8 weights, per-channel symmetric, zero point 0):

    conv2d(pad(x_q - c, z_x - c), w_q, out_dtype=int32)         exact integer dot products
    (acc - (z_x - c) * sum_window(w_q)[o]) * (s_x * s_w[o])     back to float, per output channel

c is 0 for vpdpbusd and vpmaddubsw (u8 activations as they are) and 128 for sdot, which multiplies
s8 by s8 (udot is u8 x u8, the mixed usdot needs i8mm): `x_q - 128` is x_q with its top bit
flipped, an elementwise op that fuses into the producer's epilogue, and sum((x_q - z) w) =
sum((x_q - 128) w) - (z - 128) sum(w), so the shift only changes the correction constant. The input
is padded with its (shifted) zero point, a dequantized zero, so the correction is one constant per
output channel. Channel counts the instruction does not fit are padded: input channels to a
multiple of 4 (zero weights), output channels to a multiple of its lanes (zero weights, the extra
outputs sliced off). Everything after the layer (bias, activation, the next quantize) is unchanged
and fuses into the kernel's epilogue. On x86, depthwise convolutions become integer too: no channel
reduction for a dot product, so int32 multiply-adds of the u8 activations by the s8 weights,
vectorized along the channels by the default schedule, with the same correction and rescale.

`integer_rule` is the schedule for those int32 layers: output channels in blocks of the
instruction's int32 lanes (16 on AVX-512, 8 on AVX2, 4 on 128-bit NEON), input channels in steps
of 4, weights prepacked to [O/lanes, KH, KW, I/4, lanes, 4] (folded at build time like the FP32
prepacking) so each step reads lanes x 4 contiguous bytes, each step tensorized with the
instruction. vpmaddubsw saturates its 16-bit pair sums, so a layer gets it only where its
constant weights prove no pair can saturate (`_saturates`; the 7-bit weights the int8 pass makes
for such CPUs never do); other layers, and AArch64 CPUs before ARMv8.2 (Cortex-A72, A57: no dot
product at all), keep the float path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deploypipe.backends.tvm import schedules

if TYPE_CHECKING:
    import tvm

STEP = 4  # 8-bit products summed into each int32 accumulator, by both instructions


@dataclass(frozen=True)
class Dot:
    """A CPU's 32-bit-accumulating 8-bit dot product, as the rewrite and the schedule use it."""

    name: str  # how the build note names the path
    instruction: str
    lanes: int  # int32 accumulators of one instruction
    data: str  # the activations' dtype it multiplies (the weights are int8)
    registers: int  # vector registers of the ISA: a tile's accumulators, a step's weights, the broadcast
    llvm: str  # the LLVM intrinsic: (acc <lanes x i32>, activations, weights as <4 lanes x i8>)
    intrin: str  # the TensorIntrin registered for it
    widen: str = ""  # pairwise dots: the intrinsic that sums the 16-bit pair sums into int32 lanes

    @property
    def pairwise(self) -> bool:
        """8-bit products summed in pairs into 16 bits with saturation first (AVX2's vpmaddubsw):
        exact only where the weights cannot saturate a pair (`_saturates`)."""
        return bool(self.widen)

    @property
    def shift(self) -> int:
        """What the u8 activations are shifted by to be this instruction's operand (see the module)."""
        return 128 if self.data == "int8" else 0

    @property
    def products(self) -> str:
        return "u8 x s8 -> int32" if not self.shift else "s8 x s8 -> int32, u8 activations shifted by -128"


VNNI = Dot("vnni", "vpdpbusd", 16, "uint8", 32, "llvm.x86.avx512.vpdpbusd.512", "deploypipe_dot_16x4_vnni")
SDOT = Dot("sdot", "sdot", 4, "int8", 32, "llvm.aarch64.neon.sdot.v4i32.v16i8", "deploypipe_dot_4x4_sdot")
AVX2 = Dot("avx2", "vpmaddubsw", 8, "uint8", 16, "llvm.x86.avx2.pmadd.ub.sw", "deploypipe_dot_8x4_avx2",
           widen="llvm.x86.avx2.pmadd.wd")
AVX512BW = Dot("avx512bw", "vpmaddubsw", 16, "uint8", 32, "llvm.x86.avx512.pmaddubs.w.512",
               "deploypipe_dot_16x4_avx512bw", widen="llvm.x86.avx512.pmaddw.d.512")  # AVX-512 without VNNI
PAIR_LIMIT = 128  # |sum of a pair's positive (or negative) s8 weights| that u8 x s8 pair sums hold in int16


def integer_path(target: tvm.target.Target) -> tuple[Dot | None, str]:
    """(the dot product the integer kernels use, or None for the float path; why) for this
    target's CPU."""
    from tvm.target.codegen import target_has_features

    mcpu = str(target.attrs.get("mcpu", "generic"))
    triple = str(target.attrs.get("mtriple", ""))
    if "cpu" not in target.keys or triple.startswith("arm"):
        return None, ("float-simulated: integer kernels are written for x86 VNNI and the AArch64 dot product only "
                      f"(not {triple or target.kind.name})")
    if triple.startswith("aarch64"):
        if target_has_features("dotprod", target):
            return SDOT, f"integer kernels: sdot (ARMv8.2 dot product, -mcpu={mcpu})"
        return None, (f"float-simulated: no dot-product extension (sdot/udot) on -mcpu={mcpu}; an integer kernel "
                      "without it (widening 8-bit multiplies) might beat the float one or not, which only the "
                      "board can measure: not measured, so the float path stays")
    from deploypipe.isa import ENV, host_isa

    pairs = ("8-bit products summed in 16-bit pairs, which saturate: a layer whose weights could saturate a pair "
             "stays float-simulated")
    # the override that checks the no-VNNI path on any host
    forced = f"{ENV}={host_isa()}" if os.environ.get(ENV) and host_isa() != "x86-vnni" else ""
    if not forced and target_has_features("avx512vnni", target):
        return VNNI, f"integer kernels: vnni (vpdpbusd, -mcpu={mcpu})"
    for dot, feature in ((AVX512BW, "avx512bw"), (AVX2, "avx2")):  # as wide as the CPU's integer vectors go
        if target_has_features(feature, target):
            return dot, (f"integer kernels: {dot.name} (vpmaddubsw + vpmaddwd, {forced or f'-mcpu={mcpu}'}; "
                         f"no VNNI: {pairs})")
    return None, f"float-simulated: neither AVX-512 VNNI nor AVX2 on -mcpu={mcpu}"


def report(lowered: tvm.IRModule, target: tvm.target.Target) -> tuple[dict[str, Any], str]:
    """For a QDQ build: which path its convolutions and dense layers took and why (the manifest's
    `compiler_info["int8_kernels"]`), and the build note saying so."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    called: list[str] = []  # one entry per call: equal kernels are one PrimFunc called from several places
    relax.analysis.post_order_visit(lowered["main"].body, lambda e: called.append(e.args[0].name_hint) if (
        isinstance(e, relax.Call) and e.op.same_as(call_tir) and isinstance(e.args[0], tvm.ir.GlobalVar)) else None)
    kinds = {"conv2d": "convolutions", "matmul": "dense_layers"}
    kernels = {name: next(k for op, k in kinds.items() if op in name) for name in set(called)
               if any(op in name for op in kinds)}
    is_integer = {name: any(_is_integer_reduction(b) for b in _sblocks(lowered[name])) for name in kernels}
    counts = {kind: [0, 0] for kind in kinds.values()}  # [integer, all], one per call
    for name in called:
        if name in kernels:
            counts[kernels[name]][0] += is_integer[name]
            counts[kernels[name]][1] += 1
    dot, why = integer_path(target)
    info = {"path": "integer" if dot else "float-simulated", "why": why,
            "instruction": dot.instruction if dot else None,
            **{f"integer_{kind}": n for kind, (n, _) in counts.items()}, **{kind: n for kind, (_, n) in counts.items()}}
    if dot is None:
        return info, (f"QDQ graph, {why}: quantize/dequantize stay simulated quantization around FP32 kernels "
                      "(int8 accuracy, FP32 speed or slower)")
    done = " and ".join(f"{n} of {total} {kind.replace('_', ' ')}"
                        for kind, (n, total) in counts.items() if total)
    saturating = ", weights that could saturate a 16-bit pair sum" if dot.pairwise else ""
    depthwise = "depthwise convolutions (an integer one not measured on an AArch64 core), " if dot is SDOT else ""
    others = (f"; the others ({depthwise}activations not u8 per tensor, weights not s8 per channel"
              f"{saturating}) stay float-simulated" if any(n < total for n, total in counts.values()) else "")
    return info, f"QDQ graph, {why}: {done or 'no convolution or dense layer'} in integer arithmetic ({dot.products}){others}"


def _sblocks(func: Any) -> list[Any]:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return [sch.get(b) for b in schedules._blocks(sch)]


def _is_integer_reduction(stmt: Any) -> bool:
    """A block accumulating 8-bit products (u8 x s8 or s8 x s8) in int32 (an integer convolution's)."""
    dtypes = {r.source.dtype for r in stmt.reads}
    return (any(int(iv.iter_type) != 0 for iv in stmt.iter_vars) and len(stmt.writes) == 1
            and stmt.writes[0].source.dtype == "int32" and "int8" in dtypes and dtypes <= {"uint8", "int8", "int32"})


def layers(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """The QDQ convolutions and dense layers as integer ones where this target's CPU has a 32-bit
    integer dot product (see `integer_path`); any other module is returned as it is."""
    dot = integer_path(target)[0]
    return integer_layers(mod, dot, depthwise=dot is not SDOT)[0] if dot else mod


def integer_layers(mod: tvm.IRModule, dot: Dot = VNNI, depthwise: bool = False) -> tuple[tvm.IRModule, int]:
    """Rewrite every QDQ conv2d (groups 1) and dense layer (a matmul of a 2-D activation by a
    constant matrix: ONNX Gemm and MatMul) into an integer one for `dot`'s operands; returns the
    module and how many were rewritten. Channel counts that do not fit the instruction are padded:
    input channels to a multiple of 4 (the activations with their zero point, the weights with 0,
    so the padding adds nothing), output channels to a multiple of its lanes (zero weights; the
    extra outputs are sliced off after the rescale). With `depthwise`, depthwise convolutions
    (groups = channels, one filter each) become int32 multiply-adds of the u8 activations by the s8
    weights, vectorized along the channels (no reduction over channels for a dot product: the
    default schedule's plain vector multiplies, measured faster than the float-simulated kernel on
    x86; not measured on an AArch64 core, so `layers` asks for it on x86 only). Runs on the
    imported module, before constants fold (the weights are still int8 constants under a
    dequantize) and before ConvertLayout."""
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    conv2d, matmul = tvm.ir.Op.get("relax.nn.conv2d"), tvm.ir.Op.get("relax.matmul")
    dequantize, permute = tvm.ir.Op.get("relax.dequantize"), tvm.ir.Op.get("relax.permute_dims")
    count = 0

    def operands(mutator: Any, call: relax.Call) -> tuple[Any, ...] | None:
        """(x_q, s_x, z_x as numpy, w_q, s_w, z_w as numpy, the weight dequantize's call) or None."""
        x = _bound(mutator, call.args[0])
        w = _bound(mutator, call.args[1])
        transposed = _is_call(w, permute)
        if transposed:
            if w.attrs.axes is None or [int(a) for a in w.attrs.axes] != [1, 0]:
                return None
            w = _bound(mutator, w.args[0])
        if not (_is_call(x, dequantize) and _is_call(w, dequantize)):
            return None
        consts = [_const(_bound(mutator, e)) for e in (*x.args[1:], *w.args)]
        if any(c is None for c in consts) or x.args[0].ty.dtype != "uint8":
            return None
        return (x.args[0], *consts, w, transposed)

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            nonlocal count
            call = self.visit_expr_post_order(call)
            if call.op.same_as(conv2d):
                out = self.conv(call) if call.attrs.groups == 1 else self.depthwise(call) if depthwise else None
            elif call.op.same_as(matmul):
                out = self.dense(call)
            else:
                return call
            count += out is not None
            return call if out is None else out

        def conv(self, call: relax.Call) -> relax.Expr | None:
            attrs = call.attrs
            if not _nchw(attrs):
                return None
            found = operands(self, call)
            if found is None:
                return None
            x_q, s_x, z_x, w_q, s_w, z_w, w, _ = found
            if w_q.ndim != 4 or not _per_channel(w_q, s_w, z_w, w, axis=0):
                return None
            weights, data, zero = _padded(dot, w_q, x_q, z_x)
            if dot.pairwise and _saturates(weights):
                return None
            acc = _zero_point_conv2d(data, weights, attrs, zero, extra=weights.shape[1] - w_q.shape[1])
            return _rescale(acc, zero * w_q.astype(np.int64).sum(axis=(1, 2, 3)), s_x, s_w, w_q.shape[0],
                            weights.shape[0], axis=1, ndim=4)

        def depthwise(self, call: relax.Call) -> relax.Expr | None:
            attrs = call.attrs
            found = operands(self, call) if _nchw(attrs) else None
            if found is None:
                return None
            x_q, s_x, z_x, w_q, s_w, z_w, w, _ = found
            channels = int(attrs.groups)
            dims = x_q.ty.shape
            if (w_q.ndim != 4 or w_q.shape[:2] != (channels, 1) or dims is None
                    or not isinstance(dims[1], tvm.tirx.IntImm) or int(dims[1]) != channels
                    or not _per_channel(w_q, s_w, z_w, w, axis=0)):
                return None
            # padded with the zero point (a kernel of its own: Relax fuses no pad into a convolution), u8 as
            # it comes. Subtracting the zero point first instead (int16, padded by the convolution) made
            # the producer write int16 and measured slower
            zero = int(z_x.reshape(()))
            acc = _zero_point_conv2d(x_q, w_q, attrs, zero, groups=channels)
            return _rescale(acc, zero * w_q.astype(np.int64).sum(axis=(1, 2, 3)), s_x, s_w, channels, channels,
                            axis=1, ndim=4)

        def dense(self, call: relax.Call) -> relax.Expr | None:
            found = operands(self, call)
            if found is None:
                return None
            x_q, s_x, z_x, w_q, s_w, z_w, w, transposed = found
            if w_q.ndim != 2 or len(x_q.ty.shape) != 2:
                return None
            out_axis = 0 if transposed else 1  # Gemm(transB=1) reads its [O, K] weights transposed
            if not _per_channel(w_q, s_w, z_w, w, axis=out_axis):
                return None
            matrix = w_q if transposed else w_q.T  # [O, K]
            weights, data, zero = _padded(dot, matrix, x_q, z_x)
            if dot.pairwise and _saturates(weights):
                return None
            extra = weights.shape[1] - matrix.shape[1]
            if extra:
                data = relax.op.nn.pad(data, [0, 0, 0, extra], pad_value=float(zero))
            acc = relax.op.matmul(data, relax.const(np.ascontiguousarray(weights.T)), out_dtype="int32")
            return _rescale(acc, zero * matrix.astype(np.int64).sum(axis=1), s_x, s_w, matrix.shape[0],
                            weights.shape[0], axis=1, ndim=2)

    mod = relax.transform.DeadCodeElimination()(schedules.mutate_functions(mod, Rewrite))
    return _elementwise_qdq(mod), count


def _zero_point_conv2d(data: Any, weights: Any, attrs: Any, zero: int, groups: int = 1, extra: int = 0) -> Any:
    """The int32 NCHW convolution of `data` by the constant `weights` with the layer's strides and
    dilation, its padding done first with the activations' zero point (a dequantized 0, so the
    correction stays one constant per output channel), as are `extra` padded input channels."""
    from tvm import relax

    top, left, bottom, right = (int(p) for p in attrs.padding)
    if (top, left, bottom, right, extra) != (0, 0, 0, 0, 0):
        data = relax.op.nn.pad(data, [0, 0, 0, extra, top, bottom, left, right], pad_value=float(zero))
    return relax.op.nn.conv2d(data, relax.const(weights), strides=attrs.strides, padding=[0, 0, 0, 0],
                              dilation=attrs.dilation, groups=groups, data_layout="NCHW", kernel_layout="OIHW",
                              out_dtype="int32")


def _nchw(attrs: Any) -> bool:
    return bool(attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW")


def _per_channel(w_q: Any, s_w: Any, z_w: Any, dequantize: Any, axis: int) -> bool:
    """s8 weights, symmetric (zero point 0), one scale or one per output channel (`axis`)."""
    import numpy as np

    return bool(w_q.dtype == np.int8 and not np.any(z_w != 0) and (
        s_w.size == 1 or (s_w.size == w_q.shape[axis] and int(dequantize.attrs.axis) == axis)))


def _padded(dot: Dot, weights: Any, x_q: Any, z_x: Any) -> tuple[Any, Any, int]:
    """(the [O, C, ...] weights zero-padded to O a multiple of the lanes and C of 4, the
    activations as the instruction's operand, their zero point as that operand)."""
    import numpy as np
    from tvm import relax

    out, chans = weights.shape[:2]
    padded = np.zeros((-(-out // dot.lanes) * dot.lanes, -(-chans // STEP) * STEP, *weights.shape[2:]), np.int8)
    padded[:out, :chans] = weights
    zero = int(z_x.reshape(())) - dot.shift  # the zero point of the operand the instruction gets
    data = x_q if not dot.shift else relax.op.astype(
        relax.op.subtract(relax.op.astype(x_q, "int16"), relax.const(dot.shift, "int16")), dot.data)
    return padded, data, zero


def _saturates(weights: Any) -> bool:
    """Whether u8 activations times these [O, C, ...] s8 weights can saturate a 16-bit sum of
    two neighbouring input channels (vpmaddubsw's pairs): 255 * (the pair's positive weights,
    or its negative ones) beyond int16. 7-bit weights (the int8 pass's reduce_range) never do."""
    import numpy as np

    w = weights.astype(np.int32).reshape(weights.shape[0], weights.shape[1] // 2, 2, -1)
    return bool(max(np.clip(w, 0, None).sum(axis=2).max(), np.clip(-w, 0, None).sum(axis=2).max()) > PAIR_LIMIT)


def _rescale(acc: Any, correction: Any, s_x: Any, s_w: Any, out: int, padded: int, axis: int, ndim: int) -> Any:
    """(acc - correction[o]) * (s_x * s_w[o]) in float, the padded output channels sliced off."""
    import numpy as np
    from tvm import relax

    shape = [1] * ndim
    shape[axis] = padded
    fill = np.zeros(padded, np.int64)
    fill[:out] = correction
    scale = np.zeros(padded, np.float64)
    scale[:out] = float(s_x.reshape(())) * np.broadcast_to(s_w.astype(np.float64).reshape(-1), (out,))
    exact = relax.op.subtract(acc, relax.const(fill.astype(np.int32).reshape(shape))) if fill.any() else acc
    result = relax.op.multiply(relax.op.astype(exact, "float32"), relax.const(scale.astype(np.float32).reshape(shape)))
    return result if padded == out else relax.op.strided_slice(result, axes=[axis], begin=[0], end=[out])


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

    return relax.transform.DeadCodeElimination()(schedules.mutate_functions(mod, Rewrite))


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

    return relax.transform.DeadCodeElimination()(schedules.mutate_functions(mod, Rewrite))


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


def integer_rule() -> Any:
    """The dlight rule for the integer convolutions (tried before the default CPU rule)."""
    from tvm import s_tir
    from tvm.s_tir import dlight

    class IntegerConv(dlight.ScheduleRule):
        """Register-tiled 8-bit -> int32 reduction, each lanes x 4 step on the target's dot product."""

        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            dtypes = {str(getattr(p, "dtype", "")) for p in func.params}
            dot = integer_path(target)[0] if "cpu" in target.keys and "int8" in dtypes else None
            if dot is None or dot.data not in dtypes:
                return None  # not an integer convolution (FP32 models' kernels leave at once)
            sch = s_tir.Schedule(func)
            free = [func.params[int(i)] for i in (func.attrs or {}).get("layout_free_buffers", [])]
            try:
                schedules._inline(sch, schedules.Knobs())
                reductions = [b for b in schedules._blocks(sch) if schedules._is_reduction(sch, b)]
                if len(schedules._blocks(sch)) > 2 or len(reductions) != 1 or not _dot_tile(sch, reductions[0], free, dot):
                    return None
            except Exception:  # noqa: BLE001 - a kernel this rule cannot schedule goes to the default rule
                return None
            return sch

    return IntegerConv()


def _dot_tile(sch: Any, block: Any, free: list[Any], dot: Dot) -> bool:
    """Tile `C[..., o] += int32(A[..., c]) * int32(W[..., c, o])` (A of `dot.data`, W s8
    constant): parallel over output-channel blocks and rows, a register tile of rows x
    k*lanes int32 accumulators (`schedules.register_tile`), input channels in steps of 4 inside
    it; W prepacked to [O/lanes, ..., C/4, lanes, 4] so each lanes x 4 step reads lanes*4
    contiguous bytes; the step is one `dot` instruction. False if the block is not such a
    reduction."""
    axes = schedules.reduction_axes(sch, block)
    if axes is None or axes.stmt.writes[0].source.dtype != "int32":
        return False
    stmt, loops, spatial, reduce, extents = axes.stmt, axes.loops, axes.spatial, axes.reduce, axes.extents
    out_var, chan_var = stmt.iter_vars[spatial[-1]].var, stmt.iter_vars[reduce[-1]].var
    weight = next((i for i, r in enumerate(stmt.reads) if r.source.dtype == "int8"
                   and any(r.source.same_as(p) for p in free)), None)
    data = [r for i, r in enumerate(stmt.reads) if i != weight and r.source.dtype == dot.data]
    if weight is None or len(data) != 1 or not axes.writes_along(spatial[-1]):
        return False
    w_dims = [r.min for r in stmt.reads[weight].region]
    if (len(w_dims) < 2 or not w_dims[-1].same_as(out_var) or not w_dims[-2].same_as(chan_var)
            or not data[0].region[-1].min.same_as(chan_var)
            or extents[spatial[-1]] % dot.lanes or extents[reduce[-1]] % STEP):
        return False
    register_intrinsics()
    tiled = schedules.register_tile(sch, axes, dot.lanes, schedules.ACCUMULATORS[dot.registers], dot.registers)
    if tiled is None:
        return False
    o_o, outer, tile, _, _ = tiled
    c_o, c_i = sch.split(loops[reduce[-1]], [None, STEP])
    window = [loops[i] for i in reduce[:-1]]
    sch.reorder(o_o, *outer, *window, c_o, *tile, c_i)
    parallel = sch.fuse(o_o, *outer[:-1]) if len(outer) > 1 else o_o
    sch.parallel(parallel)
    at = outer[-1] if len(outer) > 1 else parallel
    consumers = sch.get_consumers(block)
    epilogue = consumers[0] if consumers else sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(epilogue, at, preserve_unit_loops=True)
    sch.vectorize(sch.split(sch.get_loops(epilogue)[-1], [None, dot.lanes])[1])
    init = sch.decompose_reduction(block, (window or [c_o])[0])
    schedules._unroll_vectorize_tile(sch, sch.get_loops(init)[-len(tile):])
    weight = next(i for i, r in enumerate(sch.get(block).reads) if r.source.same_as(stmt.reads[weight].source))
    lanes = dot.lanes
    schedules.repack_weights(sch, block, weight,
                             lambda *ix: (ix[-1] // lanes, *ix[:-2], ix[-2] // STEP, ix[-1] % lanes, ix[-2] % STEP))
    update = sch.get_loops(block)
    sch.tensorize(update[-2], dot.intrin)
    for lp in update[-len(tile) - 1:-2]:
        sch.unroll(lp)
    return True


def register_intrinsics() -> None:
    """Both dot products as tensor intrinsics: `C[lanes] += A[4] . B[lanes, 4]` (A u8 for
    vpdpbusd, s8 for sdot; B s8), implemented as one call of the LLVM intrinsic with the 4
    activation bytes broadcast to every lane as one int32 and the weights as one vector load.
    TVM's own `dot_16x4_vnni` passes vpdpbusd's operands as <16 x i32>, which the LLVM that
    apache-tvm 0.27 links rejects (its vpdpbusd takes <64 x i8>: "Call parameter type does not
    match function signature"; its sdot.v4i32.v16i8 takes <16 x i8>, as here); importing
    `tvm.s_tir.tensor_intrin` also takes 53 s here (CUDA's intrinsics). AVX2's is two calls:
    vpmaddubsw (u8 x s8 products summed in pairs into 16 bits, saturating) and vpmaddwd by ones
    (the pairs summed into int32 lanes), then an add; AVX512BW's the same on 512-bit vectors."""
    for dot in (VNNI, SDOT, AVX2, AVX512BW):
        _register(dot)


def _register(dot: Dot) -> None:
    from tvm import tirx
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(dot.intrin, allow_missing=True) is not None:
        return
    lanes, data, llvm, widen = dot.lanes, dot.data, dot.llvm, dot.widen
    acc_t, quad_t, bytes_t, pairs_t = f"int32x{lanes}", f"{data}x4", f"int8x{lanes * STEP}", f"int16x{lanes * 2}"

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (STEP,), data, offset_factor=1)
        B = T.match_buffer(b, (lanes, STEP), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:STEP], B[0:lanes, 0:STEP])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, STEP):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    def step(acc: Any, quad: Any, weights: Any) -> Any:
        """acc + the 4-byte dot products of `quad` with each lane's 4 weights, as the ISA does it."""
        if not dot.pairwise:
            return tirx.call_llvm_pure_intrin(acc_t, llvm, acc, quad, weights)
        pairs = tirx.call_llvm_pure_intrin(pairs_t, llvm, quad, weights)  # u8 x s8 pairs summed in int16
        return acc + tirx.call_llvm_pure_intrin(acc_t, widen, pairs, tirx.Broadcast(tirx.const(1, "int16"), lanes * 2))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (STEP,), data, offset_factor=1)
        B = T.match_buffer(b, (lanes, STEP), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:STEP], B[0:lanes, 0:STEP])
            T.writes(C[0:lanes])
            quad = T.broadcast(T.reinterpret(A.vload([0], quad_t), dtype="int32"), lanes)
            C[T.ramp(T.int32(0), 1, lanes)] = step(C.vload([0], dtype=acc_t), T.reinterpret(quad, dtype=bytes_t),
                                                   B.vload([0, 0], dtype=bytes_t))

    TensorIntrin.register(dot.intrin, desc, impl)
