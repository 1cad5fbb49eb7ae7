"""C lowerings of convolutions and pooling for whole-graph programs (``codegen/program.py``).

They call the hand kernels of ``backends/ckernels/conv.c`` as external kernels, with the same
packing, blocking and thread counts as their eager wrappers (``ckernels/ops.py``), so a program
computes the bits eager computes:

* ``conv2d``: the input packed channels-last and zero-padded (``pack_nhwc``) into arena scratch,
  the weight laid out in blocks of output channels by a generated loop, then ``conv_fwd``;
* ``conv2d_backward``: the output gradient packed once with the margins every stride phase reads;
  the input gradient is ``conv_fwd`` per stride phase with the flipped, transposed kernel
  (the phases and their taps are decided here, at build time), the weight gradient
  ``conv_wgrad`` into per-thread partial sums added in thread order;
* ``max_pool2d`` (output and indices) and its gradient (from the forward's indices);
  ``avg_pool2d`` and its gradient as loops in NumPy's order.

Batch norm, channel sums, in-place updates and SGD are in ``lowerings_norm.py``;
``CONV_LOWERINGS`` holds both (``lowerings.py`` registers it).

Example:
    >>> from ember.compile.codegen.lowerings_conv import CONV_LOWERINGS
    >>> sorted(CONV_LOWERINGS)[:3]
    ['_fused_sgd_', 'add', 'add_']
"""

from __future__ import annotations

from ember.compile.codegen.lowerings import _FLOAT, CTYPES, _numel, dname

__all__ = ["CONV_LOWERINGS", "CONV_INPLACE", "CONV_PROTOS"]

# Prototypes of the hand kernels these lowerings call (``codegen/program.py``'s ``_PROTOS``).
CONV_PROTOS = {
    "pack_nhwc": "void (*)(const {T} *, {T} *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, "
    "int64_t, int64_t, int)",
    "conv_fwd": "void (*)(const {T} *, const {T} *, const {T} *, {T} *" + ", int64_t" * 18 + ", int)",
    "conv_wgrad": "void (*)(const {T} *, const {T} *, {T} *" + ", int64_t" * 16 + ", int)",
    "batch_norm_fwd": "void (*)(const {T} *, const {T} *, const {T} *, {T} *, {T} *, {T} *, {T} *, int64_t, int64_t, "
    "int64_t, double, double *, int)",
    "batch_norm_bwd": "void (*)(const {T} *, const {T} *, const {T} *, const {T} *, const {T} *, {T} *, {T} *, {T} *, "
    "int64_t, int64_t, int64_t, double *, int)",
    "max_pool2d_fwd": "void (*)(const {T} *, {T} *, int64_t *" + ", int64_t" * 13 + ", int)",
    "max_pool2d_bwd": "void (*)(const {T} *, const int64_t *, {T} *, int64_t, int64_t, int64_t, int)",
    "fused_sgd": "void (*)(int64_t, void **, void **, void **, const int64_t *, const int8_t *, double, double, "
    "double, double, int, int, int)",
}


def _sfx(dt: str) -> str:
    return "f32" if dt == "float32" else "f64"


def _size(dt: str) -> int:
    return 4 if dt == "float32" else 8


def _ck():
    """The eager kernels' module, or None: without it nothing here lowers (the program would
    call kernels that do not exist)."""
    from ember.backends.ckernels import ops

    return ops if ops.has_conv("float32") else None


def _threads(ctx, n: int) -> int:
    from ember.backends.ckernels.ops import PARALLEL_MIN

    return ctx.threads(n, PARALLEL_MIN)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _typed(ctx, T: str, nbytes: int) -> str:
    return f"(({T} *){ctx.scratch(nbytes)})"


def _pack(ctx, fn, src, dst, n, c, h, w, hd, wd, cd, oy, ox) -> str:
    """``ops._pack``: NCHW ``src`` into zeroed channels-last ``dst`` (n, hd, wd, cd) at (oy, ox)."""
    nt = _threads(ctx, n * hd * wd * cd)
    return f"{fn}({src}, {dst}, {n}, {c}, {h}, {w}, {hd}, {wd}, {cd}, {oy}, {ox}, {nt});"


