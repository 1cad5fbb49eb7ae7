"""C lowerings of index and integer ops for the whole-graph program: what routing (MoE) needs.

``topk_indices`` (the stable order of the eager kernel: larger first, ties by position, NaN
largest), ``gather``, ``scatter`` and ``scatter_add`` along any axis, ``index_select`` and its
gradient ``index_select_backward``, ``cumsum``, and the integer arithmetic between them: ``add``,
``sub``, ``mul``, ``neg`` and ``sum`` of int64 values, ``where``, and ``to`` (casts from booleans
and integers, float to float). Each loop runs in index order, so a scatter's repeated target
keeps the last value and repeated additions accumulate in the eager kernel's order. An index out
of range (negative ones too: the eager ops refuse them, as PyTorch's) makes the segment return 1
(``IndexError``), as the embedding gather does.

Registered by ``lowerings.py`` (``register``); an op that already has a lowering there keeps it for
the dtypes this file does not handle.

Example:
    >>> from ember.compile.codegen.lowerings import LOWERINGS
    >>> all(op in LOWERINGS for op in ("topk_indices", "scatter", "index_select_backward", "cumsum"))
    True
"""

from __future__ import annotations

from ember.compile.codegen.lowerings import _R, CTYPES, _elementwise, _numel, _strides, dname

__all__ = ["INDEX_LOWERINGS", "register"]

_INTS = ("int64", "int32", "int16", "int8", "uint8")
_FLOATS = ("float32", "float64")


def _is(a) -> bool:
    return hasattr(a, "kind")


def _loops(shape) -> list:
    return [f"for (int64_t i{d} = 0; i{d} < {s}; i{d}++)" for d, s in enumerate(shape)]


def _bcast(a, shape, ctx, T) -> str | None:
    """The element of ``a`` (a node broadcast to ``shape``, or a Python number) at ``i0, i1, ...``."""
    if not _is(a):
        if type(a) is bool or type(a) is int:
            return f"(({T}){int(a)})"
        if type(a) is float:
            return _R.literal(a, T)
        return None
    nd = len(shape)
    if len(a.shape) > nd or any(s not in (1, t) for s, t in zip(a.shape[::-1], shape[::-1])):
        return None
    st = [0] * (nd - len(a.shape)) + [0 if s == 1 else q for s, q in zip(a.shape, _strides(a.shape))]
    idx = " + ".join(f"i{d} * {s}" for d, s in enumerate(st) if s) or "0"
    return f"(({T}){ctx.ptr(a)}[{idx}])"


def _map(n, ctx, expr_of, T) -> list | None:
    """``out[i...] = expr`` over the output's shape, operands broadcast (``expr_of(loads)``)."""
    loads = [_bcast(a, n.shape, ctx, T) for a in n.args]
    if any(x is None for x in loads):
        return None
    body = f"    {ctx.ptr(n)}[o++] = ({ctx.ctype(n)})({expr_of(loads)});"
    return ["{", "int64_t o = 0;", *_loops(n.shape), body, "}"]


# --------------------------------------------------------------------------- integer arithmetic
_INT_OPS = {  # wrapping arithmetic, as NumPy's (through uint64_t: no signed overflow in C)
    "add": lambda a: f"(int64_t)((uint64_t){a[0]} + (uint64_t){a[1]})",
    "sub": lambda a: f"(int64_t)((uint64_t){a[0]} - (uint64_t){a[1]})",
    "mul": lambda a: f"(int64_t)((uint64_t){a[0]} * (uint64_t){a[1]})",
    "neg": lambda a: f"(int64_t)(0 - (uint64_t){a[0]})",
}


def _int_arith(n, ctx):
    if dname(n) != "int64" or n.params or len(n.args) != (1 if n.op == "neg" else 2):
        return None
    if any(_is(a) and dname(a) not in _INTS + ("bool",) for a in n.args):
        return None
    return _map(n, ctx, _INT_OPS[n.op], "int64_t")


