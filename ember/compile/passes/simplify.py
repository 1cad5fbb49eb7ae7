"""Algebraic simplification: ``x*1``, ``x+0``, ``x-0``, ``x/1``, double permutes, reshape
chains and casts to the same dtype."""

from __future__ import annotations

from ember.compile.ir import Node
from ember.compile.passes.fusion import _storage

__all__ = ["simplify"]

_IDENTITY = {"mul": 1, "div": 1, "add": 0, "sub": 0}  # op -> the scalar that leaves x unchanged


def _same(n: Node, x) -> bool:
    """``n`` may be replaced by ``x``: same shape and dtype (no broadcast, no promotion)."""
    return isinstance(x, Node) and x.shape == n.shape and x.dtype == n.dtype


def _rewrite(n: Node, written: set):
    """What ``n`` simplifies to: a node to use instead, or None. May edit ``n`` in place.
    ``written``: the memory (``fusion._storage``) the graph writes in place."""
    op = n.op
    if op in _IDENTITY and len(n.args) == 2 and not n.params:
        a, b = n.args
        unit = _IDENTITY[op]
        if not isinstance(b, Node) and type(b) in (int, float) and b == unit and _same(n, a):
            return a
        if op in ("mul", "add") and not isinstance(a, Node) and type(a) in (int, float) and a == unit and _same(n, b):
            return b
    # An identity view (same-shape reshape, identity permute, same-dtype ``to``) is its input's
    # memory either way; a chain of views, where the memory is written, may not be: a reshape
    # copies a tensor it cannot view, and meta tracers carry no strides to tell.
    chains = not written or _storage(n) not in written
    if op == "permute":
        x = n.args[0]
        dims = tuple(n.params["dims"])
        if dims == tuple(range(len(dims))):
            return x if _same(n, x) else None
        if not chains:
            return None
        if isinstance(x, Node) and x.op == "permute":
            inner = tuple(x.params["dims"])
            composed = tuple(inner[d] for d in dims)
            n.args, n.params = (x.args[0],), {**n.params, "dims": composed}
            if composed == tuple(range(len(composed))) and _same(n, x.args[0]):
                return x.args[0]
            return n
    if op in ("reshape", "view"):
        x = n.args[0]
        if _same(n, x):
            return x
        if chains and isinstance(x, Node) and x.op in ("reshape", "view") and op == "reshape":
            n.args = (x.args[0],) + n.args[1:]
            return n
    if op == "to" and _same(n, n.args[0]):
        dev = n.params.get("device")
        if not n.params.get("copy") and (dev is None or getattr(dev, "type", "cpu") == "cpu"):
            return n.args[0]
    return None


def simplify(graph) -> int:
    """Rewrite nodes to simpler equivalents; returns the number of rewrites.

    Example:
        >>> from ember.compile.passes.simplify import simplify  # see tests/test_compile_passes.py
    """
    written = set()
    for n in graph.nodes:
        if n.kind == "call" and n.prim.inplace:
            written |= {_storage(a) for a in n.args[: n.params.get("n_written", 1)] if isinstance(a, Node)}
    changed = 0
    for n in list(graph.nodes):
        if n.kind != "call":
            continue
        new = _rewrite(n, written)
        if new is None:
            continue
        changed += 1
        if new is not n:
            graph.replace_all_uses(n, new)
    return changed