def _subsample(ctx, T, xp, x_shape, w_shape, geom):
    """``ops._subsample_1x1``: a strided 1x1 convolution without padding reads every stride-th
    pixel; those are copied out (lines, pointer, shape, kernel geometry)."""
    stride, pad, dilation = geom
    if tuple(w_shape[2:]) != (1, 1) or stride == (1, 1) or any(pad):
        return [], xp, tuple(x_shape), geom
    n, c, h, w = x_shape
    sh, sw = stride
    ho, wo = len(range(0, h, sh)), len(range(0, w, sw))
    buf = _typed(ctx, T, n * c * ho * wo * _size("float32" if T == "float" else "float64"))
    lines = [
        f"{T} *sub = {buf};",
        f"for (int64_t p = 0; p < {n * c}; p++)",
        f"    for (int64_t y = 0; y < {ho}; y++)",
        f"        for (int64_t x = 0; x < {wo}; x++) sub[(p * {ho} + y) * {wo} + x] = "
        f"{xp}[(p * {h} + y * {sh}) * {w} + x * {sw}];",
    ]
    return lines, "sub", (n, c, ho, wo), ((1, 1), pad, dilation)


def _conv_ok(ctx, x, w, geom, dt) -> bool:
    if dt not in _FLOAT or _ck() is None or geom.groups != 1 or len(x.shape) != 4 or len(w.shape) != 4:
        return False
    return x.dtype == w.dtype and _numel(x.shape) > 0 and _numel(w.shape) > 0


def _conv2d(n, ctx):
    x, w, b = n.args
    geom, dt = n.params["geom"], dname(n)
    if not _conv_ok(ctx, x, w, geom, dt) or x.dtype != n.dtype or (b is not None and b.dtype != n.dtype):
        return None
    ck, T, sz = _ck(), CTYPES[dt], _size(dt)
    lines, xp, (N, C, H, W), kgeom = _subsample(ctx, T, ctx.ptr(x), x.shape, w.shape, geom.kernel_args)
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = kgeom
    O, _, kh, kw = w.shape
    ho, wo = n.shape[2:]
    if (ho, wo) != ck._out_hw(H, W, kh, kw, kgeom):
        return None
    hp, wp = H + pt + pb, W + pl + pr
    ob = ck._ob(dt, O)
    op = _round_up(O, ob)
    if C % ck._CB == 0:  # the weight gradient's layout too: kept for it (``_conv2d_backward``)
        pk = f"(({T} *){ctx.keep(n, 'xp', N * hp * wp * C * sz)})"
    else:
        pk = _typed(ctx, T, N * hp * wp * C * sz)
    wk = _typed(ctx, T, op * kh * kw * C * sz)
    lines += [f"{T} *xp = {pk}, *wk = {wk};"]
    lines.append(_pack(ctx, ctx.ext(f"pack_nhwc_{_sfx(dt)}"), xp, "xp", N, C, H, W, hp, wp, C, pt, pl))
    lines += _weight_blocks(ctx.ptr(w), "wk", O, C, kh, kw, op, ob)
    bp = ctx.ptr(b) if b is not None else "NULL"
    nt = _threads(ctx, _numel(n.shape))
    lines.append(
        f"{ctx.ext(f'conv_fwd_{_sfx(dt)}')}(xp, wk, {bp}, {ctx.ptr(n)}, {N}, {hp}, {wp}, {C}, {ho}, {wo}, {O}, "
        f"{op}, {ob}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {ho * wo}, {wo}, 1, {nt});"
    )
    return lines


def _weight_blocks(w, dst, O, C, kh, kw, op, ob) -> list:
    """``ops._weight_blocks`` of the forward: ``w`` (O, C, kh, kw) as (op/ob, kh, kw, C, ob),
    output channels past O zero."""
    return [
        f"for (int64_t o = 0; o < {op}; o++) {{",
        f"    const int64_t k = o / {ob}, q = o % {ob};",
        f"    for (int64_t i = 0; i < {kh}; i++)",
        f"        for (int64_t j = 0; j < {kw}; j++)",
        f"            for (int64_t c = 0; c < {C}; c++)",
        f"                {dst}[(((k * {kh} + i) * {kw} + j) * {C} + c) * {ob} + q] = "
        f"o < {O} ? {w}[((o * {C} + c) * {kh} + i) * {kw} + j] : 0;",
        "}",
    ]


