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

    def numel(self) -> int:
        return self.nodes[0].numel()

    def __repr__(self) -> str:
        ops = " -> ".join(n.op for n in self.nodes)
        return f"group{self.id}[{len(self.nodes)} ops: {ops}; in {self.inputs}, out {self.outputs}]"


def _why_not(n: Node) -> str | None:
    """Why ``n`` cannot be in any group (None if it can)."""
    if n.kind != "call":
        return "not a call"
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

    ``log(msg)``, when given, hears each group formed and each refused candidate with the reason.
    """
    group_of: dict = {}  # node -> FusionGroup
    deps: dict = {}  # node -> ids of the groups it transitively reads
    groups: list = []
    for n in graph.nodes:
        d = set()
        for a in n.inputs():
            d |= deps.get(a, set())
            if a in group_of:
                d.add(group_of[a].id)
        why = _why_not(n)
        if why is not None:
            deps[n] = d
            if log and n.kind == "call" and any(a in group_of for a in n.inputs()):
                log(f"refused %{n.id} ({n.op}): {why}")
            continue
        target = None
        for a in n.inputs():
            g = group_of.get(a)
            if g is None or g.numel() != n.numel():
                continue
            others = [b for b in n.inputs() if group_of.get(b) is not g]
            if any(g.id in deps.get(b, set()) or group_of.get(b) is g for b in others):
                if log:
                    log(f"refused %{n.id} ({n.op}) into group{g.id}: another input depends on the group (cycle)")
                continue
            target = g
            break
        if target is None:
            target = FusionGroup(len(groups), n)
            groups.append(target)
        else:
            target.nodes.append(n)
        group_of[n] = target
        deps[n] = d | {target.id}
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
