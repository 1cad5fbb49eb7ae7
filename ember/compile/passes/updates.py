"""Optimizer updates from primitives: a captured step's multi-tensor update ops, decomposed.

A training step captured with ``optimizer.step()`` records the optimizer's multi-tensor ops:
``_fused_adam_``/``_fused_adamw_``/``_fused_sgd_`` (one hand kernel over every parameter) and
in-place ``_foreach_add_``/``sub_``/``mul_``/``div_``/``addcmul_``/``addcdiv_``/``lerp_`` (the
step counts, SGD's momentum). :func:`decompose_updates` rewrites each into, per tensor, the
elementwise primitives of its update (``mul``, ``add``, ``sub``, ``div``, ``sqrt``...) and one
in-place ``add_``/``sub_``/``mul_`` chain per written tensor; ``functionalize_writes`` then makes
each chain out of place with one ``copy_``, and fusion forms the update loop itself: one loop per
parameter reading ``p, g, m, v`` and writing ``p, m, v`` (the program writes them in place:
``step_fusion.write_into``). Adam's bias corrections are scalars computed from the step count
tensor in the graph (``lr / (1 - beta1**t)`` as ``-lr / expm1(t * log(beta1))``, exact in
float32 where ``1 - beta**t`` would cancel), in a small loop of their own per parameter.

Later reads of a written tensor are renamed to its last write (an SSA value), which is what
``functionalize_writes`` needs to see a plain chain; writes stay ordered by ``fusion.order_edges``.
Ops it does not take stay whole (AMSGrad, ``lerp_`` with a weight of 0.5 or more, mixed dtypes,
integer tensors, broadcast operands): they still run as their hand kernel.
``EMBER_DECOMPOSE_UPDATES=0`` turns the pass off.

Example:
    >>> from ember.compile.passes.updates import decompose_updates  # see tests/test_compile_updates.py
"""

from __future__ import annotations

import math
import os

from ember.compile.ir import Node

__all__ = ["decompose_updates", "enabled"]

_FLOATS = ("float32", "float64")
_BINARY = {"_foreach_add_": "add_", "_foreach_sub_": "sub_", "_foreach_mul_": "mul_", "_foreach_div_": "div_"}
_ADDC = {"_foreach_addcmul_": "mul", "_foreach_addcdiv_": "div"}
_FUSED = ("_fused_adam_", "_fused_adamw_", "_fused_sgd_")


def enabled() -> bool:
    """Whether the pass runs (``EMBER_DECOMPOSE_UPDATES``, default on)."""
    return os.environ.get("EMBER_DECOMPOSE_UPDATES", "1") != "0"


def _fname(dtype) -> str:
    return str(dtype).replace("ember.", "")


def _number(x) -> bool:
    return type(x) in (int, float)


class _Emit:
    """Appends new call nodes (ids from ``next_id``) with the phase of the op they replace."""

    def __init__(self, next_id: int, phase: str):
        from ember.ops.dispatch import REGISTRY

        self.reg, self.next_id, self.phase = REGISTRY, next_id, phase
        self.nodes: list = []
        self.writes: list = []  # (storage, write node) in order

    def __call__(self, op: str, *args, shape=None, dtype=None) -> Node:
        like = next(a for a in args if isinstance(a, Node))
        n = Node(
            self.next_id, "call", prim=self.reg[op], args=args,
            shape=like.shape if shape is None else shape, dtype=like.dtype if dtype is None else dtype,
        )  # fmt: skip
        n.phase = self.phase
        self.next_id += 1
        self.nodes.append(n)
        return n

    def write(self, op: str, target: Node, other, storage: Node) -> Node:
        """``target.<op>(other)`` in place (``add_``...: no parameters), target's shape."""
        w = self(op, target, other, shape=target.shape, dtype=target.dtype)
        self.writes.append((storage, w))
        return w


def _same(t: Node, o) -> bool:
    """Whether ``o`` (a number, or a node of ``t``'s dtype and shape or one element) can be
    the other operand of ``t``'s update."""
    if _number(o):
        return True
    return isinstance(o, Node) and o.dtype == t.dtype and (o.shape == t.shape or o.shape == ())


def _written_ok(ts) -> bool:
    return all(isinstance(t, Node) and _fname(t.dtype) in _FLOATS for t in ts)


def _lists(args: tuple, layout: tuple) -> list:
    out, i = [], 0
    for m in layout:
        out.append(None if m is None else list(args[i : i + m]))
        i += m or 0
    return out


