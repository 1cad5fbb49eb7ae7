"""Batching rules of nn primitives for ``ember.func.vmap``: ``batch_norm``, attention,
``constant_pad``, and the gradient kernels (``linear_backward``, the conv and pooling input
gradients, ``embedding_backward``), as functorch does it: the batch folds into an existing dim
(N, the channels, or a leading dim) and the primitive runs once. Same contract as
``ember/func/_batching.py`` (None: the loop fallback).

Example:
    >>> import ember
    >>> import ember.nn.functional as F
    >>> from ember.func import vmap
    >>> vmap(lambda x: F.batch_norm(x, None, None, training=True))(ember.randn(3, 4, 2)).shape
    ember.Size([3, 4, 2])
"""

from __future__ import annotations

import numpy as np

from ember.func._batching import RULES, _expand_to, _lrank, is_batched
from ember.func._batching_ops import _leading

__all__: list = []


def _batch_norm(apply, prim, inputs, params, level, B):
    """Statistics per (batch element, channel): the batch folds into the channels,
    ``(B, N, C, ...) -> (N, B*C, ...)``, the affine parameters tiled to ``B*C``."""
    x, w, b = inputs
    v = x._value
    n, c = v.shape[1], v.shape[2]
    rest = tuple(v.shape[3:])
    folded = v.movedim(0, 1).reshape((n, B * c) + rest)
    wb = [None if t is None else _expand_to(t, level, B).reshape(B * c) for t in (w, b)]
    bshape = (1, B * c) + (1,) * len(rest)
    out, mean, var = apply(prim, folded, *wb, axes=params["axes"], eps=params["eps"], bshape=bshape)
    out = out.reshape((n, B, c) + rest).movedim(1, 0)
    return out, mean.reshape(B, c), var.reshape(B, c)


RULES["batch_norm"] = _batch_norm


def _sdpa(apply, prim, inputs, params, level, B):
    bm = params["spec"].bool_mask
    if bm is not None and not isinstance(bm, np.ndarray):
        return None  # a batched bool mask (read into the spec as a shape-only array)
    return _leading(apply, prim, inputs, params, level, B, 2)


RULES["scaled_dot_product_attention"] = _sdpa


def _constant_pad(apply, prim, inputs, params, level, B):
    key = (slice(None),) + tuple(params["key"])
    widths = ((0, 0),) + tuple(params["widths"])
    return apply(prim, inputs[0]._value, key=key, widths=widths, value=params["value"])


RULES["constant_pad"] = _constant_pad


def _fold_first(t, level, B):
    """A tensor's physical value with the batch folded into its first logical dim."""
    v = _expand_to(t, level, B)
    return v.reshape((B * v.shape[1],) + tuple(v.shape[2:]))


