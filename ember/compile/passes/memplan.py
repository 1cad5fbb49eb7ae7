"""Memory planning: liveness-based reuse of the fused kernels' output buffers, in place where safe.

Over a schedule (``lower.schedule``), each value a fused group writes that is a temporary (not
an output of the graph, not reachable from one through a view) gets a slot in one arena: a slot
is reused by a later temporary once every reader of the earlier one (and of every view of it)
has run. An elementwise group whose input is a temporary read for the last time, of the same
size, writes its output over it (in place). Eager ops allocate their own results (NumPy), but
count toward the planned peak: the most bytes alive at once over the schedule.

Example:
    >>> from ember.compile.passes.memplan import plan_memory  # see tests/test_compile_cpass.py
"""

from __future__ import annotations

import numpy as np

from ember.compile.codegen.cstyle import access
from ember.compile.passes.mincut import nbytes

__all__ = ["MemoryPlan", "plan_memory", "ALIGN", "MAY_ALIAS"]

ALIGN = 64  # bytes: every slot starts on a cache line (and an AVX-512 vector)
# Ops (besides the primitives flagged ``view``) whose result may be their input's memory:
# ``contiguous``/``to`` return the input itself when nothing changes; NumPy's flip is a view.
MAY_ALIAS = frozenset({"contiguous", "to", "to_detached", "view_dtype", "flip", "detach", "alias"})


def _may_alias(n) -> bool:
    return n.prim.view or n.prim.inplace or n.op in MAY_ALIAS


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class MemoryPlan:
    """Where each planned temporary lives: ``offsets[node] = byte offset`` in an arena of
    ``arena_bytes``; ``naive_bytes`` is what they take without reuse; ``peak_bytes`` the most
    bytes of all values alive at once (temporaries, eager results, constants); ``inplace`` the
    ``(output, input)`` pairs that share a slot."""

    def __init__(self):
        self.offsets: dict = {}
        self.arena_bytes = 0
        self.naive_bytes = 0
        self.peak_bytes = 0
        self.inplace: list = []
        self.over_eager: dict = {}  # group output -> the eager result (fresh, dying) it overwrites
        self._arena = None
        self.outputs: list = []  # the schedule's results (a dynamic-shape template plans again)

    def buffer(self, node, dtype) -> np.ndarray:
        """The array for ``node`` in this plan's arena (allocated on first use, then reused)."""
        if self._arena is None:
            raw = np.empty(self.arena_bytes + ALIGN, np.uint8)
            skip = (-raw.ctypes.data) % ALIGN
            self._arena = raw[skip : skip + self.arena_bytes]
        off = self.offsets[node]
        n = node.numel() * dtype.itemsize
        return self._arena[off : off + n].view(dtype).reshape(node.shape)

    def __str__(self) -> str:
        return (
            f"memory plan: {len(self.offsets)} temporaries in an arena of {self.arena_bytes} bytes "
            f"({self.naive_bytes} bytes without reuse), {len(self.inplace)} written in place, "
            f"{len(self.over_eager)} over an eager result; planned peak {self.peak_bytes} bytes"
        )


def plan_memory(steps: list, outputs) -> MemoryPlan:
    """Plan the fused groups' temporaries of ``steps`` (``("node", n)``/``("group", g)``) whose
    results ``outputs`` (nodes) must outlive the schedule."""
    plan = MemoryPlan()
    plan.outputs = list(outputs)
    produced, reads = [], []
    for kind, x in steps:
        if kind == "group":
            produced.append(list(x.outputs))
            reads.append(list(x.inputs))
        else:
            produced.append([x] if x.dtype is not None else [])
            reads.append(list(x.inputs()))
    # alias sets: an eager op that may return a view of its inputs joins their set
    root: dict = {}

    def find(a):
        while root.get(a, a) is not a:
            a = root[a]
        return a

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra is not rb:
            root[ra] = rb

    for kind, x in steps:
        if kind == "node" and x.kind == "call" and x.dtype is not None and _may_alias(x):
            for a in x.inputs():
                union(a, x)
        elif kind == "node" and x.kind == "item":
            union(x.args[0], x)
    last: dict = {}
    for k, rs in enumerate(reads):
        for a in rs:
            last[find(a)] = k
    for k, outs in enumerate(produced):
        for o in outs:
            last.setdefault(find(o), k)
    escaped = {find(o) for o in outputs if hasattr(o, "kind")}
    INF = len(steps)

    def end(a) -> int:
        r = find(a)
        return INF if r in escaped else last.get(r, INF)

    # eager results that are new arrays (no view of an input, not a constant); one read last by
    # an elementwise group (and by no view of it later) can take that group's output
    eager_fresh = {
        x for kind, x in steps if kind == "node" and x.kind == "call" and x.dtype is not None and not _may_alias(x)
    }
    free: list = []  # (size, offset) slots
    live_bytes, dying = 0, {}
    for k, ((kind, x), outs) in enumerate(zip(steps, produced)):
        for o in outs:
            if kind != "group":
                continue
            escapes = end(o) >= INF
            donor = None
            if x.kind == "elementwise" and not escapes:  # over an arena input read for the last time
                for a in x.inputs:
                    if a in plan.offsets and end(a) == k and a.shape == o.shape and a.dtype == o.dtype:
                        if access(a.shape, x.shape) == ("full",) and a not in [d for _, d in plan.inplace]:
                            donor = a
                            break
            if donor is not None:
                plan.naive_bytes += _round(nbytes(o))
                plan.offsets[o] = plan.offsets[donor]
                plan.inplace.append((o, donor))
                continue
            if x.kind == "elementwise":  # over an eager result (an epilogue over a conv's output)
                for a in x.inputs:
                    if a in eager_fresh and end(a) == k and a.shape == o.shape and a.dtype == o.dtype:
                        if access(a.shape, x.shape) == ("full",) and a not in plan.over_eager.values():
                            plan.over_eager[o] = a  # a new array each call: it may be returned too
                            break
                if o in plan.over_eager:
                    continue
            if escapes:
                continue
            size = _round(nbytes(o))
            plan.naive_bytes += size
            fits = [s for s in free if s[0] >= size]
            if fits:
                slot = min(fits)
                free.remove(slot)
                plan.offsets[o] = slot[1]
                if slot[0] > size:
                    free.append((slot[0] - size, slot[1] + size))
            else:
                plan.offsets[o] = plan.arena_bytes
                plan.arena_bytes += size
        for o in outs:
            if o not in plan.over_eager:  # one that took an eager result's array adds nothing
                live_bytes += nbytes(o)
            dying.setdefault(end(o), []).append(o)
        plan.peak_bytes = max(plan.peak_bytes, live_bytes)
        given = set(plan.over_eager.values())
        for o in dying.pop(k, []):
            if o not in given:  # a given array lives on as the group's output
                live_bytes -= nbytes(o)
            donated = any(d is o for _, d in plan.inplace)  # its slot lives on in the output
            if o in plan.offsets and not donated:
                free.append((_round(nbytes(o)), plan.offsets[o]))
    return plan
