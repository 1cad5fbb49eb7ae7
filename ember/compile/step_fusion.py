"""Fusion in whole training steps (``step.py``'s step graphs), which write tensors in place.

A step graph holds the forward, the gradient rules, the ``.grad`` accumulation (``add_``) and the
optimizer's in-place updates (``_foreach_*_``, ``_fused_adam_``...). Only passes that are safe
around in-place writes and aliasing run on it: ``dce``, ``functionalize`` (a write into a fresh
temporary nobody else reads becomes out of place), ``functionalize_writes`` (a chain of
``add_``/``sub_``/``mul_``/``div_`` on a parameter or state tensor becomes out-of-place ops and
one ``copy_``: an update written with primitives fuses) and ``fuse``, which treats every in-place write
as an ordering constraint (``passes.fusion.order_edges``): a group never moves a read of some
memory past a write to it, nor a write past a read, and the schedule keeps them in captured
order. Calls whose autograd node a gradient op reads, and those gradient ops, stay unfused, and
so do reductions (a fused sum accumulates in double, eager's in float32: over 20 steps the
optimizer state drifted past the step tests' tolerances in ResNet's pooling).

:func:`fuse_step` sets ``entry.steps``, the fused schedule: ``step_program.attach`` builds a
program from it, else :func:`run_fused` runs it (``StepEntry.run``); a failed kernel build
leaves the entry unfused.

Example:
    >>> from ember.compile.step_fusion import fuse_step  # see tests/test_compile_step_fusion.py
"""

from __future__ import annotations

import os

from ember.compile.codegen.cstyle import access
from ember.compile.ir import Node
from ember.compile.lower import schedule
from ember.compile.passes import functionalize
from ember.compile.passes.functionalize import functionalize_writes
from ember.compile.passes.fusion import _ALIASING, _storage, fuse
from ember.compile.passes.updates import decompose_updates
from ember.compile.runtime import BuildError, build_kernels, execute
from ember.ops.dispatch import apply

__all__ = ["fuse_step", "in_place_copies", "run_fused", "write_into"]


def fuse_step(entry, log=None) -> int:
    """Fuse ``entry``'s step graph (a ``step.StepEntry``): sets ``entry.steps``; returns the
    number of groups (0: the entry is unchanged). The kernels are built on the first
    :func:`run_fused` (a program built from the schedule needs none). ``EMBER_STEP_FUSION=0``
    turns it off."""
    if os.environ.get("EMBER_STEP_FUSION", "1") == "0":
        return 0
    graph = entry.graph
    k = decompose_updates(graph)  # the optimizer's update from primitives (passes/updates.py)
    if k and log:
        log(f"after decompose_updates ({k} changes):\n{graph}")
    k += functionalize(graph) + functionalize_writes(graph)
    if k:  # the replay without kernels runs the rewritten graph too
        entry.order = [n for n in graph.nodes if n.kind != "placeholder"]
        if log:
            log(f"after functionalize ({k} changes):\n{graph}")
    try:
        groups = fuse(graph, log=log, reductions=False)  # eager's float32 sums: state stays eager's
        steps = schedule(graph, groups)
    except RuntimeError as e:  # fusion must keep the graph acyclic; never fail the call
        if log:
            log(f"no fusion in the step: {e}")
        return 0
    if not groups:
        return 0
    entry.steps = steps
    entry.fused = None
    if log and steps.plan is not None:
        log(str(steps.plan))
    return len(groups)


