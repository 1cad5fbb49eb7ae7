"""Batching rules of the primitives, for ``ember.func.vmap``.

Inside ``vmap`` the function sees :class:`BatchedTensor` s: tensors whose logical shape (what
``shape``, ``dim`` and the ops' argument checks see) has no batch dimension, and whose physical
value (``_value``) keeps the batch dimension at the front. Every op reaches the dispatch point;
the handler of the vmap level turns the primitive on logical tensors into the same primitive on
physical ones, through a rule of the primitive's kind:

- elementwise (unary, binary, ``where``, ``clamp``, activations): batched operands get size-1
  dims after the batch dim up to the output's rank, then NumPy broadcasting does the rest;
- reductions, scans, ``softmax`` and other ops with dims: the dims shift by one;
- movement (``reshape``, ``view``, ``permute``, ``expand``, ``cat``, indexing reads): the shape
  gains the batch dim, the dims shift by one;
- ``matmul``, ``linear``, ``layer_norm``, ``gather``, ``index_select``, ``embedding``.

A primitive without a rule runs once per batch element and the results are stacked, with a
``UserWarning`` naming it (as PyTorch's fallback does): correct, but a Python loop.
"""

from __future__ import annotations

import numpy as np

from ember.backends.meta import MetaArray
from ember.tensor import Tensor

__all__ = ["BatchedTensor", "RULES", "ELEMENTWISE"]


class BatchedTensor(Tensor):
    """A tensor inside ``vmap``: logical shape without the batch dim; ``_value`` is physical."""

    _value: Tensor
    _level: int

    # Reverse mode inside vmap records on the physical tensor: whether a batched tensor has
    # history (``mean``'s in-place scaling, the in-place ops' recording test) is its value's.
    @property
    def _node(self):
        return self._value._node

    @property
    def _requires_grad(self) -> bool:
        return self._value._requires_grad

    def detach(self) -> Tensor:
        """The batched tensor cut from the graph (its physical value detached)."""
        return wrap(self._value.detach(), self._level)

    def __repr__(self) -> str:
        return f"BatchedTensor(lvl={self._level}, bdim=0, value={self._value!r})"


def wrap(phys: Tensor, level: int) -> BatchedTensor:
    """``phys`` (batch dim first) as a BatchedTensor of ``level``."""
    t = BatchedTensor.__new__(BatchedTensor)
    t._value = phys
    t._level = level
    t._data = MetaArray(np.empty(phys._data.shape[1:], np.dtype([])), phys._data.dtype)
    t._device = phys._device
    return t


def is_batched(x, level: int) -> bool:
    return isinstance(x, BatchedTensor) and x._level == level


def _lrank(x, level) -> int:
    """Logical rank of an operand (numbers: 0)."""
    if is_batched(x, level):
        return x._value.ndim - 1
    return x.ndim if isinstance(x, Tensor) else 0


def _pad(x, level, rank):
    """The physical value of a batched ``x`` with size-1 dims after the batch dim up to ``rank``."""
    v = x._value
    k = v.ndim - 1
    if k < rank:
        v = v.reshape((v.shape[0],) + (1,) * (rank - k) + tuple(v.shape[1:]))
    return v


def _physical(x, level):
    return x._value if is_batched(x, level) else x


def _expand_to(x, level, B):
    """Any tensor operand as a physical value with the batch dim (unbatched ones expanded)."""
    if is_batched(x, level):
        return x._value
    return x.unsqueeze(0).expand((B,) + tuple(x.shape))


def _shift(axis, rank):
    """A logical dim (or dims, or None: all) as physical dims."""
    if axis is None:
        return tuple(range(1, rank + 1))
    if isinstance(axis, (tuple, list)):
        return tuple(a % rank + 1 if rank else a + 1 for a in axis)
    return axis % rank + 1 if rank else axis + 1


# Each rule: rule(apply, prim, inputs, params, level, B) -> physical output (batch dim first).
RULES: dict = {}


def _elementwise(apply, prim, inputs, params, level, B):
    r = max(_lrank(x, level) for x in inputs)
    args = tuple(_pad(x, level, r) if is_batched(x, level) else x for x in inputs)
    return apply(prim, *args, **params)


