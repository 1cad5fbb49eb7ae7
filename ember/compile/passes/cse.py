"""Common-subexpression elimination: one node per (op, inputs, parameters)."""

from __future__ import annotations

from ember.compile.ir import Node

__all__ = ["cse"]


def _key(a):
    if isinstance(a, Node):
        return ("node", a.id)
    if isinstance(a, (list, tuple)):
        return (type(a).__name__, tuple(_key(x) for x in a))
    if isinstance(a, dict):
        return ("dict", tuple(sorted((k, _key(v)) for k, v in a.items())))
    if isinstance(a, float) and a != a:
        return ("nan",)
    try:
        hash(a)
    except TypeError:
        return ("id", id(a))
    return (type(a).__name__, a)


def cse(graph) -> int:
    """Replace each pure call that repeats an earlier one (same op, inputs and parameters) by
    the earlier node. Impure ops (in-place writes, random draws) and views are never merged.
    Returns the number of nodes replaced.

    Example:
        >>> from ember.compile.passes.cse import cse  # see tests/test_compile_passes.py
    """
    seen: dict = {}
    replaced = 0
    for n in list(graph.nodes):
        if n.kind == "item":
            key = ("item", n.args[0].id, n.index)
        elif n.kind != "call" or n.impure or n.prim.view:
            continue
        else:
            key = (n.op, _key(n.args), _key(n.params))
        first = seen.get(key)
        if first is None:
            seen[key] = n
        else:
            graph.replace_all_uses(n, first)
            graph.nodes.remove(n)
            replaced += 1
    return replaced
