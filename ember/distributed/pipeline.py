"""Pipeline parallelism: a model cut into stages, one per rank, fed micro-batch by micro-batch.

Activations go forward and their gradients backward by point-to-point messages (a small shape
header, then the data). Two schedules:

* ``ScheduleGPipe``: every micro-batch forward, then every backward (memory: all activations).
* ``Schedule1F1B``: after ``stages - stage - 1`` warm-up forwards each stage alternates one
  forward and one backward, so at most ``stages`` micro-batches' activations are alive.

Both have the same bubble, ``(p - 1) / (m + p - 1)`` of the step for p stages and m
micro-batches; ``step`` also measures each stage's idle fraction. Sends are nonblocking, so
neighbours that send to each other at the same time (1F1B's steady state) cannot deadlock.

Example (``ember run -n 2``):
    >>> stage = PipelineStage(split_sequential(model, 2)[rank], rank, 2)   # doctest: +SKIP
    >>> sched = Schedule1F1B(stage, n_microbatches=4, loss_fn=F.cross_entropy)  # doctest: +SKIP
    >>> losses = []; sched.step(x if rank == 0 else None, target=y, losses=losses)  # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np

import ember
import ember.distributed as dist
from ember import nn
from ember.tensor import _wrap

__all__ = ["split_sequential", "PipelineStage", "ScheduleGPipe", "Schedule1F1B", "bubble_fraction"]

_MAX_DIMS = 8


def split_sequential(model: nn.Sequential, num_stages: int) -> list[nn.Sequential]:
    """Cut a Sequential into ``num_stages`` consecutive parts with about equal parameter counts."""
    layers = list(model)
    if len(layers) < num_stages:
        raise ValueError(f"split_sequential: {len(layers)} layers cannot make {num_stages} stages")
    sizes = [sum(p.numel() for p in m.parameters()) + 1 for m in layers]
    total, parts, start, acc = sum(sizes), [], 0, 0
    for i, s in enumerate(sizes):
        acc += s
        left_layers, left_stages = len(layers) - i - 1, num_stages - len(parts) - 1
        if left_stages and (acc >= total * (len(parts) + 1) / num_stages or left_layers == left_stages):
            parts.append(nn.Sequential(*layers[start : i + 1]))
            start = i + 1
    parts.append(nn.Sequential(*layers[start:]))
    return parts


def bubble_fraction(num_stages: int, n_microbatches: int) -> float:
    """The idle share of a GPipe or 1F1B step: ``(p - 1) / (m + p - 1)``."""
    return (num_stages - 1) / (n_microbatches + num_stages - 1)


class PipelineStage:
    """This rank's part of the model: stage ``stage_index`` of ``num_stages`` (ranks of ``group`` in order)."""

    def __init__(self, submodule: nn.Module, stage_index: int, num_stages: int, group=None):
        self.submod = submodule
        self.stage_index = stage_index
        self.num_stages = num_stages
        self.group = group
        ranks = dist.get_process_group_ranks(group) if group is not None else list(range(dist.get_world_size()))
        if len(ranks) != num_stages:
            raise ValueError(f"PipelineStage: {num_stages} stages need a group of {num_stages} ranks, got {len(ranks)}")
        self.prev = ranks[stage_index - 1] if stage_index > 0 else None
        self.next = ranks[stage_index + 1] if stage_index < num_stages - 1 else None
        self.is_first = stage_index == 0
        self.is_last = stage_index == num_stages - 1

    def parameters(self):
        return self.submod.parameters()


