"""Forward-mode (JVP) rules of the primitives, filled into each ``Primitive.jvp`` slot.

A rule is ``rule(inputs, tangents, out, **params) -> tangent``: ``tangents`` lines up with
``inputs`` (None where an input has no tangent, i.e. a zero one), ``out`` is the primal output
and ``params`` are the op's parameters. Rules are written in Tensor ops so that tangents compose
with reverse mode. Linear primitives (sums, views, indexing reads, cat) reuse the primitive itself
on the tangents. The rules live here rather than next to each op so that the op files stay as
they are; ``install()`` puts them into the registry once.
"""

from __future__ import annotations

import math

__all__ = ["install", "RULES"]

RULES: dict = {}
_installed = False


def _rule(*names):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def _fit(t, out):
    """``t`` broadcast to ``out``'s shape (a binary op's tangent of a broadcast operand)."""
    if t is None:
        return None
    if tuple(t.shape) != tuple(out.shape):
        t = t.expand(tuple(out.shape))
    return t


def _plus(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _zeros_for(x, out):
    import ember

    return ember.zeros(tuple(x.shape), dtype=out.dtype, device=out.device)


def _linear(name):
    """A primitive linear in its tensor inputs: the tangent is the primitive on the tangents."""

    def rule(inputs, tangents, out, **params):
        from ember.ops.dispatch import REGISTRY, apply

        args = tuple(
            t if t is not None else (_zeros_for(x, out) if _is_t(x) and x.dtype.is_floating_point else _const(x))
            for x, t in zip(inputs, tangents)
        )
        return apply(REGISTRY[name], *args, **params)

    return rule


def _const(x):
    """A linear primitive's non-tensor operand (``scatter``'s value): a constant, so its tangent is 0."""
    return 0.0 if isinstance(x, float) else x


def _is_t(x):
    from ember.tensor import Tensor

    return isinstance(x, Tensor)


# --------------------------------------------------------------------------- elementwise
def _unary(fn):
    """A rule ``t * f'(x)`` with the derivative ``fn(x, out)`` in Tensor ops."""

    def rule(inputs, tangents, out, **params):
        return tangents[0] * fn(inputs[0], out)

    return rule


_UNARY = {
    "exp": lambda x, y: y,
    "log": lambda x, y: 1 / x,
    "log1p": lambda x, y: 1 / (1 + x),
    "expm1": lambda x, y: y + 1,
    "sqrt": lambda x, y: 0.5 / y,
    "rsqrt": lambda x, y: -0.5 * y * y * y,
    "reciprocal": lambda x, y: -(y * y),
    "tanh": lambda x, y: 1 - y * y,
    "sigmoid": lambda x, y: y * (1 - y),
    "relu": lambda x, y: (x > 0).to(y.dtype),
    "abs": lambda x, y: x.sign(),
    "sin": lambda x, y: x.cos(),
    "cos": lambda x, y: -x.sin(),
    "tan": lambda x, y: 1 + y * y,
    "sinh": lambda x, y: x.cosh(),
    "cosh": lambda x, y: x.sinh(),
    "asin": lambda x, y: (1 - x * x).rsqrt(),
    "acos": lambda x, y: -(1 - x * x).rsqrt(),
    "atan": lambda x, y: 1 / (1 + x * x),
    "asinh": lambda x, y: (x * x + 1).rsqrt(),
    "acosh": lambda x, y: (x * x - 1).rsqrt(),
    "atanh": lambda x, y: 1 / (1 - x * x),
    "erf": lambda x, y: (2 / math.sqrt(math.pi)) * (-(x * x)).exp(),
    "logsigmoid": lambda x, y: (-x).sigmoid(),
}
for _n, _f in _UNARY.items():
    RULES[_n] = _unary(_f)


@_rule("sign", "floor", "ceil", "trunc", "round")
def _zero(inputs, tangents, out, **params):
    return _zeros_for(out, out)


RULES["neg"] = _linear("neg")
RULES["add"] = lambda i, t, out: _fit(_plus(t[0], t[1]), out)


@_rule("sub")
def _sub(inputs, tangents, out):
    ta, tb = tangents
    return _fit(ta if tb is None else (-tb if ta is None else ta - tb), out)


@_rule("mul")
def _mul(inputs, tangents, out):
    (a, b), (ta, tb) = inputs, tangents
    return _fit(_plus(None if ta is None else ta * b, None if tb is None else a * tb), out)


@_rule("div")
def _div(inputs, tangents, out):
    (_a, b), (ta, tb) = inputs, tangents
    return _fit(_plus(None if ta is None else ta / b, None if tb is None else -tb * out / b), out)


@_rule("pow")
def _pow(inputs, tangents, out):
    import ember

    (a, b), (ta, tb) = inputs, tangents
    da = None if ta is None else ta * b * a ** (b - 1)
    db = None
    if tb is not None:
        # d/db a**b = a**b * log(a), taken as 0 where a == 0 (as PyTorch's rule does)
        la = ember.where(a == 0, ember.zeros_like(a), a.log()) if _is_t(a) else math.log(a) if a != 0 else 0.0
        db = tb * out * la
    return _fit(_plus(da, db), out)


def _extremum(greater):
    def rule(inputs, tangents, out):
        (a, b), (ta, tb) = inputs, tangents
        win_a = (a > b) if greater else (a < b)
        tie = (a == b).to(out.dtype)
        wa = win_a.to(out.dtype) + 0.5 * tie
        wb = 1 - wa
        return _fit(_plus(None if ta is None else ta * wa, None if tb is None else tb * wb), out)

    return rule


RULES["maximum"] = _extremum(True)
RULES["minimum"] = _extremum(False)


@_rule("atan2")
def _atan2(inputs, tangents, out):
    (a, b), (ta, tb) = inputs, tangents
    den = a * a + b * b
    return _fit(_plus(None if ta is None else ta * b / den, None if tb is None else -tb * a / den), out)


@_rule("where")
def _where(inputs, tangents, out):
    import ember

    cond, a, b = inputs
    _, ta, tb = tangents
    za = ta if ta is not None else 0.0
    zb = tb if tb is not None else 0.0
    if not _is_t(za) and not _is_t(zb):
        return None
    return _fit(ember.where(cond, za, zb), out)


@_rule("clamp")
def _clamp(inputs, tangents, out, lo, hi):
    x, t = inputs[0], tangents[0]
    mask = None
    if lo is not None:
        mask = x >= lo
    if hi is not None:
        mask = x <= hi if mask is None else mask & (x <= hi)
    return t if mask is None else t * mask.to(out.dtype)


@_rule("gelu")
def _gelu(inputs, tangents, out, approximate):
    x, t = inputs[0], tangents[0]
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        inner = k * (x + 0.044715 * x * x * x)
        th = inner.tanh()
        d = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * k * (1 + 3 * 0.044715 * x * x)
    else:
        cdf = 0.5 * (1 + (x * (1 / math.sqrt(2))).erf())
        pdf = (-0.5 * x * x).exp() * (1 / math.sqrt(2 * math.pi))
        d = cdf + x * pdf
    return t * d


# --------------------------------------------------------------------------- reductions
for _n in ("sum", "cumsum", "reshape", "view", "permute", "expand", "getitem", "index", "contiguous", "clone"):
    RULES[_n] = _linear(_n)
for _n in ("flip", "roll", "diagonal", "tri_mask", "to", "gather", "index_select", "cat"):
    RULES[_n] = _linear(_n)


for _n in ("index_put", "index_put_zeros", "scatter", "scatter_add", "index_add", "avg_pool2d"):
    RULES[_n] = _linear(_n)


@_rule("constant_pad")
def _constant_pad(inputs, tangents, out, key, widths, value):
    from ember.ops.dispatch import REGISTRY, apply

    return apply(REGISTRY["constant_pad"], tangents[0], key=key, widths=widths, value=0.0)


@_rule("div_floor", "div_trunc", "floor_divide", "norm0")
def _zero_op(inputs, tangents, out, **params):
    return _zeros_for(out, out)


def _mod(rounding):
    def rule(inputs, tangents, out):
        (a, b), (ta, tb) = inputs, tangents
        if tb is None:
            return _fit(ta, out)
        q = getattr(a / b, rounding)()
        return _fit(_plus(ta, -tb * q), out)

    return rule


RULES["remainder"] = _mod("floor")
RULES["fmod"] = _mod("trunc")


@_rule("clamp_tensor")
def _clamp_tensor(inputs, tangents, out):
    import ember

    (x, lo, hi), (tx, tlo, thi) = inputs, tangents
    r = tx if tx is not None else _zeros_for(out, out)
    r = _fit(r, out)
    if lo is not None:
        r = ember.where(x < lo, _fit(tlo, out) if tlo is not None else 0.0, r)
    if hi is not None:
        r = ember.where(x > hi, _fit(thi, out) if thi is not None else 0.0, r)
    return r


@_rule("norm2")
def _norm2(inputs, tangents, out, axes, keepdim):
    import ember

    x, t = inputs[0], tangents[0]
    ax = _axes_of(axes, x.ndim)
    dot = (x * t).sum(ax, keepdim=keepdim) if ax else x * t
    return ember.where(out == 0, ember.zeros_like(out), dot / out)


@_rule("einsum")
def _einsum(inputs, tangents, out, **params):
    from ember.ops.dispatch import REGISTRY, apply

    r = None  # multilinear: one term per operand with a tangent
    for i, t in enumerate(tangents):
        if t is not None:
            args = inputs[:i] + (t,) + inputs[i + 1 :]
            r = _plus(r, apply(REGISTRY["einsum"], *args, **params))
    return r


@_rule("conv2d")
def _conv2d(inputs, tangents, out, **params):
    from ember.ops.dispatch import REGISTRY, apply

    (x, w, _b), (tx, tw, tb) = inputs, tangents
    conv = REGISTRY["conv2d"]
    r = _plus(
        None if tx is None else apply(conv, tx, w, None, **params),
        None if tw is None else apply(conv, x, tw, None, **params),
    )
    if tb is not None:
        r = _plus(r, _fit(tb.reshape((1, -1, 1, 1)), out))
    return r


@_rule("embedding")
def _embedding(inputs, tangents, out, **params):
    from ember.ops.dispatch import REGISTRY, apply

    w, index = inputs
    return apply(REGISTRY["embedding"], tangents[0], index, **params)


def _keep(t, axes, ndim):
    """``t`` (reduced over ``axes`` without keepdim) with those dims back as size 1."""
    shape = list(t.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return t.reshape(tuple(shape))


def _axes_of(axes, ndim):
    if axes is None or axes == ():
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(a % ndim for a in axes) if ndim else ()


@_rule("amax", "amin")
def _amax(inputs, tangents, out, axes, keepdim):
    x, t = inputs[0], tangents[0]
    ax = _axes_of(axes, x.ndim)
    ok = out if keepdim or not ax else _keep(out, ax, x.ndim)
    mask = (x == ok).to(out.dtype)  # ties share the tangent evenly, as in PyTorch
    if not ax:
        return t * mask
    return (t * mask).sum(ax, keepdim=keepdim) / mask.sum(ax, keepdim=keepdim)


def _max_min_dim(arg):
    """The tangent of the selected element (the first extreme, as the primal's index)."""

    def rule(inputs, tangents, out, axis, keepdim):
        x, t = inputs[0], tangents[0]
        res = t.gather(axis, getattr(x, arg)(axis, keepdim=True))
        return res if keepdim else res.squeeze(axis)

    return rule


RULES["max_dim"], RULES["min_dim"] = _max_min_dim("argmax"), _max_min_dim("argmin")


@_rule("logsumexp")
def _logsumexp(inputs, tangents, out, axes, keepdim):
    x, t = inputs[0], tangents[0]
    ax = _axes_of(axes, x.ndim)
    ok = out if keepdim or not ax else _keep(out, ax, x.ndim)
    w = (x - ok).exp()
    return (t * w).sum(ax, keepdim=keepdim) if ax else t * w


@_rule("var_std")
def _var_std(inputs, tangents, out, axes, keepdim, correction, sqrt):
    x, t = inputs[0], tangents[0]
    ax = _axes_of(axes, x.ndim)
    n = 1
    for a in ax:
        n *= x.shape[a]
    xc = x - x.mean(ax, keepdim=True)
    dvar = 2 * (xc * t).sum(ax, keepdim=keepdim) / max(n - correction, 0)
    return dvar / (2 * out) if sqrt else dvar


# --------------------------------------------------------------------------- matmul and nn
@_rule("matmul")
def _matmul(inputs, tangents, out):
    (a, b), (ta, tb) = inputs, tangents
    return _plus(None if ta is None else ta @ b, None if tb is None else a @ tb)


@_rule("linear")
def _linear_rule(inputs, tangents, out):
    from ember.ops.dispatch import REGISTRY, apply

    (x, w, _b), (tx, tw, tb) = inputs, tangents
    lin = REGISTRY["linear"]
    r = _plus(
        None if tx is None else apply(lin, tx, w, None),
        None if tw is None else apply(lin, x, tw, None),
    )
    return _fit(_plus(r, tb), out)


@_rule("softmax")
def _softmax(inputs, tangents, out, dim):
    t = tangents[0]
    return out * (t - (out * t).sum(dim, keepdim=True))


@_rule("log_softmax")
def _log_softmax(inputs, tangents, out, dim):
    t = tangents[0]
    return t - (out.exp() * t).sum(dim, keepdim=True)


@_rule("layer_norm")
def _layer_norm(inputs, tangents, out, axes, eps):
    (x, w, _b), (tx, tw, tb) = inputs, tangents
    ax = tuple(axes)
    xc = x - x.mean(ax, keepdim=True)
    rstd = ((xc * xc).mean(ax, keepdim=True) + eps).rsqrt()
    xhat = xc * rstd
    r = None
    if tx is not None:
        dxc = tx - tx.mean(ax, keepdim=True)
        dxhat = rstd * (dxc - xhat * (xhat * dxc).mean(ax, keepdim=True))
        r = dxhat if w is None else dxhat * w
    if tw is not None:
        r = _plus(r, xhat * tw)
    return _fit(_plus(r, tb), out)


def install() -> None:
    """Fill the ``jvp`` slot of every registered primitive that has a rule here (once)."""
    global _installed
    if _installed:
        return
    from ember.autograd._jvp_rules_nn import RULES as NN_RULES
    from ember.ops.dispatch import REGISTRY

    RULES.update(NN_RULES)
    for name, rule in RULES.items():
        prim = REGISTRY.get(name)
        if prim is not None and prim.jvp is None:
            prim.jvp = rule
    _installed = True
