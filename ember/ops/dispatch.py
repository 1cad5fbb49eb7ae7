"""One dispatch point: every op runs through ``apply(prim, *inputs, **params)``.

A :class:`Primitive` is one op's definition: its name, its gradient rule (a
:class:`~ember.autograd.node.Node` subclass whose ``backward`` is written in Tensor ops), a slot
for a forward-mode rule (``jvp``, filled by the transforms work), and one implementation per
device kind. An implementation takes the op's inputs (tensors and Python numbers, in order) and
its parameters, and returns the output array. Most are written against NumPy's array API, so
one function serves ``cpu``, ``meta`` (arrays that carry a shape and a dtype only, see
``ember.backends.meta``) and ``cuda`` (CuPy); a device kind can register its own (the C kernels
on ``cpu``). Shape and dtype inference is that same code run on meta arrays: no data is read.

``apply`` is the only place a node of the backward graph is made. It has modes: eager (compute
now, the default), profile (``ember.profiler`` times each op) and capture (``capture()`` records
each op with its shapes and dtypes into a :class:`Graph`, running the meta implementations, so
nothing is computed).

Example:
    >>> import ember
    >>> from ember.ops.dispatch import REGISTRY, apply
    >>> apply(REGISTRY["add"], ember.ones(2), 1.0)
    tensor([2., 2.])
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from ember._device import CPU
from ember._mode import mode
from ember.autograd.grad_mode import OFF_THREADS as _OFF  # see grad_mode.OFF_THREADS
from ember.autograd.grad_mode import state as grad_state
from ember.autograd.node import Node, tick
from ember.tensor import TensorBase as Tensor  # the full class once ember.tensor registers it

__all__ = [
    "Primitive",
    "REGISTRY",
    "apply",
    "apply1",
    "apply2",
    "apply_p1",
    "apply_p2",
    "run",
    "composite",
    "mode",
    "edge",
    "device_of",
    "register_tensor_class",
]

#: Every primitive by name.
REGISTRY: dict = {}
_FIRST_OF: dict = {}  # a multi-output primitive with a node -> its single-output twin


def _first_of(prim):
    """The twin of a multi-output primitive that finishes its first output (with the node)."""
    twin = _FIRST_OF.get(prim)
    if twin is None:
        twin = _FIRST_OF[prim] = Primitive.__new__(Primitive)
        for k in Primitive.__slots__[:-1]:
            setattr(twin, k, getattr(prim, k))
        twin.multi = False
        twin.extras = True
    return twin


_KINDS = ("cpu", "meta", "cuda")
_ndarray = np.ndarray
_generic = np.generic
_asarray = np.asarray
_new = object.__new__
# _NEW_NODE: a node is made as ``_new(cls)`` plus ``node.seq = tick()``, which is what ``cls()``
# does (Node.__init__), without the class call running a Python __init__ (about 90 ns of a 1 us
# op in grad mode). Primitive() refuses a node class with an __init__ of its own.


def register_tensor_class(cls) -> None:
    """Make ``apply``'s results instances of ``cls``: ``ember.tensor`` registers the full Tensor
    class (TensorBase plus its method mixins, which import the ops) once it is defined. Until
    then this module knows TensorBase only; keeping the class in a plain global keeps the hot
    path's creation and isinstance checks as cheap as a module-level class."""
    global Tensor
    Tensor = cls
    from ember.ops import dispatch_fast, dispatch_views

    dispatch_views.Tensor = dispatch_fast.Tensor = cls


