"""Early stop of a checkpoint's recomputation, as PyTorch's non-reentrant checkpoint does by default.

Backward needs from the recomputed segment only what its gradient rules read. The ops at the end
of a segment whose outputs no rule reads (a transformer block's last projection and its residual
add: ``linear``'s rule reads its input and weight, ``add``'s reads nothing) need not be computed
again: PyTorch stops the recomputation once every tensor backward reads has been rebuilt. Here
the first run of the segment notes, per op, its primitive, where its inputs came from and its
output's shape and dtype (:class:`OpLog`); the ops after the last one that must run are then
"replayed" in the recomputation without their kernel: each gets its gradient node, with the same
inputs and parameters, and an uninitialized output of the noted shape that nothing reads.

An op must run when a later op reads its output (a running op reads all its inputs; a skipped op
only those its gradient rule reads), when it is special (views, in-place writes, multi-output,
saved outputs or extra attributes, device moves), has no gradient rule, or draws random numbers.
"""

from __future__ import annotations

import weakref

import numpy as np

from ember._device import CPU
from ember.tensor import Tensor

__all__ = ["OpLog", "Replay", "early_stop", "set_checkpoint_early_stop"]


class _Flag:
    enabled = True


early_stop = _Flag()


class set_checkpoint_early_stop:
    """Context manager: whether checkpoints made inside stop their recomputation early (default
    True), as ``torch.utils.checkpoint.set_checkpoint_early_stop``.

    Example:
        >>> from ember.utils.checkpoint import set_checkpoint_early_stop
        >>> with set_checkpoint_early_stop(False):
        ...     pass
    """

    def __init__(self, enable: bool):
        self.enable = bool(enable)

    def __enter__(self):
        self.prev = early_stop.enabled
        early_stop.enabled = self.enable

    def __exit__(self, *exc):
        early_stop.enabled = self.prev
        return False


def _reads(node_cls, slot: int) -> bool:
    """Whether the gradient rule ``node_cls`` reads input ``slot`` (conservatively True)."""
    if not getattr(node_cls, "saves_values", True):
        return False
    return getattr(node_cls, "reads_inputs", True) is not False


class OpLog:
    """What the first run of a segment saw: per op, the primitive, its inputs' producers (op
    indices, or None for tensors from outside) and its output's shape and dtype."""

    def __init__(self):
        self.ops: list = []  # (prim, [producer index or None per input], shape, dtype) or None
        self._made: dict = {}  # id(output) -> (weakref to it, op index)

    def note(self, prim, inputs, out) -> None:
        from ember.func._vmap_random import RANDOM

        i = len(self.ops)
        ok = (
            isinstance(out, Tensor)
            and out._device is CPU
            and prim.node is not None
            and not prim.save_out  # its gradient reads its output: it must be computed
            and not prim.special
            and prim.name not in RANDOM
            and isinstance(out._data, np.ndarray)
        )
        producers = []
        for x in inputs:
            hit = self._made.get(id(x)) if isinstance(x, Tensor) else None
            producers.append(hit[1] if hit is not None and hit[0]() is x else None)
        self.ops.append((prim, producers, out._data.shape, out._data.dtype) if ok else (prim, producers, None, None))
        if isinstance(out, Tensor):
            self._made[id(out)] = (weakref.ref(out), i)
        elif isinstance(out, tuple):  # multi-output: none of its outputs is skippable anyway
            for o in out:
                if isinstance(o, Tensor):
                    self._made[id(o)] = (weakref.ref(o), i)

    def stop_index(self) -> int:
        """The index of the last op the recomputation must run (-1: none)."""
        needed = set()
        for j in range(len(self.ops) - 1, -1, -1):
            prim, producers, shape, _ = self.ops[j]
            if j in needed or shape is None:
                return j
            for slot, p in enumerate(producers):  # a skipped op: its rule's reads must be rebuilt
                if p is not None and _reads(prim.node, slot):
                    needed.add(p)
        return -1


class Replay:
    """The recomputation's dispatch handler: ops up to ``stop`` run, later ones get their node
    and an uninitialized output (their values are never read), while the primitives match the log."""

    def __init__(self, log: OpLog, stop: int, prev):
        self.log, self.stop, self.prev = log, stop, prev
        self.i = 0
        self.on = True

    def __call__(self, prim, inputs, params):
        i = self.i
        self.i += 1
        ops = self.log.ops
        if self.on and (i >= len(ops) or ops[i][0] is not prim):
            if i > self.stop + 1:  # ops were already replayed without their values
                expected = ops[i][0].name if i < len(ops) else "no op"
                raise RuntimeError(
                    "ember.utils.checkpoint: the recomputation took another path than the forward pass "
                    f"(op {i} is '{prim.name}', the forward ran {expected}); with early stop the segment "
                    "must run the same ops each time (or use set_checkpoint_early_stop(False))"
                )
            self.on = False  # the segment took another path before the replayed tail: compute all
        if not self.on or i <= self.stop:
            return self._run(prim, inputs, params)
        _, _, shape, dtype = ops[i]
        from ember.autograd.grad_mode import state as grad_state
        from ember.ops.dispatch import _record

        t = Tensor.__new__(Tensor)
        t._data = np.empty(shape, dtype)
        if grad_state.enabled and any(isinstance(x, Tensor) and x._requires_grad for x in inputs):
            return _record(prim.node, t, inputs, params)
        return t

    def _run(self, prim, inputs, params):
        if self.prev is not None:
            return self.prev(prim, inputs, params)
        from ember.ops.dispatch import run

        return run(prim, inputs, params)
