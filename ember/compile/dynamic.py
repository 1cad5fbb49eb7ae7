"""Dynamic shapes: one compiled graph for every size of the dimensions that change between calls.

With ``dynamic=None`` (the default, as in PyTorch) the first graph is specialized to the sizes
it saw. When a later call differs only in some dimensions of its tensor arguments, those
dimensions are marked dynamic and the recompile builds a *template*: the function is captured at
both sizes, and every integer of the two optimized graphs (node shapes, op parameters such as
reshape targets, scalar arguments) that differs is fitted to an expression of the dynamic sizes
(``c*s``, ``s+k``, ``c*s1*s2``, with equal sizes sharing one symbol, as PyTorch's "duck sizing").
The template is kept only if the two captures have the same ops, the passes and fusion made the
same decisions at both sizes, every differing integer has exactly one such expression, and no
folded constant depends on a size; otherwise the function keeps specializing.

A call with new sizes re-captures the function once for those sizes (no passes, fusion or
build) and compares the capture with the template evaluated at them: Python that branches on a
size, or a parameter the expressions do not describe, is caught there and that size gets its own
specialized graph. Sizes that passed are remembered. ``dynamic=True`` marks every dimension of
every tensor argument dynamic from the first call; ``dynamic=False`` always specializes.

Example:
    >>> import ember
    >>> f = ember.compile(lambda x: (x * 2).reshape(-1, 2).sum(1))
    >>> _ = f(ember.ones(4, 2)); _ = f(ember.ones(6, 2)); _ = f(ember.ones(9, 2))
    >>> f.recompiles
    2
"""

from __future__ import annotations

import copy
from fractions import Fraction
from itertools import combinations

import numpy as np

from ember.compile.capture import Unsupported
from ember.compile.ir import IRGraph, Node

__all__ = ["Expr", "Template", "fit_graphs", "leaves", "mark_dynamic", "dynamic_entry", "build_template"]


class Expr:
    """``coef * prod(symbols) + offset`` over the dynamic sizes (symbol indices)."""

    __slots__ = ("coef", "syms", "offset")

    def __init__(self, coef, syms: tuple, offset: int = 0):
        self.coef, self.syms, self.offset = Fraction(coef), syms, offset

    def __call__(self, values) -> int:
        p = self.coef
        for s in self.syms:
            p *= values[s]
        v = p + self.offset
        if v.denominator != 1:
            raise ValueError("not an integer")
        return int(v)

    def __repr__(self) -> str:
        prod = "*".join(f"s{s}" for s in self.syms)
        return f"{self.coef}*{prod}+{self.offset}"


def _candidates(a: int, b: int, sa: list, sb: list) -> list:
    """Expressions over the symbols that give ``a`` at sizes ``sa`` and ``b`` at ``sb``."""
    out = []
    moved = [i for i in range(len(sa)) if sa[i] != sb[i]]  # a size seen once is no symbol yet
    for r in (1, 2):
        for combo in combinations(moved, r):
            pa = pb = 1
            for s in combo:
                pa, pb = pa * sa[s], pb * sb[s]
            if pa and a * pb == b * pa:  # a = c * P at both sizes
                c = Fraction(a, pa)
                if c != 0 and (c.denominator == 1 or c.numerator == 1):
                    out.append(Expr(c, combo))
            if r == 1 and a - pa == b - pb:  # a = s + k
                out.append(Expr(1, combo, a - pa))
    return out


_FIT = object()  # a leaf that is an integer: fitted, not compared


