"""C lowerings of single IR nodes for the whole-graph program (``codegen/program.py``).

Each lowering takes a call node and a context (``ctx``) and returns the C statements that compute
it, an :class:`Alias` (the result is the input's memory, as for a reshape of a contiguous value),
or None when the node has no lowering (it then runs eagerly between native segments). Every value
a program holds is C-contiguous, so views reduce to an element offset and strides.

Layers, losses, attention and the optimizer update live in ``lowerings_nn.py``. The context gives ``ctx.ptr(node)`` (a typed pointer expression), ``ctx.ctype(node)``,
``ctx.scratch(nbytes)`` (a ``char *`` expression valid during the node's step),
``ctx.ext(name)`` (a ``backends/ckernels`` function by its symbol), ``ctx.gemm(dtype)`` (the BLAS
gemm wrapper or None), ``ctx.items(node)`` (output index -> item node of a multi-output call),
``ctx.is_output(node)``, ``ctx.threads(n)``, and for what a forward op keeps for its gradient op
``ctx.keep(node, key, nbytes)``, ``ctx.kept(node, key)`` and ``ctx.node_readers(node)``. The LSTM's
time loops are in ``lowerings_rnn.py``.

Example:
    >>> from ember.compile.codegen.lowerings import LOWERINGS
    >>> "linear" in LOWERINGS and "scaled_dot_product_attention" in LOWERINGS
    True
"""

from __future__ import annotations

import math

from ember.compile.codegen.c import CRenderer
from ember.compile.codegen.cstyle import EXPRESSIONS, MATH

__all__ = ["Alias", "Inplace", "LOWERINGS", "INPLACE_LOWERINGS", "CTYPES", "lower"]

CTYPES = {
    "float32": "float",
    "float64": "double",
    "int64": "int64_t",
    "int32": "int32_t",
    "int16": "int16_t",
    "int8": "int8_t",
    "uint8": "uint8_t",
    "bool": "uint8_t",
}
_FLOAT = ("float32", "float64")
COMPARE = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!="}
_R = CRenderer()


class Inplace:
    """C ``lines`` that write into ``target``'s memory; the node's value is ``target`` itself."""

    __slots__ = ("target", "lines")

    def __init__(self, target, lines: list):
        self.target, self.lines = target, lines


class Alias:
    """The node's value is ``base``'s memory from element ``offset`` on."""

    __slots__ = ("base", "offset")

    def __init__(self, base, offset: int = 0):
        self.base, self.offset = base, offset


def dname(node) -> str:
    dt = node.dtype
    name = getattr(dt, "name", None)  # (an ember dtype's name: what its str() gives, less "ember.")
    return name if type(name) is str else str(dt).replace("ember.", "")


def _numel(shape) -> int:
    return math.prod(shape)


def _strides(shape) -> list:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def _tensor_args(n) -> list:
    return [a for a in n.args if hasattr(a, "kind")]


def strided_copy(ctx, src, dst, shape, strides, offset, T) -> list:
    """``dst[i...] = src[offset + sum(i_d * strides_d)]`` over ``shape``, ``dst`` contiguous."""
    if not shape:
        return [f"{dst}[0] = {src}[{offset}];"]
    lines, idx = ["{", "int64_t o = 0;"], [str(offset)]
    for d, (n, s) in enumerate(zip(shape, strides)):
        lines.append(f"for (int64_t i{d} = 0; i{d} < {n}; i{d}++)")
        idx.append(f"i{d} * {s}")
    lines.append(f"    {dst}[o++] = ({T}){src}[{' + '.join(idx)}];")
    lines.append("}")
    return lines


def _reshape_like(n, ctx):
    (x,) = _tensor_args(n)[:1] or [None]
    if x is None or _numel(x.shape) != _numel(n.shape) or x.dtype != n.dtype:
        return None
    if not ctx.is_output(n):
        return Alias(x, 0)
    T = ctx.ctype(n)
    return [f"memcpy({ctx.ptr(n)}, {ctx.ptr(x)}, {_numel(n.shape)} * sizeof({T}));"]


