"""Fusion of vertical chains of elementwise ops into groups that run as one loop.

A call can join a group when its op has a lowering (``codegen.cstyle.EXPRESSIONS``), its result
is float32 or float64, every tensor input has exactly its shape and dtype (no broadcasting, no
promotion) and it reads a value the group made. Joining must not create a cycle: if another input
of the call depends on the group, the group would have to run both before and after it.
Groups of one op are dissolved (NumPy runs a single op as well as a loop would).

Example:
    >>> from ember.compile.passes.fusion import fuse  # see tests/test_compile_passes.py
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import supported
from ember.compile.ir import Node

__all__ = ["FusionGroup", "fuse"]

_FLOATS = ("float32", "float64")


class FusionGroup:
    """Ops fused into one kernel: ``inputs`` (nodes read from outside, in order), ``nodes`` (in
    execution order) and ``outputs`` (the group's nodes read outside it or returned)."""

    def __init__(self, gid: int, first: Node):
        self.id = gid
        self.nodes = [first]
        self.shape = first.shape
        self.dtype = first.dtype
        self.inputs: list = []
        self.outputs: list = []
        self.reduction: Node | None = None  # a closing sum over trailing axes, if any

    def numel(self) -> int:
        return self.nodes[0].numel()

    def rows_cols(self) -> tuple:
        """For a group closed by a reduction: (rows, elements summed per row)."""
        k = len(self.shape) - len(self.reduction.params["axes"])
        rows = cols = 1
        for s in self.shape[:k]:
            rows *= s
        for s in self.shape[k:]:
            cols *= s
        return rows, cols

    def __repr__(self) -> str:
        ops = " -> ".join(n.op for n in self.nodes)
        return f"group{self.id}[{len(self.nodes)} ops: {ops}; in {self.inputs}, out {self.outputs}]"


def _why_not_reduction(n: Node) -> str | None:
    """Why the ``sum`` ``n`` cannot close a group (None if it can)."""
    x = n.args[0] if n.args else None
    if len(n.args) != 1 or not isinstance(x, Node):
        return "sum of a non-tensor"
    axes = n.params.get("axes")
    if n.params.get("dtype") is not None or axes is None:
        return "sum with a dtype or over no axes"
    nd = len(x.shape)
    if not axes or sorted(axes) != list(range(nd - len(axes), nd)):
        return f"sum over axes {axes} (only trailing axes fuse)"
    if x.dtype != n.dtype or str(n.dtype).replace("ember.", "") not in _FLOATS:
        return f"sum of {x.dtype} to {n.dtype}"
    return None


def _why_not(n: Node) -> str | None:
    """Why ``n`` cannot be in any group (None if it can)."""
    if n.kind != "call":
        return "not a call"
    if n.op == "sum":
        return _why_not_reduction(n)
    if not supported(n.op):
        return f"'{n.op}' has no elementwise lowering"
    if str(n.dtype).replace("ember.", "") not in _FLOATS:
        return f"result dtype {n.dtype} is not float32/float64"
    if n.params:
        return f"'{n.op}' has parameters {sorted(n.params)}"
    for a in n.args:
        if isinstance(a, Node):
            if a.shape != n.shape:
                return f"input %{a.id} {list(a.shape)} broadcasts to {list(n.shape)}"
            if a.dtype != n.dtype:
                return f"input %{a.id} is {a.dtype}, result {n.dtype}"
        elif type(a) not in (int, float):
            return f"argument {a!r} is not a number"
    return None


def fuse(graph, log=None) -> list:
    """Group the graph's elementwise chains; returns the groups (each of two or more ops).

    A call joins the group of one of its inputs; when its inputs come from several groups that
    do not depend on each other (``max(f(x), g(x))``), those groups merge into one.
    ``log(msg)``, when given, hears each group formed and each refused candidate with the reason.
    """
    group_of: dict = {}  # node -> FusionGroup (follow ``merged`` for the live one)
    merged: dict = {}  # group id -> the group it was merged into
    deps: dict = {}  # node -> ids of the groups it transitively reads
    groups: list = []

    def live(g):
        while g.id in merged:
            g = merged[g.id]
        return g

    def grp(a):
        g = group_of.get(a)
        return None if g is None else live(g)

    def rdeps(a) -> set:
        return {live(groups[i]).id for i in deps.get(a, ())}

    for n in graph.nodes:
        d = set()
        for a in n.inputs():
            d |= deps.get(a, set())
        why = _why_not(n)
        if why is not None:
            deps[n] = d
            if log and n.kind == "call" and any(grp(a) is not None for a in n.inputs()):
                log(f"refused %{n.id} ({n.op}): {why}")
            continue
        candidates = []
        for a in n.inputs():
            g = grp(a)
            if g is not None and g not in candidates:
                candidates.append(g)
        if n.op == "sum":  # closes the group of its input: the loop sums as it goes
            g = grp(n.args[0])
            if g is None or g.reduction is not None or g.shape != n.args[0].shape:
                if log and g is not None:
                    log(f"refused %{n.id} (sum) into group{g.id}: the group is closed or of another shape")
                deps[n] = d
                continue
            g.nodes.append(n)
            g.reduction = n
            group_of[n] = g
            deps[n] = d | {g.id}
            continue
        target = None
        for g in candidates:
            if g.reduction is not None or g.shape != n.shape:
                continue  # a closed group's loop runs over another shape
            others = [b for b in n.inputs() if grp(b) is not g]
            if any(g.id in rdeps(b) for b in others):
                if log:
                    log(f"refused %{n.id} ({n.op}) into group{g.id}: another input depends on the group (cycle)")
                continue
            if target is None:
                target = g
            else:  # an independent sibling group: merge it
                target.nodes = sorted(target.nodes + g.nodes, key=graph.nodes.index)
                merged[g.id] = target
        if target is None:
            target = FusionGroup(len(groups), n)
            groups.append(target)
        else:
            target.nodes.append(n)
        group_of[n] = target
        deps[n] = d | {target.id}
    groups = [g for g in groups if g.id not in merged]
    groups = [g for g in groups if len(g.nodes) > 1]
    users = graph.users()
    outs = graph.output_nodes()
    for k, g in enumerate(groups):
        g.id = k
        members = set(g.nodes)
        for n in g.nodes:
            for a in n.inputs():
                if a not in members and a not in g.inputs:
                    g.inputs.append(a)
            if n in outs or any(u not in members for u in users[n]):
                g.outputs.append(n)
        if log:
            log(f"fused {g!r}")
    return groups
