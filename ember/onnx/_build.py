"""The state of one export: ONNX nodes, initializers and names for the captured values."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ember.onnx._trace import SymDim
from ember.ops.capture import _Ref

__all__ = ["Builder"]


def np_dtype(dtype) -> np.dtype:
    """The NumPy dtype of an ember (or NumPy) dtype."""
    return np.dtype(getattr(dtype, "np", dtype))


def onnx_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np_dtype(dtype))


class Builder:
    """Collects nodes; every captured Value ``n`` is the ONNX tensor ``v{n}``."""

    def __init__(self, graph, sym_shapes: dict, axis_sources: dict):
        self.graph = graph
        self.sym_shapes = sym_shapes  # value id -> shape with SymDim entries
        self.axis_sources = axis_sources  # dynamic axis name -> (input tensor name, axis)
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self.aliases: dict = {}  # value id -> a name of its own (a parameter's)
        self._sizes: dict = {}  # dynamic axis name -> 1-D int64 tensor holding its size

    # ---------------------------------------------------------------- names and values
    def fresh(self, hint: str = "t") -> str:
        self._count += 1
        return f"_{hint}{self._count}"

    def name(self, vid) -> str:
        return self.aliases.get(int(vid), f"v{int(vid)}")

    def value(self, vid):
        return self.graph.values[int(vid)]

    def shape(self, vid) -> tuple:
        """The value's shape, with :class:`SymDim` where a dim follows a dynamic axis."""
        return self.sym_shapes.get(int(vid), tuple(self.value(vid).shape))

    def dtype(self, vid) -> np.dtype:
        return np_dtype(self.value(vid).dtype)

    def const(self, array, hint: str = "c") -> str:
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list, outputs=None, **attrs) -> str | list:
        """Add one node; returns its output name (or names when ``outputs`` is a count > 1)."""
        if outputs is None or isinstance(outputs, int):
            n = outputs or 1
            outputs = [self.fresh(op.lower()) for _ in range(n)]
        elif isinstance(outputs, str):
            outputs = [outputs]
        self.nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    # ---------------------------------------------------------------- op inputs
    def input(self, rec, i: int, dtype=None) -> str:
        """The ONNX name of the op's ``i``-th input; a Python number becomes a constant of ``dtype``
        (default: the first output's dtype); a tensor of another dtype is cast to ``dtype``."""
        x = rec.inputs[i]
        want = np_dtype(dtype) if dtype is not None else self.dtype(rec.outputs[0])
        if _is_ref(x):
            name = self.name(x)
            if dtype is not None and self.dtype(x) != want:
                name = self.node("Cast", [name], to=onnx_type(want))
            return name
        return self.const(np.asarray(x, dtype=want))

    def out(self, rec, i: int = 0) -> str:
        return self.name(rec.outputs[i])

    # ---------------------------------------------------------------- shapes
    def size_of(self, name: str) -> str:
        """A 1-D int64 tensor with the size of the named dynamic axis (computed once)."""
        t = self._sizes.get(name)
        if t is None:
            src, axis = self.axis_sources[name]
            t = self._sizes[name] = self.node("Shape", [src], start=axis, end=axis + 1)
        return t

    def shape_tensor(self, shape) -> str:
        """A 1-D int64 tensor for ``shape``: a constant, or computed from the dynamic axes' sizes."""
        if not any(isinstance(d, SymDim) for d in shape):
            return self.const(np.array([int(d) for d in shape], dtype=np.int64), "shape")
        parts = []
        for d in shape:
            if isinstance(d, SymDim):
                t = self.size_of(d.names[0])
                for n in d.names[1:]:
                    t = self.node("Mul", [t, self.size_of(n)])
                if d.k != 1:
                    t = self.node("Mul", [t, self.const(np.array([d.k], dtype=np.int64))])
                parts.append(t)
            else:
                parts.append(self.const(np.array([int(d)], dtype=np.int64)))
        return self.node("Concat", parts, axis=0)


def _is_ref(x) -> bool:
    """True for a Value id among an op's inputs (other inputs are Python numbers or None)."""
    return isinstance(x, _Ref)
