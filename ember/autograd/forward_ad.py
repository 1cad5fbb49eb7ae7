"""Forward-mode automatic differentiation, as ``torch.autograd.forward_ad``.

Inside a :class:`dual_level`, :func:`make_dual` gives a tensor a tangent. Every op runs through
the dispatch point (``ember.ops.dispatch.apply``); while a level is open, a mode handler there
computes the primal as usual and, when an input carries a tangent of the current level, the
output's tangent with the primitive's ``jvp`` rule (``ember/autograd/_jvp_rules.py``). Rules are
written in Tensor ops, so tangents are ordinary tensors that reverse mode can differentiate.

A differentiable primitive without a rule raises ``NotImplementedError`` naming it; ops that are
not differentiable (comparisons, ``argmax``) give outputs without a tangent. ``dual_level`` does
not nest (as in PyTorch), but ``ember.func.jvp`` opens nested levels: each level's handler
computes the primal through the handler below it and runs its rules there too, so a tangent of
an inner level carries the tangents of the outer ones (``jvp`` of ``jvp``, ``jacfwd(jacfwd(f))``).

Example:
    >>> import ember
    >>> import ember.autograd.forward_ad as fwAD
    >>> with fwAD.dual_level():
    ...     x = fwAD.make_dual(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 0.0]))
    ...     fwAD.unpack_dual(x * x).tangent
    tensor([2., 0.])
"""

from __future__ import annotations

import weakref
from collections import namedtuple

from ember._mode import mode
from ember.tensor import Tensor

__all__ = [
    "dual_level",
    "make_dual",
    "unpack_dual",
    "enter_dual_level",
    "exit_dual_level",
    "UnpackedDualTensor",
    "jvp_of",
]

UnpackedDualTensor = namedtuple("UnpackedDualTensor", ["primal", "tangent"])
UnpackedDualTensor.__doc__ = "A dual tensor's parts: ``primal`` (a view, no tangent) and ``tangent`` (or None)."


class _State:
    levels: list = []  # the open levels, outermost first: (id, handler, prev handler)
    count = 0  # ids grow, so a tangent from a closed level is never read again


_state = _State()


def _current():
    """The innermost open level's id, or None."""
    return _state.levels[-1][0] if _state.levels else None


def _prev_of(level):
    """The dispatch handler that was installed when ``level`` opened."""
    for lvl, _h, prev in _state.levels:
        if lvl == level:
            return prev
    raise RuntimeError(f"forward AD level {level} is not open")


def _tangent(x, level):
    """``x``'s tangent at ``level``, or None."""
    fw = x.__dict__.get("_fw") if isinstance(x, Tensor) else None
    if fw is not None:
        return fw.get(level)
    return None


def _set_tangent(t: Tensor, tangent: Tensor, level: int) -> None:
    # One tangent per open level (nested ``jvp``: the tangent of a level carries the outer ones).
    fw = t.__dict__.get("_fw")
    if fw is None:
        fw = t._fw = {level: tangent}
    else:
        fw[level] = tangent
    node = t._node
    if node is not None and hasattr(node, "out_vc"):
        # A node that keeps its output as an array (exp, tanh, cholesky) rebuilds the output
        # tensor in backward; under forward over reverse that tensor needs the tangents too.
        _OUT_TANGENTS[node] = fw


_OUT_TANGENTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach_out_tangents(node, t: Tensor) -> Tensor:
    """Give ``t`` (a node's saved output rebuilt as a tensor in backward) the output's tangents."""
    if _OUT_TANGENTS:
        fw = _OUT_TANGENTS.get(node)
        if fw is not None:
            t._fw = fw
    return t


def _make_handler(level: int, prev):
    def handler(prim, inputs, params):
        """The dispatch handler of an open level: the primal, then the tangent when one is needed."""
        if prim.inplace and any(_tangent(x, level) is not None for x in inputs):
            return _inplace(prim, inputs, params, level, prev)
        out = _run(prev, prim, inputs, params)
        tangents = None
        for i, x in enumerate(inputs):
            t = _tangent(x, level)
            if t is not None:
                if tangents is None:
                    tangents = [None] * len(inputs)
                tangents[i] = t
        if tangents is None or prim.node is None and prim.jvp is None:
            return out  # no dual input, or an op with no derivative (comparisons, argmax, detach)
        rule = prim.jvp
        if rule is None:
            rule = _late_rule(prim)
        if rule is None:
            raise NotImplementedError(f"forward AD not implemented for '{prim.name}'")
        first = out[0] if prim.multi else out
        if first is None or first._data.dtype.kind not in "fcV":
            return out
        # The rule's own ops are plain at this level: they run with the handler that was there
        # before it opened (so outer levels see them and give them tangents of their own).
        saved = mode.handler
        mode.handler = prev
        try:
            tangent = rule(inputs, tuple(tangents), out, **params)
        finally:
            mode.handler = saved
        if tangent is not None:
            if tangent._data.dtype != first._data.dtype:
                tangent = _with_handler(prev, lambda: tangent.to(first.dtype))
            _set_tangent(first, tangent, level)
        return out

    return handler


