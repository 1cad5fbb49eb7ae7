"""C lowerings of training batch norm, its output-pass epilogues, channel sums, in-place
updates and the SGD step, for whole-graph programs (registered through ``lowerings_conv.py``).

* ``batch_norm`` (training) and its gradient: ``batch_norm_fwd``/``batch_norm_bwd`` of
  ``kernels.c``; the forward keeps ``1/std`` in arena scratch shared with the gradient's
  lowering (``ctx.keep``/``ctx.kept``), so the gradient reads neither the autograd node nor recomputes. A
  ``relu`` of its output, or ``relu(other + output)`` (a residual block's end), is applied in its
  output pass (the statistics as the kernel's loops: ``row_sum``/``row_sqdev``); the ``relu``
  and ``add`` nodes then alias that output;
* ReLU's gradient ``mul(g, gt(out, 0))``, ``g`` possibly a residual block's ``add(g1, g2)``: one
  loop (the ``gt`` and ``add`` emit nothing: the ``mul`` is their only reader);
* ``sum`` over every axis but 1 (a convolution's bias gradient);
* ``add_``/``sub_``/``mul_``/``div_`` on a tensor (running statistics, step counters), in place;
* ``_fused_sgd_``: ``optim.c``'s SGD over every parameter.

Example:
    >>> from ember.compile.codegen.lowerings_norm import NORM_LOWERINGS
    >>> sorted(NORM_LOWERINGS)[:3]
    ['_fused_sgd_', 'add', 'add_']
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import EXPRESSIONS
from ember.compile.codegen.lowerings import _FLOAT, _R, CTYPES, Alias, Inplace, _elementwise, _numel, dname
from ember.compile.codegen.lowerings import _sum as _plain_sum
from ember.compile.codegen.lowerings_conv import _ck, _readers, _sfx, _size, _threads, _typed

__all__ = ["NORM_LOWERINGS", "NORM_INPLACE"]


# --------------------------------------------------------------------------- batch norm
def _bn_dims(x, axes):
    nd = len(x.shape)
    if nd < 2 or tuple(a % nd for a in axes) != (0, *range(2, nd)):
        return None
    N, C = x.shape[:2]
    return N, C, _numel(x.shape[2:])


def _epilogue(n, ctx):
    """What the batch norm ``n`` can apply in its output pass: ``(ops, other, nodes)``.

    ``relu(bn)`` -> ``(("relu",), None, [relu])``; ``relu(other + bn)`` (a residual block's end,
    ``other`` made before ``n``) -> ``(("add", "relu"), other, [add, relu])``. Only where each
    intermediate value has that one reader, so no one sees the value the fused pass skips."""
    item = ctx.items(n).get(0)
    users = _readers(ctx)
    prog = ctx.prog
    if not hasattr(prog, "_conv_single"):  # nodes that run as steps of their own (not in a fused group)
        prog._conv_single = {x for kind, x in prog.steps if kind != "group"}
    if item is None or len(users.get(item, ())) != 1 or users[item][0] is None:
        return (), None, []
    r = users[item][0]
    if r not in prog._conv_single:
        return (), None, []
    if r.op == "relu" and r.args[0] is item and r.dtype == item.dtype and not r.params:
        return ("relu",), None, [r]
    if r.op != "add" or r.params or len(r.args) != 2 or r.shape != item.shape or r.dtype != item.dtype:
        return (), None, []
    other = r.args[1] if r.args[0] is item else r.args[0]
    if other is item or not hasattr(other, "kind") or other.shape != item.shape or other.dtype != item.dtype:
        return (), None, []
    if other.kind == "call" and other.id > n.id or other.kind == "item" and other.args[0].id > n.id:
        return (), None, []  # made after the batch norm: not there yet when its pass runs
    if len(users.get(r, ())) != 1 or users[r][0] is None:
        return (), None, []
    q = users[r][0]
    if q in prog._conv_single and q.op == "relu" and q.args[0] is r and not q.params:
        return ("add", "relu"), other, [r, q]
    return (), None, []


def _fused(ctx) -> dict:
    """Calls folded into a batch norm's output pass -> the batch norm's output item."""
    prog = ctx.prog
    if not hasattr(prog, "_conv_fused"):
        prog._conv_fused = {}
    return prog._conv_fused


def _single(ctx, node):
    """The one reader of ``node`` when it runs as its own step (not in a fused group), else None."""
    users = _readers(ctx).get(node, ())
    prog = ctx.prog
    if not hasattr(prog, "_conv_single"):
        prog._conv_single = {x for kind, x in prog.steps if kind != "group"}
    if len(users) != 1 or users[0] is None or node not in prog._conv_single:
        return None
    return users[0] if users[0] in prog._conv_single else None


def _relu_mask(m, ctx):
    """ReLU's gradient ``mul(g, gt(out, 0))`` (``g`` possibly ``add(g1, g2)``, a residual
    block's two gradients) as ``(grad terms, out, folded nodes)``, where the ``gt`` (and the
    ``add``) have this ``mul`` as their only reader: one loop instead of three."""
    if m.op != "mul" or m.params or len(m.args) != 2 or not all(hasattr(a, "kind") for a in m.args):
        return None
    k = m.args[1] if m.args[1].op == "gt" else m.args[0]
    g = m.args[0] if k is m.args[1] else m.args[1]
    if k.op != "gt" or k.params or len(k.args) != 2 or type(k.args[1]) not in (int, float) or k.args[1] != 0:
        return None
    out = k.args[0]
    dt = dname(m)
    if dt not in _FLOAT or g.dtype != m.dtype or g.shape != m.shape or not hasattr(out, "kind"):
        return None
    if out.shape != m.shape or dname(out) not in _FLOAT or _single(ctx, k) is not m:
        return None
    terms, folded = [g], [k]
    if g.op == "add" and not g.params and len(g.args) == 2 and _single(ctx, g) is m:
        if all(hasattr(a, "kind") and a.shape == m.shape and a.dtype == m.dtype for a in g.args):
            terms, folded = list(g.args), [g, k]
    return terms, out, folded


def _folded(n, ctx):
    """``relu``/``add`` folded into a batch norm's output pass: an alias of its output (which
    holds this node's value by then); ``gt``/``add`` folded into ReLU's gradient (no code: the
    ``mul`` reads their inputs); that ``mul`` as one loop; else the plain elementwise lowering."""
    item = _fused(ctx).get(n)
    if item is not None:
        return Alias(item, 0)
    if n.op in ("gt", "add"):
        r = _single(ctx, n)
        if r is not None and r.op == "mul":
            mask = _relu_mask(r, ctx)
            if mask is not None and n in mask[2]:
                return []  # computed inside the mul's loop; nothing else reads it
    if n.op == "mul":
        mask = _relu_mask(n, ctx)
        if mask is not None:
            terms, out, _ = mask
            T = CTYPES[dname(n)]
            g = " + ".join(f"{ctx.ptr(t)}[i]" for t in terms)
            y, o = ctx.ptr(n), ctx.ptr(out)
            return [
                "#pragma omp simd",
                f"for (int64_t i = 0; i < {_numel(n.shape)}; i++) {y}[i] = ({T})({g}) * ({T})({o}[i] > 0);",
            ]
    return _elementwise(n, ctx)


def _bn_apply_c(ctx, T, dims, xp, wp, bp, y, mean, var, rstd, eps, nt, ops, other) -> list:
    """``batch_norm_fwd``'s loop (kernels.c: ``row_sum``/``row_sqdev`` with LANES partial sums,
    double per channel), with ``ops`` applied in its output pass."""
    N, C, L = dims
    lanes = 16  # mathf.c's LANES, as the kernel
    t = "t"
    if "add" in ops:
        t = f"({other}[(n * {C} + c) * {L} + i] + t)"
    out = EXPRESSIONS["relu"].format(t, T=T) if "relu" in ops else t

    def rows(expr):
        return [
            f"    for (int64_t n = 0; n < {N}; n++) {{",
            f"        const {T} *xr = {xp} + (n * {C} + c) * {L};",
            f"        {T} acc[{lanes}] = {{0}}, s_;",
            "        int64_t i = 0;",
            f"        for (; i + {lanes} <= {L}; i += {lanes})",
            f"            for (int j = 0; j < {lanes}; j++) acc[j] += {expr('xr[i + j]')};",
            f"        s_ = 0; for (int j = 0; j < {lanes}; j++) s_ += acc[j];",
            f"        for (; i < {L}; i++) s_ += {expr('xr[i]')};",
            "        tot += s_;",
            "    }",
        ]

    return [
        f"#pragma omp parallel for num_threads({nt}) if ({nt} > 1) schedule(static)",
        f"for (int64_t c = 0; c < {C}; c++) {{",
        "    double tot = 0;",
        *rows(lambda v: v),
        f"    const {T} mu = ({T})(tot / (double)({N * L}));",
        "    tot = 0;",
        *rows(lambda v: f"({v} - mu) * ({v} - mu)"),
        f"    const double v = tot / (double)({N * L});",
        f"    const {T} rs = ({T})(1.0 / sqrt(v + {eps})), sc = {f'{wp}[c] * rs' if wp else 'rs'}, "
        f"sh = {f'{bp}[c]' if bp else '0'};",
        f"    {mean}[c] = mu; {var}[c] = ({T})v; {rstd}[c] = rs;",
        f"    for (int64_t n = 0; n < {N}; n++) {{",
        f"        const {T} *xr = {xp} + (n * {C} + c) * {L};",
        f"        {T} *yr = {y} + (n * {C} + c) * {L};",
        f"        for (int64_t i = 0; i < {L}; i++) {{ const {T} t = (xr[i] - mu) * sc + sh; yr[i] = {out}; }}",
        "    }",
        "}",
    ]


def _batch_norm(n, ctx):
    """``ops.batch_norm``: items (out, mean, biased var); ``1/std`` kept for the gradient. A
    following ``relu`` (or residual ``add`` + ``relu``) is applied in the output pass."""
    x, w, b = n.args
    dt = dname(x)
    dims = _bn_dims(x, n.params["axes"])
    if dims is None or dt not in _FLOAT or _ck() is None or any(t is not None and t.dtype != x.dtype for t in (w, b)):
        return None
    N, C, L = dims
    if N * C * L == 0:
        return None
    T, sz = CTYPES[dt], _size(dt)
    items = ctx.items(n)
    outs = [ctx.ptr(items[i]) if i in items else _typed(ctx, T, (N * C * L if i == 0 else C) * sz) for i in range(3)]
    rstd = f"(({T} *){ctx.keep(n, 'rstd', C * sz)})"
    eps = repr(float(n.params["eps"]))
    nt = _threads(ctx, N * C * L)
    mean = outs[1]
    if 1 not in items:  # the gradient reads the mean: kept like 1/std
        mean = f"(({T} *){ctx.keep(n, 'mean', C * sz)})"
    ops, other, folded = _epilogue(n, ctx) if L > 1 else ((), None, [])
    if ops:
        for f in folded:
            _fused(ctx)[f] = items[0]
        wp = ctx.ptr(w) if w is not None else None
        bp = ctx.ptr(b) if b is not None else None
        op_ = ctx.ptr(other) if other is not None else None
        return _bn_apply_c(ctx, T, dims, ctx.ptr(x), wp, bp, outs[0], mean, outs[2], rstd, eps, nt, ops, op_)
    wp = ctx.ptr(w) if w is not None else "NULL"
    bp = ctx.ptr(b) if b is not None else "NULL"
    acc = f"((double *){ctx.scratch(2 * C * 8)})"
    fn = ctx.ext(f"batch_norm_fwd_{_sfx(dt)}")
    return [f"{fn}({ctx.ptr(x)}, {wp}, {bp}, {outs[0]}, {mean}, {outs[2]}, {rstd}, {N}, {C}, {L}, {eps}, {acc}, {nt});"]


def _batch_norm_backward(n, ctx):
    """``ops.batch_norm_backward`` from the forward lowering's mean and ``1/std``."""
    g, x, w = n.args[0], n.args[1], n.args[2]
    v, need = n.params.get("node"), n.params.get("need")
    fwd = (
        v.op if type(v).__name__ == "NodeRef" and v.attr is None and getattr(v.op, "op", None) == "batch_norm" else None
    )
    if fwd is None or need is None or fwd.args[0] is not x or fwd.args[1] is not w:
        return None
    dt = dname(x)
    dims = _bn_dims(x, fwd.params["axes"])
    if dims is None or dt not in _FLOAT or g.dtype != x.dtype or g.shape != x.shape:
        return None
    rstd = ctx.kept(fwd, "rstd")
    if rstd is None:  # the forward did not run natively
        return None
    items = ctx.items(fwd)
    T, sz = CTYPES[dt], _size(dt)
    mean = ctx.ptr(items[1]) if 1 in items else f"(({T} *){ctx.kept(fwd, 'mean')})"
    N, C, L = dims
    mine, outs, j = ctx.items(n), [], 0
    for flag, count in zip(need, (N * C * L, C, C)):
        if not flag:
            outs.append("NULL")
            continue
        item = mine.get(j)
        outs.append(ctx.ptr(item) if item is not None else _typed(ctx, T, count * sz))
        j += 1
    acc = f"((double *){ctx.scratch(2 * C * 8)})"
    fn = ctx.ext(f"batch_norm_bwd_{_sfx(dt)}")
    wp = ctx.ptr(w) if w is not None else "NULL"
    nt = _threads(ctx, N * C * L)
    return [
        f"{fn}({ctx.ptr(x)}, {ctx.ptr(g)}, {wp}, {mean}, (({T} *){rstd}), {outs[0]}, {outs[1]}, {outs[2]}, "
        f"{N}, {C}, {L}, {acc}, {nt});"
    ]


