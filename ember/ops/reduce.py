"""Reductions (``sum``, ``mean``, ``max``, ``logsumexp``, ...) and scans (``cumsum``, ``cumprod``).

Primitives with gradient rules: Sum, Prod, Amax/Amin, LogSumExp, Cumsum, Cumprod, Norm.
``mean``, ``var`` and ``std`` are compositions of them; ``max(dim)`` returns values selected
by ``gather`` at the argmax, so its gradient goes to exactly one element, as in PyTorch.
"""

from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from ember import _dtype, backends
from ember._lowp import LOW_NP, is_low
from ember.amp.policy import autocast_args
from ember.autograd.node import Node
from ember.ops._base import Tensor, _wrap_dim, check_tensor, grad_state, wrap_dims
from ember.ops.dispatch import Primitive, apply, apply2, apply_p1, apply_p2, composite, mode
from ember.ops.dispatch_fast import ARRAY_OUT as _ARRAY_OUT
from ember.ops.dispatch_fast import apply_sum, apply_values_indices, divide_sum
from ember.ops.elementwise import _DIV
from ember.ops.movement import _EXPAND
from ember.ops.movement import expand as _expand  # (a function-level import costs 0.5 us per backward)
from ember.ops.movement import reshape as _reshape

__all__ = [
    "all",
    "amax",
    "amin",
    "aminmax",
    "any",
    "argmax",
    "argmin",
    "count_nonzero",
    "cummax",
    "cumprod",
    "cumsum",
    "logsumexp",
    "max",
    "mean",
    "min",
    "nanmean",
    "nansum",
    "norm",
    "prod",
    "prod_axes",
    "std",
    "std_mean",
    "sum",
    "var",
    "var_mean",
    "vector_norm",
]

_sum = builtins.sum

values_indices = namedtuple("values_indices", ["values", "indices"])


def _expand_back(g: Tensor, shape: tuple, axes: tuple, keepdim: bool) -> Tensor:
    """Broadcast a reduced gradient back to ``shape`` (re-inserting reduced axes)."""
    if not g._data.ndim and shape:  # a 0-d g (a full sum's gradient): what expand() dispatches, unchecked
        return apply_p1(_EXPAND, g, shape)
    if not keepdim and axes and g._data.ndim:  # a 0-d g expands to any shape as it is
        kept = list(shape)
        for a in axes:
            kept[a] = 1
        g = _reshape(g, tuple(kept))
    return _expand(g, shape)


def _axes(dim, ndim: int, op: str) -> tuple:
    """Reduction axes; None and an empty list both mean every dim, as in PyTorch."""
    if isinstance(dim, (list, tuple)) and not dim:
        return tuple(range(ndim))
    axes = wrap_dims(dim, ndim, op)
    # A 0-dim tensor accepts dim 0 / -1 (checked by wrap_dims) but has no axis to reduce.
    return axes if ndim else ()


def _with_result(out):
    """An implementation's return for nodes that keep their output array as ``result``."""
    return out, {"result": out}


class Sum(Node):
    __slots__ = ("axes", "keepdim", "dtype", "out_dtype")
    saves_values = False

    def backward(self, g):
        x = self.inputs[0]
        if g._data.dtype != x._data.dtype:  # sum(..., dtype=float64) of a float32 input
            g = g.to(x.dtype)
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim),)


_ALL_AXES = [tuple(range(n)) for n in range(33)]
_add_reduce = np.add.reduce


def _reduce_axes(dim, ndim: int, op: str) -> tuple:
    """Axes for ``dim``, with the common cases (None, one in-range int) answered first."""
    if dim is None:
        return _ALL_AXES[ndim] if ndim < 33 else tuple(range(ndim))
    if type(dim) is int and -ndim <= dim < ndim:
        return (dim % ndim,)
    return _axes(dim, ndim, op)


