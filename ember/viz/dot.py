"""Forward and backward graphs of a tensor as Graphviz DOT text.

The *forward graph* is the history recorded while computing a tensor: one box per op (labelled
by op name and output shape), the leaves that required grad (by name when ``params`` names
them), and the constants the ops used. The *backward graph* is the graph of the gradient
computation itself: Ember's gradient rules are Tensor code, so differentiating with
``create_graph=True`` records the gradient ops as ordinary nodes. It is drawn together with the
forward values those ops read, which are shaded and grouped as "forward".

Arrows point the way data flows (from an op's inputs to the op). Output is deterministic: the
same graph gives the same text, vertex names ``n0, n1, ...`` following the walk order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ember.tensor import Tensor
from ember.viz.graph import Graph, GraphBuilder, Vertex

__all__ = ["forward_dot", "backward_dot"]

# Colours follow torchviz where it has one (leaves light blue, output green, ops grey).
_LEAF = "lightblue"
_OUTPUT = "darkolivegreen1"
_FORWARD_OP = "lightgrey"
_BACKWARD_OP = "lightsalmon"
_GRAD = "palegreen"


def _names(params) -> dict:
    """``id(tensor) -> name`` from a ``{name: tensor}`` mapping (or ``named_parameters()`` pairs)."""
    if params is None:
        return {}
    items = params.items() if isinstance(params, Mapping) else params
    return {id(t): str(name) for name, t in items if isinstance(t, Tensor)}


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, Sequence):
        return list(x)
    raise TypeError(f"expected a Tensor or a sequence of Tensors, not {type(x).__name__}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(v: Vertex) -> str:
    lines = [line for line in (v.title, v.detail, *v.roles) if line]
    return "\n".join(lines) or " "


def _attrs(v: Vertex, fill: str) -> str:
    shape = "ellipse" if v.kind == "const" else "box"
    style = "filled,dashed" if v.kind == "const" else "filled"
    return f"label={_quote(_label(v))}, shape={shape}, style={_quote(style)}, fillcolor={_quote(fill)}"


def _emit(name: str, graph: Graph, fills: dict, clusters: dict | None = None) -> str:
    """DOT text of ``graph``; ``fills[key]`` is each vertex's colour, ``clusters`` optional groups."""
    out = [f"digraph {name} {{", '  graph [fontname="Helvetica"];', '  node [fontname="Helvetica", fontsize=11];']
    grouped = set()
    for cname, (title, keys) in (clusters or {}).items():
        out.append(f"  subgraph cluster_{cname} {{")
        out.append(f'    label={_quote(title)}; style="rounded,dashed"; color="grey50";')
        for v in graph.vertices:
            if v.key in keys:
                out.append(f"    {v.key} [{_attrs(v, fills[v.key])}];")
                grouped.add(v.key)
        out.append("  }")
    for v in graph.vertices:
        if v.key not in grouped:
            out.append(f"  {v.key} [{_attrs(v, fills[v.key])}];")
    for src, dst in graph.edges:
        out.append(f"  {src} -> {dst};")
    out.append("}")
    return "\n".join(out) + "\n"


def _forward_fill(v: Vertex) -> str:
    if v.kind == "leaf":
        return _LEAF
    if v.kind == "const":
        return "white"
    return _FORWARD_OP


def forward_dot(output: Tensor, params=None) -> str:
    """The forward graph of ``output`` as Graphviz DOT text.

    Ops are boxes labelled by op name and output shape (and dtype when not float32); leaves are
    labelled by their name in ``params`` (a ``{name: tensor}`` dict, e.g.
    ``dict(model.named_parameters())``) and shape; constants are dashed ellipses.

    Example:
        >>> import ember
        >>> from ember.viz import forward_dot
        >>> x1 = ember.tensor(2.0, requires_grad=True)
        >>> x2 = ember.tensor(5.0, requires_grad=True)
        >>> f = ember.log(x1) + x1 * x2 - ember.sin(x2)
        >>> src = forward_dot(f, params={"x1": x1, "x2": x2})
        >>> src.startswith("digraph forward {"), "Log" in src, "x1" in src
        (True, True, True)
    """
    if not isinstance(output, Tensor):
        raise TypeError(f"forward_dot(): output must be a Tensor, not {type(output).__name__}")
    b = GraphBuilder(_names(params))
    root = b.add_root(output, role="output")
    fills = {v.key: _forward_fill(v) for v in b.graph.vertices}
    fills[root.key] = _OUTPUT
    return _emit("forward", b.graph, fills)


def _forward_leaves(output: Tensor) -> list:
    b = GraphBuilder()
    b.add_root(output)
    return [v.obj for v in b.graph.vertices if v.kind == "leaf"]


def backward_dot(output: Tensor, inputs=None, params=None) -> str:
    """The backward graph of ``output``: the ops that compute its gradients, as DOT text.

    Gradients of ``output`` with respect to ``inputs`` (default: every leaf of its graph that
    requires grad) are computed with ``ember.autograd.grad(..., create_graph=True)``, which
    records the gradient computation as ordinary nodes; those are drawn in salmon, the forward
    values they read in grey inside a "forward" group, and each gradient is labelled
    ``grad <name>``. A non-scalar ``output`` is differentiated as ``output.sum()`` would be.
    Leaves' ``.grad`` are not touched and the forward graph stays usable.

    Example:
        >>> import ember
        >>> from ember.viz import backward_dot
        >>> x1 = ember.tensor(2.0, requires_grad=True)
        >>> x2 = ember.tensor(5.0, requires_grad=True)
        >>> f = ember.log(x1) + x1 * x2 - ember.sin(x2)
        >>> src = backward_dot(f, params={"x1": x1, "x2": x2})
        >>> "Div" in src and "Cos" in src and "grad x1" in src
        True
    """
    import ember.autograd
    from ember.ops.creation import ones_like

    if not isinstance(output, Tensor):
        raise TypeError(f"backward_dot(): output must be a Tensor, not {type(output).__name__}")
    if not output._requires_grad:
        raise RuntimeError("backward_dot(): output does not require grad and has no graph to differentiate")
    names = _names(params)
    inputs = _as_list(inputs) or _forward_leaves(output)
    if not inputs:
        raise RuntimeError("backward_dot(): the graph of output has no leaf that requires grad")

    fwd = GraphBuilder(names)  # kept alive below, so the ids it saw stay unique
    fwd.add_root(output)
    forward_ids = {id(v.obj) for v in fwd.graph.vertices if v.kind != "const"}

    seed = ones_like(output)  # passed explicitly so it can be named in the drawing
    names.setdefault(id(seed), "grad output")
    grads = ember.autograd.grad(output, inputs, grad_outputs=seed, create_graph=True, allow_unused=True)

    b = GraphBuilder(names)
    for i, (x, g) in enumerate(zip(inputs, grads)):
        if g is not None:
            b.add_root(g, role=f"grad {names.get(id(x), f'input {i}')}")
    if output._node is not None and b.vertex_of(output._node) is not None:
        b.vertex_of(output._node).roles.append("output")

    fills, forward_keys = {}, set()
    for v in b.graph.vertices:
        is_forward = v.kind != "const" and id(v.obj) in forward_ids
        if is_forward:
            forward_keys.add(v.key)
        if any(r.startswith("grad ") for r in v.roles):
            fills[v.key] = _GRAD
        elif v.kind == "op":
            fills[v.key] = _FORWARD_OP if is_forward else _BACKWARD_OP
        else:
            fills[v.key] = _forward_fill(v)
    del fwd
    return _emit("backward", b.graph, fills, {"forward": ("forward", forward_keys)})
