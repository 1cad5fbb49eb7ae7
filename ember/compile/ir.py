"""The compiler's IR: a flat SSA graph of :class:`Node` objects, built from a captured graph.

Each node is one value: a ``placeholder`` (a graph input, bound to an argument or to a tensor
such as a parameter), a ``constant`` (a tensor folded at compile time), a ``call`` of a
primitive, or an ``item`` (output ``i`` of a multi-output call). A call's ``args`` hold nodes
for tensors and the Python objects themselves otherwise. ``print(graph)`` shows it as code.

Example:
    >>> import ember
    >>> from ember.compile.capture import trace
    >>> from ember.compile.ir import IRGraph
    >>> g = IRGraph.from_traced(trace(lambda x: (x * 2).relu(), (ember.ones(3),), {}))
    >>> print(g)
    def graph(%0: float32[3]):
        %1: float32[3] = mul(%0, 2)
        %2: float32[3] = relu(%1)
        return (%2,)
"""

from __future__ import annotations

import copy
from collections import Counter

from ember._device import CPU

__all__ = ["Node", "IRGraph", "IMPURE", "node_refs_of", "node_makers", "node_readers"]

# Ops a pass must neither drop, merge nor reorder: they write memory or draw random numbers.
IMPURE = frozenset(
    {
        "rand", "randn", "randint", "normal_", "uniform_", "bernoulli_", "cauchy_", "exponential_",
        "geometric_", "log_normal_", "random_", "dropout_mask",
    }
)  # fmt: skip


class Node:
    """One SSA value of an :class:`IRGraph`."""

    __slots__ = ("id", "kind", "prim", "args", "params", "shape", "dtype", "binding", "value", "index", "phase")

    def __init__(
        self, id, kind, *, prim=None, args=(), params=None, shape=(), dtype=None, binding=None, value=None, index=0
    ):
        self.id = id
        self.kind = kind  # "placeholder", "constant", "call" or "item"
        self.prim = prim
        self.args = tuple(args)
        self.params = params or {}
        self.shape = tuple(shape)
        self.dtype = dtype
        self.binding = binding  # placeholders: ("arg", k) or ("const", tensor)
        self.value = value  # constants: the Tensor
        self.index = index  # items: which output of args[0]
        self.phase = "forward"  # or "backward" for a joint graph's gradient ops

    @property
    def op(self) -> str:
        return self.prim.name if self.kind == "call" else self.kind

    @property
    def impure(self) -> bool:
        return self.kind == "call" and (self.prim.inplace or self.prim.name in IMPURE)

    def inputs(self):
        return [a for a in self.args if isinstance(a, Node)]

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def type_str(self) -> str:
        dt = str(self.dtype).replace("ember.", "")
        return f"{dt}{list(self.shape)}"

    def __repr__(self) -> str:
        return f"%{self.id}"


def node_refs_of(n: Node) -> list:
    """The ``step.NodeRef`` parameters of call ``n`` (a gradient op reading its forward op's
    autograd node); matched by type name so the passes need not import ``step.py``."""
    refs = []
    for v in n.params.values():
        for x in v if isinstance(v, (list, tuple)) else (v,):
            if type(x).__name__ == "NodeRef":
                refs.append(x)
    return refs


def node_makers(graph) -> set:
    """The calls whose autograd node a gradient op reads: they must run as plain node steps
    with gradients on (``step.node_steps``), never fused, recomputed or lowered away."""
    return {r.op for n in graph.nodes if n.kind == "call" for r in node_refs_of(n)}


def node_readers(graph) -> set:
    """The calls that read an autograd node (a ``NodeRef`` parameter)."""
    return {n for n in graph.nodes if n.kind == "call" and node_refs_of(n)}


def _fmt(a) -> str:
    return repr(a) if isinstance(a, Node) else repr(a)


