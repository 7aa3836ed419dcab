"""Winograd F(m x m, 3 x 3) for stride-1 3x3 FP32 convolutions by constant weights.

A 3x3 convolution computes each m x m output tile from an (m+2) x (m+2) input tile; Winograd's
minimal filtering (Lavin & Gray 2015) does it with (m+2)^2 multiplications per input/output
channel pair instead of 9 m^2: 2.25x fewer for m = 2, 4x fewer for m = 4. In NHWC:

    V[e, f] = sum_ij BT[e, i] BT[f, j] x_tile[i, j]     input transform (a TE kernel, after a zero pad)
    M[e, f] = V[e, f] @ U[e, f]                         (m+2)^2 matmuls [tiles, C] x [C, K] (Relax matmul)
    y_tile[i, j] = sum_ef AT[i, e] AT[j, f] M[e, f]     output transform (a TE kernel, the epilogue fused)

U = G w G^T is computed here, once, from the constant weights. The transforms' sums have constant
coefficients, mostly 0 and +-1: each tile output is written as its own sum of the nonzero terms,
and `schedule_transform` unrolls a tile's outputs so every copy keeps just its sum, vectorized
along the channels. The matmuls get the default (or tuned) schedule of any matmul.

The price is memory: U holds (m+2)^2 / 9 times the weights (4x for m = 4) and each element serves
one row per tile, so on small feature maps the matmuls read more weights than the direct
convolution for few rows. `choose` keeps the direct convolution below 49 whole tiles, or 16
tiles where they overhang the output (ResNet's 7x7 stage in 2x2 tiles: measured 1.5-1.8x faster
than direct); benchmarks/winograd.py measures the layers it rewrites. FP16 and integer layers are left alone
(F(4, 3) loses too many bits in half precision; the integer kernels are exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tvm

# (AT, G, BT) for F(2, 3) and F(4, 3), interpolation points 0, +-1 (, +-2) and infinity
_MATRICES: dict[int, tuple[list[list[float]], list[list[float]], list[list[float]]]] = {
    2: (
        [[1, 1, 1, 0], [0, 1, -1, -1]],
        [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    ),
    4: (
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    ),
}
MIN_TILES = {4: 49, 2: 49}  # output tiles a layer needs for each m (the smallest rewritten layer measured: 49)
PADDED_TILES = {2: 16}  # where m does not divide the output: tiles needed (ResNet's 7x7 stage: 4x4 tiles of 2x2)
PADDED_WASTE = 1.35  # most tile outputs per real output when the tiles overhang (7x7 in 2x2 tiles: 64/49)
# input and output channels a layer needs: the matmuls reduce over the input channels, and a
# network's first layer (3 colour channels) would make them vectors of three
MIN_CHANNELS = 16


def matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AT (m x a), G (a x 3), BT (a x a) for F(m x m, 3 x 3), a = m + 2."""
    at, g, bt = _MATRICES[m]
    return np.array(at, np.float64), np.array(g, np.float64), np.array(bt, np.float64)


def choose(out_h: int, out_w: int) -> int | None:
    """The tile size m for an output of out_h x out_w, or None where the direct convolution is
    faster: the largest m that divides the output and whose tile count reaches MIN_TILES[m];
    else the largest m in PADDED_TILES whose tiles, covering the output with a margin, reach its
    count and waste at most PADDED_WASTE of their outputs."""
    for m in sorted(MIN_TILES, reverse=True):
        if out_h % m == 0 and out_w % m == 0 and out_h // m * (out_w // m) >= MIN_TILES[m]:
            return m
    for m in sorted(PADDED_TILES, reverse=True):
        th, tw = tiles(out_h, out_w, m)
        if th * tw >= PADDED_TILES[m] and th * tw * m * m <= PADDED_WASTE * out_h * out_w:
            return m
    return None