class Primitive:
    """One op: a name, a gradient rule, a ``jvp`` slot and implementations per device kind.

    Args:
        name: the op's name (``"add"``), as the profiler and a captured graph show it.
        node: the Node subclass made when gradients flow (None: not differentiable).
        impl: an implementation over NumPy's array API, registered for cpu, meta and cuda.
        cpu: a CPU-only implementation (C kernels); overrides ``impl`` on cpu.
        save_out: the node keeps the output array (``node.out``), guarded by its version.
        extras: the implementation returns ``(out, attrs)``; ``attrs`` (a dict) go onto the node.
        view: True when the output is a view of the first input (a view tensor, see
            ``ops.movement``); "maybe" when it is one only if the array shares its memory.
        inplace: the implementation writes into the first input, which is the result.
        out_device: the output lives on the device given as the ``device`` parameter (``to``).
        multi: the implementation returns a tuple of arrays (None where an output is not
            wanted), and ``apply`` a tuple of tensors (the gradient kernels of fused ops are of
            this kind); a node, if any, is the history of the first output only.
        params: the names of the parameters, in order, that :func:`apply_p1` and
            :func:`apply_p2` pass positionally
            (hot one-input ops: views, reductions); ``apply`` takes them by keyword as ever.

    Example:
        >>> import numpy as np
        >>> from ember.ops.dispatch import Primitive
        >>> twice = Primitive("twice_doc_example", impl=lambda x: np.multiply(x._data, 2))
        >>> twice.impls["cpu"] is twice.impls["meta"]
        True
    """

    __slots__ = (
        "name",
        "node",
        "impls",
        "cpu",
        "jvp",
        "save_out",
        "extras",
        "view",
        "inplace",
        "out_device",
        "multi",
        "special",
        "params",
        "__weakref__",
    )

    def __init__(
        self,
        name: str,
        node=None,
        impl=None,
        *,
        cpu=None,
        save_out: bool = False,
        extras: bool = False,
        view: bool | str = False,
        inplace: bool = False,
        out_device: bool = False,
        multi: bool = False,
        jvp=None,
        params: tuple = (),
    ):
        if node is not None and node.__init__ is not Node.__init__:
            raise TypeError(f"{name}: a node class may not define __init__ (apply makes nodes without calling it)")
        self.name = name
        self.node = node
        self.impls = {}
        if impl is not None:
            for kind in _KINDS:
                self.impls[kind] = impl
        if cpu is not None:
            self.impls["cpu"] = cpu
        self.cpu = self.impls.get("cpu")
        self.jvp = jvp
        self.save_out = save_out
        self.extras = extras
        self.view = view
        self.inplace = inplace
        self.out_device = out_device
        self.multi = multi
        self.params = params
        # apply's slow path; a saved output alone is handled where the node is made (no cost without one)
        self.special = extras or view or inplace or out_device or multi
        if view is True and (extras or inplace or multi or out_device):
            raise ValueError(f"{name}: a view primitive (view=True) has one plain output")
        REGISTRY[name] = self

    def register(self, kind: str, fn=None):
        """Register ``fn`` as the implementation on device kind ``kind`` (usable as a decorator)."""

        def deco(f):
            self.impls[kind] = f
            if kind == "cpu":
                self.cpu = f
            return f

        return deco if fn is None else deco(fn)

    def impl_for(self, device):
        fn = self.impls.get(device.type)
        if fn is None:
            raise NotImplementedError(
                f"Could not run '{self.name}' with arguments from the '{device.type}' backend: "
                f"'{self.name}' has no implementation for device '{device.type}' "
                f"(it has: {', '.join(sorted(self.impls)) or 'none'})"
            )
        return fn

    def __repr__(self) -> str:
        return f"Primitive({self.name!r})"


def composite(fn):
    """Mark a public op written with other ops (``mean``: a ``sum``, then a scale).

    Its primitives run through ``apply`` as usual; the mark lets a mode see the composite as a
    whole too (the profiler's table shows ``mean`` with ``sum`` as its child). In eager mode it
    costs one attribute test.

    Example:
        >>> from ember.ops.dispatch import composite
        >>> @composite
        ... def twice(x):
        ...     return x + x
    """
    name = fn.__name__

    @functools.wraps(fn)
    def op(*args, **kwargs):
        hook = mode.composite
        if hook is None:
            return fn(*args, **kwargs)
        return hook(name, fn, args, kwargs)

    return op


def edge(t):
    """Where a gradient for ``t`` goes: its node, the leaf itself, or nowhere (``None``)."""
    if not isinstance(t, Tensor):
        return None
    node = t._node
    if node is not None:
        return node
    return t if t._requires_grad else None


def device_of(inputs, params=None):
    """The device of the first tensor among ``inputs``; with none (factories), the ``device``
    parameter, else CPU."""
    for x in inputs:
        if isinstance(x, Tensor):
            return x._device
    if params:
        dev = params.get("device")
        if dev is not None:
            return dev
    return CPU