def _late_rule(prim):
    """The rule of a primitive registered after the rules were installed (a module imported later)."""
    from ember.autograd._jvp_rules import RULES

    rule = RULES.get(prim.name)
    if rule is not None:
        prim.jvp = rule
    return rule


def _with_handler(handler, fn):
    saved = mode.handler
    mode.handler = handler
    try:
        return fn()
    finally:
        mode.handler = saved


def _run(prev, prim, inputs, params):
    if prev is not None:
        return prev(prim, inputs, params)
    from ember.ops.dispatch import run

    return run(prim, inputs, params)


_INPLACE_OF = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div", "pow_": "pow"}


def _inplace(prim, inputs, params, level, prev):
    """An in-place op on dual operands: the out-of-place rule on the operands as they were, then
    the write. ``write_`` (the write-back of an in-place op computed out of place, and ``copy_``)
    takes the written value's tangent; other in-place writes are refused rather than leaving a
    stale tangent."""
    from ember.ops.dispatch import REGISTRY

    name = prim.name
    saved = mode.handler
    mode.handler = prev
    try:
        if name in ("write_", "copy_"):
            out = _run(prev, prim, inputs, params)
            src = inputs[1]
            t = _tangent(src, level)
            tangent = (t if t is not None else src.new_zeros(tuple(src.shape))) if isinstance(src, Tensor) else None
            if tangent is None:
                tangent = out.new_zeros(tuple(out.shape))
            if tuple(tangent.shape) != tuple(out.shape):
                tangent = tangent.expand(tuple(out.shape))
        elif name == "fill_":
            out = _run(prev, prim, inputs, params)
            tangent = out.new_zeros(tuple(out.shape))
        elif name in _INPLACE_OF:
            rule = REGISTRY[_INPLACE_OF[name]].jvp
            before = (inputs[0].clone(),) + tuple(inputs[1:])
            out = _run(prev, prim, inputs, params)
            tangent = rule(before, tuple(_tangent(x, level) for x in inputs), out)
        else:
            from ember.autograd._jvp_rules_nn import INPLACE, RANDOM_FILLS

            twin = INPLACE.get(name)
            if twin is None and name not in RANDOM_FILLS:
                raise NotImplementedError(f"forward AD not implemented for in-place op '{name}'")
            before = (inputs[0].clone(),) + tuple(inputs[1:])
            out = _run(prev, prim, inputs, params)
            if twin is None:  # a random fill: new values that do not depend on the old ones
                tangent = out.new_zeros(tuple(out.shape))
            else:
                tangents = tuple(_tangent(x, level) for x in inputs)
                tangent = jvp_of(lambda *xs: twin(*xs, **params), before, tangents)
        if tangent is not None and tangent._data.dtype != out._data.dtype:
            tangent = tangent.to(out.dtype)
        if tangent is not None:
            tangent = tangent.clone()  # the tensor's own tangent: later in-place updates may not alias
    finally:
        mode.handler = saved
    if tangent is not None:
        _set_tangent(out, tangent, level)
    return out


def _enter(nested: bool) -> int:
    if _state.levels and not nested:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    from ember.autograd import _jvp_rules

    _jvp_rules.install()
    _state.count += 1
    level = _state.count
    prev = mode.handler
    handler = _make_handler(level, prev)
    _state.levels.append((level, handler, prev))
    mode.handler = handler
    return level


def _exit(level: int | None) -> None:
    if not _state.levels or level is not None and level != _state.levels[-1][0]:
        raise RuntimeError("Trying to exit a forward AD level that was not the last one that was created.")
    _lvl, handler, prev = _state.levels.pop()
    mode.handler = prev