def tiles(out_h: int, out_w: int, m: int) -> tuple[int, int]:
    """Tile rows and columns covering an out_h x out_w output in m x m tiles (the last ones
    overhang it where m does not divide it)."""
    return -(-out_h // m), -(-out_w // m)


def transform_weights(w_hwio: np.ndarray, m: int) -> np.ndarray:
    """U[e, n, c, k] = (G w[:, :, c, k] G^T)[e, n] for HWIO weights, in float64 then float32."""
    _, g, _ = matrices(m)
    return np.einsum("ei,nj,ijck->enck", g, g, w_hwio.astype(np.float64)).astype(np.float32)


def _linear(coefs: np.ndarray, terms: list[Any]) -> Any:
    """sum(coefs[i] * terms[i]) as a TIR expression, zero coefficients left out."""
    import tvm

    out = None
    for coef, term in zip(coefs.tolist(), terms, strict=True):
        if coef == 0:
            continue
        t = term if abs(coef) == 1 else term * tvm.tirx.const(abs(coef), "float32")
        out = (t if coef > 0 else -t) if out is None else (out + t if coef > 0 else out - t)
    return out if out is not None else tvm.tirx.const(0, "float32")


def _select(index: Any, branches: list[Any]) -> Any:
    """branches[index] for a loop variable `index` that the schedule unrolls (each unrolled copy
    keeps one branch once the index is a constant)."""
    import tvm

    out = branches[-1]
    for i in range(len(branches) - 2, -1, -1):
        out = tvm.tirx.if_then_else(index == i, branches[i], out)
    return out


def input_transform(xp: Any, m: int, tiles: tuple[int, int]) -> Any:
    """V[e*a + f, p, c] = sum_ij BT[e, i] BT[f, j] xp[tile p, i, j, c] (TE), p = (n, tile row, tile col)."""
    from tvm import te

    _, _, bt = matrices(m)
    a = m + 2
    n, _, _, c = (int(d) for d in xp.shape)
    th, tw = tiles

    def value(ef: Any, p: Any, ch: Any) -> Any:
        b, ti, tj = p // (th * tw), p // tw % th, p % tw
        x = [[xp[b, ti * m + i, tj * m + j, ch] for j in range(a)] for i in range(a)]
        rows = [[_linear(bt[e], [x[i][j] for i in range(a)]) for j in range(a)] for e in range(a)]
        return _select(ef, [_linear(bt[f], rows[e]) for e in range(a) for f in range(a)])

    return te.compute((a * a, n * th * tw, c), value, name=f"winograd_input_m{m}")


def output_transform(prod: Any, m: int, out: tuple[int, int, int, int]) -> Any:
    """y[n, h, w, k] = sum_ef AT[h % m, e] AT[w % m, f] M[e*a + f, tile of (n, h, w), k] (TE)."""
    from tvm import te

    at, _, _ = matrices(m)
    a = m + 2
    _, ho, wo, _ = out
    th, tw = tiles(ho, wo, m)  # the last tiles may overhang the output: their extra outputs are not computed

    def value(b: Any, h: Any, w: Any, k: Any) -> Any:
        p = b * th * tw + h // m * tw + w // m
        parts = [[prod[e * a + f, p, k] for f in range(a)] for e in range(a)]
        cols = [[_linear(at[i], [parts[e][f] for e in range(a)]) for f in range(a)] for i in range(m)]
        return _select(h % m, [_select(w % m, [_linear(at[j], cols[i]) for j in range(m)]) for i in range(m)])

    return te.compute(out, value, name=f"winograd_output_m{m}")


def _conv(bb: Any, x: Any, w: np.ndarray, padding: list[int], out_hw: tuple[int, int], m: int) -> Any:
    """The Winograd form of conv2d(x, w) for NHWC x, HWIO w, stride 1, the conv's padding (top,
    left, bottom, right), output out_hw (the input is padded further where the tiles overhang it)."""
    from tvm import relax

    a = m + 2
    n, _, _, c = (int(d) for d in x.ty.shape)
    k = w.shape[3]
    th, tw = tiles(*out_hw, m)
    top, left, bottom, right = padding
    bottom, right = bottom + th * m - out_hw[0], right + tw * m - out_hw[1]  # overhanging tiles read zeros
    xp = relax.op.nn.pad(x, [0, 0, top, bottom, left, right, 0, 0]) if any((top, left, bottom, right)) else x
    v = bb.call_te(input_transform, bb.normalize(xp), m=m, tiles=(th, tw), primfunc_name_hint="winograd_input")
    prod = relax.op.matmul(v, relax.const(transform_weights(w, m).reshape(a * a, c, k)))
    return bb.call_te(output_transform, bb.normalize(prod), m=m, out=(n, out_hw[0], out_hw[1], k),
                      primfunc_name_hint="winograd_output")


# Relax's fusion kinds for the transforms: the output transform takes the elementwise epilogue
# after it (bias, residual add, activation) like a convolution (kOutEWiseFusable), but no
# injective op (the next layer's padding and input transform, which would then recompute it per
# element); the input transform fuses nothing (kOpaque): its padding stays a kernel of its own
PATTERNS = {"winograd_output": 4, "winograd_input": 8}
ATTR = "deploypipe_winograd"  # the module attribute listing the rewritten layers, for the build note


def rewrite(mod: tvm.IRModule) -> tvm.IRModule:
    """Every stride-1, dilation-1, ungrouped 3x3 FP32 conv2d (NHWC data, HWIO constant weights,
    static shapes) with MIN_CHANNELS in and out whose output is large enough (`choose`) in
    Winograd form. The module's ATTR lists the rewritten layers ("56x56x64->64: F(4x4,3x3)") for
    the build note (`layers`)."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from deploypipe.backends.tvm import schedules

    done: list[str] = []

    @mutator
    class Rewrite(PyExprMutator):  # type: ignore[misc]
        def visit_call_(self, call: relax.Call) -> relax.Expr:
            call = self.visit_expr_post_order(call)
            if not schedules.float_nhwc_conv(call):
                return call
            attrs = call.attrs
            weights = call.args[1]
            if isinstance(weights, relax.Var):
                weights = self.lookup_binding(weights)
            data = call.args[0].ty
            if not (isinstance(weights, tvm.ir.expr.GenericConst) and [int(s) for s in attrs.strides] == [1, 1]
                    and schedules.static_dims(data.shape, 0, 4)):
                return call
            w = weights.value.numpy()
            if w.shape[:2] != (3, 3) or min(w.shape[2:]) < MIN_CHANNELS:
                return call
            out_h, out_w = int(call.ty.shape[1]), int(call.ty.shape[2])
            m = choose(out_h, out_w)
            if m is None:
                return call
            done.append(f"{out_h}x{out_w}x{w.shape[2]}->{w.shape[3]}: F({m}x{m},3x3)")
            return _conv(self.builder_, call.args[0], w, [int(p) for p in attrs.padding], (out_h, out_w), m)

    mod = relax.transform.FoldConstant()(mod)  # the weights: HWIO constants
    rewriter = Rewrite(mod)
    funcs = {gv: rewriter.visit_expr(f) for gv, f in mod.functions_items() if isinstance(f, relax.Function)}
    if not done:
        return mod
    mod = rewriter.builder_.get()  # holds the transforms' PrimFuncs
    for gv, func in funcs.items():
        mod[gv] = func
    for gv, func in mod.functions_items():  # fusion: see PATTERNS
        kind = next((k for k in PATTERNS if gv.name_hint.startswith(k)), None)
        if kind is not None:
            mod[gv] = func.with_attr("op_pattern", PATTERNS[kind])
    return mod.with_attr(ATTR, done)


def layers(mod: tvm.IRModule) -> list[str]:
    """The layers `rewrite` put in Winograd form (none when it was off)."""
    return [str(x) for x in (mod.attrs or {}).get(ATTR, [])]


def schedule_transform(func: Any, target: Any) -> Any:
    """The schedule of a Winograd transform kernel (None for any other kernel): the tile's
    (m+2)^2 or m^2 outputs unrolled, so each unrolled copy keeps its own sum of the input or
    product tile (loaded once per tile), vectorized along the channels; tiles and channel blocks
    are the parallel tasks. The output transform inlines the epilogue fused after it (bias,
    residual add, activation); the input transform fuses nothing (PATTERNS)."""
    from tvm import s_tir

    from deploypipe.backends.tvm import schedules

    if "cpu" not in target.keys:
        return None
    sch = s_tir.Schedule(func)
    names = [sch.get(b).name_hint for b in schedules._blocks(sch)]
    which = next((n for n in names if n.startswith("winograd_")), None)
    if which is None:
        return None
    m = int(which.rsplit("_m", 1)[1])
    lanes = schedules.float_lanes(target)
    extents = [int(iv.dom.extent) for iv in sch.get(sch.get_sblock(which)).iter_vars]
    try:
        schedules._inline(sch, schedules.Knobs(pad_block=False))
        block = schedules._blocks(sch)[-1]
        loops = sch.get_loops(block)
        if [int(iv.dom.extent) for iv in sch.get(block).iter_vars] != extents:
            return None  # an epilogue in another layout (the model's NCHW output): the default rule
        if which.startswith("winograd_input"):
            ef, p, c = loops
            co, ci = sch.split(c, [None, schedules._factor(int(sch.get(c).extent), (lanes, lanes // 2, 4))])
            sch.reorder(p, co, ef, ci)
            sch.parallel(sch.fuse(p, co))
            sch.unroll(ef)
        else:
            n, h, w, k = loops
            ti, i = sch.split(h, [None, m])
            tj, j = sch.split(w, [None, m])
            ko, ci = sch.split(k, [None, schedules._factor(int(sch.get(k).extent), (lanes, lanes // 2, 4))])
            sch.reorder(n, ti, tj, ko, i, j, ci)
            sch.parallel(sch.fuse(n, ti, tj, ko))
            sch.unroll(i)
            sch.unroll(j)
        sch.vectorize(ci)
    except Exception:  # noqa: BLE001 - left to the default rule
        return None
    return sch


def rule() -> Any:
    """The dlight rule for the transform kernels (tried before the default CPU rule)."""
    from tvm.s_tir import dlight

    class WinogradTransform(dlight.ScheduleRule):
        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            return schedule_transform(func, target)

    return WinogradTransform()
