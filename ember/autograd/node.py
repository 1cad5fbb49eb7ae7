"""Node: one recorded op application, a vertex of the backward graph.

Every primitive op is a ``Node`` subclass. Calling an op in grad mode makes an instance that keeps
``inputs`` (the argument tensors, for gradient rules) and ``edges`` (where each input's gradient
goes: the producing node, or the leaf tensor itself, or ``None``). Edges are captured when the
op runs, so a later in-place op that gives a tensor new history cannot re-route old gradients.

``backward(grad)`` is written in Tensor ops, so running it in grad mode records the backward graph
itself (``create_graph=True`` and higher-order gradients).

Before a node runs, ``check_saved`` refuses it when its graph was freed, or when a value it reads
was written in place after it was recorded: nodes and in-place writes share one clock (``seq``
on the node, the stamp in the tensor's version counter), so that check is one comparison.
"""

from __future__ import annotations

import itertools

__all__ = ["tick", "Node", "AccumulateGrad"]

# Nodes and in-place writes draw from one clock: a write stamps the tensor's version counter
# with the next tick, so "this input was modified after the node was recorded" is one compare.
_clock = itertools.count(1)
tick = _clock.__next__


class Node:
    """Base class of backward-graph vertices (``Tensor.grad_fn``)."""

    # Only what every node sets is a slot. The rarely set attributes are class-level defaults,
    # written to the instance ``__dict__`` (made on the first write) when a node needs them: each
    # store in ``__init__`` costs every op call in grad mode.
    __slots__ = ("inputs", "edges", "seq", "__dict__", "__weakref__")

    #: True when ``backward`` reads input or output values, so a freed graph can't be re-run.
    saves_values = True
    #: Which input values ``backward`` reads, for the check against later in-place writes:
    #: True (all), False (none), or "others" (input i only when another input requires grad,
    #: as in a product: d(a*b)/da reads b). Nodes that keep their output instead (``out_vc``,
    #: checked by the node itself) are exempt.
    reads_inputs = True
    #: ``((tensor, version), ...)`` whose values backward reads (``save_versions``).
    saved_versions = None
    #: Set when a backward without ``retain_graph`` ran this node: it may not run again.
    freed = False
    #: Hooks on the gradient of this node's output (``register_hook``).
    out_hooks = None
    #: A weak reference to the non-leaf tensor whose ``.grad`` is retained (``retain_grad``).
    retained = None

    def __init__(self):
        self.seq = tick()

    def backward(self, grad):  # pragma: no cover - every op defines it
        raise NotImplementedError(f"{type(self).__name__} has no gradient rule")

    # ----- what autograd users see -----
    def name(self) -> str:
        return type(self).__name__ + "Backward0"

    def __repr__(self) -> str:
        return f"<{self.name()} object at {hex(id(self))}>"

    @property
    def next_functions(self) -> tuple:
        """``((node_or_AccumulateGrad, 0), ...)`` for each input, as in PyTorch."""
        out = []
        for e in self.edges:
            if e is None or isinstance(e, Node):
                out.append((e, 0))
            else:
                out.append((AccumulateGrad(e), 0))
        return tuple(out)

    def register_hook(self, fn):
        """Run ``fn(grad)`` on the gradient of this node's output; a returned tensor replaces it."""
        if self.out_hooks is None:
            self.out_hooks = []
        self.out_hooks.append(fn)
        return _RemovableHandle(self.out_hooks, fn)

    # ----- saved-value bookkeeping -----
    def save_versions(self, *tensors) -> None:
        """Remember the version of tensors whose values backward reads (in-place check)."""
        self.saved_versions = tuple((t, t._version) for t in tensors)

    def check_saved(self) -> None:
        if self.freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access saved tensors "
                "after they have already been freed). Saved intermediate values of the graph are freed "
                "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
                "backward through the graph a second time or if you need to access saved tensors after "
                f"calling backward. (node: {self.name()})"
            )
        if self.saves_values and self.reads_inputs and not hasattr(self, "out_vc"):
            self._check_inputs_unmodified()
        if self.saved_versions:
            for t, v in self.saved_versions:
                if t._version != v:
                    raise RuntimeError(
                        "one of the variables needed for gradient computation has been modified by an "
                        f"inplace operation: [{t.dtype} {list(t.shape)}], which is an input of "
                        f"{self.name()}, is at version {t._version}; expected version {v} instead."
                    )

    def _check_inputs_unmodified(self) -> None:
        """Refuse to run if an input whose value backward reads was written in place since."""
        seq = self.seq
        inputs = self.inputs
        for i, t in enumerate(inputs):
            vc = getattr(t, "_vc", None)
            if vc is None:
                base = getattr(t, "_base", None)  # a view made before its base got a counter
                vc = base._vc if base is not None else None
            if vc is None or len(vc) < 2 or vc[1] < seq:
                continue
            if self.reads_inputs == "others" and not any(
                getattr(o, "_requires_grad", False) for j, o in enumerate(inputs) if j != i
            ):
                continue
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{t.dtype} {list(t.shape)}], which is input {i} of {self.name()}, "
                f"is at version {vc[0]}; it was written after {self.name()} recorded it. Hint: use an "
                "out-of-place op (x = x + 1) or clone() the tensor before modifying it."
            )


class AccumulateGrad:
    """The node PyTorch shows for a leaf: its gradient is accumulated into ``variable.grad``."""

    def __init__(self, variable):
        self.variable = variable
        self.next_functions = ()

    def name(self) -> str:
        return "AccumulateGrad"

    def __repr__(self) -> str:
        return f"<AccumulateGrad object at {hex(id(self))}>"


class _RemovableHandle:
    def __init__(self, hooks: list, fn):
        self._hooks = hooks
        self._fn = fn

    def remove(self) -> None:
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)