def _int_sum(n, ctx):
    x = n.args[0]
    axes = n.params.get("axes")
    if axes is None or dname(n) != "int64" or dname(x) not in _INTS + ("bool",):
        return None
    for key in ("dtype", "out_dtype"):  # a NumPy type, an ember dtype or None: all int64 here
        dt = n.params.get(key)
        if dt is not None and str(getattr(dt, "__name__", dt)).replace("ember.", "") != "int64":
            return None
    nd = len(x.shape)
    axes = sorted(a % nd for a in axes) if nd else []
    y, xp = ctx.ptr(n), ctx.ptr(x)
    if axes == list(range(nd - len(axes), nd)):  # trailing axes: one sum per row
        cols = _numel(x.shape[nd - len(axes) :])
        rows = _numel(x.shape[: nd - len(axes)])
        return [
            f"for (int64_t r = 0; r < {rows}; r++) {{",
            "    uint64_t acc = 0;",
            f"    for (int64_t c = 0; c < {cols}; c++) acc += (uint64_t){xp}[r * {cols} + c];",
            f"    {y}[r] = (int64_t)acc;",
            "}",
        ]
    if axes == list(range(len(axes))):  # leading axes: column sums
        rows, cols = _numel(x.shape[: len(axes)]), _numel(x.shape[len(axes) :])
        return [
            f"for (int64_t c = 0; c < {cols}; c++) {y}[c] = 0;",
            f"for (int64_t r = 0; r < {rows}; r++)",
            f"    for (int64_t c = 0; c < {cols}; c++) {y}[c] = (int64_t)((uint64_t){y}[c] + (uint64_t){xp}[r * {cols} + c]);",
        ]
    return None


def _where(n, ctx):
    if len(n.args) != 3 or n.params or not _is(n.args[0]) or dname(n.args[0]) != "bool":
        return None
    out = dname(n)
    if out not in _INTS + _FLOATS + ("bool",):
        return None
    T = CTYPES[out]
    c = _bcast(n.args[0], n.shape, ctx, "uint8_t")
    a, b = (_bcast(v, n.shape, ctx, T) for v in n.args[1:])
    if None in (c, a, b):
        return None
    return ["{", "int64_t o = 0;", *_loops(n.shape), f"    {ctx.ptr(n)}[o++] = {c} ? {a} : {b};", "}"]


def _to(n, ctx):
    (x,) = n.args[:1]
    dev = n.params.get("device")
    if not _is(x) or x.shape != n.shape or (dev is not None and getattr(dev, "type", None) != "cpu"):
        return None
    src, out = dname(x), dname(n)
    if src in _FLOATS and out not in _FLOATS:
        return None  # float to integer: NaN and out-of-range values are undefined in C
    if out == "bool":
        return _map(n, ctx, lambda a: f"{a[0]} != 0", CTYPES[src])
    return _map(n, ctx, lambda a: a[0], CTYPES[out])


# --------------------------------------------------------------------------- scans, selection
def _cumsum(n, ctx):
    x = n.args[0]
    axis = n.params.get("axis")
    if axis is None or not x.shape or x.shape != n.shape:
        return None
    out = dname(n)
    if out not in _FLOATS + ("int64",):
        return None
    nd = len(x.shape)
    axis %= nd
    outer, size, inner = _numel(x.shape[:axis]), x.shape[axis], _numel(x.shape[axis + 1 :])
    T = ctx.ctype(n)
    y, xp = ctx.ptr(n), ctx.ptr(x)
    acc = "uint64_t" if out == "int64" else T  # sequential in the output type, as np.cumsum
    return [
        f"for (int64_t a = 0; a < {outer}; a++)",
        f"    for (int64_t c = 0; c < {inner}; c++) {{",
        f"        {acc} s = 0;",
        f"        for (int64_t j = 0; j < {size}; j++) {{",
        f"            int64_t at = (a * {size} + j) * {inner} + c;",
        f"            s += ({acc}){xp}[at];",
        f"            {y}[at] = ({T})s;",
        "        }",
        "    }",
    ]


