"""Reductions (``sum``, ``mean``, ``max``, ``logsumexp``, ...) and scans (``cumsum``, ``cumprod``).

Primitives with gradient rules: Sum, Prod, Amax/Amin, LogSumExp, Cumsum, Cumprod, Norm.
``mean``, ``var`` and ``std`` are compositions of them; ``max(dim)`` returns values selected
by ``gather`` at the argmax, so its gradient goes to exactly one element, as in PyTorch.
"""

from __future__ import annotations

import builtins
from collections import namedtuple

import numpy as np

from ember import _dtype
from ember.autograd.node import Node
from ember.ops._base import CPU, Tensor, _wrap_dim, check_tensor, grad_state, record, wrap_dims

_sum = builtins.sum

values_indices = namedtuple("values_indices", ["values", "indices"])


def _expand_back(g: Tensor, shape: tuple, axes: tuple, keepdim: bool) -> Tensor:
    """Broadcast a reduced gradient back to ``shape`` (re-inserting reduced axes)."""
    from ember.ops.movement import expand, reshape

    if not keepdim and axes:
        kept = list(shape)
        for a in axes:
            kept[a] = 1
        g = reshape(g, tuple(kept))
    return expand(g, shape)


def _result(out, x: Tensor, node_cls, axes, keepdim, **attrs) -> Tensor:
    return record(node_cls, out, (x,), x._device, axes=axes, keepdim=keepdim, **attrs)


class Sum(Node):
    __slots__ = ("axes", "keepdim")
    saves_values = False

    def backward(self, g):
        x = self.inputs[0]
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim),)


def sum(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Sum over ``dim`` (all dims when None); integer and bool inputs sum as int64.

    Example:
        >>> import ember
        >>> ember.tensor([[1, 2], [3, 4]]).sum(dim=0)
        tensor([4, 6])
    """
    check_tensor(input, "sum")
    d = input._data
    axes = wrap_dims(dim, d.ndim, "sum") if dim is not None or d.ndim else ()
    if dtype is not None:
        npd = _dtype.to_dtype(dtype).np
    elif d.dtype.kind in "biu":
        npd = np.int64
    else:
        npd = None
    if dim is not None and isinstance(dim, (list, tuple)) and len(dim) == 0:
        axes = tuple(range(d.ndim))  # PyTorch: an empty dim list reduces everything
    out = np.sum(d, axis=axes, dtype=npd, keepdims=keepdim)
    if not isinstance(out, np.ndarray) and input._device is CPU:
        out = np.asarray(out)
    return _result(out, input, Sum, axes, keepdim)


def nansum(input, dim=None, keepdim: bool = False) -> Tensor:
    from ember.ops.elementwise import isnan, where

    return sum(where(isnan(input), 0.0, input), dim, keepdim)


def mean(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Arithmetic mean over ``dim``; floating-point inputs only, as in PyTorch."""
    check_tensor(input, "mean")
    if dtype is not None:
        input = input.to(dtype)
    if input._data.dtype.kind != "f":
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point or "
            f"complex dtype. Got: {input.dtype.name.capitalize()}"
        )
    d = input._data
    axes = (
        wrap_dims(dim, d.ndim, "mean")
        if dim is not None and not (isinstance(dim, (list, tuple)) and not dim)
        else tuple(range(d.ndim))
    )
    n = 1
    for a in axes:
        n *= d.shape[a]
    s = sum(input, axes, keepdim)
    return s / n if n else s * float("nan")


def nanmean(input, dim=None, keepdim: bool = False) -> Tensor:
    from ember.ops.elementwise import isnan, logical_not

    valid = logical_not(isnan(input))
    return nansum(input, dim, keepdim) / sum(valid, dim, keepdim)


