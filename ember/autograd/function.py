"""User-defined differentiable ops: ``ember.autograd.Function``, as in PyTorch.

Example:
    >>> import ember
    >>> class Square(ember.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         (x,) = ctx.saved_tensors
    ...         return 2 * x * grad
    >>> x = ember.tensor([3.0], requires_grad=True)
    >>> Square.apply(x).backward()
    >>> x.grad
    tensor([6.])
"""

from __future__ import annotations

import functools

from ember._mutations import bump
from ember.autograd import grad_mode
from ember.autograd.node import Node

__all__ = ["FunctionCtx", "Function", "once_differentiable"]


class FunctionCtx(Node):
    """The ``ctx`` of a custom Function: a graph node that also carries user state."""

    saves_values = False  # set per instance by save_for_backward: only then is a re-run refused
    reads_inputs = False  # what backward reads is declared by save_for_backward

    def __init__(self):
        super().__init__()
        self.to_save = ()
        self.needs_input_grad = ()
        self.non_differentiable = set()
        self.materialize_grads = True
        self.function = None
        self.n_outputs = 1
        self.dirty = ()

    def save_for_backward(self, *tensors) -> None:
        """Keep tensors for ``backward``; an in-place change to them afterwards is an error."""
        self.to_save = tensors
        self.saves_values = True
        self.save_versions(*(t for t in tensors if t is not None))

    @property
    def saved_tensors(self) -> tuple:
        self.check_saved()
        return self.to_save

    def mark_non_differentiable(self, *tensors) -> None:
        self.non_differentiable.update(id(t) for t in tensors)

    def mark_dirty(self, *tensors) -> None:
        self.dirty = tensors

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value

    def name(self) -> str:
        return f"{self.function.__name__}Backward" if self.function else "FunctionBackward"

    def backward(self, grad):
        from ember.ops.creation import zeros_like

        grads = grad.grads if isinstance(grad, _MultiGrad) else [grad]
        if self.materialize_grads:
            grads = [zeros_like(o) if g is None else g for g, o in zip(grads, self.output_likes)]
        result = self.function.backward(self, *grads)
        if not isinstance(result, tuple):
            result = (result,)
        if len(result) < len(self.edges) or any(g is not None for g in result[len(self.edges) :]):
            raise RuntimeError(
                f"function {self.name()} returned an incorrect number of gradients "
                f"(expected {len(self.edges)}, got {len(result)})"
            )
        return tuple(
            _like_input(self._check_grad(i, g), self.inputs[i]) for i, g in enumerate(result[: len(self.edges)])
        )

    def _check_grad(self, i: int, g):
        """Sum a broadcast gradient back to its input's shape; refuse an incompatible one (as torch)."""
        x = self.inputs[i]
        if g is None or x is None or not hasattr(g, "_data") or g._data.shape == x._data.shape:
            return g
        import numpy as np

        try:
            ok = np.broadcast_shapes(x._data.shape, g._data.shape) == g._data.shape
        except ValueError:
            ok = False
        if not ok:
            raise RuntimeError(
                f"Function {self.name()} returned an invalid gradient at index {i} - got {list(g.shape)} but "
                f"expected shape compatible with {list(x.shape)}"
            )
        from ember.ops.elementwise import sum_to

        return sum_to(g, x) if x._requires_grad else None


def _like_input(g, x):
    """A gradient in its input's floating dtype, as PyTorch's engine casts it (a bfloat16
    gradient from a backward under autocast reaches a float32 input as float32)."""
    if g is None or x is None or not hasattr(g, "_data") or not hasattr(x, "_data"):
        return g
    gd, xd = g._data.dtype, x._data.dtype
    if gd != xd and gd.kind in "fV" and xd.kind in "fV":
        return g.to(x.dtype)
    return g