def _foreach(n: Node, e: _Emit, storage) -> bool:
    """Decompose an in-place ``_foreach_*_`` op; False (nothing emitted) if it does not fit."""
    k = n.params.get("n_written")
    if not k:
        return False
    ts = list(n.args[:k])
    if not _written_ok(ts):
        return False
    if n.op in _BINARY:
        alpha = n.params.get("alpha", 1)
        others = n.args[k:]
        if set(n.params) - {"n_written", "alpha"} or not _number(alpha) or len(others) != k:
            return False
        if not all(_same(t, o) for t, o in zip(ts, others)):
            return False
        for t, o in zip(ts, others):
            if _number(o):
                o = o * alpha
            elif alpha != 1:
                o = e("mul", o, alpha)
            e.write(_BINARY[n.op], t, o, storage(t))
        return True
    if n.op in _ADDC:
        values = n.params.get("values")
        t1s, t2s = n.args[k : 2 * k], n.args[2 * k :]
        if set(n.params) - {"n_written", "values"} or not isinstance(values, tuple) or len(values) != k:
            return False
        if len(t2s) != k or not all(_same(t, a) and _same(t, b) for t, a, b in zip(ts, t1s, t2s)):
            return False
        if not all(_number(v) for v in values) or not all(isinstance(x, Node) for x in t1s + t2s):
            return False
        for t, a, b, v in zip(ts, t1s, t2s, values):
            u = e(_ADDC[n.op], a, b, shape=a.shape if a.shape == t.shape else b.shape)
            if v != 1:
                u = e("mul", u, v)
            e.write("add_", t, u, storage(t))
        return True
    if n.op == "_foreach_lerp_":
        weights = n.params.get("weights")
        ends = n.args[k:]
        if set(n.params) - {"n_written", "weights"} or not isinstance(weights, tuple) or len(weights) != k:
            return False
        if len(ends) != k or not all(isinstance(x, Node) and x.shape == t.shape for t, x in zip(ts, ends)):
            return False
        if not all(_number(w) and w < 0.5 for w in weights) or not all(_same(t, x) for t, x in zip(ts, ends)):
            return False  # PyTorch's other formula (end - (1 - w) (end - t)) is not an add_ chain
        for t, x, w in zip(ts, ends, weights):
            e.write("add_", t, e("mul", e("sub", x, t), w), storage(t))
        return True
    return False


def _adam(n: Node, e: _Emit, storage) -> bool:
    """``_fused_adam_``/``_fused_adamw_`` as ``optim.c``'s ``adam_one`` per parameter."""
    hp = n.params
    layout = hp.get("layout")
    if layout is None or len(layout) != 6 or hp.get("amsgrad") or hp.get("k") is not None:
        return False
    params, avgs, sqs, _maxs, grads, steps = _lists(n.args, layout)
    if not params or any(x is None or len(x) != len(params) for x in (avgs, sqs, grads, steps)):
        return False
    if not _written_ok(params):
        return False
    for j, p in enumerate(params):
        for x in (avgs[j], sqs[j], grads[j]):
            if not isinstance(x, Node) or x.dtype != p.dtype or x.shape != p.shape:
                return False
        s = steps[j]
        if not isinstance(s, Node) or s.shape != () or s.dtype != p.dtype:
            return False
    lr, b1, b2 = float(hp["lr"]), float(hp["beta1"]), float(hp["beta2"])
    eps, wd = float(hp["eps"]), float(hp["weight_decay"])
    decoupled = n.op == "_fused_adamw_"
    for p, g, m, v, s in zip(params, grads, avgs, sqs, steps):
        sp, sm, sv = storage(p), storage(m), storage(v)
        if hp.get("maximize"):
            g = e("neg", g)
        if wd != 0:
            if decoupled:
                p = e.write("mul_", p, 1.0 - lr * wd, sp)
            else:
                g = e("add", g, e("mul", p, wd))
        if abs(1.0 - b1) < 0.5:  # m.lerp_(g, 1 - beta1) from the nearer end, as the kernel
            m = e.write("add_", m, e("mul", e("sub", g, m), 1.0 - b1), sm)
        else:
            m = e.write("add_", e.write("mul_", m, b1, sm), e("mul", g, 1.0 - b1), sm)
        v = e.write("add_", e.write("mul_", v, b2, sv), e("mul", e("mul", g, 1.0 - b2), g), sv)
        # the bias corrections from the step count: scalars (0-d), one small loop per parameter
        step_size = lr if b1 == 0 else e("mul", e("reciprocal", e("expm1", e("mul", s, math.log(b1)))), -lr)
        denom = e("sqrt", v)
        if b2 != 0:
            denom = e("div", denom, e("sqrt", e("neg", e("expm1", e("mul", s, math.log(b2))))), shape=v.shape)
        denom = e("add", denom, eps)
        e.write("sub_", p, e("div", e("mul", m, step_size, shape=m.shape), denom), sp)
    return True


