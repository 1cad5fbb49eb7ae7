"""Helpers every op module uses: wrapping results, recording nodes, dtype handling."""

from __future__ import annotations

import numpy as np

from ember import _dtype
from ember._device import CPU
from ember.autograd.grad_mode import state as grad_state
from ember.tensor import Tensor, _wrap, _wrap_dim

__all__ = [
    "Tensor",
    "_wrap",
    "_wrap_dim",
    "grad_state",
    "edge",
    "needs_grad",
    "record",
    "to_tensor",
    "float_data",
    "wrap_dims",
    "CPU",
    "np",
    "default_float_np",
    "check_tensor",
]


def edge(t):
    """Where a gradient for ``t`` goes: its node, the leaf itself, or nowhere (``None``)."""
    if type(t) is not Tensor and not isinstance(t, Tensor):
        return None
    node = t._node
    if node is not None:
        return node
    return t if t._requires_grad else None


def needs_grad(*inputs) -> bool:
    """True when grad mode is on and some tensor input requires grad."""
    if not grad_state.enabled:
        return False
    for x in inputs:
        if isinstance(x, Tensor) and x._requires_grad:
            return True
    return False


def record(node_cls, out, inputs: tuple, device=CPU, /, **attrs) -> Tensor:
    """Wrap ``out`` and, when gradients are needed, attach a ``node_cls`` record of ``inputs``."""
    t = Tensor.__new__(Tensor)
    t._data = out
    if device is not CPU:
        t._device = device
    if needs_grad(*inputs):
        node = node_cls()
        node.inputs = inputs
        node.edges = tuple(edge(x) for x in inputs)
        for k, v in attrs.items():
            setattr(node, k, v)
        t._node = node
        t._requires_grad = True
    return t


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
