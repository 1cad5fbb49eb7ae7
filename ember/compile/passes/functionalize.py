"""Functionalization: an in-place arithmetic op on a fresh temporary becomes out-of-place.

``x.mean(0)`` is captured as ``sum`` then ``mul_`` on the sum's fresh result; ``y = x * 2;
y.add_(x)`` writes a temporary nobody else reads. Such writes change no value anybody can see,
and out of place they let the other passes (simplification, fusion) work, which a graph with
in-place writes restricts (decomposition, view rewrites).

Example:
    >>> from ember.compile.passes.functionalize import functionalize  # see tests/test_compile_cpass.py
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import supported
from ember.compile.ir import Node

__all__ = ["functionalize", "functionalize_writes", "FRESH"]

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


def functionalize_writes(graph) -> int:
    """Turn each chain of ``add_``/``sub_``/``mul_``/``div_`` (no parameters) writing a
    placeholder's memory (a parameter, an optimizer state tensor, a ``.grad``) into out-of-place
    ops and one ``copy_`` into the placeholder after the last of them, so the chain can fuse
    (an optimizer update written with primitives becomes one loop and one copy per tensor).

    Only where nothing can tell the difference: every write to that memory is in the chain, each
    one writes the previous one's result, nothing views the memory, the placeholder is not read
    after the chain starts and each intermediate result is read only before the next write (in
    eager they all alias the placeholder). Later readers of the last write read its value (the
    same as the placeholder's after the copy: it is the last write), so they fuse with the chain;
    graph outputs take the ``copy_`` (the placeholder's tensor, as eager's in-place op returns
    it). Returns the number of writes changed."""
    from ember.compile.passes.fusion import _ALIASING, _storage
    from ember.ops.dispatch import REGISTRY

    writes: dict = {}  # storage -> its in-place writes, in captured order
    bad: set = set()  # storages written otherwise, or viewed
    for n in graph.nodes:
        if n.kind != "call":
            continue
        if n.prim.inplace:
            k = n.params.get("n_written", 1)
            simple = n.op in _OUT_OF_PLACE and not n.params and isinstance(n.args[0], Node)
            for s in {_storage(a) for a in n.args[:k] if isinstance(a, Node)}:
                (writes.setdefault(s, []).append(n) if simple else bad.add(s))
        elif n.prim.view or n.op in _ALIASING:
            bad |= {_storage(a) for a in n.inputs()}
    pos = {n: i for i, n in enumerate(graph.nodes)}
    users = graph.users()
    outs = graph.output_nodes()
    next_id = max(n.id for n in graph.nodes) + 1
    changed = 0
    for s, chain in writes.items():
        if s.kind != "placeholder" or s in bad or not _plain_chain(s, chain, pos, users, outs):
            continue
        for w in chain:
            w.prim = REGISTRY[_OUT_OF_PLACE[w.op]]
        last = chain[-1]
        c = Node(next_id, "call", prim=REGISTRY["copy_"], args=(s, last), shape=s.shape, dtype=s.dtype)
        c.phase = last.phase
        next_id += 1
        graph.outputs = [c if o is last else o for o in graph.outputs]  # the tensor itself
        graph.nodes.insert(graph.nodes.index(last) + 1, c)
        changed += len(chain)
    return changed


def _plain_chain(s, chain: list, pos: dict, users: dict, outs: set) -> bool:
    """Whether ``chain`` (the writes to placeholder ``s``) can become out of place."""
    prev = s
    for w in chain:
        if w.args[0] is not prev or w.shape != s.shape or w.dtype != s.dtype:
            return False
        for a in w.args[1:]:
            if isinstance(a, Node) and a.dtype != s.dtype:
                return False
            if not isinstance(a, (Node, int, float)) or isinstance(a, bool):
                return False
        prev = w
    if any(u is not chain[0] and pos[u] > pos[chain[0]] for u in users[s]):
        return False
    for w, nxt in zip(chain, chain[1:]):
        if w in outs or any(u is not nxt and pos[u] > pos[nxt] for u in users[w]):
            return False
    return True
