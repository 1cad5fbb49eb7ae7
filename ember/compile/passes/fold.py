"""Constant folding: compute at compile time the calls whose inputs are all constants."""

from __future__ import annotations

from ember.autograd.grad_mode import no_grad
from ember.compile.ir import Node

__all__ = ["fold_constants", "FOLD_LIMIT"]

FOLD_LIMIT = 1 << 16  # elements: bigger results are cheaper to recompute than to keep


def fold_constants(graph) -> int:
    """Evaluate each pure, single-output call whose tensor inputs are all ``constant`` nodes
    (or that has none, like ``full`` or ``arange``) and whose result has at most
    :data:`FOLD_LIMIT` elements; the call becomes a ``constant`` node. Placeholders are never
    constants: a parameter may change between calls. Returns the number of nodes folded.

    Example:
        >>> from ember.compile.passes.fold import fold_constants  # see tests/test_compile_passes.py
    """
    from ember.ops.dispatch import apply

    folded = 0
    for n in graph.nodes:
        if n.kind != "call" or n.impure or n.prim.multi or n.prim.view or n.numel() > FOLD_LIMIT:
            continue
        if not all(a.kind == "constant" for a in n.inputs()):
            continue
        dev = n.params.get("device")
        if dev is not None and getattr(dev, "type", "cpu") != "cpu":
            continue
        args = [a.value if isinstance(a, Node) else a for a in n.args]
        with no_grad():
            value = apply(n.prim, *args, **n.params)
        n.kind, n.value, n.args, n.params, n.prim = "constant", value, (), {}, None
        folded += 1
    return folded
