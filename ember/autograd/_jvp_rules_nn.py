"""Forward-mode (JVP) rules of the fused and structured primitives: losses, normalization,
pooling, attention, recurrent cells, convolution gradients, products, special functions,
decompositions and sparse products. Same contract as ``ember/autograd/_jvp_rules.py`` (which
imports this module into its ``RULES``): ``rule(inputs, tangents, out, **params) -> tangent``,
in Tensor ops, so tangents compose with reverse mode and with outer forward levels.

Fused primitives that keep a composite form in Tensor ops (attention, the recurrent cells) take
their tangent by forward mode through that composite (``forward_ad.jvp_of``); the others have
their formula written out.
"""

from __future__ import annotations

__all__ = ["RULES", "INPLACE"]

RULES: dict = {}


def _rule(*names):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def _plus(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _is_t(x) -> bool:
    from ember.tensor import Tensor

    return isinstance(x, Tensor)


def _multilinear(name):
    """A primitive linear in each tensor operand separately (a product of its operands): the
    tangent is one term per operand with a tangent, the primitive with that operand replaced."""

    def rule(inputs, tangents, out, **params):
        from ember.ops.dispatch import REGISTRY, apply

        r = None
        for i, t in enumerate(tangents):
            if t is not None:
                r = _plus(r, apply(REGISTRY[name], *(inputs[:i] + (t,) + inputs[i + 1 :]), **params))
        return r

    return rule


def _linear_in_first(name):
    """A primitive linear in its first operand; the others are indices (no tangent)."""

    def rule(inputs, tangents, out, **params):
        from ember.ops.dispatch import REGISTRY, apply

        return apply(REGISTRY[name], tangents[0], *inputs[1:], **params)

    return rule


def _axes_of(axes, ndim):
    if axes is None or axes == ():
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(a % ndim for a in axes) if ndim else ()


# --------------------------------------------------------------------------- linear ones
for _n in ("max_pool2d_gather", "max_pool2d_backward", "avg_pool2d_backward", "index_select_backward"):
    RULES[_n] = _linear_in_first(_n)
for _n in ("conv2d_input_grad", "conv2d_weight_grad", "sparse_mm"):
    RULES[_n] = _multilinear(_n)


@_rule("max_pool2d")
def _max_pool2d(inputs, tangents, out, geo):
    from ember.nn.functional.pooling import _max_gather

    idx = out[1]  # the flat index of each window's maximum: the tangent is read there
    return _max_gather(tangents[0], idx._data)


@_rule("copy_slices")
def _copy_slices(inputs, tangents, out, chain):
    from ember.ops.movement import apply_view_chain

    base_old, (tb, tr) = inputs[0], tangents
    t = tb.clone() if tb is not None else base_old.new_zeros(tuple(base_old.shape))
    region = apply_view_chain(chain, t)
    if tr is not None:
        region.copy_(tr)
    else:
        region.zero_()
    return t


# --------------------------------------------------------------------------- products
@_rule("prod")
def _prod(inputs, tangents, out, axes, keepdim):
    from ember.ops.reduce import _prod_of_others

    x, t = inputs[0], tangents[0]
    if x.ndim == 0:
        return t
    ax = _axes_of(axes, x.ndim)
    return (t * _prod_of_others(x, ax)).sum(ax, keepdim=keepdim)


@_rule("cumprod")
def _cumprod(inputs, tangents, out, axis, dtype):
    import ember

    x, t = inputs[0], tangents[0]
    if x.ndim == 0:
        return t
    if not bool((x == 0).any()):
        # d out_j = sum_{k <= j} t_k out_j / x_k
        return out * (t / x).cumsum(axis)
    # With zeros: d out_j = sum_{k <= j} t_k prod_{i <= j, i != k} x_i, one row per k (O(n^2)).
    n = x.shape[axis]
    xm, tm = x.movedim(axis, -1), t.movedim(axis, -1)
    eye = ember.eye(n, dtype=ember.bool)
    rows = ember.where(eye, ember.ones((), dtype=x.dtype), xm.unsqueeze(-2).expand(tuple(xm.shape[:-1]) + (n, n)))
    prods = rows.cumprod(-1) * ember.ones(n, n, dtype=x.dtype).triu()  # (..., k, j), j >= k only
    return (tm.unsqueeze(-1) * prods).sum(-2).movedim(-1, axis)


@_rule("cdist")
def _cdist(inputs, tangents, out, p):
    import math

    (x1, x2), (t1, t2) = inputs, tangents
    if p == 0:
        return out * 0.0
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # (..., P, R, M)
    d = out.unsqueeze(-1)
    if p == 1:
        w = diff.sign()
    elif p == math.inf:
        w = diff.sign() * (diff.abs() == d).to(diff.dtype)
        w = w / w.abs().sum(-1, keepdim=True).clamp(min=1)  # ties share the derivative
    else:
        safe = d.masked_fill(d == 0, 1.0)
        w = diff.sign() * diff.abs() ** (p - 1) / safe ** (p - 1)
        w = w.masked_fill(d == 0, 0.0)  # zero distance: zero derivative, as the gradient rule
    dt = None if t1 is None else t1.unsqueeze(-2)
    if t2 is not None:
        dt = _plus(dt, -t2.unsqueeze(-3))
    return (w * dt).sum(-1)


# --------------------------------------------------------------------------- special functions
@_rule("lgamma")
def _lgamma(inputs, tangents, out):
    from ember.ops.special import digamma

    return tangents[0] * digamma(inputs[0])


@_rule("polygamma")
def _polygamma(inputs, tangents, out, n):
    from ember.ops.special import polygamma

    return tangents[0] * polygamma(n + 1, inputs[0])


@_rule("standard_gamma")
def _standard_gamma(inputs, tangents, out):
    from ember.distributions._gamma_sampling import standard_gamma_grad
    from ember.tensor import Tensor

    alpha = inputs[0]
    d = standard_gamma_grad(out._data, alpha._data).astype(alpha._data.dtype)  # d sample / d alpha
    return tangents[0] * Tensor._from(d, alpha)


# --------------------------------------------------------------------------- decompositions
@_rule("cholesky")
def _cholesky(inputs, tangents, out):
    from ember.ops.decomp import solve_triangular

    # dL = L Phi(L^-1 dA L^-T), Phi: the lower triangle with the diagonal halved.
    L, dA = out, tangents[0]
    X = solve_triangular(L, solve_triangular(L, dA, upper=False).mT, upper=False).mT
    phi = X.tril() - 0.5 * X.diagonal(0, -2, -1).diag_embed()
    return L @ phi


@_rule("solve_triangular")
def _solve_triangular(inputs, tangents, out, upper):
    from ember.ops.decomp import solve_triangular

    # A X = B:  dX = A^-1 (dB - tri(dA) X)
    A, (tA, tB) = inputs[0], tangents
    r = tB
    if tA is not None:
        r = _plus(r, -((tA.triu() if upper else tA.tril()) @ out))
    if tuple(r.shape) != tuple(out.shape):
        r = r.expand(tuple(out.shape))
    return solve_triangular(A, r, upper=upper)


# --------------------------------------------------------------------------- losses
@_rule("cross_entropy", "nll_loss")
def _class_loss(inputs, tangents, out, ignore_index, reduction, ls, softmax_mode, op):
    from ember.nn.functional.activation import softmax
    from ember.nn.functional.loss import _ClassTargets, _to_2d_tensor
    from ember.tensor import Tensor

    # loss_i = -sum_c q_ic logp_ic, with q the (constant) target distribution.
    x, target, weight = inputs
    t = tangents[0]
    if t is None:
        return None
    ct = _ClassTargets(x, target, weight, ignore_index, op)
    q = ct.q(ls, x._data.dtype)
    t2 = _to_2d_tensor(t, ct)
    if softmax_mode:  # d logp = t - sum_c p_c t_c
        p2 = _to_2d_tensor(softmax(x, 1 if x.ndim > 1 else 0), ct)
        dlogp = t2 - (p2 * t2).sum(1, keepdim=True)
    else:
        dlogp = t2
    per = -(Tensor._from(q, x) * dlogp).sum(1)
    if reduction == "none":
        return per.reshape(ct.out_shape)
    if reduction == "sum":
        return per.sum()
    return per.sum() / float(ct.denominator())


# --------------------------------------------------------------------------- normalization
@_rule("batch_norm")
def _batch_norm(inputs, tangents, out, axes, eps, bshape):
    (x, w, _b), (tx, tw, tb) = inputs, tangents
    ax = tuple(axes)
    xc = x - x.mean(ax, keepdim=True)
    rstd = ((xc * xc).mean(ax, keepdim=True) + eps).rsqrt()
    xhat = xc * rstd
    r = None
    if tx is not None:
        dxc = tx - tx.mean(ax, keepdim=True)
        dxhat = rstd * (dxc - xhat * (xhat * dxc).mean(ax, keepdim=True))
        r = dxhat if w is None else dxhat * w.reshape(bshape)
    if tw is not None:
        r = _plus(r, xhat * tw.reshape(bshape))
    if tb is not None:
        r = _plus(r, tb.reshape(bshape).expand(tuple(x.shape)))
    return r


# --------------------------------------------------------------------------- composites
@_rule("scaled_dot_product_attention")
def _sdpa(inputs, tangents, out, spec):
    from ember.autograd.forward_ad import jvp_of
    from ember.nn.functional.attention import attention_composite

    def f(q, k, v, *mask):
        return attention_composite(q, k, v, mask[0] if mask else None, spec)[0]

    return jvp_of(f, inputs, tangents)


def _step_rule(cls_name):
    def rule(inputs, tangents, out, **params):
        from ember.autograd.forward_ad import jvp_of
        from ember.nn.functional import rnn

        cls = getattr(rnn, cls_name)
        helper = cls.__new__(cls)
        if "relu" in params:
            helper.relu = params["relu"]
        return jvp_of(lambda gi, s, w, b: helper.composite(gi, s, w, b), inputs, tangents)

    return rule


RULES["lstm_step"] = _step_rule("LSTMStep")
RULES["gru_step"] = _step_rule("GRUStep")
RULES["rnn_step"] = _step_rule("RNNStep")


@_rule("recurrent_sequence")
def _recurrent_sequence(inputs, tangents, out, kind, reverse, relu):
    from ember.autograd.forward_ad import jvp_of
    from ember.nn.functional.rnn import _sequence_by_steps

    # one step primitive per time step, each through its cell's composite
    return jvp_of(lambda *xs: _sequence_by_steps(kind, reverse, relu, *xs), inputs, tangents)


# --------------------------------------------------------------------------- in-place ops
# In-place primitives (raw writes, used when no gradient is recorded) have no node. Under forward
# AD their tangent is the tangent of the out-of-place twin on the operands as they were (forward
# mode through it, ``forward_ad.jvp_of``); random fills give constant values (zero tangent).
def _addc(div: bool):
    def f(s, t1, t2, value):
        return s + value * (t1 / t2 if div else t1 * t2)

    return f


def _index_add(s, index, source, dim, alpha):
    return s.index_add(dim, index, source, alpha=alpha)


def _setitem(s, value, key):
    from ember.ops.index import index_put

    return index_put(s, key, value, _converted=True)


def _lerp(s, end, weight):
    from ember.ops import elementwise as ew

    return ew.lerp(s, end, weight)


def _maximum(s, other):
    from ember.ops import elementwise as ew

    return ew.maximum(s, other)


#: in-place primitive -> its out-of-place twin, ``f(*inputs, **params)``
INPLACE = {
    "addcmul_": _addc(False),
    "addcdiv_": _addc(True),
    "lerp_": _lerp,
    "maximum_": _maximum,
    "sqrt_": lambda s: s.sqrt(),
    "index_add_": _index_add,
    "setitem_": _setitem,
}
RANDOM_FILLS = ("normal_", "uniform_", "bernoulli_", "cauchy_", "exponential_", "geometric_", "log_normal_", "random_")