def apply(prim: Primitive, *inputs, **params):
    """Run ``prim`` on ``inputs`` in the current mode and return its output tensor.

    Eager: pick the implementation for the inputs' device, compute, wrap the array, and when
    grad mode is on and an input requires grad, record ``prim.node`` with the inputs, their
    gradient edges and ``params`` (set as node attributes). A mode's handler runs instead when
    one is set; it calls :func:`run` for the eager step.
    """
    handler = mode.handler
    if handler is not None:
        return handler(prim, inputs, params)
    # The eager step, written out here rather than calling run(): this is every op's hot path.
    try:
        dev = inputs[0]._device
    except (AttributeError, IndexError):
        dev = device_of(inputs, params)
    impl = prim.cpu if dev is CPU else None
    if impl is None:
        impl = prim.impl_for(dev)
    out = impl(*inputs, **params) if params else impl(*inputs)
    if prim.special:
        view = prim.view  # views are the most common special kind: no detour through _finish
        if view is True:
            return _wrap_view(prim, out, inputs[0], inputs, params, None)
        if view and not prim.extras:  # "maybe": a view when the array is one (reshape, indexing)
            b = out.base
            if b is not None:
                x = inputs[0]
                d = x._data
                if b is d or (d.base is not None and b is d.base):
                    return _wrap_view(prim, out, x, inputs, params, None)
        return _finish(prim, out, inputs, params, dev)
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)  # a 0-d result is a 0-d array, never a NumPy scalar
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    node_cls = prim.node
    if node_cls is not None and (not _OFF or grad_state.enabled):
        for x in inputs:
            if isinstance(x, Tensor) and x._requires_grad:
                _record(node_cls, t, inputs, params)
                if prim.save_out:
                    _save_out(t, out)
                return t
    return t


_NO_PARAMS: dict = {}


def apply1(prim: Primitive, x):
    """``apply(prim, x)``: one operand, no parameters, without the general form's argument packing.

    The same steps as :func:`apply` (unary math is among the hottest paths); nodes are still made
    by ``_record`` and the modes see the call exactly as through ``apply``.
    """
    handler = mode.handler
    if handler is not None:
        return handler(prim, (x,), _NO_PARAMS)
    try:
        dev = x._device
    except AttributeError:
        dev = CPU
    impl = prim.cpu if dev is CPU else None
    if impl is None:
        impl = prim.impl_for(dev)
    out = impl(x)
    if prim.special:
        return _finish(prim, out, (x,), _NO_PARAMS, dev)
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    node_cls = prim.node
    if node_cls is not None and (not _OFF or grad_state.enabled) and x._requires_grad:
        _record(node_cls, t, (x,), None)
        if prim.save_out:
            _save_out(t, out)
    return t


def apply2(prim: Primitive, a, b):
    """``apply(prim, a, b)``: two operands (tensors or numbers), no parameters, without the general
    form's argument packing; binary arithmetic is the hottest path. Same steps as :func:`apply`."""
    handler = mode.handler
    if handler is not None:
        return handler(prim, (a, b), _NO_PARAMS)
    try:
        dev = a._device
    except AttributeError:
        dev = b._device if isinstance(b, Tensor) else CPU
    impl = prim.cpu if dev is CPU else None
    if impl is None:
        impl = prim.impl_for(dev)
    out = impl(a, b)
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    node_cls = prim.node
    if node_cls is not None and (not _OFF or grad_state.enabled):
        ga = isinstance(a, Tensor) and a._requires_grad
        gb = isinstance(b, Tensor) and b._requires_grad
        if ga or gb:  # _record written out for two inputs
            node = _new(node_cls)  # = node_cls(): see _NEW_NODE
            node.seq = tick()
            node.inputs = (a, b)
            node.edges = (
                (a._node or a) if ga else (a._node if isinstance(a, Tensor) else None),
                (b._node or b) if gb else (b._node if isinstance(b, Tensor) else None),
            )
            t._node = node
            t._requires_grad = True
            if prim.save_out:
                _save_out(t, out)
    return t


# --------------------------------------------------------------------------- positional forms
# apply_p1/apply_p2: one tensor input and one or two parameters, passed positionally (views,
# indexing, reductions). On 16 elements the keyword form's packing (a dict, a keyword call, the
# attribute loop) costs more than NumPy's work. Fixed arities, because *args costs as much.


