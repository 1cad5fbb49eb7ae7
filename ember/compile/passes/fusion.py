"""Fusion: elementwise chains, reductions with their producers and consumers, and siblings.

A group is one loop nest over its *iteration shape* (the full shape of its elementwise values):

- ``elementwise``: a flat loop over every element.
- ``row``: a ``sum``/``amax`` over trailing axes joined the group. The loop runs row by row; in
  each row it makes as many passes as the reductions need (softmax: the max, then the sum of
  ``exp(x - max)``, then ``exp(x - max) / sum``). Per-row values (the reductions and the
  elementwise ops on them, such as ``log(s) + m`` or ``rsqrt(var + eps)``) are *reduced* nodes,
  computed once per row between passes. ``level[node]`` is the pass an elementwise node runs in
  (how many reductions it waits for).
- ``col``: a ``sum`` over leading axes (``x.sum(0)``, a bias gradient): one pass, columns
  accumulated in double; per-column consumers (``* (1/rows)`` for a mean) run after.

A call joins a group when its op has a lowering (``codegen.cstyle.EXPRESSIONS``), its dtype is
float32/float64/bfloat16/float16 like every tensor input, and it reads a value of the group. External inputs may
broadcast in the ways a loop index can express: the full shape (``in[i]``), a trailing suffix
(``in[i % m]``: a bias or layer_norm weight), a leading prefix with trailing ones (``in[i / m]``:
a keepdim row statistic) or one element. Joining must not create a cycle (another input of the
call must not depend on the group). After the chains, groups that read the same input and do
not depend on each other merge (sibling fusion: the input is read once). Groups of one op are
dropped (NumPy runs a single op as well as a loop would).

Example:
    >>> from ember.compile.passes.fusion import fuse  # see tests/test_compile_passes.py
"""

from __future__ import annotations

from ember.compile.codegen.cstyle import access, supported
from ember.compile.ir import Node, node_makers, node_readers

__all__ = ["FusionGroup", "fuse", "fused_listing", "gemm_operands", "order_edges"]

# bfloat16/float16 groups load 16 bits, compute in float32 and round once per output
# (codegen/lowp.py); their GEMMs widen both operands to float32 scratch and run sgemm.
_FLOATS = ("float32", "float64", "bfloat16", "float16")
# ``to`` between these fuses (they all compute in float32): autocast's casts, ``mean`` of bfloat16
_F32_FAMILY = ("float32", "bfloat16", "float16")
_REDUCTIONS = ("sum", "amax")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class FusionGroup:
    """Ops fused into one kernel: ``inputs`` (nodes read from outside, in order), ``nodes`` (in
    execution order) and ``outputs`` (the group's nodes read outside it or returned). ``kind``
    is ``"elementwise"``, ``"row"`` or ``"col"`` (see the module docstring); ``split`` is the
    number of leading axes that index rows (row groups) or that are summed (col groups)."""

    def __init__(self, gid: int, shape: tuple, dtype):
        self.id = gid
        self.nodes: list = []
        self.shape = tuple(shape)
        self.dtype = dtype
        self.inputs: list = []
        self.outputs: list = []
        self.kind = "elementwise"
        self.split = len(self.shape)
        self.reductions: list = []
        self.reduced: set = set()  # per-row (or per-column) nodes
        self.level: dict = {}  # node -> pass (row groups)
        self.gemm = None  # gemm groups: (node, a, b, b_transposed, bias)

    @property
    def reduction(self):
        """The first reduction, or None (an elementwise group)."""
        return self.reductions[0] if self.reductions else None

    def numel(self) -> int:
        return _numel(self.shape)

    def rows_cols(self) -> tuple:
        """(rows, cols): row groups reduce each of ``rows`` rows of ``cols``; col groups sum
        ``rows`` rows into ``cols`` columns; elementwise groups are one row."""
        if self.kind == "elementwise":
            return 1, self.numel()
        if self.kind == "gemm":
            return self.numel() // self.shape[-1], self.shape[-1]
        return _numel(self.shape[: self.split]), _numel(self.shape[self.split :])

    def lvl(self, a) -> int:
        return self.level.get(a, 0)

    def __repr__(self) -> str:
        ops = " -> ".join(n.op for n in self.nodes)
        kind = "" if self.kind == "elementwise" else f"{self.kind} "
        return f"group{self.id}[{kind}{len(self.nodes)} ops: {ops}; in {self.inputs}, out {self.outputs}]"


