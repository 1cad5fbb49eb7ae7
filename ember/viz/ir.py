"""Pictures of ``ember.compile``'s IR: a captured (joint) graph as Graphviz DOT text.

Every call is a box labelled ``%id op`` and its type; forward ops are grey, backward
(gradient) ops salmon, in-place updates (an optimizer step) khaki, graph inputs light blue (output gradients of a joint graph green),
constants dashed ellipses, outputs drawn with a double border. Each fusion group is a coloured
cluster ("group k: n ops"); with a whole-graph program, the nodes that run eagerly between its
native segments have a dashed red border. Multi-output calls are drawn once, their outputs'
readers point at the call. Output is deterministic (vertices ``n<id>`` in graph order).

Example:
    >>> import ember
    >>> from ember.viz import compiled_dot
    >>> f = ember.compile(lambda x: (x * 2).exp().sum(-1))
    >>> _ = f(ember.ones(2, 3))
    >>> src = compiled_dot(f)
    >>> src.startswith("digraph compiled {"), "cluster_group0" in src
    (True, True)
"""

from __future__ import annotations

__all__ = ["graph_dot", "compiled_dot", "GROUP_COLORS"]

_INPUT, _GOUT, _FWD, _BWD, _CONST = "lightblue", "palegreen", "lightgrey", "lightsalmon", "white"
_UPDATE = "khaki"  # in-place writes: the optimizer's update in a whole-step graph
#: Background of fusion group k (cycled).
GROUP_COLORS = ("#fff2b3", "#d9f2d0", "#d6e4ff", "#f9d9f2", "#e0f7f7", "#ffe0c2", "#e8e0ff", "#f0f0c0")


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_line(n, outputs, eager, names, indent="  ") -> str:
    if n.kind == "placeholder":
        gout = n.binding is not None and n.binding[0] == "gout"
        what = "grad output" if gout else "input"
        if n.binding is not None and n.binding[0] == "const":
            what = names.get(id(n.binding[1]), what)
        label, shape, fill, style = f"%{n.id} {what}", "box", _GOUT if gout else _INPUT, "filled"
    elif n.kind == "constant":
        label, shape, fill, style = f"%{n.id} constant", "ellipse", _CONST, "filled,dashed"
    else:
        label, shape, style = f"%{n.id} {n.op}", "box", "filled"
        fill = _UPDATE if n.kind == "call" and n.prim.inplace else _BWD if n.phase == "backward" else _FWD
    if n.dtype is not None:
        label += "\n" + n.type_str()
    attrs = [f"label={_q(label)}", f"shape={shape}", f"style={_q(style)}", f"fillcolor={_q(fill)}"]
    if n in outputs:
        attrs.append("peripheries=2")
    if n in eager:
        attrs += ['color="red"', 'style="filled,dashed"', "penwidth=2"]
    return f"{indent}n{n.id} [{', '.join(attrs)}];"


def graph_dot(graph, groups=(), eager=(), name: str = "compiled", names=None) -> str:
    """``graph`` (an ``IRGraph``) as DOT text, ``groups`` (fusion groups) as coloured clusters,
    ``eager`` (nodes) marked as running outside the native program; ``names`` (``{name:
    tensor}``, e.g. ``dict(model.named_parameters())``) labels the inputs bound to those tensors.

    Example:
        >>> import ember
        >>> from ember.compile.capture import trace
        >>> from ember.compile.ir import IRGraph
        >>> g = IRGraph.from_traced(trace(lambda x: x.exp() + 1, (ember.ones(2),), {}))
        >>> "%1 exp" in graph_dot(g)
        True
    """
    nodes = [n for n in graph.nodes if n.kind != "item"]
    shown = set(nodes)
    outputs = {_shown(o) for o in graph.outputs if hasattr(o, "kind")}
    eager = set(eager)
    names = {id(t): k for k, t in (names or {}).items()}
    out = [
        f"digraph {name} {{",
        '  graph [fontname="Helvetica", rankdir=TB];',
        '  node [fontname="Helvetica", fontsize=10];',
    ]
    grouped = set()
    for k, g in enumerate(groups):
        members = [n for n in g.nodes if n in shown]
        if not members:
            continue
        color = GROUP_COLORS[k % len(GROUP_COLORS)]
        out.append(f"  subgraph cluster_group{g.id} {{")
        out.append(
            f'    label={_q(f"group {g.id}: {len(g.nodes)} ops")}; style="filled,rounded"; fillcolor={_q(color)};'
        )
        for n in members:
            out.append(_node_line(n, outputs, eager, names, "    "))
            grouped.add(n)
        out.append("  }")
    for n in nodes:
        if n not in grouped:
            out.append(_node_line(n, outputs, eager, names))
    for n in nodes:
        for a in dict.fromkeys(_shown(a) for a in n.inputs()):
            if a in shown:
                out.append(f"  n{a.id} -> n{n.id};")
    out.append("}")
    return "\n".join(out) + "\n"


def _shown(n):
    """An item is drawn as the multi-output call it comes from."""
    return n.args[0] if n.kind == "item" else n


def compiled_dot(compiled, index: int = -1, names=None) -> str:
    """DOT text of a compiled function's or module's graph (``ember.compile``), after its first
    call: the cache entry ``index`` (default the newest), with its fusion groups and, when it
    runs as a whole-graph program, the nodes that run eagerly. ``names`` as for :func:`graph_dot`
    (default: a compiled module's parameters and buffers).

    Raises RuntimeError when nothing was compiled yet (or the function runs eagerly).
    """
    cf = getattr(compiled, "_compiled", compiled)
    entries = [e for e in getattr(cf, "cache", {}).values() if not isinstance(e, str)]
    if not entries:
        reasons = [e for e in getattr(cf, "cache", {}).values() if isinstance(e, str)]
        why = f" (it runs eagerly: {reasons[-1]})" if reasons else " (call it once first)"
        raise RuntimeError(f"compiled_dot(): no compiled graph{why}")
    entry = entries[index]
    groups, eager = [], []
    joint = getattr(entry, "joint", False)
    views = (getattr(entry, "steps", None), getattr(entry, "bwd_steps", None) if joint else None)
    for steps in (*views, getattr(entry, "program", None)):  # a whole step's program (step_program.py)
        if steps is None:
            continue
        groups += [g for kind, g in steps if kind == "group"]
        spec = getattr(steps, "spec", None)
        if spec is not None:
            eager += spec.eager_nodes
    mod = getattr(compiled, "_orig_mod", None)
    if names is None and mod is not None:
        names = {**dict(mod.named_buffers()), **dict(mod.named_parameters())}
    return graph_dot(entry.graph, groups, eager, names=names)
