"""Dead-code elimination: drop pure nodes whose value nobody reads."""

from __future__ import annotations

__all__ = ["dce"]


def dce(graph) -> int:
    """Remove call/item/constant nodes with no users that are not outputs and not impure.

    Placeholders stay (they are the graph's signature). Returns the number of nodes removed.

    Example:
        >>> from ember.compile.passes.dce import dce  # see tests/test_compile_passes.py
    """
    live = graph.output_nodes()
    keep = []
    for n in reversed(graph.nodes):
        if n in live or n.kind == "placeholder" or n.impure:
            keep.append(n)
            live.update(n.inputs())
    removed = len(graph.nodes) - len(keep)
    graph.nodes = keep[::-1]
    return removed