class _Schedule:
    def __init__(self, stage: PipelineStage, n_microbatches: int, loss_fn=None):
        if stage.is_last and loss_fn is None:
            raise ValueError("the last pipeline stage needs a loss_fn")
        self.stage, self.m, self.loss_fn = stage, n_microbatches, loss_fn
        self.last_stats: dict = {}

    # ----- messages -----
    def _send(self, t, peer, tag):
        header = np.zeros(_MAX_DIMS + 2, np.int64)
        header[0], header[1] = t.ndim, _DTYPES.index(t._data.dtype.name)
        header[2 : 2 + t.ndim] = t.shape
        data = _wrap(np.ascontiguousarray(t._data))
        self._pending += [
            dist.isend(_wrap(header), peer, self.stage.group, tag),
            dist.isend(data, peer, self.stage.group, tag + 1),
        ]

    def _recv(self, peer, tag):
        header = _wrap(np.zeros(_MAX_DIMS + 2, np.int64))
        dist.recv(header, peer, self.stage.group, tag)
        h = header._data
        shape = tuple(int(d) for d in h[2 : 2 + int(h[0])])
        out = _wrap(np.empty(shape, np.dtype(_DTYPES[int(h[1])])))
        dist.recv(out, peer, self.stage.group, tag + 1)
        return out

    # ----- one micro-batch -----
    def _forward(self, i, inputs, targets):
        st = self.stage
        x = inputs[i] if st.is_first else self._recv(st.prev, 4 * i)
        if not st.is_first and x.is_floating_point():
            x.requires_grad_(True)
        t0 = time.perf_counter()
        y = st.submod(x)
        if st.is_last:
            loss = self.loss_fn(y, targets[i]) / self.m
            self._losses.append(loss.detach() * self.m)
            y = loss
        self._busy += time.perf_counter() - t0
        if not st.is_last:
            self._send(y.detach(), st.next, 4 * i)
        self._saved[i] = (x, y)

    def _backward(self, i):
        st = self.stage
        x, y = self._saved.pop(i)
        g = None if st.is_last else self._recv(st.next, 4 * i + 2)
        t0 = time.perf_counter()
        y.backward(g)
        self._busy += time.perf_counter() - t0
        if not st.is_first and x.grad is not None:
            self._send(x.grad, st.prev, 4 * i + 2)

    # ----- a whole step -----
    def step(self, x=None, target=None, losses: list | None = None):
        """Run one step of ``n_microbatches``; gradients accumulate in the stage's parameters.

        The first stage passes the batch ``x``; the last passes ``target`` and gets each
        micro-batch's loss appended to ``losses`` (their mean is the batch loss).
        """
        st = self.stage
        inputs = x.chunk(self.m) if st.is_first else None
        targets = target.chunk(self.m) if st.is_last else None
        if (inputs is not None and len(inputs) != self.m) or (targets is not None and len(targets) != self.m):
            raise ValueError(f"pipeline step: the batch cannot be cut into {self.m} micro-batches")
        self._pending, self._saved, self._losses, self._busy = [], {}, [], 0.0
        t0 = time.perf_counter()
        for kind, i in self._order():
            if kind == "F":
                self._forward(i, inputs, targets)
            else:
                self._backward(i)
        for w in self._pending:
            w.wait()
        total = time.perf_counter() - t0
        self.last_stats = {
            "seconds": total,
            "busy_seconds": self._busy,
            "measured_bubble": 1.0 - self._busy / total if total else 0.0,
            "ideal_bubble": bubble_fraction(st.num_stages, self.m),
        }
        if losses is not None and st.is_last:
            losses.extend(self._losses)
        return ember.stack(self._losses).mean() if st.is_last else None

    def _order(self):
        raise NotImplementedError


class ScheduleGPipe(_Schedule):
    """All forwards, then all backwards (GPipe)."""

    def _order(self):
        return [("F", i) for i in range(self.m)] + [("B", i) for i in range(self.m)]


class Schedule1F1B(_Schedule):
    """Warm-up forwards, then one forward / one backward, then the remaining backwards (PipeDream-flush)."""

    def _order(self):
        st = self.stage
        warm = min(st.num_stages - st.stage_index - 1, self.m)
        order = [("F", i) for i in range(warm)]
        f, b = warm, 0
        while f < self.m:
            order.append(("F", f))
            f += 1
            order.append(("B", b))
            b += 1
        order += [("B", i) for i in range(b, self.m)]
        return order


_DTYPES = ["float32", "float64", "float16", "int64", "int32", "bool", "uint8", "int8"]