def _flat(x, out: list, path: tuple) -> None:
    from ember.autograd.node import Node as AutogradNode
    from ember.compile.step import NodeRef

    if isinstance(x, Node):
        out.append((path, ("node", x.id)))
    elif isinstance(x, NodeRef):  # a gradient op's node: the call that makes it, each time
        out.append((path, ("noderef", x.op.id, x.attr)))
    elif isinstance(x, AutogradNode):  # the same, in a capture before attach_node_refs
        out.append((path, ("autograd node", type(x).__name__)))
    elif type(x).__name__ == "MetaArray":  # a node's saved array (gelu's), before attach_node_refs
        out.append((path, ("meta array", str(x.dtype), len(x.shape))))
        _flat(tuple(x.shape), out, path + ("shape",))
    elif isinstance(x, (tuple, list)):
        out.append((path, (type(x), len(x))))
        for i, v in enumerate(x):
            _flat(v, out, path + (i,))
    elif isinstance(x, slice):
        out.append((path, (slice, 3)))
        for i, v in enumerate((x.start, x.stop, x.step)):
            _flat(v, out, path + (i,))
    elif _is_record(x):  # an op's parameter record (attention's _Spec): its fields
        names = _slots(x)
        out.append((path, (type(x), names)))
        for name in names:
            _flat(getattr(x, name), out, path + (name,))
    elif isinstance(x, np.ndarray):
        out.append((path, ("array", x.shape, x.dtype.str, hash(x.tobytes()))))
    elif isinstance(x, dict):
        out.append((path, (dict, tuple(x))))
        for k, v in x.items():
            _flat(v, out, path + (k,))
    elif isinstance(x, int) and not isinstance(x, bool):
        out.append((path, (_FIT, x)))
    else:
        out.append((path, ("value", x)))


def leaves(graph: IRGraph) -> list:
    """Every value that describes ``graph``, in order: ``(path, leaf)``; a path is
    ``(node id, field, index...)`` and integer leaves are ``(_FIT, value)``."""
    out: list = []
    for n in graph.nodes:
        base = (n.id,)
        out.append((base, ("node", n.kind, n.op, n.dtype, n.index, n.phase)))
        if n.binding is not None:
            kind, ref = n.binding
            out.append((base + ("binding",), ("value", (kind, ref if kind != "const" else id(ref)))))
        _flat(list(n.args), out, base + ("args",))
        _flat(dict(n.params), out, base + ("params",))
        _flat(tuple(n.shape), out, base + ("shape",))
        if n.kind == "constant":
            out.append((base + ("value",), ("value", id(n.value))))
    _flat([o if isinstance(o, Node) else (o[0], id(o[1])) for o in graph.outputs], out, ("outputs",))
    return out


def _short(leaf) -> str:
    return ", ".join(type(v).__name__ if hasattr(v, "_data") else repr(v)[:60] for v in leaf)


def _same(a, b) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def fit_graphs(ga: IRGraph, gb: IRGraph, sa: list, sb: list):
    """``{path: Expr}`` for the integers of ``gb`` that differ from ``ga`` (sizes ``sa``/``sb``),
    or a string saying why the two graphs are not one template. Constants' values are compared
    by identity only when their shapes are equal: a folded constant of a dynamic shape fails."""
    la, lb = leaves(ga), leaves(gb)
    if len(la) != len(lb):
        return "the captures differ in size"
    exprs = {}
    for (pa, xa), (pb, xb) in zip(la, lb):
        if pa != pb:
            return f"the captures differ at {pa} / {pb}"
        if xa[0] is _FIT and xb[0] is _FIT:
            if xa[1] == xb[1]:
                continue
            cands = _candidates(xa[1], xb[1], sa, sb)
            if not cands:
                return f"{pa}: {xa[1]} -> {xb[1]} is no expression of the dynamic sizes"
            if len({(c.coef, c.syms, c.offset) for c in cands}) > 1:
                return f"{pa}: {xa[1]} -> {xb[1]} has several expressions ({cands})"
            exprs[pb] = cands[0]
        elif pa[-1:] == ("value",) and xa != xb:
            return f"constant %{pa[0]} differs between the sizes (folded from a dynamic shape)"
        elif not (xa[0] == xb[0] and _same(xa[1:], xb[1:])):
            return f"the captures differ at {pa}: {_short(xa)} / {_short(xb)}"
    for path in exprs:  # a folded constant keeps its value: its shape must not change
        node = next(n for n in gb.nodes if n.id == path[0])
        if node.kind == "constant":
            return f"constant %{node.id} has a dynamic shape"
    return exprs


