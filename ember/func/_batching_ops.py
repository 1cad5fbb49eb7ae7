"""More batching rules for ``ember.func.vmap``: each primitive runs once on the physical
tensors (batch dim first), as functorch's rules do. Same contract as ``_batching.py``: a rule
gets the physical dispatch ``apply``, the primitive, the logical inputs and params, the level
and the batch size ``B``, and returns the physical output (or None for the loop fallback).

- unary ops (``lgamma``, ``polygamma``, ``one_hot``, ...): the physical value as is;
- ops with dims (``argsort``, ``topk``, ``norm``, ``scatter``, ``index_add``, ...): unbatched
  operands are expanded to the batch, the dims shift by one;
- ops that broadcast leading batch dims (``cdist``, ``cholesky``, ``solve_triangular``,
  ``einsum`` with a new batch letter, ``scaled_dot_product_attention``): the batch is one more
  leading dim;
- image ops over ``(N, C, H, W)`` (``constant_pad``, the pooling backwards): the batch folds into N.

Example:
    >>> import ember
    >>> from ember.func import vmap
    >>> vmap(lambda a, b: ember.einsum("i,i->", a, b))(ember.ones(3, 2), ember.ones(3, 2))
    tensor([2., 2., 2.])
"""

from __future__ import annotations

import numpy as np

from ember.func._batching import RULES, _advanced_apart, _elementwise, _expand_to, _lrank, _pad, _shift, is_batched
from ember.tensor import Tensor

__all__: list = []

#: in-place ops that are elementwise in all their tensor operands (the vmap handler pads them)
INPLACE_ELEMENTWISE = {"addcmul_", "addcdiv_", "lerp_", "fill_", "copy_", "write_"}


def _unary(apply, prim, inputs, params, level, B):
    return apply(prim, inputs[0]._value, *inputs[1:], **params)


for _n in ("lgamma", "polygamma", "one_hot", "view_dtype", "to_detached"):
    RULES[_n] = _unary
RULES["isclose"] = _elementwise
# gelu_backward writes into an x-shaped buffer: both operands get the full physical shape
RULES["gelu_backward"] = lambda apply, prim, inputs, params, level, B: apply(
    prim, *(_expand_to(x, level, B) for x in inputs), **params
)


def _axes_rule(*names, all_if_none=False):
    """Every tensor operand expanded to the batch; the named dim params shift by one (None:
    all logical dims when ``all_if_none``)."""

    def rule(apply, prim, inputs, params, level, B):
        r = _lrank(inputs[0], level)
        p = dict(params)
        if r == 0 and any(isinstance(p[n], int) for n in names):
            return None  # a 0-dim input's dim 0 has no physical counterpart: the loop
        for n in names:
            if p[n] is None and not all_if_none:
                return None
            p[n] = _shift(p[n], r)
        args = [_expand_to(x, level, B) if isinstance(x, Tensor) else x for x in inputs]
        return apply(prim, *args, **p)

    return rule


RULES["norm2"] = RULES["norm0"] = RULES["count_nonzero"] = _axes_rule("axes", all_if_none=True)
RULES["cummax_indices"] = _axes_rule("axis")
RULES["max_dim"] = RULES["min_dim"] = _axes_rule("axis")  # values and indices over one dim
RULES["argsort"] = RULES["topk_indices"] = _axes_rule("axis")  # axis None: a 0-dim input
RULES["softmax_backward"] = _axes_rule("dim")
RULES["scatter"] = RULES["scatter_add"] = _axes_rule("axis")


def _index_add(apply, prim, inputs, params, level, B):
    x, index, src = inputs
    if is_batched(index, level):
        return None  # a vector index per batch element: the loop
    p = dict(params, axis=params["axis"] + 1)
    return apply(prim, _expand_to(x, level, B), index, _expand_to(src, level, B), **p)


RULES["index_add"] = _index_add


def _index_select_backward(apply, prim, inputs, params, level, B):
    g, index = inputs
    if is_batched(index, level):
        return None
    p = dict(params, axis=params["axis"] + 1, shape=(B,) + tuple(params["shape"]))
    return apply(prim, g._value, index, **p)


RULES["index_select_backward"] = _index_select_backward


def _leading(apply, prim, inputs, params, level, B, core):
    """Ops that broadcast leading dims before ``core`` trailing ones: each tensor operand
    gets the batch dim (expanded when unbatched) and size-1 dims up to the highest rank."""
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    r = max(max(_lrank(x, level) for x in tensors), core)
    args = []
    for x in inputs:
        if not isinstance(x, Tensor):
            args.append(x)
            continue
        v = _pad(x, level, r) if is_batched(x, level) else _expand_to(x, level, B)
        v = v.reshape((v.shape[0],) + (1,) * (r + 1 - v.ndim) + tuple(v.shape[1:]))
        args.append(v)
    return apply(prim, *args, **params)


def _leading_rule(core):
    return lambda apply, prim, inputs, params, level, B: _leading(apply, prim, inputs, params, level, B, core)


RULES["cdist"] = _leading_rule(2)
RULES["cholesky"] = _leading_rule(2)
RULES["solve_triangular"] = _leading_rule(2)