def _sgd(n: Node, e: _Emit, storage) -> bool:
    """``_fused_sgd_`` as ``optim.c``'s ``fused_sgd`` per parameter."""
    hp = n.params
    layout = hp.get("layout")
    if layout is None or len(layout) != 3 or hp.get("k") is not None:
        return False
    params, bufs, grads = _lists(n.args, layout)
    first = hp.get("first")
    if not params or grads is None or len(grads) != len(params) or len(first or ()) != len(params):
        return False
    mom, damp = float(hp["momentum"]), float(hp["dampening"])
    if (mom != 0) != (bufs is not None) or (bufs is not None and len(bufs) != len(params)):
        return False
    if not _written_ok(params):
        return False
    for j, p in enumerate(params):
        for x in [grads[j]] + ([bufs[j]] if bufs is not None else []):
            if not isinstance(x, Node) or x.dtype != p.dtype or x.shape != p.shape:
                return False
    lr, wd = float(hp["lr"]), float(hp["weight_decay"])
    for j, (p, g) in enumerate(zip(params, grads)):
        if hp.get("maximize"):
            g = e("neg", g)
        if wd != 0:
            g = e("add", g, e("mul", p, wd))
        if mom != 0:
            buf, sb = bufs[j], storage(bufs[j])
            if first[j]:  # buf = g: as an add_ chain, buf * 0 would keep a NaN or inf of the old buffer
                return False
            step = e("mul", g, 1.0 - damp) if damp != 0 else g
            b = e.write("add_", e.write("mul_", buf, mom, sb), step, sb)
            g = e("add", g, e("mul", b, mom)) if hp.get("nesterov") else b
        e.write("sub_", p, e("mul", g, lr), storage(p))
    return True


def decompose_updates(graph) -> int:
    """Rewrite the graph's multi-tensor update ops (see the module docstring) into primitives
    and run ``functionalize_writes``, in place; returns the number of ops decomposed.

    Only ops whose written tensors are placeholders nothing views (parameters, optimizer state
    of the steady-state step) are taken, and only when every chain they become is made out of
    place: otherwise the graph is restored (in-place ``add_``/``mul_`` loops, one pass each,
    would be slower than the hand kernel's one pass)."""
    if not enabled():
        return 0
    from ember.compile.passes.functionalize import functionalize, functionalize_writes

    saved = (list(graph.nodes), list(graph.outputs), [(n, n.args, n.prim) for n in graph.nodes])
    changed, writes = _decompose(graph)
    if not changed:
        return 0
    functionalize(graph)  # writes into temporaries (the foreach path's denominators)
    functionalize_writes(graph)
    if any(w.prim.inplace for w in writes):  # some chain stayed in place: undo everything
        graph.nodes, graph.outputs = saved[0], saved[1]
        for n, args, prim in saved[2]:
            n.args, n.prim = args, prim
        return 0
    return changed


def _decompose(graph) -> tuple:
    """The rewrite itself: ``(ops decomposed, the in-place writes emitted)``."""
    from ember.compile.passes.fusion import _ALIASING, _storage

    cur: dict = {}  # storage -> its last write among the rewritten ones (later reads read it)
    gone: dict = {}  # a decomposed op -> its first tensor's storage (its value)

    def handle(a):
        if not isinstance(a, Node):
            return a
        if a in gone:
            s = gone[a]
            return cur.get(s, s)
        if a.kind in ("placeholder", "call"):
            s = _storage(a)  # the tensor itself, or an earlier write's result: its last write
            if s in cur and (a is s or (a.kind == "call" and a.prim.inplace)):
                return cur[s]
        return a

    if not any(n.kind == "call" and (n.op in _FUSED or n.op.startswith("_foreach_")) for n in graph.nodes):
        return 0, []
    viewed = set()  # memory some view or alias reads: its writes must stay where they are
    for n in graph.nodes:
        if n.kind == "call" and (n.prim.view or n.op in _ALIASING):
            viewed |= {_storage(a) for a in n.inputs()}

    def plain(n) -> bool:  # every tensor the op writes is a placeholder or a temporary nothing views
        k = n.params.get("n_written", 1)
        ss = [_storage(a) for a in n.args[:k] if isinstance(a, Node)]
        fresh = lambda s: s.kind == "call" and not s.prim.view and not s.prim.inplace  # noqa: E731
        return all((s.kind == "placeholder" or fresh(s)) and s not in viewed for s in ss)

    next_id = max(n.id for n in graph.nodes) + 1
    out, changed, writes = [], 0, []
    for n in graph.nodes:
        if n.kind != "call":
            out.append(n)
            continue
        n.args = tuple(handle(a) for a in n.args)
        e = _Emit(next_id, n.phase)
        stor = _storage
        if not n.prim.inplace or not plain(n):
            ok = False
        elif n.op == "_fused_sgd_":
            ok = _sgd(n, e, stor)
        elif n.op in _FUSED:
            ok = _adam(n, e, stor)
        elif n.op.startswith("_foreach_"):
            ok = _foreach(n, e, stor)
        else:
            ok = False
        if not ok:
            out.append(n)
            if n.prim.inplace:  # a write we keep: later reads of that memory read it as before
                k = n.params.get("n_written", 1)
                for i, a in enumerate(n.args[:k]):
                    if isinstance(a, Node):
                        s = _storage(a)
                        if s in cur:
                            if i == 0:
                                cur[s] = n
                            else:
                                del cur[s]
            continue
        next_id = e.next_id
        out += e.nodes
        for s, w in e.writes:
            cur[s] = w
            writes.append(w)
        gone[n] = _storage(n.args[0])
        changed += 1
    graph.nodes = out
    graph.outputs = [handle(o) if isinstance(o, Node) and o in gone else o for o in graph.outputs]
    return changed, writes
