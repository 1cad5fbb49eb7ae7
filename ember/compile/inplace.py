"""In-place writes in compiled functions (not whole steps): what eager's version counters see.

A compiled function that writes its arguments or buffers in place (``x.mul_(2)``, batch norm's
running statistics, a counter) is fused like any graph: ``passes.fusion.order_edges`` keeps
every read of the written memory on its side of the write, and a chain of ``add_``/``mul_``...
on a placeholder becomes out-of-place ops and one ``copy_`` (``functionalize_writes``) when the
graph records no gradients. A native program writes that memory without ``apply``, so it does
not count the writes in the tensors' version counters; eager does (an autograd node that saved
the tensor earlier then refuses to run backward). :class:`VersionCounts` counts them as eager
would: each placeholder's version advances by the number of in-place writes the *captured*
graph made to its memory, however many of them ran through ``apply``. Fusion orders reads and
writes by the graph's values; two arguments that are one memory (``f(x, x[0])``) are different
placeholders to it, so such a call runs in captured order (:func:`aliased`).

Example:
    >>> import ember
    >>> def h(c):
    ...     c.mul_(2).add_(1)
    ...     return (c * 3).exp()
    >>> c = ember.ones(4)
    >>> _ = ember.compile(h)(c)
    >>> c._version
    2
"""

from __future__ import annotations

import numpy as np

from ember.compile.ir import Node

__all__ = ["write_counts", "VersionCounts", "aliased"]


def write_counts(graph) -> dict:
    """``{placeholder: number of in-place writes to its memory}`` (through views and aliases),
    for the graph as captured (before ``functionalize_writes`` turns chains into one ``copy_``)."""
    from ember.compile.passes.fusion import _storage

    counts: dict = {}
    for n in graph.nodes:
        if n.kind == "call" and n.prim.inplace:
            for s in {_storage(a) for a in n.args[: n.params.get("n_written", 1)] if isinstance(a, Node)}:
                if s.kind == "placeholder":
                    counts[s] = counts.get(s, 0) + 1
    return counts


class VersionCounts:
    """``before(env)`` then ``after(env)`` around a run: advances each written placeholder's
    version counter to where eager's would be (never back: writes through ``apply`` count)."""

    __slots__ = ("counts", "written")

    def __init__(self, counts: dict):
        self.counts = list(counts.items())
        self.written = list(counts)

    def before(self, env: dict) -> list:
        return [env[p]._version for p, _ in self.counts]

    def after(self, env: dict, versions: list) -> None:
        for (p, k), v in zip(self.counts, versions):
            t = env[p]
            for _ in range(v + k - t._version):
                t._bump_version()


def _root(a):
    while isinstance(getattr(a, "base", None), np.ndarray):
        a = a.base
    return id(a)


def aliased(env: dict, written: list) -> bool:
    """Whether a placeholder in ``written`` shares its memory (its NumPy base array) with
    another placeholder of ``env``: then the graph's ordering constraints do not see it. Cheap
    per call: only views (arrays with a base) are followed to their owner."""
    mine = {id(env[p]): p for p in written}
    roots = {_root(env[p]._data) for p in written}
    for p, t in env.items():
        if mine.get(id(t)) is p or getattr(p, "kind", None) != "placeholder":
            continue
        a = t._data
        if id(a) in roots or (getattr(a, "base", None) is not None and _root(a) in roots):
            return True
    return False
