"""A whole training step as one compiled graph: forward, ``backward()``, ``zero_grad()``, ``step()``.

When the compiled function runs ``loss.backward()`` itself, its trace holds the forward ops, the
primitives' gradient rules as the engine ran them (with the ``.grad`` accumulation as explicit
ops), and the optimizer's in-place updates. :class:`StepEntry` replays that graph in captured
order under ``no_grad`` (every gradient is an explicit op, so no autograd graph is recorded),
then applies the writebacks: ``p.grad`` and new ``optimizer.state`` entries take the values the
trace ended with (see ``effects.py``). Parameters and optimizer state are written in place by
the update ops, exactly as eagerly.

Gradient kernels that read their autograd node (``layer_norm_backward``, the fused losses,
``recurrent_sequence_backward``) are replayed too: the forward op that made the node runs with
gradients on, so it records a fresh node holding what its forward saved, and the gradient op
is given that node (or the node's attribute it read).

Example:
    >>> import ember
    >>> w = ember.randn(3, requires_grad=True)
    >>> opt = ember.optim.SGD([w], lr=0.1)
    >>> @ember.compile
    ... def step(x):
    ...     opt.zero_grad()
    ...     loss = (x * w).sum()
    ...     loss.backward()
    ...     opt.step()
    ...     return loss
    >>> _ = step(ember.ones(3)); w.grad
    tensor([1., 1., 1.])
"""

from __future__ import annotations

import copy

from ember.autograd.grad_mode import enable_grad, no_grad
from ember.autograd.node import Node as AutogradNode
from ember.backends import meta as _meta
from ember.compile.capture import Unsupported, unflatten
from ember.compile.effects import write_back
from ember.compile.ir import IRGraph, Node
from ember.compile.passes import dce
from ember.compile.step_fusion import fuse_step, run_fused
from ember.ops.dispatch import apply
from ember.tensor import Tensor

__all__ = ["NodeRef", "attach_node_refs", "build_step_graph", "node_eager", "node_steps", "StepEntry"]


class NodeRef:
    """A gradient op's parameter: the autograd node made by op ``op`` (or its ``attr``)."""

    __slots__ = ("op", "attr")

    def __init__(self, op: Node, attr: str | None):
        self.op, self.attr = op, attr

    def __repr__(self) -> str:
        return f"grad_fn(%{self.op.id})" + (f".{self.attr}" if self.attr else "")


def _has_trace_state(v) -> bool:
    if isinstance(v, (AutogradNode, _meta.MetaArray)):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_trace_state(x) for x in v)
    return False


def build_step_graph(traced) -> IRGraph:
    """The IR of a step trace: outputs are the function's results, then the writebacks' values,
    then the ops whose autograd nodes a gradient op reads (kept for the replay)."""
    wb_refs = [("none", None) if w[-1] is None else w[-1] for w in traced.writebacks]
    wb_refs = [r for r in wb_refs if r[0] != "python"]
    t = copy.copy(traced)
    t.out_refs = list(traced.out_refs) + wb_refs
    graph = IRGraph.from_traced(t)
    calls = [n for n in graph.nodes if n.kind == "call"]
    for n, r in zip(calls, traced.graph.ops):
        n.phase = r.phase  # the gradient rules the engine ran, for printing and drawing
    for n in graph.nodes:
        if n.kind == "item":
            n.phase = n.args[0].phase
    needs = attach_node_refs(graph, traced)
    graph.outputs += needs
    graph.n_ret = len(traced.out_refs)
    graph.needs_node = needs
    return graph


def attach_node_refs(graph: IRGraph, traced) -> list:
    """Replace each gradient op's autograd-node parameter by a :class:`NodeRef` to the call
    that made the node; returns those calls. Call before any pass (calls align with ops)."""
    calls = [n for n in graph.nodes if n.kind == "call"]
    needs = []
    for (k, name), (src, attr) in traced.node_refs.items():
        if src is None:
            raise Unsupported(f"'{calls[k].op}' reads an autograd node that no captured op made")
        calls[k].params = {**calls[k].params, name: NodeRef(calls[src], attr)}
        if calls[src] not in needs:
            needs.append(calls[src])
    for n in calls:
        for name, v in n.params.items():
            if _has_trace_state(v):
                raise Unsupported(f"'{n.op}' takes state of the trace as its parameter '{name}'; it cannot be replayed")
    return needs


