"""The eager CPU forms of the hottest non-view ops: 2-D ``matmul``, ``sum``, ``max``/``min`` over a
dim, and ``mean``'s division of its sum.

On 16 elements an op costs about a microsecond, most of it Python: the ``apply`` call, the
implementation's call, the keyword packing of parameters and ``setattr`` of node attributes.
Each function here is the matching ``apply2``/``apply_p2`` call with the eager CPU case written
out: the array is computed here (what the primitive's CPU implementation computes) and the output
tensor and its node are built with direct stores (the node as ``dispatch._NEW_NODE`` says).
Everything else (a mode's handler: profile, capture, forward AD; another device) goes through
``apply2``/``apply_p2``, so modes see the same primitive and params, and the node gets the same
attributes. The few node-making lines are written out in each function (and in
``dispatch_views.py``'s view builders) rather than shared through a helper on purpose: a Python
call costs about 50 ns of a 1 us op.

Example:
    >>> import ember
    >>> from ember.ops.dispatch import REGISTRY
    >>> from ember.ops.dispatch_fast import apply_sum
    >>> x = ember.ones(2, 3, requires_grad=True)
    >>> s = apply_sum(REGISTRY["sum"], x, (1,), False)
    >>> s, s.grad_fn.axes
    (tensor([3., 3.], grad_fn=<SumBackward0>), (1,))
"""

from __future__ import annotations

import numpy as np

from ember._device import CPU
from ember._mode import mode
from ember.autograd.grad_mode import OFF_THREADS as _OFF  # see grad_mode.OFF_THREADS
from ember.autograd.grad_mode import state as grad_state
from ember.autograd.node import tick
from ember.ops.dispatch import Primitive, apply2, apply_p2

__all__ = ["ARRAY_OUT", "apply_sum", "apply_values_indices", "divide_sum", "matmul2d"]

_new = object.__new__
_ndarray = np.ndarray
_asarray = np.asarray
_generic = np.generic
_add_reduce = np.add.reduce
_F32 = np.dtype(np.float32)
Tensor = None  # the full Tensor class: set by ember.ops.dispatch.register_tensor_class


def _array_out() -> bool:
    """Whether this NumPy's ufuncs take ``out=...`` (return arrays, never scalars: NumPy >= 2.1)."""
    try:
        return np.add.reduce(np.zeros(2), None, out=...).__class__ is np.ndarray
    except TypeError:
        return False


#: ``np.add.reduce(..., out=...)`` returns a 0-d array for a full reduction (not a NumPy scalar).
ARRAY_OUT = _array_out()


def matmul2d(prim: Primitive, a, b):
    """``apply2(prim, a, b)`` for ``matmul`` of two float matrices of one dtype whose shapes fit
    (checked by the caller), both NumPy arrays (CPU; never sparse). The CPU implementation's
    result for them is ``a.dot(b)``."""
    if mode.handler is not None:
        return apply2(prim, a, b)
    t = _new(Tensor)
    t._data = a._data.dot(b._data)
    ga = a._requires_grad
    if (ga or b._requires_grad) and (not _OFF or grad_state.enabled):  # apply2's node
        node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
        node.seq = tick()
        node.inputs = (a, b)
        gb = b._requires_grad
        node.edges = ((a._node or a) if ga else a._node, (b._node or b) if gb else b._node)
        t._node = node
        t._requires_grad = True
    return t


def apply_sum(prim: Primitive, x, axes: tuple, keepdim: bool):
    """``apply_p2(prim, x, axes, keepdim)`` for ``sum`` (params ``("axes", "keepdim")``, node
    ``Sum``) of a float32/float64 tensor in its own dtype; ``axes`` are valid. The CPU
    implementation is ``np.add.reduce`` (``reduce._sum_cpu``)."""
    if mode.handler is not None or x._device is not CPU or not ARRAY_OUT:
        return apply_p2(prim, x, axes, keepdim)
    t = _new(Tensor)
    t._data = _add_reduce(x._data, axes, None, out=..., keepdims=keepdim)
    if x._requires_grad and (not _OFF or grad_state.enabled):  # apply_p2's node
        node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
        node.seq = tick()
        node.inputs = xs = (x,)
        node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
        node.axes = axes
        node.keepdim = keepdim
        t._node = node
        t._requires_grad = True
    return t


def apply_values_indices(prim: Primitive, x, axis: int, keepdim: bool):
    """``apply_p2(prim, x, axis, keepdim)`` for ``max``/``min`` over one valid, non-empty dim
    (params ``("axis", "keepdim")``, a multi-output primitive whose implementation returns
    ``((values, indices), {"idx": ...})``): the pair of tensors, the node on the values."""
    if mode.handler is not None or x._device is not CPU:
        return apply_p2(prim, x, axis, keepdim)
    (v, i), attrs = prim.cpu(x, axis, keepdim)
    if v.__class__ is not _ndarray and isinstance(v, _generic):  # a NumPy scalar (a 1-D input): 0-d
        v = _asarray(v)
    if i.__class__ is not _ndarray and isinstance(i, _generic):
        i = _asarray(i)
    t = _new(Tensor)
    t._data = v
    ti = _new(Tensor)
    ti._data = i
    if x._requires_grad and (not _OFF or grad_state.enabled):  # _finish_pair's node
        node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
        node.seq = tick()
        node.inputs = xs = (x,)
        node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
        node.axis = axis
        node.keepdim = keepdim
        node.idx = attrs["idx"]
        t._node = node
        t._requires_grad = True
    return t, ti


def divide_sum(prim: Primitive, s, n: int):
    """``apply2(prim, s, n)`` (``prim``: div) for the 0-d float32/float64 sum ``s`` of ``n``
    elements that ``mean`` divides, in grad mode.

    The quotient is computed in Python (a 0-d ufunc call costs more than the whole sum): the
    float64 quotient of the sum and ``n``, rounded once to the dtype, is the dtype's correctly
    rounded quotient, which is what NumPy computes, as long as ``n`` is exact in the dtype.
    """
    sd = s._data
    if mode.handler is not None or sd.__class__ is not _ndarray or sd.ndim or (n > 16777216 and sd.dtype is _F32):
        return apply2(prim, s, n)
    out = sd.copy()
    out[()] = sd.item() / n
    t = _new(Tensor)
    t._data = out
    if s._requires_grad and (not _OFF or grad_state.enabled):  # apply2's node: s has one (a sum in grad mode)
        node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
        node.seq = tick()
        node.inputs = (s, n)
        node.edges = (s._node or s, None)
        t._node = node
        t._requires_grad = True
    return t
