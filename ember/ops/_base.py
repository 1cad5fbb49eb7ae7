"""Helpers every op module uses: argument checks and dtype handling (nodes are made by ``dispatch.apply``)."""

from __future__ import annotations

import numpy as np

from ember import _dtype
from ember._device import CPU
from ember.autograd.grad_mode import state as grad_state
from ember.tensor import TensorBase as Tensor  # every Tensor is one; see ember.tensor
from ember.tensor import _wrap, _wrap_dim

__all__ = [
    "Tensor",
    "_wrap",
    "_wrap_dim",
    "grad_state",
    "to_tensor",
    "float_data",
    "wrap_dims",
    "CPU",
    "np",
    "default_float_np",
    "check_tensor",
]


def check_tensor(x, op: str, name: str = "input") -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(x).__name__}")
    return x


def to_tensor(x, like: Tensor | None = None) -> Tensor:
    """Tensors pass through; numbers and lists become tensors (on ``like``'s device)."""
    if isinstance(x, Tensor):
        return x
    from ember.ops.creation import tensor

    if like is not None and isinstance(x, (int, float, bool)):
        d = _dtype.result_type(like, x)
        return _wrap(like._device.backend.xp.asarray(x, dtype=d.np), like._device)
    return tensor(x)


def default_float_np():
    return _dtype.defaults.float.np


def float_data(x: Tensor):
    """The array of ``x`` as floating point (integers and bools become the default float)."""
    d = x._data
    if d.dtype.kind not in "fV":
        return d.astype(_dtype.defaults.float.np)
    return d


def wrap_dims(dim, ndim: int, op: str) -> tuple:
    """Normalize ``dim`` (None, int, or sequence) to a sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (int, np.integer)):
        return (_wrap_dim(int(dim), ndim, op),)
    axes = tuple(sorted({_wrap_dim(int(d), ndim, op) for d in dim}))
    if len(axes) != len(tuple(dim)):
        raise RuntimeError(f"{op}(): dim appears multiple times in the list of dims")
    return axes
