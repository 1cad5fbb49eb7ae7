"""Capture: a mode of ``apply`` that records every op into a :class:`Graph` and computes nothing.

Inside ``with capture() as graph:`` each op that the program applies (forward ops, the ops of
gradient rules during ``backward()``, in-place updates of an optimizer step) becomes one
:class:`OpRecord`: the primitive, its input values, its parameters, and the shape and dtype of
each output. The tensors it runs on are tracers: meta tensors, which carry a shape and a dtype
and no data, so the implementations that run are the meta ones (``ember.backends.meta``).
Build the model and its inputs on the meta device (``with ember.device("meta"):``); a tensor on
another device that reaches an op becomes a graph input, traced by a meta stand-in, and is never
read or written.

An op's implementation may apply other ops internally; only the outermost one is recorded, so
nothing is recorded twice. This graph is what the compiler reads.

Example:
    >>> import ember
    >>> from ember.ops.capture import capture
    >>> with ember.device("meta"):
    ...     w = ember.randn(3, 4, requires_grad=True)
    ...     x = ember.randn(2, 3)
    >>> with capture() as g:
    ...     (x @ w).relu().sum().backward()
    >>> g.counts()["matmul"], w.grad.shape
    (2, ember.Size([3, 4]))
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

from ember._mode import mode
from ember.backends import meta as _meta
from ember.ops.dispatch import Primitive, run
from ember.tensor import Tensor

__all__ = ["capture", "Graph", "OpRecord", "Value"]


@dataclass
class Value:
    """One SSA value: a tensor as an op produced it (an in-place op makes a new value)."""

    id: int
    shape: tuple
    dtype: object
    producer: int | None  # index of the OpRecord that made it; None for a graph input


@dataclass
class OpRecord:
    """One applied op: ``outputs = prim(inputs, **params)``."""

    index: int
    prim: Primitive
    inputs: tuple  # Value ids for tensors, the objects themselves for other arguments
    params: dict
    outputs: tuple  # Value ids
    phase: str  # "forward", or "backward" while a gradient rule runs

    @property
    def op(self) -> str:
        return self.prim.name


@dataclass
class Graph:
    """The ops a captured region applied, in order, with the values between them."""

    ops: list = field(default_factory=list)
    values: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # Value ids of tensors no captured op produced

    def counts(self) -> Counter:
        """How many times each op ran: ``Counter({'matmul': 6, ...})``."""
        return Counter(r.op for r in self.ops)

    def value(self, vid: int) -> Value:
        return self.values[vid]

    def __str__(self) -> str:
        lines = []
        for r in self.ops:
            outs = ", ".join(f"%{o}: {self.values[o].dtype}{list(self.values[o].shape)}" for o in r.outputs)
            ins = ", ".join(f"%{i}" if isinstance(i, _Ref) else repr(i) for i in r.inputs)
            lines.append(f"{outs} = {r.op}({ins})")
        return "\n".join(lines)


class _Ref(int):
    """A value id in an op's inputs (an int subclass, so it prints as ``%n``)."""


class _Tracer:
    """The handler ``apply`` calls while a capture is active."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.thread = threading.current_thread()  # the capturing thread; others run eagerly
        self.depth = 0  # > 0 while an op's own implementation runs: its inner ops are its own
        self.backward_depth = 0
        self.ids: dict = {}  # id(tensor) -> latest Value id
        self.by_data: dict = {}  # id(array) -> Value id: a saved output re-wrapped by a gradient rule
        self.keep: list = []  # tensors whose ids are in ``ids`` (kept alive so ids stay unique)
        self.stand_ins: dict = {}  # id(non-meta tensor) -> its meta tracer

    def _new_value(self, t: Tensor, producer) -> int:
        vid = len(self.graph.values)
        self.graph.values.append(Value(vid, tuple(t._data.shape), t.dtype, producer))
        if id(t) not in self.ids:
            self.keep.append(t)
        self.ids[id(t)] = vid
        self.by_data[id(t._data)] = vid
        return vid

    def _trace(self, x):
        """The tracer for an input: meta tensors as they are, others by a meta stand-in."""
        if not isinstance(x, Tensor):
            return x
        if x._device.type != "meta":
            s = self.stand_ins.get(id(x))
            if s is None:
                s = Tensor.__new__(Tensor)
                s._data = _meta.asarray(x._data)
                s._device = _META
                s._requires_grad = x._requires_grad
                self.stand_ins[id(x)] = s
                self.keep.append(x)
            x = s
        if id(x) not in self.ids:
            vid = self.by_data.get(id(x._data))
            if vid is not None:
                self.ids[id(x)] = vid
                self.keep.append(x)
            else:
                self.graph.inputs.append(self._new_value(x, None))
        return x

    def on_apply(self, prim: Primitive, inputs: tuple, params: dict):
        if self.depth or threading.current_thread() is not self.thread:
            return run(prim, inputs, params)  # an op's inner ops, or another thread's: not ours
        inputs = tuple(self._trace(x) for x in inputs)
        in_refs = tuple(_Ref(self.ids[id(x)]) if isinstance(x, Tensor) else x for x in inputs)
        self.depth += 1
        try:
            out = run(prim, inputs, params)
        finally:
            self.depth -= 1
        index = len(self.graph.ops)
        results = out if isinstance(out, tuple) else (out,)
        outs = tuple(self._new_value(t, index) for t in results if isinstance(t, Tensor))
        phase = "backward" if self.backward_depth else "forward"
        self.graph.ops.append(OpRecord(index, prim, in_refs, dict(params), outs, phase))
        return out

    def on_backward(self, node, grad):
        if threading.current_thread() is not self.thread:
            return node.backward(grad)
        self.backward_depth += 1
        try:
            return node.backward(grad)
        finally:
            self.backward_depth -= 1


_META = None


@contextmanager
def capture():
    """Record the ops run inside the block into a :class:`Graph`, computing nothing."""
    global _META
    if mode.handler is not None:
        raise RuntimeError("capture(): another capture or a profile is already active")
    if _META is None:
        from ember._device import device

        _META = device("meta")
    graph = Graph()
    tracer = _Tracer(graph)
    mode.handler, mode.backward_hook = tracer.on_apply, tracer.on_backward
    try:
        yield graph
    finally:
        mode.handler = mode.backward_hook = None