def _topk_indices(n, ctx):
    """Per row, the k best by insertion in position order: an equal value never passes an earlier
    one, so ties keep position order (the eager kernel's stable sort); NaN counts as largest."""
    x = n.args[0]
    k, axis, largest = n.params.get("k"), n.params.get("axis"), n.params.get("largest", True)
    if dname(x) not in _FLOATS or dname(n) != "int64" or not x.shape or type(k) is not int:
        return None
    size = x.shape[-1]
    if axis % len(x.shape) != len(x.shape) - 1 or k < 1 or k > size or (k < size // 8 and size > 64):
        return None  # the eager kernel partitions first there (its tie order is not a stable sort's)
    rows = _numel(x.shape[:-1])
    T = ctx.ctype(x)
    if largest:
        better = "(isnan(v) ? !isnan(bv[q - 1]) : (!isnan(bv[q - 1]) && v > bv[q - 1]))"
    else:
        better = "(!isnan(v) && (isnan(bv[q - 1]) || v < bv[q - 1]))"
    y, xp = ctx.ptr(n), ctx.ptr(x)
    return [
        f"for (int64_t r = 0; r < {rows}; r++) {{",
        f"    {T} bv[{k}]; int64_t bi[{k}]; int64_t m = 0;",
        f"    for (int64_t j = 0; j < {size}; j++) {{",
        f"        {T} v = {xp}[r * {size} + j];",
        "        int64_t q = m;",
        f"        while (q > 0 && {better}) q--;",
        f"        if (q >= {k}) continue;",
        f"        int64_t last = m < {k} ? m : {k} - 1;",
        "        for (int64_t s = last; s > q; s--) { bv[s] = bv[s - 1]; bi[s] = bi[s - 1]; }",
        "        bv[q] = v; bi[q] = j;",
        f"        if (m < {k}) m++;",
        "    }",
        f"    for (int64_t q = 0; q < {k}; q++) {y}[r * {k} + q] = bi[q];",
        "}",
    ]


# --------------------------------------------------------------------------- gather / scatter
def _index_ok(idx) -> bool:
    return _is(idx) and dname(idx) in ("int64", "int32")


def _along(shape, axis) -> tuple:
    return _numel(shape[:axis]), shape[axis], _numel(shape[axis + 1 :])


def _elementwise_index(idx_shape, axis, size, ip) -> list:
    """Loops over ``idx_shape`` setting ``r`` (the index, checked) and ``o`` (the flat
    position in the index), and ``pre``/``post`` (the flat offsets before and after ``axis``)."""
    nd = len(idx_shape)
    lines = ["{", "int64_t o = 0;", *_loops(idx_shape), "{"]
    pre = " + ".join(f"i{d} * {s}" for d, s in enumerate(_strides(idx_shape[:axis]))) or "0"
    post = " + ".join(f"i{d} * {s}" for d, s in zip(range(axis + 1, nd), _strides(idx_shape[axis + 1 :]))) or "0"
    lines += [
        f"    int64_t r = (int64_t){ip}[o];",
        f"    if (r < 0 || r >= {size}) return 1;",
        f"    int64_t pre = {pre}, post = {post};",
    ]
    return lines


def _gather(n, ctx):
    x, idx = n.args[0], n.args[1]
    axis = n.params.get("axis")
    if not _index_ok(idx) or not x.shape or len(idx.shape) != len(x.shape) or x.dtype != n.dtype:
        return None
    nd = len(x.shape)
    axis %= nd
    if any(i > s for d, (i, s) in enumerate(zip(idx.shape, x.shape)) if d != axis):
        return None
    xs = _strides(x.shape)
    src = " + ".join([f"r * {xs[axis]}"] + [f"i{d} * {xs[d]}" for d in range(nd) if d != axis])
    lines = _elementwise_index(idx.shape, axis, x.shape[axis], ctx.ptr(idx))
    return lines + [f"    {ctx.ptr(n)}[o++] = {ctx.ptr(x)}[{src}];", "}", "}"]


def _scatter_like(n, ctx, add: bool):
    x, idx, src = n.args[0], n.args[1], n.args[2]
    axis = n.params.get("axis")
    if not _index_ok(idx) or not x.shape or len(idx.shape) != len(x.shape) or x.dtype != n.dtype:
        return None
    nd = len(x.shape)
    axis %= nd
    if any(i > s for d, (i, s) in enumerate(zip(idx.shape, x.shape)) if d != axis):
        return None
    T = ctx.ctype(n)
    if _is(src):
        if len(src.shape) != nd or any(i > s for i, s in zip(idx.shape, src.shape)):
            return None
        ss = _strides(src.shape)
        val = f"({T}){ctx.ptr(src)}[{' + '.join(f'i{d} * {ss[d]}' for d in range(nd))}]"
    elif type(src) in (int, float, bool) and not add:
        val = _R.literal(src, T) if T in ("float", "double") else f"(({T}){int(src)})"
    else:
        return None
    xs = _strides(x.shape)
    dst = " + ".join([f"r * {xs[axis]}"] + [f"i{d} * {xs[d]}" for d in range(nd) if d != axis])
    y = ctx.ptr(n)
    lines = [f"memcpy({y}, {ctx.ptr(x)}, {_numel(x.shape)} * sizeof({T}));"]
    lines += _elementwise_index(idx.shape, axis, x.shape[axis], ctx.ptr(idx))
    return lines + [f"    {y}[{dst}] {'+=' if add else '='} {val}; o++;", "}", "}"]


def _index_select(n, ctx):
    x, idx = n.args[0], n.args[1]
    axis = n.params.get("axis")
    if not _index_ok(idx) or not x.shape or x.dtype != n.dtype:
        return None
    outer, size, inner = _along(x.shape, axis % len(x.shape))
    cnt, T = _numel(idx.shape), ctx.ctype(n)
    y, xp, ip = ctx.ptr(n), ctx.ptr(x), ctx.ptr(idx)
    return [
        f"for (int64_t j = 0; j < {cnt}; j++) {{",
        f"    int64_t r = (int64_t){ip}[j];",
        f"    if (r < 0 || r >= {size}) return 1;",
        f"    for (int64_t a = 0; a < {outer}; a++)",
        f"        memcpy({y} + (a * {cnt} + j) * {inner}, {xp} + (a * {size} + r) * {inner}, {inner} * sizeof({T}));",
        "}",
    ]


def _index_select_backward(n, ctx):
    """Zeros, then each gradient slice added at its index, in index order (eager's order)."""
    g, idx = n.args[0], n.args[1]
    axis, shape = n.params.get("axis"), tuple(n.params.get("shape", ()))
    if not _index_ok(idx) or shape != n.shape or not shape or g.dtype != n.dtype or dname(n) not in _FLOATS:
        return None
    outer, size, inner = _along(shape, axis % len(shape))
    cnt, T = _numel(idx.shape), ctx.ctype(n)
    y, gp, ip = ctx.ptr(n), ctx.ptr(g), ctx.ptr(idx)
    return [
        f"memset({y}, 0, {_numel(shape)} * sizeof({T}));",
        f"for (int64_t j = 0; j < {cnt}; j++) {{",
        f"    int64_t r = (int64_t){ip}[j];",
        f"    if (r < 0 || r >= {size}) return 1;",
        f"    for (int64_t a = 0; a < {outer}; a++) {{",
        f"        {T} *d = {y} + (a * {size} + r) * {inner};",
        f"        const {T} *s = {gp} + (a * {cnt} + j) * {inner};",
        "        #pragma omp simd",
        f"        for (int64_t c = 0; c < {inner}; c++) d[c] += s[c];",
        "    }",
        "}",
    ]


INDEX_LOWERINGS = {
    "topk_indices": _topk_indices,
    "gather": _gather,
    "scatter": lambda n, ctx: _scatter_like(n, ctx, add=False),
    "scatter_add": lambda n, ctx: _scatter_like(n, ctx, add=True),
    "index_select": _index_select,
    "index_select_backward": _index_select_backward,
    "cumsum": _cumsum,
    "where": _where,
    "to": _to,
}
# Ops whose float lowering exists already: these handle the integer dtypes, the rest goes there.
_INTEGER_CASES = {"add": _int_arith, "sub": _int_arith, "mul": _int_arith, "neg": _int_arith, "sum": _int_sum}


def register(lowerings: dict) -> None:
    """Add this file's lowerings to ``lowerings`` (an op's existing lowering keeps its dtypes)."""
    for op, fn in INDEX_LOWERINGS.items():
        lowerings.setdefault(op, fn)
    for op, fn in _INTEGER_CASES.items():
        prev = lowerings.get(op, _elementwise)

        def either(n, ctx, fn=fn, prev=prev):
            res = fn(n, ctx)
            return res if res is not None else prev(n, ctx)

        lowerings[op] = either