def _conv2d_backward(n, ctx):
    """``nn/functional/conv._conv2d_backward_impl`` with the direct kernels (``k=ck``)."""
    g, x, w = n.args
    geom, need, dt = n.params["geom"], n.params["need"], dname(g)
    if not _conv_ok(ctx, x, w, geom, dt) or g.dtype != x.dtype or len(g.shape) != 4 or not _numel(g.shape):
        return None
    if not any(need):
        return []
    ck, T, sz = _ck(), CTYPES[dt], _size(dt)
    items, outs, k = ctx.items(n), [], 0
    for flag, shape in zip(need, (x.shape, w.shape)):
        if not flag:
            outs.append(None)
            continue
        item = items.get(k)
        outs.append(ctx.ptr(item) if item is not None else _typed(ctx, T, _numel(shape) * sz))
        k += 1
    gx, gw = outs
    kgeom = geom.kernel_args
    lines: list = []
    packed = None
    if all(need):  # ops.conv2d_pack_grad: made once, read by both gradients
        packed = _pack_grad(ctx, dt, T, ctx.ptr(g), g.shape, x.shape, w.shape, kgeom)
        if packed is not None:
            lines += packed[0]
    if gx is not None:
        res = _input_grad(ctx, dt, T, ck, ctx.ptr(g), ctx.ptr(w), gx, g.shape, x.shape, w.shape, kgeom, packed)
        if res is None:
            return None
        lines += res
    if gw is not None:
        kept = _forward_pack(n, ctx)
        lines += _weight_grad(
            ctx, dt, T, ck, ctx.ptr(x), ctx.ptr(g), gw, x.shape, g.shape, w.shape, kgeom, packed, kept
        )
    return ["{", *lines, "}"]


def _pack_grad(ctx, dt, T, gp, g_shape, x_shape, w_shape, kgeom):
    """``ops.conv2d_pack_grad``: (lines, buffer name, top, left, hb, wb, op) or None."""
    ck = _ck()
    rows, cols = ck._grad_phases(x_shape, w_shape, kgeom)
    if not rows or not cols:
        return None
    span = [(f, f + (len(t) - 1) * s + m) for _, t, f, s, m in rows]
    top, bottom = min(a for a, _ in span), max(b for _, b in span)
    span = [(f, f + (len(t) - 1) * s + m) for _, t, f, s, m in cols]
    left, right = min(a for a, _ in span), max(b for _, b in span)
    op = _round_up(w_shape[0], ck._ob(dt, w_shape[0]))
    N, O, ho, wo = g_shape
    hb, wb = bottom - top, right - left
    buf = _typed(ctx, T, N * hb * wb * op * _size(dt))
    lines = [f"{T} *gpk = {buf};"]
    lines.append(_pack(ctx, ctx.ext(f"pack_nhwc_{_sfx(dt)}"), gp, "gpk", N, O, ho, wo, hb, wb, op, -top, -left))
    return lines, "gpk", -top, -left, hb, wb, op


def _input_grad(ctx, dt, T, ck, gp, wp, gx, g_shape, x_shape, w_shape, kgeom, packed):
    """``ops.conv2d_input_grad``: ``conv_fwd`` once per stride phase."""
    (sh, sw) = kgeom[0]
    N, C, H, W = x_shape
    O, _, kh, kw = w_shape
    rows, cols = ck._grad_phases(x_shape, w_shape, kgeom)
    covered = sum(m for *_, m in rows) == H and sum(m for *_, m in cols) == W
    lines = [] if covered else [f"memset({gx}, 0, {N * C * H * W} * sizeof({T}));"]
    if not rows or not cols:
        return lines
    pre: list = []
    if packed is None:
        packed = _pack_grad(ctx, dt, T, gp, g_shape, x_shape, w_shape, kgeom)
        pre = packed[0]
    _, buf, top, left, hb, wb, op = packed
    ob = ck._ob(dt, C)
    cp = _round_up(C, ob)
    most = max(len(ty) for _, ty, *_ in rows) * max(len(tx) for _, tx, *_ in cols)
    lines = pre + lines + [f"{T} *wf = {_typed(ctx, T, most * op * cp * _size(dt))};"]
    fn = ctx.ext(f"conv_fwd_{_sfx(dt)}")
    for qy, ty, ey, sy, my in rows:
        for qx, tx, ex, sx, mx in cols:
            a, b = len(ty), len(tx)
            # wf (cp/ob, a, b, op, ob): wf[k, u, v, o, q] = w[o, k*ob + q, ty[u], tx[v]], zero outside
            lines += [
                "{",
                f"static const int64_t ty[{a}] = {{{', '.join(map(str, ty))}}}, tx[{b}] = {{{', '.join(map(str, tx))}}};",
                f"for (int64_t c = 0; c < {cp}; c++) {{",
                f"    const int64_t k = c / {ob}, q = c % {ob};",
                f"    for (int64_t u = 0; u < {a}; u++)",
                f"        for (int64_t v = 0; v < {b}; v++)",
                f"            for (int64_t o = 0; o < {op}; o++)",
                f"                wf[(((k * {a} + u) * {b} + v) * {op} + o) * {ob} + q] = o < {O} && c < {C} ? "
                f"{wp}[((o * {C} + c) * {kh} + ty[u]) * {kw} + tx[v]] : 0;",
                "}",
                f"{fn}({buf} + {((top + ey) * wb + left + ex) * op}, wf, NULL, {gx} + {qy * W + qx}, {N}, {hb}, {wb}, "
                f"{op}, {my}, {mx}, {C}, {cp}, {ob}, {a}, {b}, 1, 1, {sy}, {sx}, {H * W}, {sh * W}, {sw}, "
                f"{_threads(ctx, N * C * my * mx)});",
                "}",
            ]
    return lines