def run_fused(entry, env: dict) -> bool:
    """Run ``entry``'s fused schedule over ``env`` (placeholders bound; filled in place), under
    the caller's ``no_grad``. Builds the kernels on the first call; False (nothing run, the
    schedule dropped) when they cannot be built."""
    if entry.fused is None:
        from ember.compile.step import node_steps

        groups = [x for kind, x in entry.steps if kind == "group"]
        try:
            kernels = {g.id: fn for g, fn in zip(groups, build_kernels(groups))}
        except BuildError:
            entry.steps = ()
            return False
        wrapped = node_steps(entry.steps, set(entry.needs_node), "step")
        entry.fused = (_write_in_place(entry.steps, wrapped), kernels)
    steps, kernels = entry.fused
    if steps.plan is not entry.steps.plan:  # a dynamic-shape template plans again per size
        steps.plan = entry.steps.plan  # (dynamic.py): its groups then write their own arrays
    execute(steps, kernels, env)
    return True


def in_place_copies(base, outputs=()) -> list:
    """The ``copy_`` steps of schedule ``base`` whose source an elementwise group may write
    straight into their destination: ``[(copy step index, copy node, group output, placeholder)]``.

    ``functionalize_writes``' copies (an optimizer update's new parameter, ``m`` and ``v``): the
    group reads that placeholder in full (each element read before it is written), its output
    has the placeholder's shape and dtype and is no graph output (``outputs``), nothing views
    the placeholder, and from the group on nothing but the copy reads or writes its memory."""
    made = {o: (k, g) for k, (kind, g) in enumerate(base) if kind == "group" for o in g.outputs}
    readers: dict = {}  # storage -> steps reading it (a write reads what it writes)
    viewed = set()  # placeholders some view or alias reads: their memory is read under another name
    for k, (kind, x) in enumerate(base):
        for a in x.inputs if kind == "group" else x.inputs():
            readers.setdefault(_storage(a), []).append(k)
            if kind == "node" and x.kind == "call" and (x.prim.view or x.op in _ALIASING):
                viewed.add(_storage(a))
    outs = set(outputs)
    found, taken = [], set()
    for k, (kind, c) in enumerate(base):
        if kind != "node" or c.kind != "call" or c.op != "copy_" or c.params or len(c.args) != 2:
            continue
        dst, o = c.args
        if not isinstance(dst, Node) or dst.kind != "placeholder" or o not in made or dst in viewed:
            continue
        kg, g = made[o]
        if g.kind != "elementwise" or dst not in g.inputs or access(dst.shape, g.shape) != ("full",):
            continue
        if o.shape != dst.shape or o.dtype != dst.dtype or o in outs or o in taken or dst in taken:
            continue
        if any(j > kg and j != k for j in readers.get(dst, ())):
            continue
        taken |= {o, dst}
        found.append((k, c, o, dst))
    return found


def write_into(steps, outputs) -> dict:
    """For a whole-step program (``codegen/program.py``): ``{copy_ node: (group output,
    placeholder)}`` of :func:`in_place_copies`: the group's kernel takes the placeholder's
    memory as that output and the copy is no step (an optimizer update is one pass, in place)."""
    return {c: (o, dst) for _k, c, o, dst in in_place_copies(steps, outputs)}


def _write_in_place(base, steps):
    """Let an elementwise group write an output straight into the placeholder a ``copy_`` then
    fills with it (:func:`in_place_copies`): ``plan.over_eager`` gives the group the
    placeholder's array (``runtime._out_buffer``: when contiguous and its own), and the
    ``copy_`` only copies when the group wrote elsewhere. ``base``: the schedule before
    ``step.node_steps`` wrapped it into ``steps`` (step for step). Returns ``steps``, changed."""
    plan = getattr(steps, "plan", None)
    if plan is None:
        return steps
    for k, c, o, dst in in_place_copies(base):
        if o in plan.over_eager or dst in plan.over_eager.values():
            continue
        plan.offsets.pop(o, None)
        plan.over_eager[o] = dst
        steps[k] = ("fn", _copy_unless_written(c, dst, o))
    return steps


def _copy_unless_written(c, dst, o):
    def step(env):
        if env[o]._data is not env[dst]._data:  # the group could not write there: copy
            apply(c.prim, env[dst], env[o])
        env[c] = env[dst]

    return step