def apply_p1(prim: Primitive, x, p0):
    """``apply(prim, x, **{prim.params[0]: p0})`` without the keyword packing.

    A mode's handler sees the call exactly as through :func:`apply` (the same primitive, inputs
    and params dict), and the node gets the same attributes. ``x`` must be a Tensor.
    """
    handler = mode.handler
    if handler is not None:
        return handler(prim, (x,), {prim.params[0]: p0})
    dev = x._device
    impl = prim.cpu if dev is CPU else None
    if impl is None:
        impl = prim.impl_for(dev)
    out = impl(x, p0)
    view = prim.view
    if view:  # view, permute, expand, reshape: _wrap_view written out (the hottest kind here)
        if view is not True:  # "maybe" (reshape): a view when the array is one
            if prim.extras:
                return _finish_p(prim, out, x, {prim.params[0]: p0}, dev)
            b = out.base
            d = x._data
            if b is None or not (b is d or (d.base is not None and b is d.base)):
                return _finish(prim, out, (x,), {prim.params[0]: p0}, dev)
        t = _new(Tensor)
        t._data = out
        if dev is not CPU:
            t._device = dev
        base = x._base
        if base is None:
            base = x
        t._base = base
        name = prim.params[0]
        params = {name: p0}
        t._view_of = (x, prim, params)
        vc = x._vc
        if vc is not None:
            t._vc = vc
        if x._requires_grad and prim.node is not None:
            if base._node is None and (not _OFF or grad_state.enabled):  # a view of a leaf: _view_history's node
                node = _new(prim.node)  # = prim.node(): see _NEW_NODE
                node.seq = tick()
                node.inputs = xs = (x,)
                node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
                setattr(node, name, p0)
                t._node = node
                t._requires_grad = True
                return t
            return _view_history(prim, t, x, base, (x,), params, None)
        return t
    if prim.special:
        return _finish_p(prim, out, x, {prim.params[0]: p0}, dev)
    return _plain_p(prim, out, x, dev, p0, None, 1)


def apply_p2(prim: Primitive, x, p0, p1):
    """``apply(prim, x, **{prim.params[0]: p0, prim.params[1]: p1})`` without the keyword
    packing; as :func:`apply_p1`."""
    handler = mode.handler
    if handler is not None:
        names = prim.params
        return handler(prim, (x,), {names[0]: p0, names[1]: p1})
    dev = x._device
    impl = prim.cpu if dev is CPU else None
    if impl is None:
        impl = prim.impl_for(dev)
    out = impl(x, p0, p1)
    view = prim.view
    if view and not prim.extras:  # getitem: _wrap_view written out, as in apply_p1
        if view is not True:  # "maybe": a view when the array is one
            b = out.base
            d = x._data
            if b is None or not (b is d or (d.base is not None and b is d.base)):
                names = prim.params
                return _finish(prim, out, (x,), {names[0]: p0, names[1]: p1}, dev)
        t = _new(Tensor)
        t._data = out
        if dev is not CPU:
            t._device = dev
        base = x._base
        if base is None:
            base = x
        t._base = base
        names = prim.params
        params = {names[0]: p0, names[1]: p1}
        t._view_of = (x, prim, params)
        vc = x._vc
        if vc is not None:
            t._vc = vc
        if x._requires_grad and prim.node is not None:
            if base._node is None and (not _OFF or grad_state.enabled):  # a view of a leaf: _view_history's node
                node = _new(prim.node)  # = prim.node(): see _NEW_NODE
                node.seq = tick()
                node.inputs = xs = (x,)
                node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
                setattr(node, names[0], p0)
                setattr(node, names[1], p1)
                t._node = node
                t._requires_grad = True
                return t
            return _view_history(prim, t, x, base, (x,), params, None)
        return t
    if prim.special:
        names = prim.params
        return _finish_p(prim, out, x, {names[0]: p0, names[1]: p1}, dev)
    # _plain_p written out (sum is the hottest op here)
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    if x._requires_grad:
        node_cls = prim.node
        if node_cls is not None and (not _OFF or grad_state.enabled):
            node = _new(node_cls)  # = node_cls(): see _NEW_NODE
            node.seq = tick()
            node.inputs = xs = (x,)
            node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
            names = prim.params
            setattr(node, names[0], p0)
            setattr(node, names[1], p1)
            t._node = node
            t._requires_grad = True
            if prim.save_out:
                _save_out(t, out)
    return t


def _plain_p(prim: Primitive, out, x, dev, p0, p1, n: int) -> Tensor:
    """The plain output of apply_p1/apply_p2: a tensor, with a node when x requires grad."""
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    if x._requires_grad:
        node_cls = prim.node
        if node_cls is not None and (not _OFF or grad_state.enabled):
            node = _new(node_cls)  # = node_cls(): see _NEW_NODE
            node.seq = tick()
            node.inputs = xs = (x,)
            node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
            names = prim.params
            setattr(node, names[0], p0)
            if n == 2:
                setattr(node, names[1], p1)
            t._node = node
            t._requires_grad = True
            if prim.save_out:
                _save_out(t, out)
    return t