def var(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Variance over ``dim`` with Bessel's correction by default (``correction=1``)."""
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    if isinstance(dim, bool):  # var(x, False): the old positional `unbiased`
        correction, dim = int(dim), None
    d = input._data
    axes = wrap_dims(dim, d.ndim, "var")
    n = 1
    for a in axes:
        n *= d.shape[a]
    mu = mean(input, axes, keepdim=True)
    centered = input - mu
    ss = sum(centered * centered, axes, keepdim)
    return ss / builtins.max(n - correction, 0)


def std(input, dim=None, unbiased=None, keepdim: bool = False, *, correction=None) -> Tensor:
    """Standard deviation: ``sqrt(var(...))``."""
    from ember.ops.elementwise import sqrt

    return sqrt(var(input, dim, unbiased, keepdim, correction=correction))


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
        # With zeros, dividing by x fails: use the product of the *other* elements instead.
        return (ge * Tensor._from(_prod_of_others(xd, self.axes), x),)


def _prod_of_others(xd, axes):
    """For each element, the product of the other elements in its reduction group."""
    rest = [i for i in range(xd.ndim) if i not in axes]
    perm = rest + list(axes)
    moved = np.transpose(xd, perm)
    flat = moved.reshape(moved.shape[: len(rest)] + (-1,))
    ones = np.ones(flat.shape[:-1] + (1,), dtype=xd.dtype)
    left = np.cumprod(np.concatenate([ones, flat[..., :-1]], -1), -1)
    right = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], -1), -1)[..., ::-1]
    return np.transpose((left * right).reshape(moved.shape), np.argsort(perm))


def prod_axes(input, axes, keepdim=False):
    out = np.prod(input._data, axis=axes, keepdims=keepdim)
    return _result(np.asarray(out), input, Prod, axes, keepdim)


def prod(input, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Product over one ``dim`` (or all elements)."""
    check_tensor(input, "prod")
    if dtype is not None:
        input = input.to(dtype)
    elif input._data.dtype.kind in "biu":
        input = input.to(_dtype.int64)
    axes = wrap_dims(dim, input._data.ndim, "prod")
    return prod_axes(input, axes, keepdim)


class AmaxAmin(Node):
    """Gradient of amax/amin: split evenly among the elements equal to the extreme."""

    __slots__ = ("axes", "keepdim", "out")

    def backward(self, g):
        x = self.inputs[0]
        xd = x._data
        out = self.out if self.keepdim else np.expand_dims(self.out, self.axes)
        mask = (xd == out).astype(xd.dtype)
        mask /= mask.sum(axis=self.axes, keepdims=True)
        return (_expand_back(g, xd.shape, self.axes, self.keepdim) * Tensor._from(mask, x),)


def _check_nonempty(d, axes, op):
    for a in axes:
        if d.shape[a] == 0:
            raise IndexError(f"{op}(): Expected reduction dim {a} to have non-zero size.")
    if d.size == 0 and not axes:
        raise RuntimeError(f"{op}(): Expected reduction dim to be specified for input.numel() == 0.")


def _amax_amin(input, dim, keepdim, fn, op):
    check_tensor(input, op)
    d = input._data
    axes = wrap_dims(dim, d.ndim, op) if not (isinstance(dim, (list, tuple)) and not dim) else tuple(range(d.ndim))
    _check_nonempty(d, axes, op)
    out = np.asarray(fn(d, axis=axes, keepdims=keepdim))
    return _result(out, input, AmaxAmin, axes, keepdim, out=out)


def amax(input, dim=(), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim``; ties share the gradient evenly."""
    return _amax_amin(input, dim, keepdim, np.max, "amax")


def amin(input, dim=(), keepdim: bool = False) -> Tensor:
    return _amax_amin(input, dim, keepdim, np.min, "amin")


def _arg_extreme(input, dim, keepdim, fn, op):
    check_tensor(input, op)
    d = input._data
    if dim is None:
        _check_nonempty(d, (), op) if d.size == 0 else None
        out = np.asarray(fn(d.reshape(-1)))
        if keepdim:
            out = out.reshape((1,) * d.ndim)
        return Tensor._from(out.astype(np.int64), input)
    axis = _wrap_dim(dim, d.ndim, op)
    if d.ndim == 0:
        return Tensor._from(np.asarray(0, dtype=np.int64), input)
    _check_nonempty(d, (axis,), op)
    out = fn(d, axis=axis, keepdims=keepdim)
    return Tensor._from(np.asarray(out, dtype=np.int64), input)


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
    from ember.ops.index import gather
    from ember.ops.movement import squeeze

    idx = _arg_extreme(input, dim, True, np.argmax if which == "max" else np.argmin, which)
    if input._data.ndim == 0:
        return values_indices(input.clone(), idx)
    axis = _wrap_dim(dim, input._data.ndim, which)
    values = gather(input, axis, idx)
    if not keepdim:
        values, idx = squeeze(values, axis), squeeze(idx, axis)
    return values_indices(values, idx)


def max(input, dim=None, keepdim: bool = False, *, other=None):
    """``max(x)``: the largest element; ``max(x, dim)``: (values, indices); ``max(x, y)``: maximum."""
    return _max_min(input, dim, keepdim, other, "max")


def min(input, dim=None, keepdim: bool = False, *, other=None):
    return _max_min(input, dim, keepdim, other, "min")


def aminmax(input, *, dim=None, keepdim=False):
    mm = namedtuple("aminmax", ["min", "max"])
    if dim is None:
        return mm(amin(input), amax(input))
    return mm(amin(input, dim, keepdim), amax(input, dim, keepdim))


class LogSumExp(Node):
    __slots__ = ("axes", "keepdim", "out")

    def backward(self, g):
        from ember.ops.elementwise import exp

        x = self.inputs[0]
        out = Tensor._from(self.out if self.keepdim else np.expand_dims(self.out, self.axes), x)
        if grad_state.enabled:
            out = logsumexp(x, self.axes, keepdim=True)  # differentiable path for create_graph
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim) * exp(x - out),)