def _sum(n, ctx):
    """``sum`` as ``lowerings._sum`` (leading or trailing axes), and over every axis but 1 (a
    convolution's bias gradient, ``g.sum((0, 2, 3))``): per channel, accumulated in double."""
    res = _plain_sum(n, ctx)
    if res is not None:
        return res
    x = n.args[0]
    p = n.params
    if p.get("dtype") is not None or p.get("out_dtype") is not None or p.get("axes") is None or p.get("keepdim"):
        return None
    dims = _bn_dims(x, p["axes"]) if dname(x) in _FLOAT and x.dtype == n.dtype else None
    if dims is None or n.shape != x.shape[1:2]:
        return None
    N, C, L = dims
    xp, y = ctx.ptr(x), ctx.ptr(n)
    return [
        f"for (int64_t c = 0; c < {C}; c++) {{",
        "    double acc = 0;",
        f"    for (int64_t b = 0; b < {N}; b++) {{",
        f"        const {ctx.ctype(x)} *r = {xp} + (b * {C} + c) * {L};",
        "        #pragma omp simd reduction(+:acc)",
        f"        for (int64_t i = 0; i < {L}; i++) acc += r[i];",
        "    }",
        f"    {y}[c] = ({ctx.ctype(n)})acc;",
        "}",
    ]