def enter_dual_level() -> int:
    """Open a forward-AD level and return its id (``dual_level`` is the context-manager form).

    As in PyTorch, levels opened this way do not nest; ``ember.func.jvp`` nests its own levels.
    """
    return _enter(nested=False)


def exit_dual_level(*, level: int | None = None) -> None:
    """Close the open level: tangents made in it are no longer seen."""
    _exit(level)


class _nested_level:
    """A forward-AD level inside others (``ember.func.jvp`` of ``jvp``)."""

    def __enter__(self) -> int:
        self.level = _enter(nested=True)
        return self.level

    def __exit__(self, *exc) -> None:
        _exit(self.level)


def jvp_of(fn, inputs: tuple, tangents: tuple):
    """The tangent of ``fn(*inputs)`` for ``tangents`` (None: zero), by forward mode through the
    ops ``fn`` is written in: the JVP rule of a primitive that has a composite form in Tensor ops
    (attention, recurrent cells, batch norm). Runs at a fresh level inside the current ones."""
    with _nested_level() as lvl:
        duals = tuple(
            make_dual(x, t, level=lvl) if t is not None and isinstance(x, Tensor) else x
            for x, t in zip(inputs, tangents)
        )
        out = fn(*duals)
        t = _tangent(out, lvl)
        return t if t is not None else _with_handler(_prev_of(lvl), lambda: out.new_zeros(tuple(out.shape)))


class dual_level:
    """Context manager for a forward-AD level: dual tensors made inside live until it exits.

    Example:
        >>> import ember
        >>> import ember.autograd.forward_ad as fwAD
        >>> with fwAD.dual_level():
        ...     y = fwAD.make_dual(ember.tensor(3.0), ember.tensor(1.0)).exp()
        ...     round(fwAD.unpack_dual(y).tangent.item(), 4)
        20.0855
    """

    def __enter__(self) -> int:
        return enter_dual_level()

    def __exit__(self, *exc) -> None:
        exit_dual_level()


def make_dual(tensor: Tensor, tangent: Tensor, *, level: int | None = None) -> Tensor:
    """A view of ``tensor`` carrying ``tangent`` (same shape, floating point) at the open level.

    Example:
        >>> import ember
        >>> import ember.autograd.forward_ad as fwAD
        >>> with fwAD.dual_level():
        ...     x = fwAD.make_dual(ember.ones(2), ember.zeros(2))
    """
    lvl = _current() if level is None else level
    if lvl is None or all(lvl != open_[0] for open_ in _state.levels):
        raise RuntimeError(
            "Trying to create a dual Tensor for forward AD but no level exists, make sure to enter_dual_level() first."
        )
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError("make_dual(): expected tensor and tangent to be Tensors")
    if tensor.dtype.is_floating_point is False or tangent.dtype.is_floating_point is False:
        raise ValueError(
            f"Expected primal to be floating point or complex, but got: {tensor.dtype}"
            if not tensor.dtype.is_floating_point
            else f"Expected tangent to be floating point or complex, but got: {tangent.dtype}"
        )
    if tuple(tensor.shape) != tuple(tangent.shape):
        raise RuntimeError(
            "Trying to set a forward gradient that has a different size than that of the original Tensor, "
            f"this is not supported. Tensor is of size {list(tensor.shape)} while the given forward gradient "
            f"is of size {list(tangent.shape)}."
        )
    prev = _prev_of(lvl)  # the alias itself is not an op of this level (outer levels see it)
    dual = _with_handler(prev, lambda: tensor.view(tuple(tensor.shape)))
    if tangent.dtype != tensor.dtype:
        tangent = _with_handler(prev, lambda: tangent.to(tensor.dtype))
    _set_tangent(dual, tangent, lvl)
    return dual


def unpack_dual(tensor: Tensor, *, level: int | None = None) -> UnpackedDualTensor:
    """``(primal, tangent)`` of ``tensor`` at the open level; ``tangent`` is None when it has none.

    Example:
        >>> import ember
        >>> import ember.autograd.forward_ad as fwAD
        >>> with fwAD.dual_level():
        ...     fwAD.unpack_dual(ember.ones(1)).tangent is None
        True
    """
    lvl = _current() if level is None else level
    if lvl is None:
        return UnpackedDualTensor(tensor, None)
    t = _tangent(tensor, lvl)
    if t is None:
        return UnpackedDualTensor(tensor, None)
    primal = _with_handler(_prev_of(lvl), lambda: tensor.view(tuple(tensor.shape)))
    return UnpackedDualTensor(primal, t)
