"""Training through a compiled graph: the forward and its captured backward as one autograd node.

A joint trace (``capture.trace(..., joint=True)``) records the forward and then the primitives'
gradient rules run on the meta tracers. After the passes, the graph is partitioned by phase: the
forward part runs (fused) inside :class:`JointFunction`'s forward and keeps every forward value
the backward part reads (no recomputation, no min-cut yet); the backward part runs (fused) when
autograd reaches the node, and returns the gradient of each input.

Example:
    >>> from ember.compile.joint import partition  # see tests/test_compile.py
"""

from __future__ import annotations

from ember.autograd.function import Function
from ember.compile.ir import IRGraph, Node
from ember.compile.runtime import execute

__all__ = ["partition", "JointFunction"]


def partition(graph) -> tuple:
    """Split a joint graph into ``(forward view, backward view, saved forward nodes)``.

    Views are :class:`IRGraph` objects over the same nodes: the forward's outputs are the
    function's outputs plus what the backward reads; the backward's are the input gradients.
    """
    ph = [n for n in graph.nodes if n.kind == "placeholder"]
    fwd = [n for n in graph.nodes if n.kind != "placeholder" and n.phase == "forward"]
    bwd = [n for n in graph.nodes if n.kind != "placeholder" and n.phase != "forward"]
    in_fwd = set(fwd)
    grads = [o for o in graph.outputs[graph.n_out + graph.n_diff :] if isinstance(o, Node)]
    saved = []
    for a in [a for n in bwd for a in n.inputs()] + grads:  # what the backward reads, and
        if a in in_fwd and a not in saved:  # gradients that are forward values themselves
            saved.append(a)
    fwd_outs = [o for o in graph.outputs[: graph.n_out + graph.n_diff] if isinstance(o, Node)]
    fwd_view = IRGraph(ph + fwd, fwd_outs + saved)
    bwd_view = IRGraph(ph + bwd, grads)
    return fwd_view, bwd_view, saved


class JointFunction(Function):
    """``apply(entry, *placeholder_tensors)`` -> the forward's node outputs, as one graph node."""

    @staticmethod
    def forward(ctx, entry, *inputs):
        env = dict(zip(entry.placeholders, inputs))
        execute(entry.joint_steps, entry.kernels, env)
        ctx.entry = entry
        ctx.env = {n: env[n] for n in entry.saved}  # what the backward reads, and the inputs
        for n in entry.placeholders:
            ctx.env[n] = env[n]
        for n in entry.needs:  # the autograd nodes gradient kernels read (step.node_steps)
            ctx.env[("grad_fn", n)] = env[("grad_fn", n)]
        outs = tuple(env[n] for n in entry.ret_nodes)
        nondiff = [t for n, t in zip(entry.ret_nodes, outs) if n not in entry.diff_nodes]
        if nondiff:
            ctx.mark_non_differentiable(*nondiff)
        return outs[0] if len(outs) == 1 else outs

    @staticmethod
    def backward(ctx, *grads):
        entry = ctx.entry
        env = dict(ctx.env)
        for n, k in entry.gouts:
            env[n] = grads[entry.ret_nodes.index(entry.diff_order[k])]
        execute(entry.bwd_steps, entry.kernels, env)
        result = []
        for n in entry.placeholders:
            g = entry.grad_of.get(n)
            result.append(None if g is None else env[g])
        return (None, *result)