class _MultiGrad:
    """Gradients of several outputs of one Function, summed slot by slot as they arrive."""

    __slots__ = ("grads",)

    def __init__(self, grads):
        self.grads = grads

    def __add__(self, other: _MultiGrad) -> _MultiGrad:
        merged = []
        for a, b in zip(self.grads, other.grads):
            merged.append(b if a is None else a if b is None else a + b)
        return _MultiGrad(merged)

    def detach(self):
        return self


class _Select(Node):
    """Routes the gradient of output ``index`` of a multi-output Function to its node."""

    __slots__ = ("index", "count")
    saves_values = False

    def name(self) -> str:
        return "SelectOutputBackward"

    def backward(self, grad):
        grads = [None] * self.count
        grads[self.index] = grad
        return (_MultiGrad(grads),)


class Function:
    """Base class for ops with a hand-written gradient: define ``forward`` and ``backward``."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("subclasses of Function must define forward")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("subclasses of Function must define backward")

    @classmethod
    def apply(cls, *args, **kwargs):
        from ember.ops.dispatch import edge
        from ember.tensor import Tensor

        ctx = FunctionCtx()
        ctx.function = cls
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a._requires_grad for a in args)
        with grad_mode.no_grad():
            outputs = cls.forward(ctx, *args, **kwargs)
        single = not isinstance(outputs, tuple)
        outs = (outputs,) if single else outputs
        record = grad_mode.state.enabled and any(ctx.needs_input_grad)
        wrapped = []
        for o in outs:
            if isinstance(o, Tensor) and any(o is a for a in args):
                o = o.view_as(o) if id(o) not in ctx.non_differentiable else o
                o = o.detach() if not record else o
            wrapped.append(o)
        if not record:
            return wrapped[0] if single else tuple(wrapped)
        ctx.inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
        ctx.edges = tuple(edge(a) if isinstance(a, Tensor) else None for a in args)
        ctx.output_likes = tuple(o.detach() if isinstance(o, Tensor) else None for o in wrapped)
        ctx.n_outputs = len(wrapped)
        tensor_outs = [i for i, o in enumerate(wrapped) if isinstance(o, Tensor)]
        for i in tensor_outs:
            o = wrapped[i]
            if id(outs[i]) in ctx.non_differentiable or o._data.dtype.kind not in "fV":
                continue
            if single:
                o._node = ctx
            else:
                sel = _Select()
                sel.index, sel.count = i, len(wrapped)
                sel.inputs = (None,)
                sel.edges = (ctx,)
                o._node = sel
            o._requires_grad = True
        bump()  # an output may be an input returned (mark_dirty): compiled steps' guards
        return wrapped[0] if single else tuple(wrapped)


class _DelayedError(Node):
    """Stands for the backward of a ``once_differentiable`` function when it is differentiated."""

    __slots__ = ()
    saves_values = False

    def name(self) -> str:
        return "DelayedError"

    def backward(self, grad):
        raise RuntimeError("trying to differentiate twice a function that was marked with @once_differentiable")


def once_differentiable(fn):
    """Decorator for ``backward``: run it without recording (it won't be differentiated again).

    With ``create_graph=True`` and gradients that require grad, the results get a node that
    raises if anyone backpropagates through them, as in PyTorch.
    """

    @functools.wraps(fn)
    def wrapper(ctx, *args):
        from ember.ops.dispatch import edge
        from ember.tensor import Tensor

        with grad_mode.no_grad():
            outputs = fn(ctx, *args)
        tracked = [a for a in args if isinstance(a, Tensor) and a._requires_grad]
        if not (grad_mode.state.enabled and tracked):
            return outputs
        single = not isinstance(outputs, tuple)
        marked = []
        for o in (outputs,) if single else outputs:
            if isinstance(o, Tensor) and o._data.dtype.kind in "fV":
                o = o.detach()
                node = _DelayedError()
                node.inputs = tuple(tracked)
                node.edges = tuple(edge(a) for a in tracked)
                o._node = node
                o._requires_grad = True
            marked.append(o)
        return marked[0] if single else tuple(marked)

    return wrapper