def _fname(dtype) -> str:
    return str(dtype).replace("ember.", "")


def _why_not_reduction(n: Node) -> str | None:
    """Why the reduction ``n`` can join no group (None if it can)."""
    x = n.args[0] if n.args else None
    if len(n.args) != 1 or not isinstance(x, Node):
        return f"{n.op} of a non-tensor"
    axes = n.params.get("axes")
    if n.params.get("dtype") is not None or not axes:
        return f"{n.op} with a dtype or over no axes"
    nd = len(x.shape)
    axes = sorted(a % nd for a in axes)
    if axes != list(range(nd - len(axes), nd)) and axes != list(range(len(axes))):
        return f"{n.op} over axes {tuple(axes)} (only trailing or leading axes fuse)"
    if x.dtype != n.dtype or _fname(n.dtype) not in _FLOATS:
        return f"{n.op} of {x.dtype} to {n.dtype}"
    if axes[0] == 0 and axes[-1] != nd - 1 and n.op != "sum":
        return "amax over leading axes does not fuse"
    if n.op == "amax" and x.numel() == 0:
        return "amax of an empty tensor"
    return None


def gemm_operands(n: Node):
    """``(a, b, b_transposed, bias)`` of a ``matmul``/``linear`` node that BLAS can run with
    its epilogue (2-d weight, float operands of one dtype), or a string saying why not."""
    from ember.compile.codegen import blas

    if n.op == "matmul":
        a, b = n.args[0], n.args[1]
        bias, tb = None, False
        if not isinstance(a, Node) or not isinstance(b, Node) or len(a.shape) != 2 or len(b.shape) != 2:
            return "matmul of other than two matrices"
        if b.kind == "call" and b.op == "permute" and tuple(b.params["dims"]) == (1, 0):
            b, tb = b.args[0], True  # x @ w.t(): BLAS reads w transposed
    else:
        a, b, bias = n.args[0], n.args[1], n.args[2]
        tb = True
        if not isinstance(a, Node) or not isinstance(b, Node) or len(b.shape) != 2 or len(a.shape) < 2:
            return "linear of other than a batch of rows and a matrix"
        if bias is not None and (not isinstance(bias, Node) or bias.shape != b.shape[:1]):
            return "linear with a broadcast bias"
    if any(isinstance(t, Node) and t.dtype != n.dtype for t in (a, b, bias)) or _fname(n.dtype) not in _FLOATS:
        return f"{n.op} of mixed or non-float dtypes"
    if n.params or 0 in n.shape or 0 in a.shape:
        return f"{n.op} with parameters or empty operands"
    if blas.gemm_addresses() is None:
        return "no BLAS with 64-bit cblas_?gemm found in numpy.libs"
    return a, b, tb, bias


def _why_not(n: Node) -> str | None:
    """Why ``n`` cannot be in any group (None if it can)."""
    if n.kind != "call":
        return "not a call"
    if n.op in _REDUCTIONS:
        return _why_not_reduction(n)
    if n.op in ("matmul", "linear"):
        ops = gemm_operands(n)
        return ops if isinstance(ops, str) else None
    if n.op == "to":
        return _why_not_cast(n)
    if not supported(n.op):
        return f"'{n.op}' has no elementwise lowering"
    if _fname(n.dtype) not in _FLOATS:
        return f"result dtype {n.dtype} is not float32/float64/bfloat16/float16"
    if n.op.startswith("gelu") and n.params.get("approximate") in ("none", "tanh") and n.params.get("saved") is None:
        pass  # gelu, gelu_backward: the expression depends on ``approximate`` only
    elif n.params:
        return f"'{n.op}' has parameters {sorted(n.params)}"
    for a in n.args:
        if isinstance(a, Node):
            if a.dtype != n.dtype:
                return f"input %{a.id} is {a.dtype}, result {n.dtype}"
            if access(a.shape, n.shape) is None:
                return f"input %{a.id} {list(a.shape)} broadcasts to {list(n.shape)}"
        elif type(a) not in (int, float):
            return f"argument {a!r} is not a number"
    return None