def _unfold_first(out, B):
    return out.reshape((B, out.shape[0] // B) + tuple(out.shape[1:]))


def _fold_shape(shape, B):
    return (B * shape[0],) + tuple(shape[1:])


def _fold_idx(idx, g, level, B):
    """A pooling argmax array (a param): per batch element when it has the batch dim already."""
    if idx.ndim == _lrank(g, level):
        idx = np.broadcast_to(idx, (B,) + idx.shape)
    return idx.reshape((B * idx.shape[1],) + idx.shape[2:])


def _max_pool2d_backward(apply, prim, inputs, params, level, B):
    g = inputs[0]
    idx = _fold_idx(params["idx"], g, level, B)
    out = apply(prim, _fold_first(g, level, B), idx=idx, in_shape=_fold_shape(params["in_shape"], B))
    return _unfold_first(out, B)


RULES["max_pool2d_backward"] = _max_pool2d_backward


def _max_pool2d_gather(apply, prim, inputs, params, level, B):
    x = inputs[0]
    idx = _fold_idx(params["idx"], x, level, B)
    out = apply(prim, _fold_first(x, level, B), idx=idx, in_shape=_fold_shape(params["in_shape"], B))
    return _unfold_first(out, B)


RULES["max_pool2d_gather"] = _max_pool2d_gather


def _avg_pool2d_backward(apply, prim, inputs, params, level, B):
    p = dict(params, in_shape=_fold_shape(params["in_shape"], B))
    return _unfold_first(apply(prim, _fold_first(inputs[0], level, B), **p), B)


RULES["avg_pool2d_backward"] = _avg_pool2d_backward


def _conv2d_input_grad(apply, prim, inputs, params, level, B):
    g, w = inputs
    if is_batched(w, level):
        return None
    p = dict(params, x_shape=_fold_shape(params["x_shape"], B))
    return _unfold_first(apply(prim, _fold_first(g, level, B), w, **p), B)


RULES["conv2d_input_grad"] = _conv2d_input_grad


def _conv2d_weight_grad(apply, prim, inputs, params, level, B):
    """One weight gradient per batch element: a grouped convolution with the batch in the
    channels (``(N, B*C, H, W)`` and ``(N, B*O, Ho, Wo)``, ``B * groups`` groups)."""
    from ember.nn.functional.conv import _Geom

    x, g = inputs
    geom = params["geom"]
    px, pg = _expand_to(x, level, B), _expand_to(g, level, B)  # (B, N, C, H, W), (B, N, O, Ho, Wo)
    n = px.shape[1]
    xs = px.movedim(0, 1).reshape((n, B * px.shape[2]) + tuple(px.shape[3:]))
    gs = pg.movedim(0, 1).reshape((n, B * pg.shape[2]) + tuple(pg.shape[3:]))
    g2 = _Geom(geom.stride, geom.pad, geom.dilation, geom.groups * B)
    w_shape = tuple(params["w_shape"])
    out = apply(prim, xs, gs, geom=g2, w_shape=(B * w_shape[0],) + w_shape[1:])
    return out.reshape((B,) + w_shape)


RULES["conv2d_weight_grad"] = _conv2d_weight_grad


def _linear_backward(apply, prim, inputs, params, level, B):
    """``gx`` by the primitive over the folded rows; ``gw``/``gb`` per batch element by one
    batched matmul and sum (the primitive would sum over the batch)."""
    g, x, w = inputs
    need = params["need"]
    if is_batched(w, level):
        return None
    pg, px = _expand_to(g, level, B), _expand_to(x, level, B)
    gx = gw = gb = None
    if need[0]:
        gx = apply(prim, pg, px, w, need=(True, False, False))[0]
    g2 = pg.reshape(B, -1, pg.shape[-1])
    if need[1]:
        gw = g2.transpose(1, 2) @ px.reshape(B, -1, px.shape[-1])
    if len(need) > 2 and need[2]:
        gb = g2.sum(1)
    return (gx, gw, gb)[: len(need)]


RULES["linear_backward"] = _linear_backward


def _embedding_backward(apply, prim, inputs, params, level, B):
    """The rows of batch element ``b`` go to rows ``b*V + index`` of a ``(B*V, D)`` gradient."""
    g, w, index = inputs
    if params["padding_idx"] is not None:
        return None
    v, d = w.shape[0], w.shape[1]
    pi = _expand_to(index, level, B)
    offs = np.arange(B, dtype=pi._data.dtype).reshape((B,) + (1,) * (pi.ndim - 1)) * v
    wide = _expand_to(w, level, B).reshape(B * v, d)
    out = apply(prim, _expand_to(g, level, B), wide, pi + type(pi)._from(offs, pi), **params)
    return out.reshape(B, v, d)


RULES["embedding_backward"] = _embedding_backward


def _rnn_step(apply, prim, inputs, params, level, B):
    """One recurrent step over ``(N, G*H)`` gates and ``(N, S)`` states: the batch folds into N."""
    gi, state, w_hh, b_hh = inputs
    if is_batched(w_hh, level) or is_batched(b_hh, level):
        return None
    pg, ps = _expand_to(gi, level, B), _expand_to(state, level, B)
    out = apply(prim, pg.reshape(-1, pg.shape[-1]), ps.reshape(-1, ps.shape[-1]), w_hh, b_hh, **params)
    return out.reshape(tuple(ps.shape))


for _n in ("lstm_step", "gru_step", "rnn_step"):
    RULES[_n] = _rnn_step


def _recurrent_sequence(apply, prim, inputs, params, level, B):
    """``(T, N, G*H)`` gates from ``(N, S)`` states: ``(B, T, N, .)`` runs as ``(T, B*N, .)``."""
    gi, state, w_hh, b_hh = inputs
    if is_batched(w_hh, level) or is_batched(b_hh, level):
        return None
    pg, ps = _expand_to(gi, level, B), _expand_to(state, level, B)
    steps = pg.shape[1]
    g2 = pg.movedim(0, 1).reshape(steps, -1, pg.shape[-1])
    out = apply(prim, g2, ps.reshape(-1, ps.shape[-1]), w_hh, b_hh, **params)
    return out.reshape((steps,) + tuple(ps.shape)).movedim(0, 1)


RULES["recurrent_sequence"] = _recurrent_sequence