def logsumexp(input, dim=None, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(input), dim))`` computed stably (shifted by the maximum)."""
    check_tensor(input, "logsumexp")
    if input._data.dtype.kind != "f":
        input = input.to(_dtype.defaults.float)
    d = input._data
    axes = wrap_dims(dim, d.ndim, "logsumexp")
    if d.size == 0:
        out = np.log(np.sum(np.exp(d), axis=axes, keepdims=keepdim))
    else:
        m = np.max(d, axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        out = np.log(np.sum(np.exp(d - m), axis=axes, keepdims=True)) + m
        if not keepdim:
            out = np.squeeze(out, axis=axes)
    out = np.asarray(out, dtype=d.dtype)
    return _result(out, input, LogSumExp, axes, keepdim, out=out)


class Norm2(Node):
    """Gradient of the 2-norm: ``x / ||x||``, zero where the norm is zero (as PyTorch)."""

    __slots__ = ("axes", "keepdim", "out")

    def backward(self, g):
        x = self.inputs[0]
        out = Tensor._from(self.out if self.keepdim else np.expand_dims(self.out, self.axes), x)
        if grad_state.enabled:
            out = vector_norm(x, 2, self.axes, keepdim=True)
        safe = out.masked_fill(out == 0, 1.0)
        scale = (x / safe).masked_fill(out == 0, 0.0)
        return (_expand_back(g, x._data.shape, self.axes, self.keepdim) * scale,)


def vector_norm(input, ord=2, dim=None, keepdim: bool = False) -> Tensor:
    """The p-norm of the elements over ``dim``."""
    from ember.ops.elementwise import abs as _abs
    from ember.ops.elementwise import pow as _pow

    check_tensor(input, "norm")
    if input._data.dtype.kind != "f":
        raise RuntimeError(
            f"linalg.vector_norm: Expected a floating point tensor as input. Got {input.dtype.name.capitalize()}"
        )
    d = input._data
    axes = wrap_dims(dim, d.ndim, "norm")
    if ord == 2:
        out = np.sqrt(np.sum(d * d, axis=axes, keepdims=keepdim))
        return _result(np.asarray(out, dtype=d.dtype), input, Norm2, axes, keepdim, out=np.asarray(out, dtype=d.dtype))
    if ord == float("inf"):
        return amax(_abs(input), axes, keepdim)
    if ord == -float("inf"):
        return amin(_abs(input), axes, keepdim)
    if ord == 0:
        return sum((input != 0).to(input.dtype), axes, keepdim)
    if ord == 1:
        return sum(_abs(input), axes, keepdim)
    return _pow(sum(_pow(_abs(input), ord), axes, keepdim), 1.0 / ord)


def norm(input, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """Vector p-norm (``p`` a number, or 'fro' for 2) over ``dim`` or all elements."""
    if dtype is not None:
        input = input.to(dtype)
    if p == "fro" or p is None:
        p = 2
    if p == "nuc":
        raise RuntimeError("norm(): the nuclear norm is not supported by Ember")
    return vector_norm(input, p, dim, keepdim)


def any(input, dim=None, keepdim: bool = False) -> Tensor:
    """True where any element along ``dim`` is non-zero."""
    d = input._data
    axes = wrap_dims(dim, d.ndim, "any") if dim is not None else None
    return Tensor._from(np.asarray(np.any(d, axis=axes, keepdims=keepdim)), input)


def all(input, dim=None, keepdim: bool = False) -> Tensor:
    """True where every element along ``dim`` is non-zero."""
    d = input._data
    axes = wrap_dims(dim, d.ndim, "all") if dim is not None else None
    return Tensor._from(np.asarray(np.all(d, axis=axes, keepdims=keepdim)), input)


def count_nonzero(input, dim=None) -> Tensor:
    d = input._data
    axes = wrap_dims(dim, d.ndim, "count_nonzero") if dim is not None else None
    return Tensor._from(np.asarray(np.count_nonzero(d, axis=axes), dtype=np.int64), input)


class Cumsum(Node):
    __slots__ = ("axis",)
    saves_values = False

    def backward(self, g):
        from ember.ops.movement import flip

        return (flip(cumsum(flip(g, (self.axis,)), self.axis), (self.axis,)),)


def cumsum(input, dim: int, *, dtype=None) -> Tensor:
    """Running sum along ``dim``."""
    check_tensor(input, "cumsum")
    d = input._data
    axis = _wrap_dim(dim, d.ndim, "cumsum")
    npd = _dtype.to_dtype(dtype).np if dtype is not None else (np.int64 if d.dtype.kind in "biu" else None)
    out = np.cumsum(d, axis=axis, dtype=npd) if d.ndim else d.astype(npd or d.dtype, copy=True)
    return record(Cumsum, out, (input,), input._device, axis=axis)


class Cumprod(Node):
    __slots__ = ("axis",)

    def backward(self, g):
        x = self.inputs[0]
        if (x._data == 0).any():
            raise RuntimeError("cumprod backward through zeros is not supported by Ember")
        out = cumprod(x, self.axis)
        from ember.ops.movement import flip

        rev = flip(cumsum(flip(g * out, (self.axis,)), self.axis), (self.axis,))
        return (rev / x,)


def cumprod(input, dim: int, *, dtype=None) -> Tensor:
    """Running product along ``dim``."""
    d = input._data
    axis = _wrap_dim(dim, d.ndim, "cumprod")
    npd = _dtype.to_dtype(dtype).np if dtype is not None else (np.int64 if d.dtype.kind in "biu" else None)
    out = np.cumprod(d, axis=axis, dtype=npd) if d.ndim else d.astype(npd or d.dtype, copy=True)
    return record(Cumprod, out, (input,), input._device, axis=axis)


def cummax(input, dim: int):
    from ember.ops.index import gather

    d = input._data
    axis = _wrap_dim(dim, d.ndim, "cummax")
    vals = np.maximum.accumulate(d, axis=axis)
    n = d.shape[axis]
    ar = np.arange(n).reshape([-1 if i == axis else 1 for i in range(d.ndim)])
    idx = np.maximum.accumulate(np.where(d == vals, ar, 0), axis=axis).astype(np.int64)
    it = Tensor._from(idx, input)
    return values_indices(gather(input, axis, it), it)