def _finish_p(prim: Primitive, out, x, params: dict, dev) -> Tensor:
    """The special outputs of apply_p1/apply_p2: views written out (the most common kind),
    the others through :func:`_finish`."""
    view = prim.view
    if view is not True:
        if prim.multi and prim.extras and not prim.out_device:
            return _finish_pair(prim, out, x, params, dev)
        if not view or prim.extras:
            return _finish(prim, out, (x,), params, dev)
        b = out.base  # "maybe": a view when the array is one (reshape, indexing)
        d = x._data
        if b is None or not (b is d or (d.base is not None and b is d.base)):
            return _finish(prim, out, (x,), params, dev)
    t = _new(Tensor)  # _wrap_view written out
    t._data = out
    if dev is not CPU:
        t._device = dev
    base = x._base
    if base is None:
        base = x
    t._base = base
    t._view_of = (x, prim, params)
    vc = x._vc
    if vc is not None:
        t._vc = vc
    if x._requires_grad and prim.node is not None:
        if base._node is None and (not _OFF or grad_state.enabled):  # a view of a leaf: _view_history's node
            node = _new(prim.node)  # = prim.node(): see _NEW_NODE
            node.seq = tick()
            node.inputs = xs = (x,)
            node.edges = xs if x._node is None else (x._node,)  # a leaf's edge: itself
            for k, v in params.items():
                setattr(node, k, v)
            t._node = node
            t._requires_grad = True
            return t
        return _view_history(prim, t, x, base, (x,), params, None)
    return t


def _finish_pair(prim: Primitive, out, x, params: dict, dev):
    """:func:`_finish` for the usual multi-output kind (values and indices, with node attributes)
    written out: the first output carries the node, as there."""
    arrays, attrs = out
    if len(arrays) != 2 or arrays[0] is None:
        return _finish(prim, out, (x,), params, dev)
    a0, a1 = arrays
    if a0.__class__ is not _ndarray and isinstance(a0, _generic):
        a0 = _asarray(a0)
    t = _new(Tensor)
    t._data = a0
    if dev is not CPU:
        t._device = dev
    if a1 is not None:
        a1 = _plain(a1, dev)
    node_cls = prim.node
    if node_cls is not None and x._requires_grad and (not _OFF or grad_state.enabled):
        _record(node_cls, t, (x,), params, attrs)
        if prim.save_out:
            _save_out(t, a0)
    return t, a1


def run(prim: Primitive, inputs: tuple, params: dict):
    """The eager step of ``apply`` (what modes call to compute): the same code as ``apply``'s
    body after its handler test, which is written out there to spare the hot path a call."""
    try:
        dev = inputs[0]._device
    except (AttributeError, IndexError):
        dev = device_of(inputs, params)
    impl = prim.cpu if dev is CPU else None
    if impl is None:
        impl = prim.impl_for(dev)
    out = impl(*inputs, **params) if params else impl(*inputs)
    if prim.special:
        return _finish(prim, out, inputs, params, dev)
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    node_cls = prim.node
    if node_cls is not None and (not _OFF or grad_state.enabled):
        for x in inputs:
            if isinstance(x, Tensor) and x._requires_grad:
                _record(node_cls, t, inputs, params)
                if prim.save_out:
                    _save_out(t, out)
                return t
    return t


def _save_out(t: Tensor, out) -> None:
    """Keep the output array on the node, not the Tensor (a tensor-node-tensor cycle would wait
    for the garbage collector); the output's version counter tells backward whether it was
    overwritten."""
    node = t._node
    node.out = out
    t._vc = [0]
    node.out_vc = t._vc


def _record(node_cls, t: Tensor, inputs: tuple, params: dict, attrs=None) -> Tensor:
    node = _new(node_cls)  # = node_cls(): see _NEW_NODE
    node.seq = tick()
    node.inputs = inputs
    n = len(inputs)
    if n == 1:
        x = inputs[0]  # a node is made only when an input requires grad: this one
        node.edges = inputs if x._node is None else (x._node,)  # a leaf's edge: itself
    elif n == 2:  # edge() inline: binary arithmetic is the hottest path
        a, b = inputs
        node.edges = (
            (a._node or (a if a._requires_grad else None)) if isinstance(a, Tensor) else None,
            (b._node or (b if b._requires_grad else None)) if isinstance(b, Tensor) else None,
        )
    else:
        node.edges = tuple(map(edge, inputs))
    if params:
        for k, v in params.items():
            setattr(node, k, v)
    if attrs:
        for k, v in attrs.items():
            setattr(node, k, v)
    t._node = node
    t._requires_grad = True
    return t