def _readers(ctx) -> dict:
    """node -> the calls of this view that read it (graph outputs count as a reader, None)."""
    prog = ctx.prog
    users = getattr(prog, "_conv_readers", None)
    if users is None:
        users = {}
        for m in prog.view.nodes:
            for a in m.inputs():
                users.setdefault(a, []).append(m)
        for o in prog.out_set:
            users.setdefault(o, []).append(None)
        prog._conv_readers = users
    return users


def _forward_pack(n, ctx):
    """The channels-last input that the forward ``conv2d`` of this gradient packed and kept
    (``ctx.keep``/``ctx.kept``), or None: the weight gradient then packs it again."""
    x, w = n.args[1], n.args[2]
    g = n.params["geom"]
    for m in _readers(ctx).get(x, ()):
        if m is not None and m.op == "conv2d" and m.args[0] is x and m.args[1] is w:
            mg = m.params["geom"]
            if (mg.kernel_args, mg.groups) == (g.kernel_args, g.groups):
                kept = ctx.kept(m, "xp")
                if kept is not None:
                    return f"(({CTYPES[dname(x)]} *){kept})"
    return None


def _weight_grad(ctx, dt, T, ck, xp, gp, gw, x_shape, g_shape, w_shape, kgeom, packed, kept=None):
    """``ops.conv2d_weight_grad``: ``conv_wgrad`` into per-thread partial sums (``kept``: the
    forward's packed input, the same layout when the channels are a multiple of CB)."""
    sz = _size(dt)
    lines, xs, (N, C, H, W), kgeom = _subsample(ctx, T, xp, x_shape, w_shape, kgeom)
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = kgeom
    O, _, kh, kw = w_shape
    ho, wo = g_shape[2:]
    hp, wp = H + pt + pb, W + pl + pr
    ob = ck._ob(dt, O)
    cp, op = _round_up(C, ck._CB), _round_up(O, ob)
    pack = ctx.ext(f"pack_nhwc_{_sfx(dt)}")
    if kept is not None and cp == C:
        lines = ["{", f"{T} *xw = {kept};"]
    else:
        lines = ["{", *lines, f"{T} *xw = {_typed(ctx, T, N * hp * wp * cp * sz)};"]
        lines.append(_pack(ctx, pack, xs, "xw", N, C, H, W, hp, wp, cp, pt, pl))
    if packed is not None:
        _, buf, top, left, hb, wb, pop = packed
    if packed is not None and pop == op and min(top, left) >= 0 and top + ho <= hb and left + wo <= wb:
        g_at, g_img, g_row = f"{buf} + {(top * wb + left) * op}", hb * wb * op, wb * op
    else:
        lines.append(f"{T} *gw2 = {_typed(ctx, T, N * ho * wo * op * sz)};")
        lines.append(_pack(ctx, pack, gp, "gw2", N, O, ho, wo, ho, wo, op, 0, 0))
        g_at, g_img, g_row = "gw2", ho * wo * op, wo * op
    nt = _threads(ctx, _numel(g_shape))
    part = kh * kw * cp * op
    lines += [
        f"{T} *acc = {_typed(ctx, T, nt * part * sz)};",
        f"memset(acc, 0, {nt * part} * sizeof({T}));",
        f"{ctx.ext(f'conv_wgrad_{_sfx(dt)}')}(xw, {g_at}, acc, {N}, {hp}, {wp}, {cp}, {ho}, {wo}, {op}, {ob}, "
        f"{g_img}, {g_row}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {nt});",
    ]
    for t in range(1, nt):  # the partial sums added in thread order (NumPy's sum over axis 0)
        lines.append(f"for (int64_t i = 0; i < {part}; i++) acc[i] += acc[{t * part} + i];")
    # acc (kh, kw, cp, op) -> gw (O, C, kh, kw)
    lines += [
        f"for (int64_t o = 0; o < {O}; o++)",
        f"    for (int64_t c = 0; c < {C}; c++)",
        f"        for (int64_t i = 0; i < {kh * kw}; i++) {gw}[(o * {C} + c) * {kh * kw} + i] = "
        f"acc[(i * {cp} + c) * {op} + o];",
        "}",
    ]
    return lines