def _set(node: Node, path: tuple, value) -> None:
    field, *rest = path[1:]
    if field == "shape":
        s = list(node.shape)
        _assign(s, rest, value)
        node.shape = tuple(s)
    elif field == "params":
        node.params = dict(node.params)
        key, *sub = rest
        if sub:
            node.params[key] = _replace(node.params[key], sub, value)
        else:
            node.params[key] = value
    elif field == "args":
        node.args = tuple(_replace(list(node.args), rest, value))


def _assign(seq: list, rest: list, value) -> None:
    if len(rest) == 1:
        seq[rest[0]] = value
    else:
        seq[rest[0]] = _replace(seq[rest[0]], rest[1:], value)


def _slots(x) -> tuple:
    return tuple(n for c in type(x).__mro__ for n in getattr(c, "__slots__", ()) if n != "__weakref__")


def _is_record(x) -> bool:
    mod = type(x).__module__
    return mod.startswith(("ember.nn.", "ember.ops.")) and bool(_slots(x)) and not isinstance(x, Node)


def _replace(x, rest: list, value):
    if _is_record(x):
        y = copy.copy(x)
        name, *sub = rest
        setattr(y, name, _replace(getattr(x, name), sub, value) if sub else value)
        return y
    if isinstance(x, slice):
        parts = [x.start, x.stop, x.step]
        _assign(parts, rest, value)
        return slice(*parts)
    if isinstance(x, (tuple, list)):
        y = list(x)
        _assign(y, rest, value)
        return type(x)(y) if type(x) in (tuple, list) else type(x)(*y)
    if isinstance(x, dict):
        y = dict(x)
        k, *sub = rest
        y[k] = _replace(y[k], sub, value) if sub else value
        return y
    raise TypeError(f"cannot set {rest} in {type(x).__name__}")


class Template:
    """A compiled graph whose sizes follow the dynamic dimensions (see the module docstring)."""

    def __init__(self, dims: list, symbol_of: list, exprs: dict, raw_exprs: dict, raw: IRGraph, graph, groups):
        self.dims = dims  # (argument index, dim) marked dynamic, in order
        self.symbol_of = symbol_of  # per dim: its symbol (equal sizes share one)
        self.exprs = exprs  # path in the optimized graph -> Expr
        self.raw_exprs = raw_exprs  # path in the captured graph -> Expr
        self.raw = raw  # the captured graph at the sizes ``current`` (for verification)
        self.graph = graph
        self.nodes = {n.id: n for n in graph.nodes}
        self.groups = groups
        self.group_shape = [_shape_source(g) for g in groups]
        self.verified: set = set()
        self.current = None
        self.entry = None  # the entry whose memory plans follow the sizes (_replan)

    def sizes(self, tensors: list):
        """The symbols' values for a call, or None when sizes that were equal now differ."""
        values: dict = {}
        for (k, d), s in zip(self.dims, self.symbol_of):
            v = tensors[k].shape[d]
            if values.setdefault(s, v) != v:
                return None
        return tuple(values[s] for s in range(len(values)))

    def matches(self, raw: IRGraph, values: tuple) -> bool:
        """Whether a capture at ``values`` is the template evaluated there."""
        la, lb = leaves(self.raw), leaves(raw)
        if len(la) != len(lb):
            return False
        for (pa, xa), (pb, xb) in zip(la, lb):
            if pa != pb:
                return False
            e = self.raw_exprs.get(pa)
            if e is not None:
                try:
                    if xb[0] is not _FIT or e(values) != xb[1]:
                        return False
                except ValueError:
                    return False
            elif not (xa[0] == xb[0] and _same(xa[1:], xb[1:])):
                return False
        return True

    def instantiate(self, values: tuple) -> None:
        """Set every dynamic shape and parameter of the compiled graph for ``values``."""
        if values == self.current:
            return
        for path, e in self.exprs.items():
            if path[0] == "outputs":
                continue
            _set(self.nodes[path[0]], path, e(values))
        for g, src in zip(self.groups, self.group_shape):
            g.shape = tuple(src.shape)  # n, rows and cols (c.kernel_sizes) follow the shape
        if self.entry is not None:
            _replan(self.entry)
        self.current = values


