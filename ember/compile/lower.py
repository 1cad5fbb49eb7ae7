"""Lowering: an optimized IR graph and its fusion groups become a schedule of steps.

A step is either one node (run through ``apply``, eagerly) or one fusion group (one generated
kernel). Steps are in a topological order that keeps the captured order wherever it can.

Example:
    >>> from ember.compile.lower import schedule  # see tests/test_compile.py
"""

from __future__ import annotations

__all__ = ["schedule", "relax_views", "Steps"]


class Steps(list):
    """A schedule: a list of steps, with ``plan`` (a ``passes.memplan.MemoryPlan`` for the fused
    groups' temporaries, or None when there are no groups)."""

    plan = None


def schedule(graph, groups: list) -> list:
    """The steps: ``("node", node)`` or ``("group", group)`` for every call/item/constant node,
    as :class:`Steps` with the memory plan of the groups' outputs. In-place writes keep their
    order with every read and write of the memory they write (``fusion.order_edges``)."""
    from ember.compile.passes.fusion import order_edges

    group_of = {n: g for g in groups for n in g.nodes}
    extra = order_edges(graph)  # in-place writes: reads and writes of one memory keep their order
    units, deps, seen = [], [], {}
    for n in graph.nodes:
        if n.kind == "placeholder":
            continue
        g = group_of.get(n)
        key = ("group", g) if g is not None else ("node", n)
        k = seen.get(id(key[1]))
        if k is None:
            k = seen[id(key[1])] = len(units)
            units.append(key)
            deps.append(set())
        for a in n.inputs() + extra.get(n, []):
            if a.kind == "placeholder":
                continue
            ga = group_of.get(a)
            ka = seen.get(id(ga if ga is not None else a))
            if ka is not None and ka != k:
                deps[k].add(ka)
    done, order = set(), []
    pending = list(range(len(units)))
    while pending:
        for i, k in enumerate(pending):
            if deps[k] <= done:
                order.append(units[k])
                done.add(k)
                del pending[i]
                break
        else:  # fusion guarantees acyclicity; reaching here is a compiler bug
            raise RuntimeError("ember.compile: cyclic schedule")
    steps = Steps(order)
    if groups:
        from ember.compile.passes.memplan import plan_memory

        steps.plan = plan_memory(steps, graph.outputs)
    return steps


def relax_views(graph) -> int:
    """Run ``view`` nodes as ``reshape`` when the graph writes nothing in place.

    Meta tracers carry no strides, so capture does not see that a tensor is non-contiguous and
    a ``.contiguous()`` before a ``.view()`` is not recorded; on real data the ``view`` would then
    fail. Without in-place writes nobody can observe whether a result aliases its input, and
    ``reshape`` gives the same values. Returns the number of nodes changed.
    """
    from ember.ops.dispatch import REGISTRY

    if any(n.kind == "call" and n.prim.inplace for n in graph.nodes):
        return 0
    changed = 0
    for n in graph.nodes:
        if n.kind == "call" and n.op == "view" and set(n.params) == {"shape"}:
            n.prim = REGISTRY["reshape"]
            changed += 1
    return changed
