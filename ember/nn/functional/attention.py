"""``scaled_dot_product_attention`` as one fused primitive, plus the composed form it falls back to.

The fused node computes ``softmax(q k^T * scale + mask) @ v`` on arrays and keeps the attention
probabilities; its first-order gradient is written out on arrays (``dV = P^T g``,
``dS = P * (dP - rowsum(dP * P))``, ``dQ = dS k * scale``, ``dK = dS^T q * scale``), so no graph
of small ops is built. For double backward (``create_graph=True``) the gradient is taken through
``attention_composite``, the same computation written with ember ops (and the same dropout mask).
``attention_composite`` also serves ``MultiheadAttention`` when attention weights are requested.
"""

from __future__ import annotations

import math

import numpy as np

from ember import backends
from ember._lowp import is_low
from ember.amp.policy import autocast_args
from ember.autograd.node import Node
from ember.ops._base import Tensor, _wrap, check_tensor, grad_state
from ember.ops.dispatch import Primitive, apply
from ember.random import numpy_generator

__all__ = ["scaled_dot_product_attention", "attention_composite"]


def _softmax_rows(s: np.ndarray, kernels=None) -> np.ndarray:
    if kernels is not None:  # the cpu implementation (ember/backends/cpu_kernels.py)
        p = kernels.softmax(s, log=False)  # the C row kernel; None without it
        if p is not None:
            return p
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(s - m)
    return e / e.sum(axis=-1, keepdims=True)


def _sum_to(a: np.ndarray, shape: tuple) -> np.ndarray:
    """Reduce a broadcast gradient back to ``shape``."""
    while a.ndim > len(shape):
        a = a.sum(0)
    axes = tuple(i for i, (n, m) in enumerate(zip(shape, a.shape)) if n == 1 and m != 1)
    return a.sum(axes, keepdims=True) if axes else a


def _repeat_kv(a: np.ndarray, rep: int) -> np.ndarray:
    return a if rep == 1 else np.repeat(a, rep, axis=-3)