ELEMENTWISE = (
    "abs acos acosh add asin asinh atan atan2 atanh bitwise_and bitwise_not bitwise_or bitwise_xor ceil "
    "clamp clamp_tensor clone contiguous cos cosh div div_floor div_trunc eq erf exp expm1 floor "
    "floor_divide fmod ge gelu gt isfinite isinf isnan le log log1p logical_and logical_not logical_or "
    "logical_xor logsigmoid lt maximum minimum mul nan_to_num ne neg pow reciprocal relu remainder "
    "round rsqrt sigmoid sign signbit sin sinh sqrt sub tan tanh trunc where to"
).split()
for _n in ELEMENTWISE:
    RULES[_n] = _elementwise


def _reduce_axes(name):
    def rule(apply, prim, inputs, params, level, B):
        x = inputs[0]
        r = _lrank(x, level)
        p = dict(params)
        p[name] = _shift(p[name], r) if p[name] != () else tuple(range(1, r + 1))
        return apply(prim, x._value, **p)

    return rule


for _n in ("sum", "prod", "amax", "amin", "logsumexp", "var_std", "any", "all"):
    RULES[_n] = _reduce_axes("axes")
for _n in ("cumsum", "cumprod"):
    RULES[_n] = _reduce_axes("axis")


def _arg_extreme(apply, prim, inputs, params, level, B):
    x = inputs[0]._value
    if params["axis"] is None:  # over the flattened logical tensor
        flat = x.reshape(B, -1)
        out = apply(prim, flat, axis=1, keepdim=False)
        return out.reshape((B,) + (1,) * (x.ndim - 1)) if params["keepdim"] else out
    return apply(prim, x, axis=_shift(params["axis"], x.ndim - 1), keepdim=params["keepdim"])


RULES["argmax"] = RULES["argmin"] = _arg_extreme


def _dim_rule(*names):
    def rule(apply, prim, inputs, params, level, B):
        x = inputs[0]
        r = _lrank(x, level)
        p = dict(params)
        for n in names:
            p[n] = _shift(p[n], r)
        return apply(prim, x._value, *inputs[1:], **p)

    return rule


RULES["softmax"] = RULES["log_softmax"] = _dim_rule("dim")
RULES["flip"] = _dim_rule("axes")
RULES["roll"] = _dim_rule("axes")
RULES["diagonal"] = _dim_rule("d1", "d2")
RULES["tri_mask"] = lambda apply, prim, inputs, params, level, B: apply(prim, inputs[0]._value, **params)


def _reshape(apply, prim, inputs, params, level, B):
    return apply(prim, inputs[0]._value, shape=(B,) + tuple(params["shape"]))


RULES["reshape"] = RULES["view"] = _reshape
RULES["permute"] = lambda apply, prim, inputs, params, level, B: apply(
    prim, inputs[0]._value, dims=(0,) + tuple(d + 1 for d in params["dims"])
)


def _expand(apply, prim, inputs, params, level, B):
    target = tuple(params["target"])
    return apply(prim, _pad(inputs[0], level, len(target)), target=(B,) + target)


RULES["expand"] = _expand


def _cat(apply, prim, inputs, params, level, B):
    parts = [_expand_to(x, level, B) for x in inputs]
    p = dict(params, axis=params["axis"] + 1)
    return apply(prim, *parts, **p)


RULES["cat"] = _cat


def _advanced_apart(key) -> bool:
    """True when a key's advanced indices are separated by a slice (NumPy then moves their dims
    to the front, which a leading batch slice would break)."""
    if not any(isinstance(k, np.ndarray) for k in key):
        return False
    # with an array in the key, NumPy counts integers as advanced indices too
    pos = [i for i, k in enumerate(key) if isinstance(k, (np.ndarray, int))]
    return pos[-1] - pos[0] + 1 != len(pos)


def _getitem(apply, prim, inputs, params, level, B):
    key = params["key"]
    if _advanced_apart(key):
        return None
    return apply(prim, inputs[0]._value, key=(slice(None),) + tuple(key), basic=params["basic"])


RULES["getitem"] = RULES["index"] = _getitem