def _why_not_cast(n: Node) -> str | None:
    """Why the cast ``n`` cannot be in a group: it fuses between float32, bfloat16 and float16."""
    x = n.args[0] if n.args else None
    if len(n.args) != 1 or not isinstance(x, Node) or x.shape != n.shape:
        return "to of a non-tensor"
    dev = n.params.get("device")
    if set(n.params) - {"dtype", "device"} or (dev is not None and getattr(dev, "type", "cpu") != "cpu"):
        return f"to with parameters {sorted(n.params)}"
    if _fname(x.dtype) not in _F32_FAMILY or _fname(n.dtype) not in _F32_FAMILY:
        return f"to from {_fname(x.dtype)} to {_fname(n.dtype)} (only float32/bfloat16/float16 casts fuse)"
    return None


def _red_split(n: Node) -> tuple:
    """(kind, split) of a reduction node."""
    x = n.args[0]
    nd = len(x.shape)
    axes = sorted(a % nd for a in n.params["axes"])
    if axes[-1] == nd - 1 and (axes[0] != 0 or n.op == "amax" or len(axes) == nd):
        return "row", nd - len(axes)
    return "col", len(axes)


def _try_join(g: FusionGroup, n: Node, members) -> str | None:
    """Add ``n`` to ``g`` if it fits (``members(a)`` tells whether ``a`` is in ``g``); return why
    not otherwise."""
    if g.kind == "gemm" and n.op in _REDUCTIONS:
        return "a GEMM's epilogue is elementwise"
    if n.op in _REDUCTIONS:
        x = n.args[0]
        kind, split = _red_split(n)
        if x.shape != g.shape or x in g.reduced:
            return "the group loops over another shape"
        if g.kind != "elementwise" and (g.kind, g.split) != (kind, split):
            return f"the group is a {g.kind} group over other axes"
        g.kind, g.split = kind, split
        g.reductions.append(n)
        g.reduced.add(n)
        g.level[n] = g.lvl(x) + 1
        g.nodes.append(n)
        return None
    ins = [a for a in n.args if isinstance(a, Node)]
    if n.shape == g.shape:  # an elementwise node over the loop's shape
        lv = 0
        for a in ins:
            if members(a) and a in g.reduced:
                if g.kind != "row" or access(a.shape, g.shape) not in (("prefix", g.rows_cols()[1]), ("scalar",)):
                    return f"reads the reduced value %{a.id} across the loop"
            elif not members(a) and access(a.shape, g.shape) is None:
                return f"input %{a.id} {list(a.shape)} broadcasts to {list(n.shape)}"
            lv = max(lv, g.lvl(a))
        g.level[n] = lv
        g.nodes.append(n)
        return None
    if g.kind in ("elementwise", "gemm"):
        return f"shape {list(n.shape)} is not the loop's {list(g.shape)}"
    width = g.rows_cols()[0 if g.kind == "row" else 1]
    if _numel(n.shape) != width:
        return f"shape {list(n.shape)} is neither the loop's nor a reduced value's"
    lv = 0
    for a in ins:
        if members(a):
            if a not in g.reduced or a.shape != n.shape:
                return f"mixes the loop's values with reduced value %{n.id}"
        elif _numel(a.shape) != 1 and a.shape != n.shape:
            return f"input %{a.id} {list(a.shape)} is not per-{g.kind}"
        lv = max(lv, g.lvl(a))
    g.level[n] = lv
    g.reduced.add(n)
    g.nodes.append(n)
    return None