# --------------------------------------------------------------------------- pooling
def _pool_ok(x, dt) -> bool:
    return dt in _FLOAT and len(x.shape) == 4 and _numel(x.shape) > 0 and _ck() is not None


def _max_pool2d(n, ctx):
    """``ops.max_pool2d``: items (out, flat H*W index of each maximum)."""
    x, geo = n.args[0], n.params["geo"]
    dt = dname(x)
    if not _pool_ok(x, dt) or len(n.args) != 1:
        return None
    N, C, H, W = x.shape
    (ho, wo), T = geo.out_hw, CTYPES[dt]
    items = ctx.items(n)
    out = ctx.ptr(items[0]) if 0 in items else _typed(ctx, T, N * C * ho * wo * _size(dt))
    if 1 in items:
        if dname(items[1]) != "int64":
            return None
        idx = ctx.ptr(items[1])
    else:  # the gradient reads the indices: kept for it
        idx = f"((int64_t *){ctx.keep(n, 'idx', N * C * ho * wo * 8)})"
    k, st, pd, dl = geo.k, geo.s, geo.p, geo.d
    nt = _threads(ctx, _numel(x.shape))
    return [
        f"{ctx.ext(f'max_pool2d_fwd_{_sfx(dt)}')}({ctx.ptr(x)}, {out}, {idx}, {N * C}, {H}, {W}, {ho}, {wo}, "
        f"{k[0]}, {k[1]}, {st[0]}, {st[1]}, {pd[0]}, {pd[1]}, {dl[0]}, {dl[1]}, {nt});"
    ]


def _max_pool2d_backward(n, ctx):
    """``ops.max_pool2d_backward`` from the forward lowering's indices (not the autograd node)."""
    g, v, in_shape = n.args[0], n.params.get("idx"), n.params.get("in_shape")
    fwd = v.op if type(v).__name__ == "NodeRef" and v.attr == "idx" and v.op.op == "max_pool2d" else None
    dt = dname(g)
    if fwd is None or len(n.args) != 1 or not _pool_ok(g, dt) or tuple(in_shape) != n.shape:
        return None
    items = ctx.items(fwd)
    if 1 in items:
        idx = ctx.ptr(items[1])
    else:
        idx = ctx.kept(fwd, "idx")
        if idx is None:  # the forward did not run natively
            return None
        idx = f"((int64_t *){idx})"
    N, C, H, W = in_shape
    nt = _threads(ctx, _numel(in_shape))
    fn = ctx.ext(f"max_pool2d_bwd_{_sfx(dt)}")
    return [f"{fn}({ctx.ptr(g)}, {idx}, {ctx.ptr(n)}, {N * C}, {H * W}, {_numel(g.shape[2:])}, {nt});"]


def _avg_windows(geo):
    (sh, sw), (ph, pw), (dh, dw) = geo.s, geo.p, geo.d
    return sh, sw, ph, pw, dh, dw


def _divisors(ctx, div) -> str | None:
    """The (Ho, Wo) float64 divisors as a static C array."""
    import numpy as np

    d = np.asarray(div, np.float64).reshape(-1)
    if not np.all(np.isfinite(d)) or np.any(d == 0):
        return None
    return f"static const double dv[{d.size}] = {{{', '.join(repr(float(e)) for e in d)}}};"