def node_steps(steps: list, needs: set, key) -> list:
    """``steps`` with each call that makes a node a gradient op reads, and each such gradient op,
    run by a function that keeps the nodes in ``env`` under ``(key, call)``. A whole-graph
    program (``program_runtime.Program``) is returned as it is: it was built with those calls
    run by :func:`node_eager`."""
    if hasattr(steps, "run"):
        return steps
    from ember.compile.lower import Steps

    out = Steps()
    out.plan = getattr(steps, "plan", None)
    for kind, x in steps:
        if kind == "node" and x.kind == "call" and x in needs:
            out.append(("fn", _maker(x, key)))
        elif kind == "node" and x.kind == "call" and any(isinstance(v, NodeRef) for v in x.params.values()):
            out.append(("fn", _reader(x, key)))
        else:
            out.append((kind, x))
    return out


def node_eager(needs: set, key):
    """``eager(node, args, env)`` for ``program_runtime.build_programs``' ``force_eager`` nodes:
    a call in ``needs`` runs with autograd and keeps its node in ``env[(key, call)]``; a gradient
    op reads its ``NodeRef`` parameters from there; anything else runs through ``apply``."""

    def eager(n, args, env):
        if n in needs:
            out = _run_with_node(n, args, n.params)
            env[(key, n)] = (out[0] if isinstance(out, tuple) else out)._node
            return out
        params = {
            k: _resolve(v, {v.op: env[(key, v.op)]}) if isinstance(v, NodeRef) else v for k, v in n.params.items()
        }
        return apply(n.prim, *args, **params)

    return eager


def _maker(n: Node, key):
    def step(env):
        args = [env[a] if isinstance(a, Node) else a for a in n.args]
        out = _run_with_node(n, args, n.params)
        env[n] = out
        env[(key, n)] = (out[0] if isinstance(out, tuple) else out)._node

    return step


def _reader(n: Node, key):
    def step(env):
        args = [env[a] if isinstance(a, Node) else a for a in n.args]
        params = {
            k: _resolve(v, {v.op: env[(key, v.op)]}) if isinstance(v, NodeRef) else v for k, v in n.params.items()
        }
        env[n] = apply(n.prim, *args, **params)

    return step


def _value(env, arg_tensors, ref):
    if isinstance(ref, Node):
        return env[ref]
    kind, x = ref
    if kind == "arg":
        return arg_tensors[x]
    return None if kind == "none" else x