# At most this many buffers (inputs and outputs) per kernel: a merge beyond it saves nothing
# worth the call (ctypes takes at most 1024 arguments; a step's many same-shape parameter updates
# reading one shared value would otherwise merge into one kernel of thousands).
MAX_BUFFERS = 256


def _buffers(nodes: list, users: dict) -> int:
    """The inputs and outputs a kernel of ``nodes`` would take (outputs: nodes read outside)."""
    members = set(nodes)
    ins = {a for n in nodes for a in n.inputs() if a not in members}
    return len(ins) + sum(1 for n in nodes if any(u not in members for u in users.get(n, ())))


def _compatible(a: FusionGroup, b: FusionGroup, users: dict | None = None) -> bool:
    """Both loop over the same shape, and reduce (if at all) over the same axes (and, given the
    graph's ``users``, the merged kernel takes at most ``MAX_BUFFERS`` buffers)."""
    if a.shape != b.shape or a.dtype != b.dtype or "gemm" in (a.kind, b.kind):
        return False
    if users is not None and _buffers(a.nodes + b.nodes, users) > MAX_BUFFERS:
        return False
    return "elementwise" in (a.kind, b.kind) or (a.kind, a.split) == (b.kind, b.split)


def _relevel(g: FusionGroup) -> None:
    """Recompute each node's pass after a merge (inputs that were external became members)."""
    members = set(g.nodes)
    for n in g.nodes:
        ins = [a for a in n.inputs() if a in members]
        if n in g.reductions:
            g.level[n] = (g.level[ins[0]] if ins else 0) + 1
        else:
            g.level[n] = max((g.level[a] for a in ins), default=0)


def _merge_into(target: FusionGroup, g: FusionGroup, order: dict, users: dict | None = None) -> bool:
    """Merge ``g`` into ``target`` when both loop over the same shape and axes."""
    if not _compatible(target, g, users):
        return False
    if target.kind == "elementwise":
        target.kind, target.split = g.kind, g.split
    target.nodes = sorted(target.nodes + g.nodes, key=order.__getitem__)
    target.reductions = sorted(target.reductions + g.reductions, key=order.__getitem__)
    target.reduced |= g.reduced
    target.level.update(g.level)
    _relevel(target)
    return True


# Ops whose result may share its input's memory (besides views and in-place writes): memplan's.
_ALIASING = frozenset({"contiguous", "to", "to_detached", "view_dtype", "flip", "detach", "alias"})


def _storage(a: Node) -> Node:
    """The node whose memory ``a`` is: through views, in-place writes (their result is the
    tensor written) and ops that may return their input."""
    while a.kind == "call" and a.args and isinstance(a.args[0], Node):
        if not (a.prim.view or a.prim.inplace or a.op in _ALIASING):
            break
        a = a.args[0]
    return a


def order_edges(graph) -> dict:
    """The ordering constraints of in-place writes, as extra inputs: ``{node: [nodes it must run
    after]}`` beyond its data inputs. A write to a tensor's memory (``add_``, ``_foreach_*_``,
    ``_fused_adam_``: the first ``n_written`` arguments) runs after every earlier read of that
    memory (through any view) and after the previous write; a read runs after the last write
    before it in captured order. Multi-tensor updates leave later readers reading the written
    argument's node (``ir.py``), so SSA edges alone do not order them. Empty without writes."""
    if not any(n.kind == "call" and n.prim.inplace for n in graph.nodes):
        return {}
    last_write: dict = {}  # storage -> the last node that wrote it
    readers: dict = {}  # storage -> nodes that read it since that write
    extra: dict = {}
    for n in graph.nodes:
        if n.kind != "call":
            continue
        before = set(n.inputs())
        preds = []
        for s in dict.fromkeys(_storage(a) for a in n.inputs()):
            w = last_write.get(s)
            if w is not None and w is not n and w not in before:
                preds.append(w)
            readers.setdefault(s, []).append(n)
        if n.prim.inplace:
            k = n.params.get("n_written", 1)
            for s in dict.fromkeys(_storage(a) for a in n.args[:k] if isinstance(a, Node)):
                preds += [r for r in readers.get(s, ()) if r is not n and r not in before]
                w = last_write.get(s)
                if w is not None and w is not n and w not in before:
                    preds.append(w)
                last_write[s], readers[s] = n, []
        if preds:
            extra[n] = list(dict.fromkeys(preds))
    return extra