def _avg_pool2d(n, ctx):
    """``pooling._avg_sum_impl``: each window summed in order (padding adds nothing), then
    divided in double by its divisor, as NumPy's ``sum / div``."""
    x, p = n.args[0], n.params
    dt = dname(x)
    if not _pool_ok(x, dt) or len(n.args) != 1 or x.dtype != n.dtype:
        return None
    geo = p["geo"]
    N, C, H, W = x.shape
    (ho, wo), (kh, kw) = geo.out_hw, geo.k
    sh, sw, ph, pw, dh, dw = _avg_windows(geo)
    dv = _divisors(ctx, p["div"])
    if dv is None or tuple(p["in_shape"]) != x.shape:
        return None
    T, xp, y = CTYPES[dt], ctx.ptr(x), ctx.ptr(n)
    return [
        dv,
        f"for (int64_t q = 0; q < {N * C}; q++)",
        f"    for (int64_t oy = 0; oy < {ho}; oy++)",
        f"        for (int64_t ox = 0; ox < {wo}; ox++) {{",
        f"            {T} s = 0;",
        f"            for (int64_t i = 0; i < {kh}; i++) {{",
        f"                const int64_t yy = oy * {sh} - {ph} + i * {dh};",
        f"                if (yy < 0 || yy >= {H}) continue;",
        f"                for (int64_t j = 0; j < {kw}; j++) {{",
        f"                    const int64_t xx = ox * {sw} - {pw} + j * {dw};",
        f"                    if (xx >= 0 && xx < {W}) s += {xp}[(q * {H} + yy) * {W} + xx];",
        "                }",
        "            }",
        f"            {y}[(q * {ho} + oy) * {wo} + ox] = ({T})((double)s / dv[oy * {wo} + ox]);",
        "        }",
    ]


def _avg_pool2d_backward(n, ctx):
    """``pooling._avg_spread_impl``: ``g / div`` added to every pixel of its window, tap by tap."""
    g, p = n.args[0], n.params
    v = p.get("div")
    fwd = v.op if type(v).__name__ == "NodeRef" and v.attr == "div" and v.op.op == "avg_pool2d" else None
    dt = dname(g)
    if fwd is None or len(n.args) != 1 or not _pool_ok(g, dt) or tuple(p["in_shape"]) != n.shape:
        return None
    geo = p["geo"]
    N, C, H, W = n.shape
    (ho, wo), (kh, kw) = geo.out_hw, geo.k
    sh, sw, ph, pw, dh, dw = _avg_windows(geo)
    dv = _divisors(ctx, fwd.params["div"])
    if dv is None:
        return None
    T, gp, y = CTYPES[dt], ctx.ptr(g), ctx.ptr(n)
    return [
        dv,
        f"memset({y}, 0, {_numel(n.shape)} * sizeof({T}));",
        f"for (int64_t i = 0; i < {kh}; i++)",
        f"    for (int64_t j = 0; j < {kw}; j++)",
        f"        for (int64_t q = 0; q < {N * C}; q++)",
        f"            for (int64_t oy = 0; oy < {ho}; oy++) {{",
        f"                const int64_t yy = oy * {sh} - {ph} + i * {dh};",
        f"                if (yy < 0 || yy >= {H}) continue;",
        f"                for (int64_t ox = 0; ox < {wo}; ox++) {{",
        f"                    const int64_t xx = ox * {sw} - {pw} + j * {dw};",
        f"                    if (xx >= 0 && xx < {W}) {y}[(q * {H} + yy) * {W} + xx] += "
        f"({T})((double){gp}[(q * {ho} + oy) * {wo} + ox] / dv[oy * {wo} + ox]);",
        "                }",
        "            }",
    ]


CONV_LOWERINGS = {
    "conv2d": _conv2d,
    "conv2d_backward": _conv2d_backward,
    "max_pool2d": _max_pool2d,
    "max_pool2d_backward": _max_pool2d_backward,
    "avg_pool2d": _avg_pool2d,
    "avg_pool2d_backward": _avg_pool2d_backward,
}

from ember.compile.codegen.lowerings_norm import NORM_INPLACE, NORM_LOWERINGS  # noqa: E402  (it imports the helpers above)

CONV_LOWERINGS.update(NORM_LOWERINGS)
# Ops among these that write their inputs (``lowerings.INPLACE_LOWERINGS``).
CONV_INPLACE = NORM_INPLACE