# --------------------------------------------------------------------------- in place
_INPLACE_OPS = {"add_": "+", "sub_": "-", "mul_": "*", "div_": "/"}


def _operand(t, o, ctx, T, dt):
    """C text of element ``i`` of ``o`` (a tensor of ``t``'s dtype broadcasting to ``t`` as a
    trailing suffix or one element, or a number), or None."""
    if hasattr(o, "kind"):
        if o.dtype != t.dtype or len(o.shape) > len(t.shape):
            return None
        lead = len(t.shape) - len(o.shape)
        if any(s not in (1, d) for s, d in zip(o.shape, t.shape[lead:])):
            return None
        if o.shape != t.shape[lead:] and _numel(o.shape) != 1:
            return None  # a broadcast inside: left to the eager kernel
        m = _numel(o.shape)
        return f"{ctx.ptr(o)}[{'0' if m == 1 else f'i % {m}'}]"
    if type(o) in (int, float) and (dt in _FLOAT or type(o) is int):
        return _R.literal(o, T) if dt in _FLOAT else f"(({T}){o})"
    return None


def _inplace_binary(n, ctx):
    """``t op= other`` for a tensor or number ``other`` that broadcasts to ``t`` (same dtype)."""
    if n.params or len(n.args) != 2 or not hasattr(n.args[0], "kind"):
        return None
    t, o = n.args
    dt = dname(t)
    T = CTYPES.get(dt)
    if T is None or dt == "bool" or (n.op == "div_" and dt not in _FLOAT):
        return None
    rhs = _operand(t, o, ctx, T, dt)
    if rhs is None:
        return None
    tp = ctx.ptr(t)
    return Inplace(
        t, [f"for (int64_t i = 0; i < {_numel(t.shape)}; i++) {tp}[i] = ({T})({tp}[i] {_INPLACE_OPS[n.op]} {rhs});"]
    )