class IRGraph:
    """A flat SSA graph: ``nodes`` in execution order and the ``outputs`` (nodes)."""

    def __init__(self, nodes: list, outputs: list, traced=None):
        self.nodes = nodes
        self.outputs = outputs
        self.traced = traced  # the capture this came from (output structure, bindings)
        # A joint graph: outputs are [forward outputs][differentiable outputs][input gradients];
        # ``grad_inputs`` are the placeholders whose gradients the last part holds.
        self.n_out = len(outputs)
        self.n_diff = 0
        self.grad_inputs: list = []
        self._next = max((n.id for n in nodes), default=-1) + 1

    def new_id(self) -> int:
        self._next += 1
        return self._next - 1

    @classmethod
    def from_traced(cls, traced) -> IRGraph:
        g = traced.graph
        nodes, of_value = [], {}
        for vid, binding in zip(g.inputs, traced.bindings):
            v = g.values[vid]
            n = Node(len(nodes), "placeholder", shape=v.shape, dtype=v.dtype, binding=binding)
            nodes.append(n)
            of_value[vid] = n
        for r in g.ops:
            first = len(nodes)
            args = tuple(of_value[a] if type(a).__name__ == "_Ref" else a for a in r.inputs)
            if any(getattr(v, "type", None) == "meta" for v in r.params.values()):
                # the tracers' device, seen by gradient rules (``x.to(dtype)``, ``zeros_like``):
                # the compiled graph runs where its inputs are, on the CPU
                r = copy.copy(r)
                r.params = {k: CPU if getattr(v, "type", None) == "meta" else v for k, v in r.params.items()}
            if r.prim.multi:
                call = Node(len(nodes), "call", prim=r.prim, args=args, params=r.params, shape=(), dtype=None)
                nodes.append(call)
                for i, o in enumerate(r.outputs):
                    v = g.values[o]
                    item = Node(len(nodes), "item", args=(call,), shape=v.shape, dtype=v.dtype, index=i)
                    nodes.append(item)
                    of_value[o] = item
            else:
                v = g.values[r.outputs[0]]
                n = Node(len(nodes), "call", prim=r.prim, args=args, params=r.params, shape=v.shape, dtype=v.dtype)
                nodes.append(n)
                of_value[r.outputs[0]] = n
                if r.prim.inplace:  # a multi-tensor update writes its first inputs: they hold the
                    for o, a in zip(r.outputs[1:], args[1:]):  # new values (run in captured order)
                        of_value[o] = a
            for n in nodes[first:]:  # gradient sums the engine does between rules count too
                n.phase = (
                    "backward" if traced.diff_outputs is not None and r.index >= traced.n_forward_ops else "forward"
                )
        outputs = [of_value[ref[1]] if ref[0] == "value" else ref for ref in traced.out_refs]
        if traced.diff_outputs is None:
            return cls(nodes, outputs, traced)
        n_out = len(outputs)
        outputs += [of_value[v] for v in traced.diff_outputs]
        grad_inputs = list(traced.input_grads)
        outputs += [
            ("none", None) if traced.input_grads[v] is None else of_value[traced.input_grads[v]] for v in grad_inputs
        ]
        graph = cls(nodes, outputs, traced)
        graph.n_out, graph.n_diff = n_out, len(traced.diff_outputs)
        graph.grad_inputs = [of_value[v] for v in grad_inputs]
        return graph

    def users(self) -> dict:
        """Node -> list of nodes that read it."""
        users = {n: [] for n in self.nodes}
        for n in self.nodes:
            for a in n.inputs():
                users.setdefault(a, []).append(n)  # a view's nodes may read nodes outside it
        return users

    def output_nodes(self) -> set:
        return {o for o in self.outputs if isinstance(o, Node)}

    def replace_all_uses(self, old: Node, new: Node) -> None:
        for n in self.nodes:
            if any(a is old for a in n.args):
                n.args = tuple(new if a is old else a for a in n.args)
        self.outputs = [new if o is old else o for o in self.outputs]

    def counts(self) -> Counter:
        """How many nodes of each op: ``Counter({'mul': 2, ...})`` (calls only)."""
        return Counter(n.op for n in self.nodes if n.kind == "call")

    def __str__(self) -> str:
        params = ", ".join(f"%{n.id}: {n.type_str()}" for n in self.nodes if n.kind == "placeholder")
        lines = [f"def graph({params}):"]
        for n in self.nodes:
            if n.kind == "placeholder":
                continue
            if n.kind == "constant":
                rhs = f"constant({n.value.shape and list(n.value.shape)})"
            elif n.kind == "item":
                rhs = f"%{n.args[0].id}[{n.index}]"
            else:
                args = [_fmt(a) for a in n.args] + [f"{k}={v!r}" for k, v in n.params.items()]
                rhs = f"{n.op}({', '.join(args)})"
            lhs = f"%{n.id}" if n.dtype is None else f"%{n.id}: {n.type_str()}"
            lines.append(f"    {lhs} = {rhs}")
        outs = ", ".join(repr(o) if isinstance(o, Node) else "<tensor>" for o in self.outputs)
        lines.append(f"    return ({outs}{',' if len(self.outputs) == 1 else ''})")
        return "\n".join(lines)
