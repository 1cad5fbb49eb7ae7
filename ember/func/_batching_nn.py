"""Batching rules of the nn primitives whose parameters may be batched: ``linear`` and ``conv2d``
with a per-sample weight (the lifted parameters of ``vmap(grad(loss), in_dims=(None, 0, 0))``),
the class losses, and ``max_pool2d``. Same contract as ``ember/func/_batching.py``: a rule gets
the physical dispatch ``apply``, the primitive, the (logical) inputs and params, the level and
the batch size, and returns the physical output (batch dim first), or None for the loop fallback.

- ``linear`` with a batched weight is one batched matmul ``(B, M, in) @ (B, in, out)``;
- ``conv2d`` with a batched weight is one grouped convolution: the batch goes into the channels
  (``(N, B*C, H, W)`` with ``B * groups`` groups), as functorch does;
- the class losses fold the batch into the samples and reduce per batch element.
"""

from __future__ import annotations

import numpy as np

from ember.func._batching import RULES, _expand_to, is_batched

__all__: list = []


def _linear(apply, prim, inputs, params, level, B):
    x, w, b = inputs
    if not is_batched(w, level) and not is_batched(b, level):
        if not is_batched(x, level):
            return None
        return apply(prim, x._value, w, b)  # one linear over the batch folded into the rows
    px, pw = _expand_to(x, level, B), _expand_to(w, level, B)
    lead = tuple(px.shape[1:-1])
    out = px.reshape(B, -1, px.shape[-1]) @ pw.transpose(-1, -2)  # (B, M, out)
    if b is not None:
        out = out + _expand_to(b, level, B).unsqueeze(1)
    return out.reshape((B,) + lead + (pw.shape[1],))


RULES["linear"] = _linear


def _conv2d(apply, prim, inputs, params, level, B):
    from ember.nn.functional.conv import _Geom

    x, w, b = inputs
    if not is_batched(w, level) and not is_batched(b, level):
        v = x._value  # the batch folded into N
        out = apply(prim, v.reshape((B * v.shape[1],) + tuple(v.shape[2:])), w, b, **params)
        return out.reshape((B, v.shape[1]) + tuple(out.shape[1:]))
    geom = params["geom"]
    px = _expand_to(x, level, B)  # (B, N, C, H, W)
    pw = _expand_to(w, level, B)  # (B, O, C/g, kh, kw)
    n, c = px.shape[1], px.shape[2]
    o = pw.shape[1]
    xs = px.movedim(0, 1).reshape((n, B * c) + tuple(px.shape[3:]))
    ws = pw.reshape((B * o,) + tuple(pw.shape[2:]))
    bs = None if b is None else _expand_to(b, level, B).reshape(B * o)
    g2 = _Geom(geom.stride, geom.pad, geom.dilation, geom.groups * B)
    out = apply(prim, xs, ws, bs, geom=g2)  # (N, B*O, Ho, Wo)
    return out.reshape((n, B, o) + tuple(out.shape[2:])).movedim(1, 0)


RULES["conv2d"] = _conv2d


def _max_pool2d(apply, prim, inputs, params, level, B):
    v = inputs[0]._value
    out, idx = apply(prim, v.reshape((B * v.shape[1],) + tuple(v.shape[2:])), **params)
    return tuple(t.reshape((B, v.shape[1]) + tuple(t.shape[1:])) for t in (out, idx))


RULES["max_pool2d"] = _max_pool2d


def _class_loss(apply, prim, inputs, params, level, B):
    x, target, weight = inputs
    if is_batched(weight, level):
        return None
    px, pt = _expand_to(x, level, B), _expand_to(target, level, B)
    if px.ndim == 2:  # one sample per batch element: (B, C) logits, (B,) targets
        xs, ts = px, pt
    else:
        xs = px.reshape((-1,) + tuple(px.shape[2:]))
        ts = pt.reshape((-1,) + tuple(pt.shape[2:]))
    per = apply(prim, xs, ts, weight, **dict(params, reduction="none"))
    reduction = params["reduction"]
    if reduction == "none":
        return per.reshape((B,) + tuple(pt.shape[1:]))
    total = per.reshape(B, -1).sum(1)
    if reduction == "sum":
        return total
    # mean: per batch element, divided by the weights of its non-ignored targets
    t = pt._data.reshape(B, -1)
    valid = t != params["ignore_index"]
    w = np.ones(t.shape) if weight is None else weight._data[np.where(valid, t, 0)]
    denom = (w * valid).sum(1).astype(px._data.dtype)
    from ember.tensor import Tensor

    return total / Tensor._from(denom, px)


RULES["cross_entropy"] = RULES["nll_loss"] = _class_loss