def _inplace_copy(n, ctx):
    """``t.copy_(src)`` with ``src`` of ``t``'s dtype (a broadcast suffix or one element): the copy
    that ends a functionalized chain of in-place updates (``passes/functionalize.py``)."""
    if n.params or len(n.args) != 2 or not all(hasattr(a, "kind") for a in n.args):
        return None
    t, o = n.args
    dt = dname(t)
    T = CTYPES.get(dt)
    src = None if T is None else _operand(t, o, ctx, T, dt)
    if src is None:
        return None
    tp = ctx.ptr(t)
    return Inplace(t, [f"for (int64_t i = 0; i < {_numel(t.shape)}; i++) {tp}[i] = {src};"])


# --------------------------------------------------------------------------- SGD
def _fused_sgd(n, ctx):
    """``optim.c``'s fused SGD over every parameter, in place (``ops/fused._sgd_impl``)."""
    p = n.params
    layout = p.get("layout")
    if layout is None or len(layout) != 3 or set(p) - {
        "layout", "n_written", "first", "nesterov", "maximize", "lr", "momentum", "dampening", "weight_decay"
    }:  # fmt: skip
        return None
    lists, i = [], 0
    for m in layout:
        lists.append(None if m is None else list(n.args[i : i + m]))
        i += m or 0
    params, bufs, grads = lists
    if not params or grads is None or len(grads) != len(params) or (bufs is not None and len(bufs) != len(params)):
        return None
    dt = dname(params[0])
    if dt not in _FLOAT or _ck() is None:
        return None
    for j, q in enumerate(params):
        grp = [grads[j]] + ([bufs[j]] if bufs is not None else [])
        if not hasattr(q, "kind") or any(
            not hasattr(t, "kind") or t.dtype != q.dtype or t.shape != q.shape for t in grp
        ):
            return None
    if float(p["momentum"]) != 0 and bufs is None:
        return None
    cnt = len(params)

    def arr(name, grp):
        return f"void *{name}[{cnt}] = {{{', '.join('(void *)' + ctx.ptr(t) for t in grp)}}};"

    lines = [arr("ps", params), arr("gs", grads)]
    lines.append(arr("bs", bufs) if bufs is not None else f"void *bs[{cnt}] = {{0}};")
    lines.append(f"const int64_t sizes[{cnt}] = {{{', '.join(str(_numel(q.shape)) for q in params)}}};")
    lines.append(f"const int8_t first[{cnt}] = {{{', '.join(str(int(bool(f))) for f in p['first'])}}};")
    from ember.backends.ckernels.optim import PARALLEL_MIN

    nt = ctx.threads(sum(_numel(q.shape) for q in params), PARALLEL_MIN)
    lines.append(
        f"{ctx.ext(f'fused_sgd_{_sfx(dt)}')}({cnt}, ps, gs, bs, sizes, first, {float(p['lr'])!r}, "
        f"{float(p['momentum'])!r}, {float(p['dampening'])!r}, {float(p['weight_decay'])!r}, "
        f"{int(bool(p['nesterov']))}, {int(bool(p['maximize']))}, {nt});"
    )
    return Inplace(params[0], lines)


NORM_LOWERINGS = {
    "batch_norm": _batch_norm,
    "batch_norm_backward": _batch_norm_backward,
    "sum": _sum,
    "relu": _folded,
    "add": _folded,
    "gt": _folded,
    "mul": _folded,
    "add_": _inplace_binary,
    "sub_": _inplace_binary,
    "mul_": _inplace_binary,
    "div_": _inplace_binary,
    "copy_": _inplace_copy,
    "_fused_sgd_": _fused_sgd,
}
# Ops among these that write their inputs (``lowerings.INPLACE_LOWERINGS``).
NORM_INPLACE = frozenset({"add_", "sub_", "mul_", "div_", "copy_", "_fused_sgd_"})