def _matmul(apply, prim, inputs, params, level, B):
    a, b = inputs
    ra, rb = _lrank(a, level), _lrank(b, level)
    if is_batched(a, level) and is_batched(b, level):
        pa, pb = a._value, b._value
        va = pa.unsqueeze(1) if ra == 1 else pa
        vb = pb.unsqueeze(-1) if rb == 1 else pb
        # batched (B, ..., n, k) @ (B, ..., k, m): pad the lower-rank one's batch dims
        r = max(va.ndim, vb.ndim) - 1
        va = va.reshape((B,) + (1,) * (r - va.ndim + 1) + tuple(va.shape[1:]))
        vb = vb.reshape((B,) + (1,) * (r - vb.ndim + 1) + tuple(vb.shape[1:]))
        out = apply(prim, va, vb)
        if rb == 1:
            out = out.squeeze(-1)
        if ra == 1:
            out = out.squeeze(-2 if rb != 1 else -1)
        return out
    if is_batched(a, level):
        pa = a._value
        if rb <= 2:  # (B, ..., n, k) @ W: NumPy broadcasting keeps B in front
            return apply(prim, pa, b)
        if ra == 1:  # a vector against a stack of matrices: (B, 1.., 1, k) @ b, then drop the 1
            return apply(prim, pa.reshape((B,) + (1,) * (rb - 1) + (pa.shape[-1],)), b).squeeze(-2)
        return apply(prim, _pad(a, level, max(ra, rb)), b)
    pb = b._value  # a unbatched, b batched
    if rb == 1:
        if ra == 1:
            return apply(prim, pb, a)
        return apply(prim, a, pb.reshape((B,) + (1,) * (ra - 2) + (pb.shape[-1], 1))).squeeze(-1)
    if ra == 1:
        return apply(prim, a, pb)
    return apply(prim, a, _pad(b, level, max(ra, rb)))


RULES["matmul"] = _matmul


def _linear(apply, prim, inputs, params, level, B):
    x, w, b = inputs
    if is_batched(w, level) or is_batched(b, level) or not is_batched(x, level):
        return None
    return apply(prim, x._value, w, b)


RULES["linear"] = _linear


def _layer_norm(apply, prim, inputs, params, level, B):
    x, w, b = inputs
    if is_batched(w, level) or is_batched(b, level):
        return None
    r = _lrank(x, level)
    return apply(prim, x._value, w, b, axes=tuple(a % r + 1 for a in params["axes"]), eps=params["eps"])


RULES["layer_norm"] = _layer_norm


def _gather(apply, prim, inputs, params, level, B):
    x, index = inputs
    return apply(prim, _expand_to(x, level, B), _expand_to(index, level, B), axis=params["axis"] + 1)


RULES["gather"] = _gather


def _index_select(apply, prim, inputs, params, level, B):
    x, index = inputs
    if is_batched(index, level):
        return None
    return apply(prim, x._value, index, axis=params["axis"] + 1)


RULES["index_select"] = _index_select


def _embedding(apply, prim, inputs, params, level, B):
    w, index = inputs
    if is_batched(w, level):
        return None
    return apply(prim, w, index._value, **params)


RULES["embedding"] = _embedding


def _fold(fn):
    """An image op over (N, C, H, W): the batch dim is folded into N, then split out again."""

    def rule(apply, prim, inputs, params, level, B):
        x, rest = inputs[0], inputs[1:]
        if any(is_batched(r, level) for r in rest):
            return None  # a batched weight: the loop fallback
        v = x._value
        folded = v.reshape((B * v.shape[1],) + tuple(v.shape[2:]))
        out = fn(apply, prim, folded, rest, params)
        return out.reshape((B, v.shape[1]) + tuple(out.shape[1:]))

    return rule


RULES["conv2d"] = _fold(lambda apply, prim, x, rest, params: apply(prim, x, *rest, **params))
RULES["avg_pool2d"] = _fold(lambda apply, prim, x, rest, params: apply(prim, x, **dict(params, in_shape=x._data.shape)))

# the nn primitives with batched parameters (per-sample gradients): their own module
from ember.func import _batching_nn, _batching_nn_grad, _batching_ops  # noqa: E402, F401
