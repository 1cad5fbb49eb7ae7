"""Recomputation vs saving for the backward: a min-cut partition of a joint graph, as in
AOTAutograd's ``min_cut_rematerialization_partition``.

The forward keeps for the backward a set of values; every other forward value the backward
reads is recomputed there from them. Choosing the set is a minimum cut: each forward value is
an edge ``v_in -> v_out`` whose capacity is its size in bytes (placeholders cost nothing: the
compiled function keeps its inputs anyway); data flows ``u_out -> v_in`` with infinite
capacity; values that must not be recomputed (anything but cheap elementwise and view ops:
matmuls, reductions, random draws, multi-output kernels) hang off the source, and the values
the backward reads hang on the sink. The cut edges are the values saved; the rest is recomputed
inside the backward, where fusion merges it into the backward's own loops. A ``tanh`` feeding
a gradient costs one saved input instead of its output and its input: ``explain`` reports the
bytes saved before (every value the backward reads) and after.

Example:
    >>> from ember.compile.passes.mincut import min_cut_partition  # see tests/test_compile_cpass.py
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ember.compile.codegen.cstyle import supported
from ember.compile.ir import IRGraph, Node, node_makers

__all__ = ["min_cut_partition", "RECOMPUTABLE_VIEWS", "nbytes"]

RECOMPUTABLE_VIEWS = frozenset({"reshape", "view", "permute", "expand", "contiguous"})
_INF = float("inf")


def nbytes(n: Node) -> int:
    if n.dtype is None:
        return 0
    return n.numel() * np.dtype(str(n.dtype).replace("ember.", "")).itemsize


def _recomputable(n: Node) -> bool:
    if n.kind != "call" or n.impure or n.prim.multi:
        return False
    if n.op in RECOMPUTABLE_VIEWS:
        return True
    return supported(n.op) and not (n.params and not n.op.startswith("gelu"))


def _max_flow_min_cut(edges: dict, source, sink) -> set:
    """Edmonds-Karp on ``edges[u][v] = capacity``; returns the nodes reachable from the source
    in the final residual graph."""
    res = {u: dict(vs) for u, vs in edges.items()}
    for u, vs in edges.items():
        for v in vs:
            res.setdefault(v, {}).setdefault(u, 0)
    while True:
        parent = {source: None}
        q = deque([source])
        while q and sink not in parent:
            u = q.popleft()
            for v, c in res[u].items():
                if c > 0 and v not in parent:
                    parent[v] = u
                    q.append(v)
        if sink not in parent:
            return set(parent)
        path, v = [], sink
        while parent[v] is not None:
            path.append((parent[v], v))
            v = parent[v]
        f = min(res[u][v] for u, v in path)
        if f == _INF:  # only infinite edges: nothing can be cut (cannot happen: sinks are savable)
            raise RuntimeError("ember.compile: min-cut found an uncuttable path")
        for u, v in path:
            res[u][v] -= f
            res[v][u] += f


def written_storage(graph) -> set:
    """The nodes whose memory (``fusion._storage``) some in-place call of ``graph`` writes."""
    from ember.compile.passes.fusion import _storage

    out = set()
    for n in graph.nodes:
        if n.kind == "call" and n.prim.inplace:
            out |= {_storage(a) for a in n.args[: n.params.get("n_written", 1)] if isinstance(a, Node)}
    return out


def _reads(n: Node, written: set) -> bool:
    if not written:
        return False
    from ember.compile.passes.fusion import _storage

    return any(_storage(a) in written for a in n.inputs())


def min_cut_partition(graph, log=None) -> tuple:
    """Split a joint graph into ``(forward view, backward view, saved forward nodes)`` (as
    ``joint.partition``), saving the cheapest set of forward values the backward can recompute
    the rest from. Sets ``graph.saved_bytes = (before, after)``; ``log(msg)`` hears the report."""
    ph = [n for n in graph.nodes if n.kind == "placeholder"]
    fwd = [n for n in graph.nodes if n.kind != "placeholder" and n.phase == "forward"]
    bwd = [n for n in graph.nodes if n.kind != "placeholder" and n.phase != "forward"]
    in_fwd = set(fwd)
    grads = [o for o in graph.outputs[graph.n_out + graph.n_diff :] if isinstance(o, Node)]
    needed = []  # forward values the backward reads (the old partition saved exactly these)
    for a in [a for n in bwd for a in n.inputs()] + grads:  # what backward nodes read, and
        if a in in_fwd and a not in needed:  # gradients that are forward values themselves
            needed.append(a)
    makers = node_makers(graph)  # their autograd node is made in the forward (step.node_steps)
    # memory the graph writes in place: a value read from it is computed where captured (a
    # recomputation in the backward would read it after the writes)
    written = written_storage(graph)
    S, T = "source", "sink"
    edges: dict = {S: {}, T: {}}
    for n in ph + fwd:
        cap = 0 if n.kind == "placeholder" else (nbytes(n) if n.dtype is not None else _INF)
        edges.setdefault(("in", n), {})[("out", n)] = cap
        edges.setdefault(("out", n), {})
        if n.kind == "placeholder" or n in makers or not _recomputable(n) or _reads(n, written):
            edges[S][("in", n)] = _INF
        for a in n.inputs():
            edges.setdefault(("out", a), {})[("in", n)] = _INF
    for n in needed:
        edges[("out", n)][T] = _INF
    reach = _max_flow_min_cut(edges, S, T)
    saved = [n for n in fwd if ("in", n) in reach and ("out", n) not in reach]
    saved_set = set(saved)
    recompute: set = set()
    stack = [a for a in needed if a not in saved_set]
    while stack:
        a = stack.pop()
        if a in recompute or a in saved_set or a.kind == "placeholder":
            continue
        recompute.add(a)
        stack.extend(a.inputs())
    fwd_outs = [o for o in graph.outputs[: graph.n_out + graph.n_diff] if isinstance(o, Node)]
    live = set()
    stack = fwd_outs + saved + [n for n in fwd if n.impure or n in makers]
    while stack:
        a = stack.pop()
        if a in live or a.kind == "placeholder":
            continue
        live.add(a)
        stack.extend(a.inputs())
    fwd_view = IRGraph(ph + [n for n in fwd if n in live], fwd_outs + saved)
    bwd_view = IRGraph(ph + [n for n in fwd if n in recompute] + bwd, grads)
    before = sum(nbytes(n) for n in needed)
    after = sum(nbytes(n) for n in saved)
    graph.saved_bytes = (before, after)
    if log:
        log(
            f"min-cut partition: saved for the backward {len(saved)} values, {after} bytes "
            f"(saving every value it reads: {len(needed)} values, {before} bytes); "
            f"recomputed in the backward: {sorted((n for n in recompute), key=lambda n: n.id)}"
        )
    return fwd_view, bwd_view, saved