def _shape_source(g) -> Node:
    """The node whose shape is group ``g``'s loop shape: a reduction's input (it may be outside
    a row/col group whose producer fused elsewhere), else a member over the loop's shape."""
    if g.reductions:
        return g.reductions[0].args[0]
    return next((n for n in g.nodes if tuple(n.shape) == tuple(g.shape)), g.nodes[0])


# ----- the cache policy (CompiledFunction ``cf`` of api.py)
def _is_graph(entry) -> bool:
    """A compiled graph entry (not an eager reason, not the lazy marker)."""
    return not isinstance(entry, str) and hasattr(entry, "graph")


def _limit() -> int:
    from ember.compile.api import RECOMPILE_LIMIT

    return RECOMPILE_LIMIT


def mark_dynamic(cf, key, tensors):
    """A miss whose key differs from a cached one only in sizes: mark those dims dynamic
    and return that entry (None if there is none)."""
    for other in cf.cache:
        if other[0] != key[0] or other[2:] != key[2:] or len(other[1]) != len(key[1]):
            continue
        dims = []
        for k, (a, b) in enumerate(zip(other[1], key[1])):
            if a[1:] != b[1:] or len(a[0]) != len(b[0]):
                break
            dims += [(k, d) for d, (x, y) in enumerate(zip(a[0], b[0])) if x is not None and x != y]
        else:
            if dims:
                cf.dyn_dims = sorted(set(cf.dyn_dims) | set(dims))
                cf._say("graph", f"dims {dims} changed between calls: marked dynamic")
                return cf.cache[other]
    return None


def dynamic_entry(cf, entry, key, tensors, args, kwargs):
    """The entry for a call whose key matched but whose dynamic sizes may differ from the
    sizes ``entry`` runs at (see dynamic.py); None to compile a specialized one."""
    shapes = tuple(tuple(t.shape) for t in tensors)
    tpl = getattr(entry, "template", None)
    if tpl is None:
        if entry.shapes == shapes:
            return entry
        if getattr(entry, "template_refused", False) or cf.recompiles >= _limit():
            return cf.exact.get((key, shapes))
        cf.recompiles += 1
        new = build_template(cf, entry, tensors, args, kwargs)
        if not _is_graph(new):
            return new
        cf.cache[key] = new
        return new if getattr(new, "template", None) is not None or new.shapes == shapes else None
    values = tpl.sizes(tensors)
    if values is None:
        return cf.exact.get((key, shapes))
    if values not in tpl.verified:
        try:
            raw = IRGraph.from_traced(cf._trace(args, kwargs))
        except Unsupported:
            return cf.exact.get((key, shapes))
        if not tpl.matches(raw, values):
            cf._say("graph", f"dynamic sizes {values}: the capture differs from the template; specializing")
            return cf.exact.get((key, shapes))
        tpl.verified.add(values)
    tpl.instantiate(values)
    return entry


