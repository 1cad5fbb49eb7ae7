"""Functionalization: an in-place arithmetic op on a fresh temporary becomes out-of-place.

``x.mean(0)`` is captured as ``sum`` then ``mul_`` on the sum's fresh result; ``y = x * 2;
y.add_(x)`` writes a temporary nobody else reads. Such writes change no value anybody can see,
and out of place they let the other passes (simplification, fusion) work, which a graph with
in-place writes turns off.

Example:
    >>> from ember.compile.passes.functionalize import functionalize  # see tests/test_compile_cpass.py
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import supported
from ember.compile.ir import Node

__all__ = ["functionalize", "FRESH"]

_OUT_OF_PLACE = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div"}
# Ops whose result is always a new array (never a view of an input): writing into it is private.
FRESH = frozenset(
    {"sum", "amax", "amin", "matmul", "linear", "softmax", "log_softmax", "layer_norm", "var_std", "clone",
     "cross_entropy", "gelu", "where", "full", "arange", "conv2d", "embedding", "cat", "add", "sub", "mul", "div"}
)  # fmt: skip


def _fresh(t: Node) -> bool:
    return t.kind == "call" and not t.prim.view and (supported(t.op) or t.op in FRESH)


def functionalize(graph) -> int:
    """Turn ``add_``/``sub_``/``mul_``/``div_`` (no parameters) into ``add``/``sub``/``mul``/
    ``div`` when the tensor written is the fresh result of an earlier call that nothing else
    reads (not an output, not a view's base), and the result keeps its shape and dtype.
    Returns the number of ops changed."""
    from ember.ops.dispatch import REGISTRY

    users = graph.users()
    outs = graph.output_nodes()
    changed = 0
    for n in graph.nodes:
        if n.kind != "call" or n.op not in _OUT_OF_PLACE or n.params or not n.args:
            continue
        t = n.args[0]
        if not isinstance(t, Node) or not _fresh(t) or t in outs or users.get(t) != [n]:
            continue
        if n.shape != t.shape or n.dtype != t.dtype:
            continue
        other = n.args[1:]
        if any(isinstance(a, Node) and a.dtype != t.dtype for a in other):
            continue
        if any(not isinstance(a, (Node, int, float)) or isinstance(a, bool) for a in other):
            continue
        n.prim = REGISTRY[_OUT_OF_PLACE[n.op]]
        changed += 1
    return changed