def fuse(graph, log=None, reductions: bool = True) -> list:
    """Group the graph's elementwise chains, reductions and siblings; returns the groups (each
    of two or more ops). ``log(msg)``, when given, hears each group formed and each refused
    candidate with the reason.

    In a graph that writes in place, the writes' ordering constraints (:func:`order_edges`) count
    as dependencies: a group runs at one point of the schedule, so it may not hold both a read of
    some memory before a write to it and one after (that group would depend on itself through
    the write), nor move a read past a write. ``reductions=False`` leaves sums and maxima
    unfused (step graphs: a fused sum accumulates in double, eager's in float32)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    extra = order_edges(graph)

    ins_of: dict = {}  # (fusion changes no node's arguments: each node's list is made once)

    def ins(n) -> list:  # data inputs and ordering constraints
        r = ins_of.get(n)
        if r is None:
            r = ins_of[n] = n.inputs() + extra.get(n, [])
        return r

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

    def new_group(n):
        g = FusionGroup(len(groups), n.args[0].shape if n.op in _REDUCTIONS else n.shape, n.dtype)
        groups.append(g)
        return g

    plain = node_makers(graph) | node_readers(graph)  # they run with autograd (step.node_steps)
    users = graph.users()
    for n in graph.nodes:
        d = set()
        for a in ins(n):
            d |= deps.get(a, set())
        why = "a gradient op reads its autograd node" if n in plain else _why_not(n)
        if why is None and not reductions and n.op in _REDUCTIONS:
            why = "reductions stay unfused here"
        if why is not None:
            deps[n] = d
            if log and n.kind == "call" and any(grp(a) is not None for a in n.inputs()):
                log(f"refused %{n.id} ({n.op}): {why}")
            continue
        if n.op in ("matmul", "linear"):  # a GEMM starts a group: its epilogue may follow
            target = new_group(n)
            target.kind, target.gemm = "gemm", (n, *gemm_operands(n))
            target.nodes.append(n)
            group_of[n] = target
            deps[n] = d | {target.id}
            continue
        candidates = []
        for a in n.inputs():
            g = grp(a)
            if g is not None and g not in candidates:
                candidates.append(g)
        target = None
        for g in candidates:
            others = [b for b in ins(n) if grp(b) is not g]
            if any(g.id in rdeps(b) for b in others):
                if log:
                    b = next(b for b in others if g.id in rdeps(b))
                    why = (
                        f"it must run after %{b.id} ({b.op}), an in-place write after the group's reads"
                        if b.kind == "call" and b.prim.inplace
                        else "another input depends on the group (cycle)"
                    )
                    log(f"refused %{n.id} ({n.op}) into group{g.id}: {why}")
                continue
            if target is None:
                why = _try_join(g, n, lambda a, g=g: grp(a) is g)
                if why is None:
                    target = g
                elif log:
                    log(f"refused %{n.id} ({n.op}) into group{g.id}: {why}")
            elif (
                not any(a in g.reduced for a in n.inputs())
                and not _depends(g, target, rdeps, ins)
                and not _depends(target, g, rdeps, ins, but=n)
                and _merge_into(target, g, order, users)
            ):
                merged[g.id] = target  # an independent sibling group read by n
        if target is None:
            target = new_group(n)
            _try_join(target, n, lambda a, g=target: grp(a) is g)
        group_of[n] = target
        deps[n] = d | {target.id}
    groups = [g for g in groups if g.id not in merged]
    groups = _merge_siblings(graph, groups, group_of, log, ins)
    groups = [g for g in groups if len(g.nodes) > 1]
    outs = graph.output_nodes()
    for k, g in enumerate(groups):
        g.id = k
        members = set(g.nodes)
        for n in g.nodes:
            ins = [a for a in g.gemm[1:3] + g.gemm[4:] if a is not None] if g.gemm and n is g.gemm[0] else n.inputs()
            for a in ins:
                if a not in members and a not in g.inputs:
                    g.inputs.append(a)
            if n in outs or any(u not in members for u in users[n]):
                g.outputs.append(n)
        if log:
            log(f"fused {g!r}")
    if log:
        log(fused_listing(graph, groups))
    return groups


def fused_listing(graph, groups: list) -> str:
    """The graph after fusion: each node with its group, then the op counts per kernel."""
    group_of = {n: g for g in groups for n in g.nodes}
    lines = [f"after fuse ({len(groups)} groups):"]
    for line, n in zip(str(graph).splitlines()[1:], [n for n in graph.nodes if n.kind != "placeholder"]):
        g = group_of.get(n)
        lines.append(line if g is None else f"{line:<60}  # group{g.id} ({g.kind})")
    lines.append(str(graph).splitlines()[-1])
    eager = [n for n in graph.nodes if n.kind == "call" and n not in group_of]
    lines.append(
        f"kernels: {len(groups)} fused groups ({sum(len(g.nodes) for g in groups)} ops), {len(eager)} eager ops"
    )
    return "\n".join(lines)


def _depends(a: FusionGroup, b: FusionGroup, rdeps, ins, but=None) -> bool:
    """Whether a member of group ``a`` (other than ``but``) reads (through any path, or must run
    after) a value of group ``b``."""
    members = set(a.nodes)
    return any(b.id in rdeps(x) for n in a.nodes if n is not but for x in ins(n) if x not in members)


def _merge_siblings(graph, groups: list, group_of: dict, log, ins=None) -> list:
    """Merge groups that read a common input and do not depend on each other (either way;
    ``ins(node)``: its inputs and ordering constraints)."""
    ins = ins or (lambda n: n.inputs())
    order = {n: i for i, n in enumerate(graph.nodes)}
    users = graph.users()
    while True:
        owner = {n: g for g in groups for n in g.nodes}
        bit = {id(g): 1 << k for k, g in enumerate(groups)}
        reach: dict = {}  # node -> the groups it depends on (through any path), one bit each
        for n in graph.nodes:
            r = 0
            for a in ins(n):
                r |= reach.get(a, 0)
                if a in owner:
                    r |= bit[id(owner[a])]
            reach[n] = r
        dep = {}
        for g in groups:
            r = 0
            for n in g.nodes:
                r |= reach[n]
            dep[id(g)] = r & ~bit[id(g)]
        readers: dict = {}
        for g in groups:
            for n in g.nodes:
                for a in n.inputs():
                    if owner.get(a) is not g:
                        readers.setdefault(a, [])
                        if g not in readers[a]:
                            readers[a].append(g)
        pair = None
        for a, gs in readers.items():
            for i, g1 in enumerate(gs):
                for g2 in gs[i + 1 :]:
                    if dep[id(g2)] & bit[id(g1)] or dep[id(g1)] & bit[id(g2)]:
                        continue
                    if _compatible(g1, g2, users):
                        pair = (g1, g2, a)
                        break
                if pair:
                    break
            if pair:
                break
        if pair is None:
            return groups
        g1, g2, a = pair
        _merge_into(g1, g2, order)
        if log:
            log(f"sibling fusion: group{g2.id} joins group{g1.id} (both read %{a.id})")
        groups = [g for g in groups if g is not g2]
        for n in g2.nodes:
            group_of[n] = g1
