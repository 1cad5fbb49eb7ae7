"""A captured whole training step (``compile/step.py``'s ``StepEntry``) as one native program.

``attach(entry)`` builds a whole-graph program (``codegen/program.py``) over the step graph in
captured order (forward, gradient rules, ``.grad`` accumulation, the optimizer's in-place
update), as fused by step_fusion.py (in-place writes order the groups). The ops whose autograd node a
gradient op reads, and those gradient ops, run through the step's own eager path between native
segments (they need the node: ``step._run_with_node``, ``step._resolve``); everything else runs
in C: GEMMs, hand kernels, loops, and the fused Adam/AdamW update and step-count increment.
The entry's ``run`` then enters C once per segment and does the same ``.grad`` and optimizer
state writebacks as before. When no program can be built, the entry is left as it was.

It is attached by ``step.prepare`` (one call) where the step module exists, when
``EMBER_STEP_PROGRAM=1`` is set: native kernels round differently from the eager ones, and a few
tests of the op-by-op replay compare at tolerances only bitwise replay meets (a gradient that is
zero up to rounding, such as an attention key bias's, that Adam scales to +-lr).

Example:
    >>> from ember.compile.step_program import attach  # see tests/test_compile_program.py
"""

from __future__ import annotations

import os
import types

from ember.autograd.grad_mode import no_grad
from ember.compile.program_runtime import build_programs
from ember.ops.dispatch import apply

__all__ = ["attach"]

# Gradient ops whose lowering recomputes what their autograd node saved (codegen/lowerings.py).
_RECOMPUTED = frozenset(
    {"class_loss_backward", "layer_norm_backward", "gelu_backward", "scaled_dot_product_attention_backward"}
)


def attach(entry, log=None) -> bool:
    """Run ``entry`` (a ``StepEntry``) as a program from now on; False if none could be built
    (or ``EMBER_STEP_PROGRAM`` is not ``1``)."""
    if os.environ.get("EMBER_STEP_PROGRAM", "0") != "1":
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
    # First without the nodes that lowerings recompute (the fused loss's and layer norm's
    # gradients recompute what the node saved, gelu's reads x): their forward ops then need no
    # node either. A lowering that fails there refuses the program; then all run eagerly.
    free = {n for n in entry.reads_node if n.op in _RECOMPUTED}
    still = set()
    for n in entry.reads_node - free:
        still |= {v.op for v in n.params.values() if type(v).__name__ == "NodeRef"}
    optimistic = (set(entry.reads_node) - free) | (set(entry.needs_node) & still)
    built = None
    if optimistic != force:
        built = build_programs([(entry.graph, steps)], log=log, force_eager=optimistic, eager=eager)
    if built is None:
        built = build_programs([(entry.graph, steps)], log=log, force_eager=force, eager=eager)
    if built is None:
        return False
    (program,), _kernels = built
    entry.program = program
    entry.run = types.MethodType(_run, entry)
    entry._program_nodes = nodes
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
            w[1]._grad = None if value is None else value._owned()
        else:
            _, opt, p, key, _ = w
            opt.state[p][key] = value
    return unflatten(self.traced.out_spec, outs)