class StepEntry:
    """One compiled step graph for one guard set (see the module docstring)."""

    joint = False
    writes = True  # a failed run may have written state: never silently rerun eagerly
    steps = ()  # the schedule with fused groups (step_fusion.fuse_step), if any

    def __init__(self, traced, graph: IRGraph):
        from ember.compile.effects import FastGuards, Guards, TensorGuards, structure

        self.traced = traced
        self.graph = graph
        self.placeholders = [n for n in graph.nodes if n.kind == "placeholder"]
        self.order = [n for n in graph.nodes if n.kind != "placeholder"]
        self.needs_node = set(graph.needs_node)
        self.reads_node = {
            n for n in self.order if n.kind == "call" and any(isinstance(v, NodeRef) for v in n.params.values())
        }
        shape = structure([m for m, _ in traced.module_guards])  # parameters, buffers, children
        self.guards = Guards(traced.guard_grads, traced.opt_guards, traced.module_guards, shape)
        self.consts = TensorGuards([b[1] for b in traced.bindings if b[0] == "const"])
        self.grad_reads = [
            (b[1], n.shape, n.dtype) for n, b in zip(self.placeholders, traced.bindings) if b[0] == "grad"
        ]
        self.ran = False
        self.fast_guards = FastGuards(
            self._check,
            tensors=[t for t, *_ in self.consts.items],
            none=[p for p, _ in self.guards.grads],
            read=[p for p, _, _ in self.grad_reads],
            modules=[m for m, _ in self.guards.modules],
            opts=[o.opt for o in self.guards.opts],
            structure=shape,
        )
        self.checked = None  # the guarded arrays of a passing check (a program run takes them)

    def consts_ok(self) -> bool:
        """Whether this graph's guards hold (fast while the objects they read are the same)."""
        if not self.fast_guards.check():
            return False
        self.checked = self.fast_guards.datas
        return True

    def _check(self) -> bool:
        if not self.consts.check():
            return False
        for p, shape, dtype in self.grad_reads:
            g = p._grad
            if g is None or tuple(g.shape) != shape or g.dtype != dtype:
                return False
        return self.guards.check()

    def run(self, arg_tensors: list):
        env = {}
        for n in self.placeholders:
            kind, ref = n.binding
            env[n] = arg_tensors[ref] if kind == "arg" else ref._grad if kind == "grad" else ref
        nodes = {}
        with no_grad():
            fused = bool(self.steps) and run_fused(self, env)  # step_fusion.py
            for n in () if fused else self.order:
                if n.kind == "call":
                    args = [env[a] if isinstance(a, Node) else a for a in n.args]
                    params = n.params
                    if n in self.reads_node:
                        params = {k: _resolve(v, nodes) for k, v in params.items()}
                    if n in self.needs_node:
                        out = _run_with_node(n, args, params)
                        first = out[0] if isinstance(out, tuple) else out
                        nodes[n] = first._node
                    else:
                        out = apply(n.prim, *args, **params)
                    env[n] = out
                elif n.kind == "item":  # capture numbers the tensor outputs, skipping the None ones
                    env[n] = [t for t in env[n.args[0]] if t is not None][n.index]
                elif n.kind == "constant":
                    env[n] = n.value
        g = self.graph
        outs = [_value(env, arg_tensors, o) for o in g.outputs[: g.n_ret]]
        k = g.n_ret
        for w in self.traced.writebacks:
            ref = w[-1]
            if ref is not None and ref[0] == "python":
                value = ref[1]
            else:
                value = _value(env, arg_tensors, g.outputs[k])
                k += 1
            write_back(w, value)
        return unflatten(self.traced.out_spec, outs)


def _resolve(v, nodes):
    if not isinstance(v, NodeRef):
        return v
    node = nodes[v.op]
    return node if v.attr is None else getattr(node, v.attr)


def _run_with_node(n: Node, args: list, params: dict):
    """Run a forward op with gradients on, so it records the autograd node its gradient op
    reads; an input is marked as requiring grad when none does."""
    tensors = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    if not any(args[i]._requires_grad for i in tensors):
        alias = args[tensors[0]].detach()
        alias._requires_grad = True
        args = list(args)
        args[tensors[0]] = alias
    with enable_grad():
        return apply(n.prim, *args, **params)


def prepare(traced, log=None) -> StepEntry:
    """Build the step graph, drop dead code, fuse (``step_fusion.py``: only passes that are safe
    around in-place writes and aliasing) and return the entry that runs it. What follows the
    capture is kept on disk (``step_cache.py``): a new process with the same graph loads it."""
    from ember.compile import step_cache
    from ember.compile.step_program import attach  # a whole-step native program, where it builds

    graph = build_step_graph(traced)
    if log:
        log(f"captured step:\n{graph}\nops: {dict(graph.counts())}")
    k = dce(graph)
    if log and k:
        log(f"after dce ({k} changes):\n{graph}")
    key = None if log else step_cache.step_key(graph)  # with logs on, every pass runs and prints
    if key is not None:
        stored = step_cache.load(key[0], key[1], graph.traced)
        if stored is not None:
            return _from_cache(traced, stored)
    entry = StepEntry(traced, graph)
    fuse_step(entry, log)  # in-place writes order the groups (step_fusion.py)
    attach(entry, log)
    if key is not None:  # before any run: a run's state is not the compile's result
        stored = {"graph": entry.graph, "order": entry.order, "steps": entry.steps, "rendered": entry.rendered}
        step_cache.save(key[0], key[1], graph.traced, stored)
    return entry


def _from_cache(traced, stored: dict) -> StepEntry:
    """The entry of a step graph whose passes and rendering a previous process did."""
    from ember.compile.step_program import attach

    entry = StepEntry(traced, stored["graph"])
    entry.order = stored["order"]
    if stored["steps"]:
        entry.steps = stored["steps"]
        entry.fused = None
    if stored["rendered"] is not None:
        attach(entry, None, stored["rendered"])
    return entry
