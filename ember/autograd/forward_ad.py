"""Forward-mode automatic differentiation, as ``torch.autograd.forward_ad``.

Inside a :class:`dual_level`, :func:`make_dual` gives a tensor a tangent. Every op runs through
the dispatch point (``ember.ops.dispatch.apply``); while a level is open, a mode handler there
computes the primal as usual and, when an input carries a tangent of the current level, the
output's tangent with the primitive's ``jvp`` rule (``ember/autograd/_jvp_rules.py``). Rules are
written in Tensor ops, so tangents are ordinary tensors that reverse mode can differentiate.

A differentiable primitive without a rule raises ``NotImplementedError`` naming it; ops that are
not differentiable (comparisons, ``argmax``) give outputs without a tangent. Levels do not nest
(as in PyTorch).

Example:
    >>> import ember
    >>> import ember.autograd.forward_ad as fwAD
    >>> with fwAD.dual_level():
    ...     x = fwAD.make_dual(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 0.0]))
    ...     fwAD.unpack_dual(x * x).tangent
    tensor([2., 0.])
"""

from __future__ import annotations

from collections import namedtuple

from ember._mode import mode
from ember.tensor import Tensor

__all__ = ["dual_level", "make_dual", "unpack_dual", "enter_dual_level", "exit_dual_level", "UnpackedDualTensor"]

UnpackedDualTensor = namedtuple("UnpackedDualTensor", ["primal", "tangent"])
UnpackedDualTensor.__doc__ = "A dual tensor's parts: ``primal`` (a view, no tangent) and ``tangent`` (or None)."


class _State:
    level = None  # the open level's id (an int), or None
    count = 0  # ids grow, so a tangent from a closed level is never read again
    prev = None  # the handler that was installed when the level opened


_state = _State()


def _tangent(x, level):
    """``x``'s tangent at ``level``, or None."""
    fw = x.__dict__.get("_fw") if isinstance(x, Tensor) else None
    if fw is not None and fw[0] == level:
        return fw[1]
    return None


def _set_tangent(t: Tensor, tangent: Tensor, level: int) -> None:
    t._fw = (level, tangent)


def _handler(prim, inputs, params):
    """The dispatch handler of an open level: the primal, then the tangent when one is needed."""
    prev = _state.prev
    level = _state.level
    if prim.inplace and any(_tangent(x, level) is not None for x in inputs):
        return _inplace(prim, inputs, params, level)
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
        raise NotImplementedError(f"forward AD not implemented for '{prim.name}'")
    first = out[0] if prim.multi else out
    if first is None or first._data.dtype.kind not in "fc":
        return out
    # The rule's own ops are plain: they run with the handler that was there before this level.
    mode.handler = prev
    try:
        tangent = rule(inputs, tuple(tangents), first, **params)
    finally:
        mode.handler = _handler
    if tangent is not None:
        if tangent._data.dtype != first._data.dtype:
            tangent = tangent.to(first.dtype)
        _set_tangent(first, tangent, level)
    return out


def _run(prev, prim, inputs, params):
    if prev is not None:
        return prev(prim, inputs, params)
    from ember.ops.dispatch import run

    return run(prim, inputs, params)


_INPLACE_OF = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div", "pow_": "pow"}


def _inplace(prim, inputs, params, level):
    """An in-place arithmetic op on dual operands: the out-of-place rule on the operands as they
    were, then the write; other in-place writes are refused rather than leaving a stale tangent."""
    from ember.ops.dispatch import REGISTRY

    name = _INPLACE_OF.get(prim.name)
    rule = REGISTRY[name].jvp if name else None
    if rule is None:
        raise NotImplementedError(f"forward AD not implemented for in-place op '{prim.name}'")
    prev = _state.prev
    mode.handler = prev
    try:
        before = (inputs[0].clone(),) + tuple(inputs[1:])
        out = _run(prev, prim, inputs, params)
        tangent = rule(before, tuple(_tangent(x, level) for x in inputs), out)
        if tangent is not None and tangent._data.dtype != out._data.dtype:
            tangent = tangent.to(out.dtype)
    finally:
        mode.handler = _handler
    if tangent is not None:
        _set_tangent(out, tangent, level)
    return out


def enter_dual_level() -> int:
    """Open a forward-AD level and return its id (``dual_level`` is the context-manager form)."""
    if _state.level is not None:
        raise RuntimeError("Nested forward mode AD is not supported at the moment")
    from ember.autograd import _jvp_rules

    _jvp_rules.install()
    _state.count += 1
    _state.level = _state.count
    _state.prev = mode.handler
    mode.handler = _handler
    return _state.level


def exit_dual_level(*, level: int | None = None) -> None:
    """Close the open level: tangents made in it are no longer seen."""
    if _state.level is None or level is not None and level != _state.level:
        raise RuntimeError("Trying to exit a forward AD level that was not the last one that was created.")
    mode.handler = _state.prev
    _state.prev = None
    _state.level = None


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
    lvl = _state.level if level is None else level
    if _state.level is None or lvl != _state.level:
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
    mode.handler = _state.prev  # the alias itself is not an op of this level
    try:
        dual = tensor.view(tuple(tensor.shape))
    finally:
        mode.handler = _handler
    if tangent.dtype != tensor.dtype:
        tangent = tangent.to(tensor.dtype)
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
    lvl = _state.level if level is None else level
    if lvl is None:
        return UnpackedDualTensor(tensor, None)
    t = _tangent(tensor, lvl)
    if t is None:
        return UnpackedDualTensor(tensor, None)
    mode.handler = _state.prev
    try:
        primal = tensor.view(tuple(tensor.shape))
    finally:
        mode.handler = _handler
    return UnpackedDualTensor(primal, t)