def sum(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Sum over ``dim`` (all dims when None); integer and bool inputs sum as int64.

    Example:
        >>> import ember
        >>> ember.tensor([[1, 2], [3, 4]]).sum(dim=0)
        tensor([4, 6])
    """
    if not isinstance(input, Tensor):
        check_tensor(input, "sum")
    d = input._data
    if dtype is None:  # the most common calls, x.sum() and x.sum(1) of a float tensor: no helper calls
        dt = d.dtype
        if dt is _F32 or dt is _F64:
            n = d.ndim
            if dim is None:
                if n < 33:
                    return apply_sum(_SUM, input, _ALL_AXES[n], keepdim)
            elif dim.__class__ is int and -n <= dim < n:
                return apply_sum(_SUM, input, (dim % n,), keepdim)
    axes = _reduce_axes(dim, d.ndim, "sum")
    if dtype is not None:
        npd = _dtype.to_dtype(dtype).np
    elif d.dtype.kind in "biu":
        npd = np.int64
    else:
        npd = None
        if d.dtype.itemsize == 2:  # float16/bfloat16 accumulate in float32, as torch, rounded back once
            return apply(_SUM, input, axes=axes, keepdim=keepdim, dtype=np.float32, out_dtype=d.dtype)
    if npd is None:  # the common case: one parameter less to pass and to set on the node
        return apply_p2(_SUM, input, axes, keepdim)
    return apply(_SUM, input, axes=axes, keepdim=keepdim, dtype=npd)


def _round_low(out, out_dtype):
    with np.errstate(over="ignore"):  # overflow rounds to inf, as torch's, without a warning
        return out.astype(out_dtype)


def _sum_impl(x, axes, keepdim, dtype=None, out_dtype=None):
    out = x._data.sum(axis=axes, dtype=dtype, keepdims=keepdim)
    return out if out_dtype is None else _round_low(out, out_dtype)


def _sum_cpu(x, axes, keepdim, dtype=None, out_dtype=None):
    # np.add.reduce directly on CPU: np.sum's wrapper costs more than the reduction on small inputs.
    if _ARRAY_OUT and out_dtype is None:
        # out=...: a 0-d array rather than a NumPy scalar, which apply would wrap in a second call
        return _add_reduce(x._data, axes, dtype, out=..., keepdims=keepdim)
    out = _add_reduce(x._data, axes, dtype, None, keepdim)  # positional: keywords cost a dict
    return out if out_dtype is None else _round_low(out, out_dtype)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_SUM = Primitive("sum", Sum, _sum_impl, cpu=_sum_cpu, params=("axes", "keepdim"))


def nansum(input, dim=None, keepdim: bool = False) -> Tensor:
    from ember.ops.elementwise import isnan, where

    return sum(where(isnan(input), 0.0, input), dim, keepdim)


def mean(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Arithmetic mean over ``dim``; floating-point inputs only, as in PyTorch.

    A composite (``sum``, then a scale; see :func:`~ember.ops.dispatch.composite`). The eager
    ``x.mean()`` of a float tensor runs here without the composite wrapper's call.

    Example:
        >>> import ember
        >>> ember.tensor([1.0, 2.0, 6.0]).mean()
        tensor(3.)
    """
    if dim is None and dtype is None and mode.composite is None and isinstance(input, Tensor):
        d = input._data
        dt = d.dtype
        n = d.size
        if (dt is _F32 or dt is _F64) and n and d.ndim < 33:
            s = apply_sum(_SUM, input, _ALL_AXES[d.ndim], keepdim)
            return _divide_sum(s, n) if s._node is None else divide_sum(_DIV, s, n)
    return _mean(input, dim, keepdim, dtype=dtype)


def _mean_body(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    if dim is None and dtype is None and isinstance(input, Tensor):  # x.mean(): no helper calls
        d = input._data
        dt = d.dtype
        n = d.size
        if (dt is _F32 or dt is _F64) and n and d.ndim < 33:
            s = apply_p2(_SUM, input, _ALL_AXES[d.ndim], keepdim)
            return _divide_sum(s, n) if s._node is None else apply2(_DIV, s, n)
    if not isinstance(input, Tensor):
        check_tensor(input, "mean")
    if dtype is not None:
        input = input.to(dtype)
    d = input._data
    if d.dtype.kind not in "fV":
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point or "
            f"complex dtype. Got: {input.dtype.name.capitalize()}"
        )
    axes = _reduce_axes(dim, d.ndim, "mean")
    n = 1
    shape = d.shape
    for a in axes:
        n *= shape[a]
    if not n:
        return sum(input, axes, keepdim) * float("nan")
    if d.dtype in LOW_NP:  # sum and scale in float32, one rounding (a float16 sum alone may overflow)
        return (sum(input.float(), axes, keepdim) * (1.0 / n)).to(input.dtype)
    # sum, then divide by n, as PyTorch's CPU mean: d(mean)/dx is d(sum)/dx / n.
    return _divide_sum(sum(input, None if dim is None else axes, keepdim), n)  # (None: sum's fast path)


_mean_body.__name__ = _mean_body.__qualname__ = "mean"  # what a mode sees (the profiler's table)
_mean = composite(_mean_body)


def _divide_sum(s: Tensor, n: int) -> Tensor:
    """``s / n``: the mean from its sum."""
    if s._node is None:
        sd = s._data
        if mode.handler is None and sd.__class__ is np.ndarray:
            # Eager, no graph: divide the sum's fresh array in place, unseen by any mode (there is
            # none); the in-place op's bookkeeping would cost more than the sum on small inputs.
            if sd.ndim:
                np.true_divide(sd, n, out=sd)
            else:  # a 0-d ufunc call with out= costs 20 times this; one rounding either way
                sd[()] = sd.item() / n
            return s
        return s.div_(n)
    return apply2(_DIV, s, n)  # s / n, without the operator's two calls


def nanmean(input, dim=None, keepdim: bool = False) -> Tensor:
    from ember.ops.elementwise import isnan, logical_not

    valid = logical_not(isnan(input))
    return nansum(input, dim, keepdim) / sum(valid, dim, keepdim)


class VarStd(Node):
    """Variance (or, with ``sqrt``, standard deviation) over ``axes`` with ``correction``.

    One primitive rather than a composition so the gradient follows PyTorch's formulas:
    ``2 (x - mean) / (n - correction)`` for var (infinite when there are no degrees of freedom),
    and for std the same divided by ``2 std``, taken as 0 where std is 0.
    """

    __slots__ = ("axes", "keepdim", "correction", "sqrt", "result")

    def backward(self, g):
        from ember.ops.elementwise import where

        x = self.inputs[0]
        shape = x._data.shape
        n = 1
        for a in self.axes:
            n *= shape[a]
        dof = n - self.correction
        if self.sqrt:
            if grad_state.enabled:  # create_graph: the output must carry its own history
                out = _var_std(x, self.axes, True, self.correction, True)
            else:
                res = self.result if self.keepdim else np.expand_dims(self.result, self.axes)
                out = Tensor._from(res, x)
            g = _expand_back(g, shape, self.axes, self.keepdim)
            g = where(out == 0, 0.0, g / (2 * out))
        else:
            g = _expand_back(g, shape, self.axes, self.keepdim)
        scale = 2.0 / dof if dof > 0 else float("inf")
        return (g * (x - mean(x, self.axes, keepdim=True)) * scale,)


def _var_std(input, axes, keepdim, correction, take_sqrt) -> Tensor:
    return apply(_VAR_STD, input, axes=axes, keepdim=keepdim, correction=correction, sqrt=take_sqrt)


def _var_std_impl(input, axes, keepdim, correction, sqrt):
    d = input._data
    n = 1
    for a in axes:
        n *= d.shape[a]
    acc = np.dtype(np.float32) if d.dtype in LOW_NP else d.dtype  # float16/bfloat16 accumulate in float32
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.mean(d, axis=axes, keepdims=True, dtype=acc) if n else np.zeros((1,) * d.ndim, acc)
        c = d - mu
        out = np.sum(c * c, axis=axes, keepdims=keepdim, dtype=acc) / acc.type(builtins.max(n - correction, 0))
        if sqrt:
            out = np.sqrt(out)
    return _with_result(out.astype(d.dtype, copy=False))


_VAR_STD = Primitive("var_std", VarStd, _var_std_impl, extras=True)


def _var_args(op, input, dim, unbiased, correction):
    check_tensor(input, op)
    if input._data.dtype.kind not in "fV":
        raise RuntimeError(f"{op}(): std and var only support floating point and complex dtypes, got {input.dtype}")
    if isinstance(dim, bool):  # var(x, False): the old positional `unbiased`
        unbiased, dim = dim, None
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    return _axes(dim, input._data.ndim, op), correction


def var(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Variance over ``dim`` with Bessel's correction by default (``correction=1``).

    Example:
        >>> import ember
        >>> ember.tensor([1.0, 2.0, 3.0]).var()
        tensor(1.)
    """
    axes, correction = _var_args("var", input, dim, unbiased, correction)
    return _var_std(input, axes, keepdim, correction, False)


def std(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Standard deviation: ``sqrt(var(...))``, with PyTorch's zero gradient where it is 0."""
    axes, correction = _var_args("std", input, dim, unbiased, correction)
    return _var_std(input, axes, keepdim, correction, True)


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return var(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return std(input, dim, unbiased, keepdim, correction=correction), mean(input, dim, keepdim)


class Prod(Node):
    __slots__ = ("axes", "keepdim")

    def backward(self, g):
        x = self.inputs[0]
        xd = x._data
        ge = _expand_back(g, xd.shape, self.axes, self.keepdim)
        if not (xd == 0).any():
            return (ge * prod_axes(x, self.axes, keepdim=True) / x,)
        return (ge * _prod_of_others(x, self.axes),)


def _prod_of_others(x: Tensor, axes) -> Tensor:
    """For each element, the product of the *other* elements of its group, for inputs with zeros.

    Values: with no zero in a group, ``prod / x``; with one zero, only the zero's entry is
    non-zero (the product of the rest); with more, all are zero. The zeros enter through
    ``zsum`` (their sum: value 0, derivative 1), so second derivatives across a zero are right
    too. Written in Tensor ops over zero-free products, so it can be differentiated again.
    """
    from ember.ops.elementwise import where

    is_zero = (x == 0).detach()
    n_zero = sum(is_zero, axes, keepdim=True)
    safe = where(is_zero, 1.0, x)
    p_safe = prod_axes(safe, axes, keepdim=True)  # product of the non-zero elements
    zsum = sum(where(is_zero, x, 0.0), axes, keepdim=True)
    nonzero_part = (p_safe / safe) * where(n_zero == 0, 1.0, where(n_zero == 1, zsum, 0.0))
    zero_part = p_safe * where(n_zero == 1, 1.0, where(n_zero == 2, zsum - x, 0.0))
    return where(is_zero, zero_part, nonzero_part)


def prod_axes(input, axes, keepdim=False):
    return apply(_PROD, input, axes=axes, keepdim=keepdim)


_PROD = Primitive("prod", Prod, lambda x, axes, keepdim: np.prod(x._data, axis=axes, keepdims=keepdim))


def prod(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Product over one ``dim`` (or all elements)."""
    (input,) = autocast_args("prod", input)
    check_tensor(input, "prod")
    if dtype is not None:
        input = input.to(dtype)
    elif input._data.dtype.kind in "biu":
        input = input.to(_dtype.int64)
    axes = _axes(dim, input._data.ndim, "prod") if dim is not None else tuple(range(input._data.ndim))
    return prod_axes(input, axes, keepdim)


class AmaxAmin(Node):
    """Gradient of amax/amin: split evenly among the elements equal to the extreme."""

    __slots__ = ("axes", "keepdim", "result")

    def backward(self, g):
        x = self.inputs[0]
        res = self.result if self.keepdim else np.expand_dims(self.result, self.axes)
        mask = (x == Tensor._from(res, x)).to(x.dtype)
        mask = mask / sum(mask, self.axes, keepdim=True)
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim) * mask,)


def _check_nonempty(d, axes, op):
    for a in axes:
        if d.shape[a] == 0:
            raise IndexError(f"{op}(): Expected reduction dim {a} to have non-zero size.")
    if d.size == 0 and not axes:
        raise RuntimeError(f"{op}(): Expected reduction dim to be specified for input.numel() == 0.")


def _amax_amin(input, dim, keepdim, fn, op):
    check_tensor(input, op)
    d = input._data
    axes = _axes(dim, d.ndim, op)
    _check_nonempty(d, axes, op)
    return apply(_AMAX if op == "amax" else _AMIN, input, axes=axes, keepdim=keepdim)


_AMAX = Primitive(
    "amax", AmaxAmin, lambda x, axes, keepdim: _with_result(np.max(x._data, axis=axes, keepdims=keepdim)), extras=True
)
_AMIN = Primitive(
    "amin", AmaxAmin, lambda x, axes, keepdim: _with_result(np.min(x._data, axis=axes, keepdims=keepdim)), extras=True
)


def amax(input, dim=(), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim``; ties share the gradient evenly."""
    return _amax_amin(input, dim, keepdim, np.max, "amax")


def amin(input, dim=(), keepdim: bool = False) -> Tensor:
    return _amax_amin(input, dim, keepdim, np.min, "amin")


def _arg_extreme(input, dim, keepdim, fn, op):
    check_tensor(input, op)
    d = input._data
    if d.dtype.kind == "b" and op in ("argmax", "argmin"):
        raise RuntimeError(f"{op}(): does not support bool input")
    if dim is None:
        _check_nonempty(d, (), op) if d.size == 0 else None
        return apply(_ARG_EXTREME[op], input, axis=None, keepdim=keepdim)
    axis = _wrap_dim(dim, d.ndim, op)
    if d.ndim == 0:
        from ember.ops.creation import zeros

        return zeros((), dtype=_dtype.int64, device=input.device)
    _check_nonempty(d, (axis,), op)
    return apply(_ARG_EXTREME[op], input, axis=axis, keepdim=keepdim)


def _arg_extreme_impl(fn):
    def impl(x, axis, keepdim):
        d = x._data
        if axis is None:
            out = fn(d.reshape(-1))
            return out.reshape((1,) * d.ndim).astype(np.int64) if keepdim else out.astype(np.int64)
        return fn(d, axis=axis, keepdims=keepdim).astype(np.int64)

    return impl


_ARG_EXTREME = {
    "argmax": Primitive("argmax", None, _arg_extreme_impl(np.argmax)),
    "argmin": Primitive("argmin", None, _arg_extreme_impl(np.argmin)),
}
_ARG_EXTREME["max"], _ARG_EXTREME["min"] = _ARG_EXTREME["argmax"], _ARG_EXTREME["argmin"]


def argmax(input, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the maximum (first one on ties), over ``dim`` or the flattened tensor."""
    return _arg_extreme(input, dim, keepdim, np.argmax, "argmax")


def argmin(input, dim=None, keepdim: bool = False) -> Tensor:
    return _arg_extreme(input, dim, keepdim, np.argmin, "argmin")


def _max_min(input, dim, keepdim, other, which):
    if isinstance(dim, Tensor):
        other, dim = dim, None
    if other is not None:
        from ember.ops.elementwise import maximum, minimum

        return (maximum if which == "max" else minimum)(input, other)
    if dim is None:
        return (amax if which == "max" else amin)(input)
    check_tensor(input, which)
    d = input._data
    if d.ndim == 0:
        idx = _arg_extreme(input, dim, True, None, which)
        return values_indices(input.clone(), idx)
    axis = dim if type(dim) is int and 0 <= dim < d.ndim else _wrap_dim(dim, d.ndim, which)
    if not d.shape[axis]:
        _check_nonempty(d, (axis,), which)
    values, idx = apply(_MAX_DIM if which == "max" else _MIN_DIM, input, axis=axis, keepdim=keepdim)
    return values_indices(values, idx)


class MaxMinDim(Node):
    """``max``/``min`` over one dim: the gradient goes to the selected element only, as PyTorch's."""

    __slots__ = ("axis", "keepdim", "idx")
    saves_values = False

    def backward(self, g):
        from ember.ops.creation import zeros_like
        from ember.ops.index import scatter_add
        from ember.ops.movement import unsqueeze

        x = self.inputs[0]
        if not self.keepdim:
            g = unsqueeze(g, self.axis)
        idx = Tensor._from(self.idx, x)
        return (scatter_add(zeros_like(x, dtype=g.dtype), self.axis, idx, g),)


def _max_min_dim_impl(arg, red):
    """Values and indices in two NumPy calls: the index of the first extreme (NaN counts as the
    largest, as in PyTorch) and the reduction, which agrees with it."""

    def impl(x, axis, keepdim):
        d = x._data
        idx = arg(d, axis=axis, keepdims=True).astype(np.int64, copy=False)
        values = red(d, axis=axis, keepdims=keepdim)
        return (values, idx if keepdim else idx.squeeze(axis)), {"idx": idx}

    return impl


class Max(MaxMinDim):  # grad_fn names as PyTorch's: MaxBackward0, MinBackward0
    __slots__ = ()


class Min(MaxMinDim):
    __slots__ = ()


_MAX_DIM = Primitive(
    "max_dim", Max, _max_min_dim_impl(np.argmax, np.max), extras=True, multi=True, params=("axis", "keepdim")
)
_MIN_DIM = Primitive(
    "min_dim", Min, _max_min_dim_impl(np.argmin, np.min), extras=True, multi=True, params=("axis", "keepdim")
)
_I64 = np.dtype(np.int64)
_GATHER: dict = {}  # (shape, axis, keepdim) -> (flat offsets of each output element, axis stride or None)


def _gather_plan(shape: tuple, axis: int, keepdim: bool):
    """Where each output element of a reduction over ``axis`` starts in the flattened (C-order)
    input, the flat stride along ``axis`` (None when it is 1), and the keepdim shape."""
    key = (shape, axis, keepdim)
    plan = _GATHER.get(key)
    if plan is None:
        offs = np.arange(math.prod(shape), dtype=np.int64).reshape(shape).take(0, axis)
        if keepdim:
            offs = np.expand_dims(offs, axis)
        stride = math.prod(shape[axis + 1 :])
        if len(_GATHER) >= 256:
            _GATHER.clear()
        kshape = shape[:axis] + (1,) + shape[axis + 1 :]
        plan = _GATHER[key] = (offs, np.asarray(stride, np.int64) if stride != 1 else None, kshape)
    return plan


def _max_min_dim_cpu(arg, red):
    """On small inputs, the values are read at the indices (``take``): NumPy's maximum.reduce over
    one axis costs six times its argmax there. The value read is the one at the index, as
    PyTorch's (the two differ only in the sign of a zero among equal zeros)."""
    general = _max_min_dim_impl(arg, red)

    def impl(x, axis, keepdim):
        d = x._data
        if d.size > 4096:
            return general(x, axis, keepdim)
        idx = arg(d, axis)
        if idx.dtype is not _I64:
            idx = idx.astype(np.int64)
        offs, stride, kshape = _gather_plan(d.shape, axis, keepdim)
        idx_k = idx.reshape(kshape)
        if keepdim:
            idx = idx_k
        flat = offs + (idx if stride is None else idx * stride)
        return (d.take(flat), idx), {"idx": idx_k}

    return impl


_MAX_DIM.register("cpu", _max_min_dim_cpu(np.ndarray.argmax, np.maximum.reduce))
_MIN_DIM.register("cpu", _max_min_dim_cpu(np.ndarray.argmin, np.minimum.reduce))


def max(input, dim=None, keepdim: bool = False, *, other=None):
    """``max(x)``: the largest element; ``max(x, dim)``: (values, indices); ``max(x, y)``: maximum."""
    if dim.__class__ is int and other is None and isinstance(input, Tensor):  # the common call: no helpers
        shape = input._data.shape
        if 0 <= dim < len(shape) and shape[dim]:
            return _tuple_new(values_indices, apply_values_indices(_MAX_DIM, input, dim, keepdim))
    return _max_min(input, dim, keepdim, other, "max")


def min(input, dim=None, keepdim: bool = False, *, other=None):
    if dim.__class__ is int and other is None and isinstance(input, Tensor):
        shape = input._data.shape
        if 0 <= dim < len(shape) and shape[dim]:
            return _tuple_new(values_indices, apply_values_indices(_MIN_DIM, input, dim, keepdim))
    return _max_min(input, dim, keepdim, other, "min")


_tuple_new = tuple.__new__  # values_indices(v, i) without the namedtuple's own __new__


def aminmax(input, *, dim=None, keepdim=False):
    mm = namedtuple("aminmax", ["min", "max"])
    if dim is None:
        return mm(amin(input), amax(input))
    return mm(amin(input, dim, keepdim), amax(input, dim, keepdim))


class LogSumExp(Node):
    __slots__ = ("axes", "keepdim", "result")

    def backward(self, g):
        from ember.ops.elementwise import exp

        x = self.inputs[0]
        if grad_state.enabled:
            out = logsumexp(x, self.axes, keepdim=True)  # differentiable path for create_graph
        else:
            out = Tensor._from(self.result if self.keepdim else np.expand_dims(self.result, self.axes), x)
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim) * exp(x - out),)


def logsumexp(input, dim=None, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(input), dim))`` computed stably (shifted by the maximum)."""
    check_tensor(input, "logsumexp")
    if input._data.dtype.kind not in "fV":
        input = input.to(_dtype.defaults.float)
    axes = _axes(dim, input._data.ndim, "logsumexp")
    return apply(_LOGSUMEXP, input, axes=axes, keepdim=keepdim)


def _logsumexp_impl(x, axes, keepdim):
    d = x._data
    if d.size == 0:
        out = np.log(np.sum(np.exp(d), axis=axes, keepdims=keepdim))
    else:
        m = np.max(d, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        out = np.log(np.sum(np.exp(d - m), axis=axes, keepdims=True)) + m
        if not keepdim:
            out = np.squeeze(out, axis=axes)
    return _with_result(out.astype(d.dtype, copy=False))


_LOGSUMEXP = Primitive("logsumexp", LogSumExp, _logsumexp_impl, extras=True)


class Norm2(Node):
    """Gradient of the 2-norm: ``x / ||x||``, zero where the norm is zero (as PyTorch)."""

    __slots__ = ("axes", "keepdim", "result")

    def backward(self, g):
        x = self.inputs[0]
        if grad_state.enabled:
            out = vector_norm(x, 2, self.axes, keepdim=True)
        else:
            out = Tensor._from(self.result if self.keepdim else np.expand_dims(self.result, self.axes), x)
        safe = out.masked_fill(out == 0, 1.0)
        scale = (x / safe).masked_fill(out == 0, 0.0)
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim) * scale,)


class CountNonzero(Node):
    """The 0-"norm" (number of non-zeros): piecewise constant, so a zero gradient, as in PyTorch."""

    __slots__ = ("axes", "keepdim")
    saves_values = False

    def backward(self, g):
        return (_expand_back(g, self.inputs[0]._data.shape, self.axes, self.keepdim) * 0.0,)


def vector_norm(input, ord=2, dim=None, keepdim: bool = False) -> Tensor:
    """The p-norm of the elements over ``dim``."""
    from ember.ops.elementwise import abs as _abs
    from ember.ops.elementwise import pow as _pow

    check_tensor(input, "norm")
    if input._data.dtype.kind not in "fV":
        raise RuntimeError(
            f"linalg.vector_norm: Expected a floating point tensor as input. Got {input.dtype.name.capitalize()}"
        )
    d = input._data
    axes = _axes(dim, d.ndim, "norm") if dim is not None else tuple(range(d.ndim))
    if ord == 2:
        return apply(_NORM2, input, axes=axes, keepdim=keepdim)
    if ord == float("inf"):
        return amax(_abs(input), axes, keepdim)
    if ord == -float("inf"):
        return amin(_abs(input), axes, keepdim)
    if ord == 0:
        return apply(_NORM0, input, axes=axes, keepdim=keepdim)
    if ord == 1:
        return sum(_abs(input), axes, keepdim)
    return _pow(sum(_pow(_abs(input), ord), axes, keepdim), 1.0 / ord)


def _norm2_impl(x, axes, keepdim):
    d = x._data
    out = np.sqrt(np.sum(d * d, axis=axes, keepdims=keepdim))
    return _with_result(out.astype(d.dtype, copy=False))


_NORM2 = Primitive("norm2", Norm2, _norm2_impl, extras=True)
_NORM0 = Primitive(
    "norm0",
    CountNonzero,
    lambda x, axes, keepdim: np.sum(x._data != 0, axis=axes, keepdims=keepdim).astype(x._data.dtype),
)


def norm(input, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """Vector p-norm (``p`` a number, or 'fro' for 2) over ``dim`` or all elements."""
    if dtype is not None:
        input = input.to(dtype)
    if p == "fro" or p is None:
        p = 2
    if p == "nuc":
        raise RuntimeError("norm(): the nuclear norm is not supported by Ember")
    if is_low(input._data):  # float16/bfloat16: float32 compute, one rounding (torch's range)
        return vector_norm(input.float(), p, dim, keepdim).to(input.dtype)
    return vector_norm(input, p, dim, keepdim)


def any(input, dim=None, keepdim: bool = False) -> Tensor:
    """True where any element along ``dim`` is non-zero."""
    d = input._data
    axes = wrap_dims(dim, d.ndim, "any") if dim is not None else None
    return apply(_ANY, input, axes=axes, keepdim=keepdim)


_ANY = Primitive("any", None, lambda x, axes, keepdim: np.any(x._data, axis=axes, keepdims=keepdim))
_ALL = Primitive("all", None, lambda x, axes, keepdim: np.all(x._data, axis=axes, keepdims=keepdim))
_COUNT_NONZERO = Primitive(
    "count_nonzero", None, lambda x, axes: np.asarray(np.count_nonzero(x._data, axis=axes)).astype(np.int64)
)


def all(input, dim=None, keepdim: bool = False) -> Tensor:
    """True where every element along ``dim`` is non-zero."""
    d = input._data
    axes = wrap_dims(dim, d.ndim, "all") if dim is not None else None
    return apply(_ALL, input, axes=axes, keepdim=keepdim)


def count_nonzero(input, dim=None) -> Tensor:
    d = input._data
    axes = wrap_dims(dim, d.ndim, "count_nonzero") if dim is not None else None
    return apply(_COUNT_NONZERO, input, axes=axes)


class Cumsum(Node):
    __slots__ = ("axis", "dtype")
    saves_values = False

    def backward(self, g):
        from ember.ops.movement import flip

        x = self.inputs[0]
        if g._data.dtype != x._data.dtype:  # cumsum(..., dtype=float64) of a float32 input
            g = g.to(x.dtype)
        if g._data.ndim == 0:
            return (g,)
        return (flip(cumsum(flip(g, (self.axis,)), self.axis), (self.axis,)),)


def cumsum(input, dim: int, *, dtype=None) -> Tensor:
    """Running sum along ``dim``."""
    check_tensor(input, "cumsum")
    d = input._data
    axis = _wrap_dim(dim, d.ndim, "cumsum")
    npd = _dtype.to_dtype(dtype).np if dtype is not None else (np.int64 if d.dtype.kind in "biu" else None)
    return apply(_CUMSUM, input, axis=axis, dtype=npd)


def _scan_impl(fn):
    def impl(x, axis, dtype):
        d = x._data
        if dtype is None and is_low(d):  # float16/bfloat16 accumulate in float32
            if not d.ndim:
                return d.copy()
            with np.errstate(over="ignore"):
                return fn(d, axis=axis, dtype=np.float32).astype(d.dtype)
        return fn(d, axis=axis, dtype=dtype) if d.ndim else d.astype(dtype or d.dtype, copy=True)

    return impl


_CUMSUM = Primitive("cumsum", Cumsum, _scan_impl(np.cumsum))


class Cumprod(Node):
    __slots__ = ("axis", "dtype")

    def backward(self, g):
        from ember.ops.movement import flip

        x = self.inputs[0]
        if g._data.dtype != x._data.dtype:  # cumprod(..., dtype=float64) of a float32 input
            g = g.to(x.dtype)
        if x._data.ndim == 0:
            return (g,)
        if (x._data == 0).any():
            return (_cumprod_grad_with_zeros(x, g, self.axis),)
        out = cumprod(x, self.axis)
        # d out_j / d x_k = out_j / x_k for j >= k: a reversed cumulative sum, divided by x.
        rev = flip(cumsum(flip(g * out, (self.axis,)), self.axis), (self.axis,))
        return (rev / x,)


def _cumprod_grad_with_zeros(x: Tensor, g: Tensor, axis: int) -> Tensor:
    """Gradient of cumprod where x has zeros, without dividing by x.

    grad_k = sum_{j >= k} g_j * prod_{i <= j, i != k} x_i. The inner products are a cumprod of
    x with x_k replaced by 1, one row per k: O(n^2) memory, paid only when zeros are present.
    """
    from ember.ops.elementwise import where
    from ember.ops.movement import movedim, unsqueeze

    n = x._data.shape[axis]
    xm = movedim(x, axis, -1)  # (..., n)
    gm = movedim(g, axis, -1)
    from ember.ops.creation import eye as _eye
    from ember.ops.creation import ones

    eye = _eye(n, dtype=_dtype.bool_, device=x.device)
    rows = cumprod(where(eye, 1.0, unsqueeze(xm, -2)), -1)  # rows[..., k, j] = prod_{i<=j, i!=k} x_i
    upper = ones((n, n), dtype=_dtype.bool_, device=x.device).triu()  # j >= k
    gk = sum(where(upper, rows * unsqueeze(gm, -2), 0.0), -1)
    return movedim(gk, -1, axis)


def cumprod(input, dim: int, *, dtype=None) -> Tensor:
    """Running product along ``dim``."""
    d = input._data
    axis = _wrap_dim(dim, d.ndim, "cumprod")
    npd = _dtype.to_dtype(dtype).np if dtype is not None else (np.int64 if d.dtype.kind in "biu" else None)
    return apply(_CUMPROD, input, axis=axis, dtype=npd)


_CUMPROD = Primitive("cumprod", Cumprod, _scan_impl(np.cumprod))


def cummax(input, dim: int):
    from ember.ops.index import gather

    axis = _wrap_dim(dim, input._data.ndim, "cummax")
    it = apply(_CUMMAX_INDICES, input, axis=axis)
    return values_indices(gather(input, axis, it), it)


def _cummax_indices_impl(x, axis):
    d = x._data
    vals = np.maximum.accumulate(d, axis=axis)
    ar = backends.like(d, np.arange(d.shape[axis]).reshape([-1 if i == axis else 1 for i in range(d.ndim)]))
    return np.maximum.accumulate(np.where(d == vals, ar, 0), axis=axis).astype(np.int64)


_CUMMAX_INDICES = Primitive("cummax_indices", None, _cummax_indices_impl)