def _searchsorted(apply, prim, inputs, params, level, B):
    s, v, sorter = inputs
    if not isinstance(v, Tensor) or _lrank(v, level) == 0:
        return None
    if _lrank(s, level) == 1 and not is_batched(s, level) and (sorter is None or not is_batched(sorter, level)):
        return apply(prim, s, v._value, sorter, **params)  # 1-D boundaries: any input shape
    # rows of boundaries against rows of values: both batched, leading dims matching
    ps, pv = _expand_to(s, level, B), _expand_to(v, level, B)
    if ps.ndim != pv.ndim:  # 1-D boundaries against a batched N-D input: a row per input row
        ps = ps.reshape((B,) + (1,) * (pv.ndim - 2) + (ps.shape[-1],)).expand(tuple(pv.shape[:-1]) + (ps.shape[-1],))
    pso = None if sorter is None else _expand_to(sorter, level, B).expand(tuple(ps.shape))
    return apply(prim, ps.contiguous(), pv, pso, **params)


RULES["searchsorted"] = _searchsorted


def _einsum(apply, prim, inputs, params, level, B):
    used = set("".join(params["subs"]) + params["out_sub"])
    letter = next(c for c in "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba" if c not in used)
    subs, args = [], []
    for x, s in zip(inputs, params["subs"]):
        if is_batched(x, level):
            subs.append(letter + s)
            args.append(x._value)
        else:
            subs.append(s)
            args.append(x)
    out_sub = letter + params["out_sub"]
    return apply(prim, *args, subs=subs, out_sub=out_sub, equation=params["equation"])


RULES["einsum"] = _einsum


# --------------------------------------------------------------------------- index writes
def _indexed_rank(shape, key) -> int:
    """The rank of ``x[key]`` for an ``x`` of ``shape`` (a zero-strided dummy: no memory)."""
    return np.broadcast_to(np.empty((), bool), tuple(shape))[key].ndim


def _batched_key(key):
    """``key`` behind a leading batch slice, or None when NumPy would move its advanced dims."""
    key = key if isinstance(key, tuple) else (key,)
    return None if _advanced_apart(key) else (slice(None),) + key


def _index_put_zeros(apply, prim, inputs, params, level, B):
    key = _batched_key(params["key"])
    if key is None:
        return None
    g = inputs[0]
    v = _pad(g, level, _indexed_rank(params["shape"], params["key"]))
    return apply(prim, v, shape=(B,) + tuple(params["shape"]), key=key, basic=params["basic"])


RULES["index_put_zeros"] = _index_put_zeros


def _put_value(v, level, shape, key):
    """A value written through ``key``: batched ones padded to the indexed result's rank."""
    return _pad(v, level, _indexed_rank(shape, key)) if is_batched(v, level) else v


def _index_put(apply, prim, inputs, params, level, B):
    x, values = inputs
    key = _batched_key(params["key"])
    if key is None:
        return None
    v = _put_value(values, level, x.shape, params["key"])
    return apply(prim, _expand_to(x, level, B), v, key=key, accumulate=params["accumulate"])


RULES["index_put"] = _index_put


# In-place rules write into the physical self (batched: the vmap handler checks) and return it.
def _setitem(apply, prim, inputs, params, level, B):
    x, value = inputs
    key = _batched_key(params["key"])
    if key is None:
        return None
    apply(prim, x._value, _put_value(value, level, x.shape, params["key"]), key=key)
    return x._value


RULES["setitem_"] = _setitem


def _index_add_inplace(apply, prim, inputs, params, level, B):
    x, index, src = inputs
    if is_batched(index, level):
        return None
    apply(prim, x._value, index, _expand_to(src, level, B), **dict(params, dim=_shift(params["dim"], _lrank(x, level))))
    return x._value


RULES["index_add_"] = _index_add_inplace


# --------------------------------------------------------------------------- dynamic shapes
# Ops whose output shape depends on the values raise under vmap, as PyTorch does (its message,
# with PyTorch's op name). bincount, histc and repeat_interleave keep the loop fallback with its
# warning: PyTorch runs them by its fallback too (and fails in stack when the sizes differ).
_DYNAMIC = {"nonzero": "aten::nonzero", "unique": "aten::_unique2"}


def _dynamic(apply, prim, inputs, params, level, B):
    raise RuntimeError(
        "vmap: We do not support batching operators that can output dynamic shape. Attempted to vmap over "
        f"{_DYNAMIC[prim.name]}. Please file an issue at https://github.com/pytorch/pytorch/issues if you need "
        "this feature."
    )


for _n in _DYNAMIC:
    RULES[_n] = _dynamic


# --------------------------------------------------------------------------- multi-tensor ops
def _foreach(apply, prim, inputs, params, level, B):
    """``_foreach_*_`` over lists: tensor ``j`` pairs with written tensor ``j % n_written``; each
    written tensor must be batched (as for any in-place op), the others are padded to its rank."""
    n = params["n_written"]
    selves = inputs[:n]
    if not all(is_batched(t, level) for t in selves):
        raise RuntimeError(
            f"vmap: {prim.name}(self, *extra_args) is not possible because there exists a Tensor `other` in "
            "extra_args that has more elements than `self`."
        )
    if any(isinstance(v, Tensor) for p in params.values() if isinstance(p, tuple) for v in p):
        return None  # tensor scalars among the params: the loop
    args = []
    for j, x in enumerate(inputs):
        r = _lrank(selves[j % n], level)
        args.append(_pad(x, level, r) if is_batched(x, level) else x)
    apply(prim, *args, **params)
    return selves[0]._value


for _n in "add sub mul div maximum sqrt neg abs zero copy addcmul addcdiv lerp".split():
    RULES[f"_foreach_{_n}_"] = _foreach
