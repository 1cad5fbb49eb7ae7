"""Decomposition: composite primitives become the primitives a fused row loop is made of.

Where fusion has a lowering (float32/float64/bfloat16/float16, the reduced axis last), ``softmax``,
``log_softmax``, ``layer_norm``, ``var_std`` and ``cross_entropy`` (class indices, no weight, no
label smoothing) are rewritten into ``amax``/``sub``/``exp``/``sum``/``div``/``log``/``mul``/
``rsqrt``...; the fusion pass then makes each one loop nest per row (softmax: the row max, the
sum of exponentials, the normalization). Anything else is left as it is.

Example:
    >>> from ember.compile.passes.decompose import decompose  # see tests/test_compile_cpass.py
"""

from __future__ import annotations

from ember._device import CPU
from ember.compile.ir import Node, node_makers

__all__ = ["decompose", "DECOMPOSABLE"]

_FLOATS = ("float32", "float64", "bfloat16", "float16")  # 2-byte floats: fused in float32 (codegen/lowp.py)


class _Builder:
    """Makes call nodes that go before ``at`` in ``graph`` (same phase)."""

    def __init__(self, graph, at: Node):
        from ember.ops.dispatch import REGISTRY

        self.graph, self.at, self.reg, self.made = graph, at, REGISTRY, []

    def __call__(self, op, *args, out: tuple, dt=None, **params) -> Node:
        n = Node(self.graph.new_id(), "call", prim=self.reg[op], args=args, params=params, shape=out)
        n.dtype = self.at.dtype if dt is None else dt
        n.phase = self.at.phase
        self.made.append(n)
        return n

    def commit(self, result: Node) -> None:
        k = self.graph.nodes.index(self.at)
        self.graph.nodes[k:k] = self.made
        self.graph.replace_all_uses(self.at, result)
        self.graph.nodes.remove(self.at)


def _last_axis(x: Node, axes) -> bool:
    nd = len(x.shape)
    return nd > 0 and sorted(a % nd for a in axes) == list(range(nd - len(axes), nd))


def _float(n: Node) -> bool:
    return str(n.dtype).replace("ember.", "") in _FLOATS


def _keep(x: Node, k: int) -> tuple:
    """``x``'s shape with its last ``k`` axes reduced to 1."""
    return tuple(x.shape[: len(x.shape) - k]) + (1,) * k


def _softmax(graph, n, log: bool) -> bool:
    x = n.args[0]
    dim = n.params.get("dim")
    if not isinstance(x, Node) or dim is None or not _last_axis(x, (dim,)) or x.dtype != n.dtype or x.numel() == 0:
        return False
    b = _Builder(graph, n)
    ax, row = (len(x.shape) - 1,), _keep(x, 1)
    m = b("amax", x, out=row, axes=ax, keepdim=True)
    z = b("sub", x, m, out=x.shape)
    e = b("exp", z, out=x.shape)
    s = b("sum", e, out=row, axes=ax, keepdim=True)
    if log:
        out = b("sub", z, b("log", s, out=row), out=x.shape)
    else:
        out = b("div", e, s, out=x.shape)
    b.commit(out)
    return True


def _mean_var(b, x, axes, k, correction, keepdim=True):
    """(mean keepdim, x - mean, variance, its shape) over the last ``k`` axes."""
    cnt = 1
    for s in x.shape[len(x.shape) - k :]:
        cnt *= s
    row = _keep(x, k)
    s1 = b("sum", x, out=row, axes=axes, keepdim=True)
    mean = b("mul", s1, 1.0 / cnt, out=row)
    xc = b("sub", x, mean, out=x.shape)
    vrow = row if keepdim else tuple(x.shape[: len(x.shape) - k])
    s2 = b("sum", b("mul", xc, xc, out=x.shape), out=vrow, axes=axes, keepdim=keepdim)
    var = b("mul", s2, 1.0 / (cnt - correction), out=vrow)
    return mean, xc, var, vrow


def _layer_norm(graph, n) -> bool:
    x, w, bias = n.args[0], n.args[1], n.args[2]
    axes = n.params.get("axes")
    if not isinstance(x, Node) or not axes or not _last_axis(x, axes) or x.numel() == 0 or n.shape != x.shape:
        return False
    if any(isinstance(a, Node) and (a.dtype != x.dtype or a.shape != x.shape[-len(axes) :]) for a in (w, bias)):
        return False
    b = _Builder(graph, n)
    _, xc, var, row = _mean_var(b, x, tuple(axes), len(axes), 0)
    rstd = b("rsqrt", b("add", var, float(n.params["eps"]), out=row), out=row)
    y = b("mul", xc, rstd, out=x.shape)
    if isinstance(w, Node):
        y = b("mul", y, w, out=x.shape)
    if isinstance(bias, Node):
        y = b("add", y, bias, out=x.shape)
    b.commit(y)
    return True


