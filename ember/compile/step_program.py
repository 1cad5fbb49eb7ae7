"""A captured whole training step (``compile/step.py``'s ``StepEntry``) as one native program.

``attach(entry)`` builds a whole-graph program (``codegen/program.py``) over the step graph in
captured order (forward, gradient rules, ``.grad`` accumulation, the optimizer's in-place
update), as fused by step_fusion.py (in-place writes order the groups). The ops whose autograd node a
gradient op reads, and those gradient ops, run through the step's own eager path between native
segments (they need the node: ``step._run_with_node``, ``step._resolve``); everything else runs
in C: GEMMs, hand kernels, loops, and the fused Adam/AdamW update and step-count increment.
The entry's ``run`` then enters C once per segment and does the same ``.grad`` and optimizer
state writebacks as before. When no program can be built, the entry is left as it was.

It is attached by ``step.prepare`` (one call); ``EMBER_STEP_PROGRAM=0`` turns it off (the step
replays op by op through the eager kernels). Native kernels round differently from the eager ones
(about 1e-7 relative): results agree with eager within float tolerance, not bit for bit.

Example:
    >>> from ember.compile.step_program import attach  # see tests/test_compile_program.py
"""

from __future__ import annotations

import copy
import os
import types

from ember._mutations import bump
from ember.autograd.grad_mode import no_grad
from ember.compile.program_runtime import link_programs, render_programs
from ember.compile.step_fusion import write_into
from ember.compile.step_run import fast_step
from ember.ops.dispatch import apply

__all__ = ["attach"]

# Gradient ops whose lowering needs no autograd node: it reads what the lowered forward op kept
# (codegen/program.py's ctx.keep), or recomputes it (codegen/lowerings_nn.py, lowerings_rnn.py).
_RECOMPUTED = frozenset(
    {
        "class_loss_backward",
        "layer_norm_backward",
        "gelu_backward",
        "scaled_dot_product_attention_backward",
        "recurrent_sequence_backward",  # reads what its lowered forward kept (lowerings_rnn.py, lowerings_gru.py)
        "batch_norm_backward",  # these read what the forward lowering kept (lowerings_conv.py)
        "max_pool2d_backward",
        "avg_pool2d_backward",
    }
)


def _recomputed(n) -> bool:
    return n.op in _RECOMPUTED  # LSTM, GRU and RNN sequences alike (lowerings_rnn.py, lowerings_gru.py)


def attach(entry, log=None, rendered=None) -> bool:
    """Run ``entry`` (a ``StepEntry``) as a program from now on; False if none could be built
    (or ``EMBER_STEP_PROGRAM`` is ``0``). ``rendered``: the program's C as a previous process
    rendered it for this graph (``step_cache.py``), linked instead of rendered again. The
    rendering used is left in ``entry.rendered`` (None without a program)."""
    entry.rendered = None
    if os.environ.get("EMBER_STEP_PROGRAM", "1") == "0":
        return False
    from ember.compile import step as _step

    order = entry.order
    force = set(entry.needs_node) | set(entry.reads_node)
    nodes: dict = {}  # forward op -> the autograd node it recorded (this call)

    def eager(n, args, env=None):
        params = n.params
        if n in entry.reads_node:
            params = {k: _step._resolve(v, nodes) for k, v in params.items()}
        if n in entry.needs_node:
            out = _step._run_with_node(n, args, params)
            nodes[n] = (out[0] if isinstance(out, tuple) else out)._node
            return out
        return apply(n.prim, *args, **params)

    steps = entry.steps or [("node", n) for n in order]  # fused groups: step_fusion.py
    # The step graph keeps the calls whose autograd node a gradient op reads as outputs (so dce
    # keeps them for the op-by-op replay); the program runs every step anyway, and values it
    # need not return stay in its arena instead of being new arrays per call.
    view = copy.copy(entry.graph)
    view.outputs = entry.graph.outputs[: len(entry.graph.outputs) - len(entry.graph.needs_node)]
    if entry.steps:  # update loops write parameters and optimizer state in place (step_fusion.py)
        entry.steps.write_into = write_into(entry.steps, view.outputs)
    views = [(view, steps)]

    def build(force_eager):
        r = render_programs(views, log, force_eager)
        linked = None if r is None else link_programs(r, views, log, eager, pool)
        return (r, linked) if linked is not None else (None, None)

    pool = getattr(entry.traced, "arena_pool", None)  # the compiled function's (api.py)
    built = None if rendered is None else link_programs(rendered, views, log, eager, pool)
    if built is None:
        # First without the nodes that lowerings recompute (the fused loss's and layer norm's
        # gradients recompute what the node saved, gelu's reads x): their forward ops then need no
        # node either. A lowering that fails there refuses the program; then all run eagerly.
        free = {n for n in entry.reads_node if _recomputed(n)}
        still = set()
        for n in entry.reads_node - free:
            still |= {v.op for v in n.params.values() if type(v).__name__ == "NodeRef"}
        optimistic = (set(entry.reads_node) - free) | (set(entry.needs_node) & still)
        rendered = None
        if optimistic != force:
            rendered, built = build(optimistic)
        if built is None:
            rendered, built = build(force)
    if built is None:
        return False
    entry.rendered = rendered
    (program,), _kernels = built
    entry.program = program
    entry._program_nodes = nodes
    general = types.MethodType(_run, entry)
    fast = fast_step(entry, program)
    if fast is None:
        entry.run = general
    else:
        entry.fast_step = fast
        entry.run = lambda arg_tensors: fast.run(entry, arg_tensors, general)
    return True


def _run(self, arg_tensors: list):
    """``StepEntry.run`` with the replay loop replaced by the program."""
    from ember.compile import step as _step
    from ember.compile.capture import unflatten

    env = {}
    for n in self.placeholders:
        kind, ref = n.binding
        env[n] = arg_tensors[ref] if kind == "arg" else ref._grad if kind == "grad" else ref
    self._program_nodes.clear()
    with no_grad():
        self.program.run(env)
    self._program_nodes.clear()
    g = self.graph
    outs = [_step._value(env, arg_tensors, o) for o in g.outputs[: g.n_ret]]
    k = g.n_ret
    for w in self.traced.writebacks:
        ref = w[-1]
        if ref is not None and ref[0] == "python":
            value = ref[1]
        else:
            value = _step._value(env, arg_tensors, g.outputs[k])
            k += 1
        if w[0] == "grad":
            bump()  # compiled steps' guards (ember/_mutations.py)
            w[1]._grad = None if value is None else value._owned()
        else:
            _, opt, p, key, _ = w
            opt.state[p][key] = value
    return unflatten(self.traced.out_spec, outs)