def _view_or_copy(n, ctx, x, offset, strides):
    """A strided view of contiguous ``x``: an alias where contiguous, else a copy loop."""
    T = ctx.ctype(n)
    contiguous = all(s == c or d == 1 for s, c, d in zip(strides, _strides(n.shape), n.shape))
    if contiguous and not ctx.is_output(n):
        return Alias(x, offset)
    return strided_copy(ctx, ctx.ptr(x), ctx.ptr(n), n.shape, strides, offset, T)


def _permute(n, ctx):
    x = n.args[0]
    st = _strides(x.shape)
    dims = [d % len(x.shape) for d in n.params["dims"]]
    return _view_or_copy(n, ctx, x, 0, [st[d] for d in dims])


def _expand(n, ctx):
    x = n.args[0]
    shape, st = list(x.shape), _strides(x.shape)
    lead = len(n.shape) - len(shape)
    strides = [0] * lead + [0 if (s == 1 and t != 1) else q for s, t, q in zip(shape, n.shape[lead:], st)]
    return _view_or_copy(n, ctx, x, 0, strides)


def _basic_view(src_shape, key):
    """``(element offset, shape, strides)`` of ``x[key]`` for a contiguous ``x`` of ``src_shape``
    and a basic key (ints, slices with positive steps, None, one Ellipsis), else None."""
    if key is None:
        return None
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1:
        return None
    real = sum(k is not None and k is not Ellipsis for k in key)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (len(src_shape) - real) + key[i + 1 :]
    key = key + (slice(None),) * (len(src_shape) - sum(k is not None for k in key))
    st, offset, shape, strides, d = _strides(src_shape), 0, [], [], 0
    for k in key:
        if k is None:
            shape.append(1)
            strides.append(0)
        elif isinstance(k, slice):
            start, stop, step = k.indices(src_shape[d])
            if step <= 0:
                return None
            shape.append(len(range(start, stop, step)))
            strides.append(st[d] * step)
            offset += start * st[d]
            d += 1
        elif type(k) is int:
            if not -src_shape[d] <= k < src_shape[d]:
                return None
            offset += (k % src_shape[d]) * st[d]
            d += 1
        else:
            return None
    return offset, shape, strides


def _getitem(n, ctx):
    x = n.args[0]
    if not n.params.get("basic"):
        return None
    view = _basic_view(x.shape, n.params.get("key"))
    if view is None or tuple(view[1]) != n.shape:
        return None
    return _view_or_copy(n, ctx, x, view[0], view[2])


def _elementwise(n, ctx):
    """One op of the expression table (or a comparison) with broadcasting and mixed dtypes."""
    op = n.op
    out = dname(n)
    if n.params or (op not in EXPRESSIONS and op not in COMPARE):
        return None
    if op in EXPRESSIONS and out not in _FLOAT:
        return None
    tensors = _tensor_args(n)
    if op in COMPARE:
        if out != "bool" or len(n.args) != 2:
            return None
        kinds = {dname(a) for a in tensors}
        T = "double" if "float64" in kinds else "float" if "float32" in kinds else "int64_t"
    else:
        T = CTYPES[out]
    nd = len(n.shape)
    loads = []
    for a in n.args:
        if hasattr(a, "kind"):
            if len(a.shape) > nd or any(s not in (1, t) for s, t in zip(a.shape[::-1], n.shape[::-1])):
                return None
            st = [0] * (nd - len(a.shape)) + [0 if s == 1 else q for s, q in zip(a.shape, _strides(a.shape))]
            idx = " + ".join(f"i{d} * {s}" for d, s in enumerate(st) if s) or "0"
            loads.append(f"(({T}){ctx.ptr(a)}[{idx}])")
        elif type(a) in (int, float, bool):
            loads.append(_R.literal(a, T))
        else:
            return None
    if op in COMPARE:
        expr = f"({loads[0]} {COMPARE[op]} {loads[1]})"
    else:
        expr = EXPRESSIONS[op].format(*loads, T=T)
        for m in MATH:
            expr = expr.replace(f"{m}(", f"{_R.math(m, out)}(")
    lines = ["{", "int64_t o = 0;"]
    for d, s in enumerate(n.shape):
        lines.append(f"for (int64_t i{d} = 0; i{d} < {s}; i{d}++)")
    lines.append(f"    {ctx.ptr(n)}[o++] = ({ctx.ctype(n)}){expr};")
    return lines + ["}"]