def _finish(prim: Primitive, out, inputs: tuple, params: dict, dev) -> Tensor:
    """The rarer kinds of output: in-place writes, views, extra node attributes, saved outputs."""
    if prim.view is True:  # always a view (permute, view, expand): the most common kind first
        return _wrap_view(prim, out, inputs[0], inputs, params, None)
    if prim.inplace:
        t = inputs[0]
        t._bump_version()
        return t
    attrs = None
    if prim.extras:
        out, attrs = out
    if prim.multi:
        # Several outputs: the node (if any) is the history of the first; the others are plain.
        if len(out) == 2:  # the usual case (values and indices): no generator
            o1 = out[1]
            rest = (None if o1 is None else _plain(o1, dev),)
        else:
            rest = tuple(None if a is None else _plain(a, dev) for a in out[1:])
        out = out[0]
        if prim.node is None:
            return (None if out is None else _plain(out, dev),) + rest
        return (_finish(_first_of(prim), (out, attrs), inputs, params, dev),) + rest
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    if prim.out_device:
        dev = params["device"]
    if prim.view:
        x = inputs[0]
        if prim.view is True:
            return _wrap_view(prim, out, x, inputs, params, attrs)
        b = out.base  # "maybe": a view only when the array is one (reshape, indexing)
        d = x._data
        if b is not None and (b is d or (d.base is not None and b is d.base)):
            return _wrap_view(prim, out, x, inputs, params, attrs)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    node_cls = prim.node
    if node_cls is None or not (not _OFF or grad_state.enabled):
        return t
    for x in inputs:
        if isinstance(x, Tensor) and x._requires_grad:
            break
    else:
        return t
    _record(node_cls, t, inputs, params, attrs)
    if prim.save_out:
        _save_out(t, out)
    return t


def _wrap_view(prim: Primitive, out, x: Tensor, inputs: tuple, params: dict, attrs) -> Tensor:
    """Wrap ``out`` (an array view of ``x``'s data) as a view tensor of ``x``.

    The view remembers how it was made (``_view_of``: parent, primitive, params) so that an
    in-place op on it can re-derive it from an updated base (``ember/ops/inplace.py``).
    """
    t = _new(Tensor)
    t._data = out
    dev = x._device
    if dev is not CPU:
        t._device = dev
    base = x if x._base is None else x._base
    t._base = base
    t._view_of = (x, prim, params)
    if x._vc is not None:
        t._vc = x._vc
    if not x._requires_grad or prim.node is None:
        return t
    return _view_history(prim, t, x, base, inputs, params, attrs)


def _view_history(prim: Primitive, t: Tensor, x: Tensor, base: Tensor, inputs: tuple, params: dict, attrs):
    """The autograd part of a view ``t`` of ``x`` (which requires grad); ``base`` is t's base."""
    if not (not _OFF or grad_state.enabled):
        # As in PyTorch: a view made under no_grad of a tensor that requires grad requires grad
        # too (as a leaf), and may not be modified in place once grad mode is back on.
        t._requires_grad = True
        t._no_grad_view = True
        return t
    if attrs is None and len(inputs) == 1:  # _record written out for the usual view: one input
        node = _new(prim.node)  # = prim.node(): see _NEW_NODE
        node.seq = tick()
        node.inputs = inputs
        node.edges = inputs if x._node is None else (x._node,)  # a leaf's edge: itself
        for k, v in params.items():
            setattr(node, k, v)
        t._node = node
        t._requires_grad = True
    else:
        _record(prim.node, t, inputs, params, attrs)
    if base._node is not None:
        # An in-place op on the base (or another view) gives the base new history; this view
        # must then be re-derived from it (inplace.refresh_views). Leaves never get history.
        views = base._views
        if views is None:
            base._views = [weakref.ref(t)]
        else:
            views.append(weakref.ref(t))
            n = len(views)
            if n >= 64 and not n & (n - 1):  # at powers of two: drop dead views (amortized O(1))
                base._views = [r for r in views if r() is not None]
    return t


def _plain(out, dev) -> Tensor:
    if out.__class__ is not _ndarray and isinstance(out, _generic):
        out = _asarray(out)
    t = _new(Tensor)
    t._data = out
    if dev is not CPU:
        t._device = dev
    return t