def _fold_kv(a: np.ndarray, rep: int) -> np.ndarray:
    """Gradient of ``_repeat_kv``: sum each group of ``rep`` heads."""
    if rep == 1:
        return a
    shape = a.shape[:-3] + (a.shape[-3] // rep, rep) + a.shape[-2:]
    return a.reshape(shape).sum(-3)


class _Spec:
    """Everything about one attention call that is not a differentiable input."""

    __slots__ = ("scale", "bool_mask", "causal", "drop", "rep", "mask_is_input")

    def __init__(self, scale, bool_mask, causal, drop, rep, mask_is_input):
        self.scale = scale
        self.bool_mask = bool_mask  # (..., L, S) bool array: True takes part; None if none
        self.causal = causal
        self.drop = drop  # keep-mask already divided by (1 - p), or None
        self.rep = rep
        self.mask_is_input = mask_is_input


def _scores(qd, kd, spec: _Spec, float_mask):
    s = np.matmul(qd, np.swapaxes(kd, -1, -2))
    s *= spec.scale  # in place: s is fresh from matmul
    if float_mask is not None:
        s = s + float_mask
    if spec.bool_mask is not None:
        if np.broadcast_shapes(s.shape, spec.bool_mask.shape) == s.shape:
            np.copyto(s, -np.inf, where=~spec.bool_mask)
        else:
            s = np.where(spec.bool_mask, s, -np.inf)
    return s


class SDPA(Node):
    __slots__ = ("spec", "probs")

    def backward(self, g):
        if grad_state.enabled:
            return self._composite_backward(g)
        need = tuple(t._requires_grad for t in self.inputs)
        return apply(_SDPA_BACKWARD, g, *self.inputs, node=self, need=need)

    def _composite_backward(self, g):
        from ember.autograd import grad

        # One alias per input slot, so that a tensor passed twice (q is k) gets one gradient per slot.
        inputs = tuple(t.view_as(t) for t in self.inputs)
        mask = inputs[3] if self.spec.mask_is_input else None
        out, _ = attention_composite(inputs[0], inputs[1], inputs[2], mask, self.spec)
        wanted = [t for t in inputs if t._requires_grad]
        grads = iter(grad(out, wanted, g, create_graph=True, allow_unused=True))
        return tuple(next(grads) if t._requires_grad else None for t in inputs)


def _sdpa_backward_impl(g, q, k, v, *mask, node, need):
    """(dq, dk, dv[, dmask]) on arrays, from the saved attention probabilities."""
    spec = node.spec
    qd, gd = q._data, g._data
    kd, vd = _repeat_kv(k._data, spec.rep), _repeat_kv(v._data, spec.rep)
    if is_low(qd):  # float16/bfloat16: float32 compute (probs are kept in float32)
        qd, gd, kd, vd = (a.astype(np.float32) for a in (qd, gd, kd, vd))
    p = node.probs
    pd = p if spec.drop is None else p * spec.drop
    dq = dk = dv = dm = None
    if need[2]:
        dv = _sum_to(_fold_kv(np.matmul(np.swapaxes(pd, -1, -2), gd), spec.rep), v._data.shape)
    dp = np.matmul(gd, np.swapaxes(vd, -1, -2))
    if spec.drop is not None:
        dp = dp * spec.drop
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    if need[0]:
        dq = _sum_to(np.matmul(ds, kd) * spec.scale, qd.shape)
    if need[1]:
        dk = _sum_to(_fold_kv(np.matmul(np.swapaxes(ds, -1, -2), qd) * spec.scale, spec.rep), k._data.shape)
    dq, dk, dv = _cast_like(dq, q), _cast_like(dk, k), _cast_like(dv, v)
    if mask:
        dm = _sum_to(ds, mask[0]._data.shape).astype(mask[0]._data.dtype) if need[3] else None
        return dq, dk, dv, dm
    return dq, dk, dv


def _cast_like(g, x):
    return g if g is None or g.dtype == x._data.dtype else g.astype(x._data.dtype)


_SDPA_BACKWARD = Primitive("scaled_dot_product_attention_backward", None, _sdpa_backward_impl, multi=True)


def attention_composite(q: Tensor, k: Tensor, v: Tensor, float_mask, spec: _Spec):
    """``(softmax(q k^T * scale + mask) [dropout] @ v, probabilities)`` written with ember ops."""
    from ember.ops.elementwise import where

    if spec.rep != 1:
        k = k.repeat_interleave(spec.rep, dim=-3)
        v = v.repeat_interleave(spec.rep, dim=-3)
    s = (q @ k.transpose(-2, -1)) * spec.scale
    if float_mask is not None:
        s = s + float_mask
    if spec.bool_mask is not None:
        s = where(_wrap(spec.bool_mask, q._device), s, _wrap(np.array(-np.inf, dtype=q._data.dtype), q._device))
    # Subtracting a constant row maximum keeps exp finite and does not change the gradient.
    m = s.detach().amax(-1, keepdim=True)
    e = (s - where(m.isfinite(), m, 0.0)).exp()
    p = e / e.sum(-1, keepdim=True)
    pd = p if spec.drop is None else p * _wrap(spec.drop, q._device)
    return pd @ v, pd


def _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, op):
    for name, t in (("query", query), ("key", key), ("value", value)):
        check_tensor(t, op, name)
    qd, kd, vd = query._data, key._data, value._data
    if not (qd.dtype == kd.dtype == vd.dtype):
        raise RuntimeError(
            f"Expected query, key, and value to have the same dtype, but got query.dtype: {query.dtype} "
            f"key.dtype: {key.dtype} and value.dtype: {value.dtype} instead."
        )
    if qd.ndim < 2 or kd.ndim < 2 or vd.ndim < 2:
        raise RuntimeError(f"{op}: query, key and value must be at least 2-D")
    if qd.shape[-1] != kd.shape[-1] or kd.shape[-2] != vd.shape[-2]:
        raise RuntimeError(
            f"{op}: shape mismatch: query {list(query.shape)}, key {list(key.shape)}, value {list(value.shape)}"
        )
    rep = 1
    if enable_gqa and qd.ndim >= 3 and qd.shape[-3] != kd.shape[-3]:
        if qd.shape[-3] % kd.shape[-3]:
            raise RuntimeError(
                f"{op}: number of query heads {qd.shape[-3]} must be a multiple of key heads {kd.shape[-3]}"
            )
        rep = qd.shape[-3] // kd.shape[-3]
    L, S = qd.shape[-2], kd.shape[-2]
    scale = 1.0 / math.sqrt(qd.shape[-1]) if scale is None else float(scale)
    bool_mask, float_mask = None, None
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError(
                "_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True"
            )
        bool_mask = backends.like(qd, np.tril(np.ones((L, S), dtype=bool)))
    if attn_mask is not None:
        check_tensor(attn_mask, op, "attn_mask")
        if attn_mask._data.dtype == np.bool_:
            bool_mask = attn_mask._data
        else:
            if attn_mask._data.dtype != qd.dtype:
                raise RuntimeError(
                    f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                    f"attn_mask.dtype: {attn_mask.dtype} and query.dtype: {query.dtype} instead."
                )
            float_mask = attn_mask
    drop = None
    if dropout_p > 0.0:
        batch = np.broadcast_shapes(qd.shape[:-2], kd.shape[:-3] + (kd.shape[-3] * rep,) if kd.ndim >= 3 else ())
        keep = numpy_generator(None).random(batch + (L, S)) >= dropout_p
        drop = backends.like(qd, keep.astype(qd.dtype) / qd.dtype.type(1.0 - dropout_p))
    spec = _Spec(scale, bool_mask, is_causal, drop, rep, float_mask is not None)
    return spec, float_mask


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``softmax(Q K^T * scale + mask) V`` over ``(..., L, E)`` queries and ``(..., S, E)`` keys.

    A bool ``attn_mask`` marks with True the pairs that take part; a float mask is added to the
    scores. ``is_causal`` masks keys after each query (top-left aligned, as PyTorch).
    ``enable_gqa`` lets key/value have fewer heads (dim -3) than the query.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> q = ember.randn(2, 4, 5, 8)
        >>> F.scaled_dot_product_attention(q, q, q, is_causal=True).shape
        ember.Size([2, 4, 5, 8])
    """
    query, key, value, attn_mask = autocast_args("scaled_dot_product_attention", query, key, value, attn_mask)
    spec, float_mask = _prepare(
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa, "scaled_dot_product_attention"
    )
    if key._data.shape[-2] == 0:  # no keys: every output row is an empty sum, zeros (as PyTorch)
        return _no_keys(query, key, value, spec.rep)
    inputs = (query, key, value) if float_mask is None else (query, key, value, float_mask)
    t = apply(_SDPA, *inputs, spec=spec)
    if t._node is not None:
        t._node.save_versions(*inputs)
    return t


def _no_keys(query: Tensor, key: Tensor, value: Tensor, rep: int) -> Tensor:
    """Attention over zero keys, (..., L, Ev) zeros, recorded so every input gets a (zero or empty) gradient."""
    if rep > 1:
        key, value = key.repeat_interleave(rep, dim=-3), value.repeat_interleave(rep, dim=-3)
    return (query @ key.transpose(-2, -1)).to(value.dtype) @ value


def _sdpa_impl(q, k, v, *mask, spec, kernels=None):
    """The attention output, and the probabilities backward reads."""
    qd = q._data
    kd, vd = _repeat_kv(k._data, spec.rep), _repeat_kv(v._data, spec.rep)
    fm = mask[0]._data if mask else None
    if is_low(qd):  # float16/bfloat16: float32 compute, one rounding of the output
        qd, kd, vd = (a.astype(np.float32) for a in (qd, kd, vd))
        fm = None if fm is None else fm.astype(np.float32)
    p = _softmax_rows(_scores(qd, kd, spec, fm), kernels)
    pd = p if spec.drop is None else p * spec.drop
    return np.matmul(pd, vd).astype(q._data.dtype, copy=False), {"probs": p}


_SDPA = Primitive("scaled_dot_product_attention", SDPA, _sdpa_impl, extras=True)