def _sum(n, ctx):
    x = n.args[0]
    axes = n.params.get("axes")
    if n.params.get("dtype") is not None or n.params.get("out_dtype") is not None or axes is None:
        return None
    if dname(x) not in _FLOAT or x.dtype != n.dtype:
        return None
    nd = len(x.shape)
    axes = sorted(a % nd for a in axes) if nd else []
    T, y, xp = ctx.ctype(n), ctx.ptr(n), ctx.ptr(x)
    if axes == list(range(nd - len(axes), nd)):  # trailing: one row sum each
        cols = _numel(x.shape[nd - len(axes) :])
        rows = _numel(x.shape) // max(cols, 1) if cols else _numel(x.shape[: nd - len(axes)])
        return [
            f"for (int64_t r = 0; r < {rows}; r++) {{",
            "    double acc = 0;",
            "    #pragma omp simd reduction(+:acc)",
            f"    for (int64_t c = 0; c < {cols}; c++) acc += {xp}[r * {cols} + c];",
            f"    {y}[r] = ({T})acc;",
            "}",
        ]
    if axes == list(range(len(axes))):  # leading: column sums, rows added in order (as NumPy)
        rows = _numel(x.shape[: len(axes)])
        cols = _numel(x.shape[len(axes) :])
        return [
            f"for (int64_t c = 0; c < {cols}; c++) {y}[c] = 0;",
            f"for (int64_t r = 0; r < {rows}; r++)",
            "    #pragma omp simd",
            f"    for (int64_t c = 0; c < {cols}; c++) {y}[c] += {xp}[r * {cols} + c];",
        ]
    return None


def _embedding(n, ctx):
    w, idx = n.args[0], n.args[1]
    if dname(idx) not in ("int64", "int32") or len(w.shape) != 2 or w.dtype != n.dtype:
        return None
    rows, D, cnt = w.shape[0], w.shape[1], _numel(idx.shape)
    y, wp, ip = ctx.ptr(n), ctx.ptr(w), ctx.ptr(idx)
    return [
        f"for (int64_t i = 0; i < {cnt}; i++) {{",
        f"    int64_t r = (int64_t){ip}[i];",
        f"    if (r < 0 || r >= {rows}) return 1;",
        f"    memcpy({y} + i * {D}, {wp} + r * {D}, {D} * sizeof({ctx.ctype(n)}));",
        "}",
    ]


def _embedding_backward(n, ctx):
    """Scatter-add of the gradient rows at their indices, in index order (as the eager kernel)."""
    g, w, idx = n.args[0], n.args[1], n.args[2]
    if n.params.get("scale_grad_by_freq") or dname(idx) not in ("int64", "int32") or len(w.shape) != 2:
        return None
    if dname(n) not in _FLOAT or g.dtype != n.dtype:
        return None
    rows, D, cnt = w.shape[0], w.shape[1], _numel(idx.shape)
    pad = n.params.get("padding_idx")
    y, gp, ip = ctx.ptr(n), ctx.ptr(g), ctx.ptr(idx)
    lines = [
        f"memset({y}, 0, {rows * D} * sizeof({ctx.ctype(n)}));",
        f"for (int64_t i = 0; i < {cnt}; i++) {{",
        f"    int64_t r = (int64_t){ip}[i];",
        f"    if (r < 0 || r >= {rows}) return 1;",
        "    #pragma omp simd",
        f"    for (int64_t c = 0; c < {D}; c++) {y}[r * {D} + c] += {gp}[i * {D} + c];",
        "}",
    ]
    if pad is not None:
        lines.append(f"memset({y} + {pad % rows} * {D}, 0, {D} * sizeof({ctx.ctype(n)}));")
    return lines


def _full(n, ctx):
    v = n.params.get("value")
    if type(v) not in (int, float, bool) or n.args:
        return None
    T = ctx.ctype(n)
    lit = _R.literal(v, T) if T in ("float", "double") else f"(({T}){int(v)})"
    return [f"for (int64_t i = 0; i < {_numel(n.shape)}; i++) {ctx.ptr(n)}[i] = {lit};"]


def _arange(n, ctx):
    p = n.params
    if n.args or set(p) - {"start", "step", "n", "dtype", "device"} or len(n.shape) != 1:
        return None
    if any(type(p.get(k)) not in (int, float) for k in ("start", "step")):
        return None
    T = ctx.ctype(n)
    return [f"for (int64_t i = 0; i < {n.shape[0]}; i++) {ctx.ptr(n)}[i] = ({T})({p['start']!r} + i * {p['step']!r});"]


