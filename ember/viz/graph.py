"""Walk a tensor's recorded history into a plain, ordered list of vertices and edges.

The walk is iterative (an explicit stack, so a 10,000-op chain is fine) and deterministic:
vertices are numbered in the order the walk first meets them, which depends only on the
structure of the graph (the order of each node's inputs), never on ``id()`` values or set order.

A vertex is one of:
- ``op``: a recorded :class:`~ember.autograd.node.Node` (its output tensor, really);
- ``leaf``: a tensor that requires grad and has no node (a parameter or input);
- ``const``: a tensor that does not require grad, or a Python number, used by an op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import zip_longest

from ember.autograd.node import Node
from ember.tensor import Tensor

__all__ = ["op_name", "describe", "Vertex", "Graph", "GraphBuilder"]

_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")


def op_name(node) -> str:
    """The op of a node as the user wrote it: ``'MulBackward0'`` -> ``'Mul'``."""
    return _BACKWARD_SUFFIX.sub("", node.name()) or node.name()


def describe(t: Tensor | None) -> str:
    """Shape, and dtype when it is not float32: ``'(2, 3)'``, ``'(4,) int64'``."""
    if t is None:
        return ""
    shape = "(" + ", ".join(str(s) for s in t._data.shape) + ("," if t._data.ndim == 1 else "") + ")"
    dt = str(t._data.dtype)
    return shape if dt == "float32" else f"{shape} {dt}"


@dataclass
class Vertex:
    """One drawn box: what it is (``kind``), its label lines, and the object it stands for."""

    key: str  # "n0", "n1", ... in order of discovery
    kind: str  # "op" | "leaf" | "const"
    title: str  # op name, leaf name, or constant value
    detail: str  # shape/dtype text, may be empty
    obj: object = None  # the Node, the leaf Tensor, or the constant
    roles: list = field(default_factory=list)  # extra labels: "output", "grad x1", ...


@dataclass
class Graph:
    """Vertices in discovery order and edges ``(src_key, dst_key)`` in the direction data flows."""

    vertices: list = field(default_factory=list)
    edges: list = field(default_factory=list)


class GraphBuilder:
    """Collects the graphs behind several root tensors into one :class:`Graph`.

    ``names`` maps ``id(tensor)`` to a display name (leaves and named intermediate tensors).
    """

    def __init__(self, names: dict | None = None):
        self.graph = Graph()
        self.names = names or {}
        self._by_obj: dict = {}  # id(Node or leaf Tensor or const Tensor) -> Vertex
        self._keep: list = []  # hold objects whose id() we used, so ids are not reused mid-walk

    # ----- vertices -----
    def _new(self, kind: str, title: str, detail: str, obj) -> Vertex:
        v = Vertex(f"n{len(self.graph.vertices)}", kind, title, detail, obj)
        self.graph.vertices.append(v)
        return v

    def _leaf(self, t: Tensor) -> Vertex:
        v = self._by_obj.get(id(t))
        if v is None:
            v = self._new("leaf", self.names.get(id(t), ""), describe(t), t)
            self._by_obj[id(t)] = v
            self._keep.append(t)
        return v

    def _const(self, x) -> Vertex:
        if isinstance(x, Tensor):  # the same constant tensor used twice is one vertex
            v = self._by_obj.get(id(x))
            if v is None:
                v = self._new("const", self.names.get(id(x), "const"), describe(x), x)
                self._by_obj[id(x)] = v
                self._keep.append(x)
            return v
        return self._new("const", _number(x), "", x)  # numbers: one vertex per use

    def _op(self, node: Node, out: Tensor | None) -> tuple[Vertex, bool]:
        """The vertex of ``node`` (made on first sight: then ``True``), labelled by ``out``'s shape."""
        v = self._by_obj.get(id(node))
        if v is not None:
            if not v.detail and out is not None:  # first met through an edge that had no tensor
                v.detail = describe(out)
            return v, False
        v = self._new("op", op_name(node), describe(out), node)
        if out is not None and id(out) in self.names:
            v.roles.append(self.names[id(out)])
        self._by_obj[id(node)] = v
        self._keep.append(node)
        return v, True

    def vertex_of(self, obj) -> Vertex | None:
        return self._by_obj.get(id(obj))

    # ----- walking -----
    def add_root(self, t, role: str = "") -> Vertex:
        """Add the history of ``t`` (a Tensor or number); mark its vertex with ``role``."""
        if not isinstance(t, Tensor):
            root = self._const(t)
        elif t._node is not None:
            root, fresh = self._op(t._node, t)
            if fresh:
                self._expand(root)
        elif t._requires_grad:
            root = self._leaf(t)
        else:
            root = self._const(t)
        if role and role not in root.roles:
            root.roles.append(role)
        return root

    def _expand(self, start: Vertex) -> None:
        # Depth-first with an explicit stack; a node's inputs are visited in argument order.
        stack = [start]
        while stack:
            v = stack.pop()
            fresh_children = []
            for inp, e in zip_longest(getattr(v.obj, "inputs", ()), v.obj.edges):
                if e is None and inp is None:
                    continue
                if isinstance(e, Node):
                    out = inp if isinstance(inp, Tensor) and inp._node is e else None
                    child, fresh = self._op(e, out)
                    if fresh:
                        fresh_children.append(child)
                elif e is not None:
                    child = self._leaf(e)
                else:
                    child = self._const(inp)
                self.graph.edges.append((child.key, v.key))
            # Reversed, so the first input is expanded first: numbering follows argument order.
            stack.extend(reversed(fresh_children))


def _number(x) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)