def _var_std(graph, n) -> bool:
    x = n.args[0]
    axes, corr = n.params.get("axes"), n.params.get("correction", 1)
    if not isinstance(x, Node) or not axes or not _last_axis(x, axes) or x.dtype != n.dtype:
        return False
    k = len(axes)
    cnt = 1
    for s in x.shape[len(x.shape) - k :]:
        cnt *= s
    if cnt - corr <= 0 or not isinstance(corr, (int, float)):
        return False  # PyTorch's division by zero (and its warning) stays eager's
    b = _Builder(graph, n)
    _, _, var, row = _mean_var(b, x, tuple(axes), k, corr, bool(n.params.get("keepdim")))
    b.commit(b("sqrt", var, out=row) if n.params.get("sqrt") else var)
    return True


def _cross_entropy(graph, n) -> bool:
    x, t, weight = n.args[0], n.args[1], n.args[2]
    p = n.params
    if weight is not None or p.get("ls") or not p.get("softmax_mode", True) or p.get("op") != "cross_entropy":
        return False
    if not isinstance(x, Node) or len(x.shape) != 2 or not isinstance(t, Node) or x.numel() == 0:
        return False
    if str(t.dtype).replace("ember.", "") != "int64" or tuple(t.shape) != x.shape[:1]:
        return False
    red = p.get("reduction")
    if red not in ("mean", "sum", "none"):
        return False
    import ember

    N, C = x.shape
    b = _Builder(graph, n)
    t2 = b("reshape", t, out=(N, 1), dt=t.dtype, **{"shape": (N, 1)})
    valid = b("ne", t2, p["ignore_index"], out=(N, 1), dt=ember.bool)
    idx = b("where", valid, t2, 0, out=(N, 1), dt=t.dtype)
    picked = b("gather", x, idx, out=(N, 1), axis=1)
    vf = b("to", valid, out=(N, 1), dt=x.dtype, **{"dtype": x.dtype, "device": CPU})
    # one row loop: the max, the sum of exponentials, log-sum-exp minus the picked logit
    m = b("amax", x, out=(N, 1), axes=(1,), keepdim=True)
    e = b("exp", b("sub", x, m, out=x.shape), out=x.shape)
    s = b("sum", e, out=(N, 1), axes=(1,), keepdim=True)
    lse = b("add", b("log", s, out=(N, 1)), m, out=(N, 1))
    loss = b("mul", b("sub", lse, picked, out=(N, 1)), vf, out=(N, 1))
    if red == "none":
        out = b("reshape", loss, out=(N,), **{"shape": (N,)})
    else:
        total = b("sum", loss, out=(), axes=(0, 1), keepdim=False)
        out = total if red == "sum" else b("div", total, b("sum", vf, out=(), axes=(0, 1), keepdim=False), out=())
    b.commit(out)
    return True


DECOMPOSABLE = {
    "softmax": lambda g, n: _softmax(g, n, False),
    "log_softmax": lambda g, n: _softmax(g, n, True),
    "layer_norm": _layer_norm,
    "var_std": _var_std,
    "cross_entropy": _cross_entropy,
}


def _forget_meta_saves(graph) -> int:
    """A gradient op whose ``saved`` parameter holds the capture's meta array (``gelu_backward``)
    would read garbage on replay: with ``saved=None`` it recomputes it from its input. The same
    for ``saved`` as a reference to its forward op's autograd node (``step.NodeRef``): the forward
    op then needs no node and may fuse."""
    changed = 0
    for n in graph.nodes:
        if n.kind == "call" and type(n.params.get("saved")).__name__ in ("MetaArray", "NodeRef"):
            n.params = {**n.params, "saved": None}
            changed += 1
    return changed


def _runs_op_by_op(graph) -> bool:
    """Captured under grad mode without its backward (a gradient op could not be replayed, as
    ``layer_norm_backward``), with a parameter requiring grad: the graph then runs op by op
    through autograd, where one composite kernel beats the ops it decomposes into."""
    from ember.autograd.grad_mode import state

    t = graph.traced
    if t is None or t.diff_outputs is not None or not state.enabled:
        return False
    return any(b[0] == "const" and getattr(b[1], "requires_grad", False) for b in t.bindings)


def decompose(graph) -> int:
    """Rewrite each decomposable call (see :data:`DECOMPOSABLE`) into primitives; returns how
    many were rewritten. A graph that will run op by op under autograd is left alone.

    In a graph that writes in place, the primitives take the composite's place in captured order
    and read the same inputs, so ``fusion.order_edges`` orders them as it ordered the composite:
    after the writes before it, before the writes after it (the composite's result is a fresh
    value: a later write into it writes the last primitive's result)."""
    changed = _forget_meta_saves(graph)
    if _runs_op_by_op(graph):
        return changed
    read_nodes = node_makers(graph)
    for n in list(graph.nodes):
        if n.kind != "call" or n in read_nodes:  # a gradient op reads its autograd node: keep it whole
            continue
        if n.op in DECOMPOSABLE and _float(n) and DECOMPOSABLE[n.op](graph, n):
            changed += 1
    return changed