def _index_put_zeros(n, ctx):
    """Zeros of ``shape`` with ``g`` written at a basic index (the gradient of a slice)."""
    g = n.args[0]
    if not n.params.get("basic") or tuple(n.params.get("shape", ())) != n.shape or g.dtype != n.dtype:
        return None
    view = _basic_view(n.shape, n.params.get("key"))
    if view is None or tuple(view[1]) != g.shape:
        return None
    offset, shape, strides = view
    y, gp, T = ctx.ptr(n), ctx.ptr(g), ctx.ctype(n)
    lines = [f"memset({y}, 0, {_numel(n.shape)} * sizeof({T}));", "{", "int64_t o = 0;"]
    idx = [str(offset)]
    for d, (m, st) in enumerate(zip(shape, strides)):
        lines.append(f"for (int64_t i{d} = 0; i{d} < {m}; i{d}++)")
        idx.append(f"i{d} * {st}")
    lines.append(f"    {y}[{' + '.join(idx)}] = {gp}[o++];")
    return lines + ["}"]


def _cat(n, ctx):
    axis = n.params.get("axis")
    ins = list(n.args)
    if axis is None or not all(hasattr(a, "kind") and a.dtype == n.dtype for a in ins):
        return None
    nd = len(n.shape)
    axis %= nd
    outer = _numel(n.shape[:axis])
    inner = _numel(n.shape[axis + 1 :])
    T, y = ctx.ctype(n), ctx.ptr(n)
    row = n.shape[axis] * inner
    lines, at = [], 0
    for a in ins:
        if len(a.shape) != nd:
            return None
        chunk = a.shape[axis] * inner
        if chunk:
            lines.append(
                f"for (int64_t r = 0; r < {outer}; r++) "
                f"memcpy({y} + r * {row} + {at}, {ctx.ptr(a)} + r * {chunk}, {chunk} * sizeof({T}));"
            )
        at += chunk
    return lines


LOWERINGS = {
    "reshape": _reshape_like,
    "view": _reshape_like,
    "contiguous": _reshape_like,
    "clone": _reshape_like,
    "permute": _permute,
    "expand": _expand,
    "getitem": _getitem,
    "sum": _sum,
    "embedding": _embedding,
    "embedding_backward": _embedding_backward,
    "index_put_zeros": _index_put_zeros,
    "cat": _cat,
    "full": _full,
    "arange": _arange,
}
# Ops that write their inputs; only whole-step programs (``compile/step_program.py``) hold them.
INPLACE_LOWERINGS = frozenset({"_foreach_add_", "_fused_adam_", "_fused_adamw_"})


def lower(node, ctx):
    """C statements (list), an :class:`Alias`, or None (no lowering: the node runs eagerly)."""
    if node.kind != "call" or (node.impure and node.op not in INPLACE_LOWERINGS):
        return None
    values = [a for a in node.args if hasattr(a, "kind")]
    if node.prim.multi:
        if any(ctx.ctype(a) is None for a in values):
            return None
    elif any(ctx.ctype(a) is None for a in [*values, node]):
        return None
    fn = LOWERINGS.get(node.op)
    if fn is None:
        return _elementwise(node, ctx) if not node.prim.multi else None
    try:
        return fn(node, ctx)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None  # an unusual parameter: the eager kernel handles it


from ember.compile.codegen.lowerings_nn import NN_LOWERINGS  # noqa: E402  (it imports the helpers above)

LOWERINGS.update(NN_LOWERINGS)

from ember.compile.codegen.lowerings_rnn import RNN_LOWERINGS  # noqa: E402  (the LSTM's time loops)

LOWERINGS.update(RNN_LOWERINGS)

from ember.compile.codegen.lowerings_conv import CONV_INPLACE, CONV_LOWERINGS  # noqa: E402

LOWERINGS.update(CONV_LOWERINGS)
INPLACE_LOWERINGS = INPLACE_LOWERINGS | CONV_INPLACE

from ember.compile.codegen.lowerings_index import register as _register_index  # noqa: E402

_register_index(LOWERINGS)
