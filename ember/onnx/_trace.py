"""Tracing a model for export: capture its forward pass and find which dims are dynamic.

The model runs once under :func:`ember.ops.capture.capture`'s tracer; its parameters and buffers
(CPU tensors) are traced by meta stand-ins, and this tracer remembers which real tensor each graph
input stands for, so that export can write its values as initializers.

Dynamic axes: the model is traced again with each named dynamic axis one larger. A dim of a
value that changes with axis ``s`` is ``k * s`` (``B * T`` after a flatten); :class:`SymDim`
records ``k`` and the names, so reshape targets and factory shapes become computed shapes in the
ONNX graph instead of constants.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import ember
from ember._mode import mode
from ember.ops import capture as _capture
from ember.tensor import Tensor

__all__ = ["SymDim", "trace", "dynamic_dims"]


@dataclass(frozen=True)
class SymDim:
    """A dim equal to ``k`` times the product of the named dynamic axes' sizes."""

    k: int
    names: tuple


class _ExportTracer(_capture._Tracer):
    """The capture tracer, also remembering the real tensor behind each graph input."""

    def __init__(self, graph):
        super().__init__(graph)
        self.sources: dict = {}  # Value id of a graph input -> the tensor it stands for

    def _trace(self, x):
        n = len(self.graph.inputs)
        out = super()._trace(x)
        if len(self.graph.inputs) > n:
            self.sources[self.graph.inputs[-1]] = x
        return out


@contextmanager
def _export_capture():
    if mode.handler is not None:
        raise RuntimeError("ember.onnx.export: another capture or a profile is already active")
    if _capture._META is None:
        _capture._META = ember.device("meta")
    tracer = _ExportTracer(_capture.Graph())
    mode.handler, mode.backward_hook = tracer.on_apply, tracer.on_backward
    try:
        yield tracer
    finally:
        mode.handler = mode.backward_hook = None


def _flatten(out) -> list:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    if out is None:
        return []
    raise TypeError(f"ember.onnx.export: the model returned a {type(out).__name__}, expected tensors")


def trace(model, args: tuple):
    """``(graph, sources, input value ids, output value ids)`` of one forward pass of ``model``."""
    from ember.onnx._state import _exporting

    with ember.no_grad(), _export_capture() as tracer:
        _exporting[0] = True
        try:
            out = model(*args)
        finally:
            _exporting[0] = False
        in_ids = []
        for a in args:
            tracer._trace(a)  # an input the model never used is still a graph input
            in_ids.append(tracer.ids[id(tracer.stand_ins.get(id(a), a))])
        out_ids = [tracer.ids[id(t)] for t in _flatten(out)]
    return tracer.graph, tracer.sources, in_ids, out_ids


def _grow(t: Tensor, axes) -> Tensor:
    """``t`` one larger along each of ``axes`` (repeating its first slice: values stay valid)."""
    a = t.detach().numpy()
    for ax in axes:
        a = np.concatenate([a, np.take(a, [0], axis=ax)], axis=ax)
    return ember.tensor(a)


def dynamic_dims(model, args: tuple, graph, dyn: dict) -> dict:
    """Value id -> shape with :class:`SymDim` where a dim follows a dynamic axis.

    ``dyn`` maps an input position to ``{axis: name}``. Each name is traced once more with its
    axes one larger; a dim that changes is written as ``k * (product of those names' sizes)``."""
    names = sorted({n for axes in dyn.values() for n in axes.values()})
    base = {}
    for pos, axes in dyn.items():
        for ax, n in axes.items():
            base.setdefault(n, args[pos].shape[ax])
    shapes = [list(v.shape) for v in graph.values]
    deps = [[[] for _ in v.shape] for v in graph.values]
    grown_shapes = {}
    for n in names:
        grown = tuple(
            _grow(a, [ax for ax, m in dyn.get(i, {}).items() if m == n]) if i in dyn else a for i, a in enumerate(args)
        )
        g2 = trace(model, grown)[0]
        if [r.op for r in g2.ops] != [r.op for r in graph.ops] or len(g2.values) != len(graph.values):
            raise RuntimeError(
                f"ember.onnx.export: the model runs different ops when dynamic axis '{n}' changes size; "
                "export it with a static shape (no dynamic_axes for it)"
            )
        grown_shapes[n] = g2
        for vid, v in enumerate(g2.values):
            if len(v.shape) != len(shapes[vid]):
                raise RuntimeError(f"ember.onnx.export: a value's rank depends on dynamic axis '{n}'")
            for d, (a, b) in enumerate(zip(shapes[vid], v.shape)):
                if a != b:
                    deps[vid][d].append(n)
    out = {}
    for vid, shape in enumerate(shapes):
        if not any(deps[vid]):
            continue
        sym = []
        for d, size in enumerate(shape):
            ns = tuple(deps[vid][d])
            if not ns:
                sym.append(size)
                continue
            denom = int(np.prod([base[n] for n in ns]))
            k, rem = divmod(size, denom)
            ok = rem == 0 and all(
                grown_shapes[n].values[vid].shape[d] == k * denom // base[n] * (base[n] + 1) for n in ns
            )
            if not ok:
                raise RuntimeError(
                    f"ember.onnx.export: a dim of size {size} depends on dynamic axes {list(ns)} in a way "
                    "other than a product; export with static shapes"
                )
            sym.append(SymDim(k, ns))
        out[vid] = tuple(sym)
    return out