def build_template(cf, old, tensors, args, kwargs):
    """A new entry for the current sizes that also serves every size of the dynamic dims."""
    new = cf._compile(args, kwargs)
    if not _is_graph(new):
        return new
    new.shapes = tuple(tuple(t.shape) for t in tensors)
    dims = [(k, d) for k, d in cf.dyn_dims if k < len(tensors) and d < len(tensors[k].shape)]
    sa = [old.shapes[k][d] for k, d in dims]
    sb = [new.shapes[k][d] for k, d in dims]
    reason = None
    if len(set(sa)) != len(sa) and any(sa[i] == sa[j] and sb[i] != sb[j] for i in range(len(sa)) for j in range(i)):
        reason = "sizes that were equal differ now"
    pairs = list(dict.fromkeys(zip(sa, sb)))  # duck sizing: equal sizes are one symbol
    symbol_of = [pairs.index(p) for p in zip(sa, sb)]
    va, vb = [a for a, _ in pairs], [b for _, b in pairs]
    if reason is None:
        again = cf._build(old.traced, args, kwargs)  # the old capture, optimized again
        raw = fit_graphs(IRGraph.from_traced(old.traced), IRGraph.from_traced(new.traced), va, vb)
        opt = fit_graphs(again.graph, new.graph, va, vb) if not isinstance(again, str) else again
        if isinstance(raw, str) or isinstance(opt, str):
            reason = raw if isinstance(raw, str) else opt
        elif _group_shapes(again) != _group_shapes(new):
            reason = "fusion grouped differently at the two sizes"
        elif _kernels_source(again) != _kernels_source(new):
            reason = "the generated kernels depend on the sizes (a GEMM's inner size, a broadcast stride)"
    if reason is not None:
        cf._say("graph", f"dynamic shapes refused ({reason}): specializing")
        new.template_refused = True
        return new
    _unprogram(new)
    new.template = Template(dims, symbol_of, opt, raw, IRGraph.from_traced(new.traced), new.graph, _groups(new))
    new.template.entry = new
    new.template.verified |= {tuple(va), tuple(vb)}
    new.template.current = tuple(vb)
    cf._say("graph", f"dynamic dims {dims}: one graph for every size ({len(opt)} sizes/parameters symbolic)")
    return new


def _groups(entry) -> list:
    steps = list(getattr(entry, "steps", ())) + list(getattr(entry, "bwd_steps", ()))
    return [x for kind, x in steps if kind == "group"]


def _group_shapes(entry) -> list:
    return [
        (tuple(n.id for n in g.nodes), [i.id for i in g.inputs], [o.id for o in g.outputs], g.reduction is not None)
        for g in _groups(entry)
    ]


def _kernels_source(entry) -> str:
    """The C of the entry's fused groups: a size baked into it (a GEMM's inner size, a broadcast
    index ``i % m``) makes the kernels wrong at other sizes; ``n, rows, cols`` are arguments."""
    from ember.compile.runtime import render_c

    return render_c(_groups(entry))


def _unprogram(entry) -> None:
    """A template runs its schedules step by step (whole-graph programs bake every size into
    their C): each ``Program`` becomes the steps it replaces, with their memory plan; the group
    kernels of the program's library stay the entry's kernels."""
    from ember.compile.lower import Steps
    from ember.compile.step import node_steps

    def plain(steps):
        if not hasattr(steps, "run"):
            return steps
        out = Steps(steps)
        out.plan = steps.memplan
        return out

    if getattr(entry, "program", None) is not None:  # a whole step (step_program.attach)
        entry.__dict__.pop("run", None)  # StepEntry.run: the captured order through apply
        entry.program = None
    if not hasattr(entry, "steps"):
        return
    entry.steps = plain(entry.steps)
    if getattr(entry, "joint", False):
        entry.bwd_base = plain(entry.bwd_base)
        entry.joint_steps = node_steps(entry.steps, set(entry.needs), "grad_fn")
        entry.bwd_steps = node_steps(entry.bwd_base, set(entry.needs), "grad_fn")


def _replan(entry) -> None:
    """Plan the fused groups' temporaries again at the template's current sizes (the arena and
    its offsets depend on them)."""
    from ember.compile.passes.memplan import plan_memory

    pairs = [(getattr(entry, "steps", None), getattr(entry, "joint_steps", None))]
    pairs.append((getattr(entry, "bwd_base", None), getattr(entry, "bwd_steps", None)))
    for base, wrapped in pairs:
        if base is None or getattr(base, "plan", None) is None or hasattr(base, "run"):
            continue
        base.plan = plan_memory(base, base.plan.outputs)
        if wrapped is not None and wrapped is not base:
            wrapped.plan = base.plan
