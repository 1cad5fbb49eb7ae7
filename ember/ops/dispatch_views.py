"""The eager CPU forms of the hottest view ops: ``view``/``reshape``, ``permute`` and basic indexing.

``x.view(4, 4)``, ``x.reshape(4, 4)``, ``m.t()``, ``m[1]`` and ``a[2:10]`` cost about a
microsecond, most of it Python calls. :func:`apply_reshape`, :func:`apply_permute` and
:func:`apply_index` are ``apply_p1(prim, x, shape)``, ``apply_p1(prim, x, dims)`` and
``apply_p2(prim, x, key, True)`` with the eager CPU case written out: the array view is made here
(``ndarray.reshape``, ``ndarray.transpose``, ``ndarray[key]``, what the primitives' CPU
implementations compute) rather than through the implementation's call, the view tensor and its
node are built with direct stores, and ``_view_of`` holds the params by position
(``(parent, prim, None, *values)``), not as a dict. Everything else (a mode's handler, another
device, a result that is no view) goes through ``apply_p1``/``apply_p2``, so modes see the same
primitive and params, and the node gets the same attributes.

Example:
    >>> import ember
    >>> from ember.ops.dispatch import REGISTRY
    >>> from ember.ops.dispatch_views import apply_reshape
    >>> x = ember.arange(6.0, requires_grad=True)
    >>> v = apply_reshape(REGISTRY["view"], x, (2, 3))
    >>> v.shape, v._base is x, v.grad_fn.shape
    (ember.Size([2, 3]), True, (2, 3))
"""

from __future__ import annotations

import numpy as np

from ember._device import CPU
from ember._mode import mode
from ember.autograd.grad_mode import OFF_THREADS as _OFF  # see grad_mode.OFF_THREADS
from ember.autograd.grad_mode import state as grad_state
from ember.autograd.node import tick
from ember.ops.dispatch import Primitive, _finish, _view_history, apply_p1, apply_p2

__all__ = ["apply_reshape", "apply_permute", "apply_index"]

_new = object.__new__
_ndarray = np.ndarray
Tensor = None  # the full Tensor class: set by ember.ops.dispatch.register_tensor_class


def apply_reshape(prim: Primitive, x, shape: tuple):
    """``apply_p1(prim, x, shape)`` for ``view`` and ``reshape`` (params ``("shape",)``, node
    ``Reshape``), whose CPU implementation is ``x._data.reshape(shape)``; ``shape`` is valid."""
    if mode.handler is not None or x._device is not CPU:
        return apply_p1(prim, x, shape)
    d = x._data
    out = d.reshape(shape)
    b = out.base
    if b is not d and (b is None or b is not d.base):  # NumPy copied: the strides allow no view
        if prim.view is True:
            return apply_p1(prim, x, shape)  # view: raises PyTorch's error
        return _finish(prim, out, (x,), {"shape": shape}, CPU)  # reshape: a copy
    t = _new(Tensor)
    t._data = out
    base = x._base
    if base is None:
        base = x
    t._base = base
    t._view_of = (x, prim, None, shape)  # params by position: no dict (ops.movement.view_chain)
    vc = x._vc
    if vc is not None:
        t._vc = vc
    if x._requires_grad:
        if base._node is None and (not _OFF or grad_state.enabled):  # a view of a leaf: _view_history's node
            node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
            node.seq = tick()
            node.inputs = xs = (x,)
            node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
            node.shape = shape
            t._node = node
            t._requires_grad = True
            return t
        return _view_history(prim, t, x, base, (x,), {"shape": shape}, None)
    return t


def apply_permute(prim: Primitive, x, dims: tuple):
    """``apply_p1(prim, x, dims)`` for ``permute`` (params ``("dims",)``, node ``Permute``), whose
    CPU implementation is ``x._data.transpose(dims)``, always a view; ``dims`` is valid."""
    if mode.handler is not None or x._device is not CPU:
        return apply_p1(prim, x, dims)
    t = _new(Tensor)
    t._data = x._data.transpose(dims)
    base = x._base
    if base is None:
        base = x
    t._base = base
    t._view_of = (x, prim, None, dims)  # params by position, as apply_reshape
    vc = x._vc
    if vc is not None:
        t._vc = vc
    if x._requires_grad:
        if base._node is None and (not _OFF or grad_state.enabled):  # a view of a leaf: _view_history's node
            node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
            node.seq = tick()
            node.inputs = xs = (x,)
            node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
            node.dims = dims
            t._node = node
            t._requires_grad = True
            return t
        return _view_history(prim, t, x, base, (x,), {"dims": dims}, None)
    return t


def apply_index(prim: Primitive, x, key: tuple):
    """``apply_p2(prim, x, key, True)`` for ``getitem`` (params ``("key", "basic")``, node
    ``Index``) with a basic key of ints and slices, checked against ``x``'s shape."""
    if mode.handler is not None or x._device is not CPU:
        return apply_p2(prim, x, key, True)
    d = x._data
    out = d[key]
    if out.__class__ is not _ndarray:  # every dim indexed: a NumPy scalar; the general path's 0-d view
        return apply_p2(prim, x, key, True)
    b = out.base
    if b is not d and (b is None or b is not d.base):  # (basic indexing always gives a view)
        return apply_p2(prim, x, key, True)
    t = _new(Tensor)
    t._data = out
    base = x._base
    if base is None:
        base = x
    t._base = base
    t._view_of = (x, prim, None, key, True)
    vc = x._vc
    if vc is not None:
        t._vc = vc
    if x._requires_grad:
        if base._node is None and (not _OFF or grad_state.enabled):  # a view of a leaf: _view_history's node
            node = _new(prim.node)  # = prim.node(): see dispatch._NEW_NODE
            node.seq = tick()
            node.inputs = xs = (x,)
            node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
            node.key = key
            node.basic = True
            t._node = node
            t._requires_grad = True
            return t
        return _view_history(prim, t, x, base, (x,), {"key": key, "basic": True}, None)
    return t
