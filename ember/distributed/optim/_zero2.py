"""ZeRO-2 storage for ``ZeroRedundancyOptimizer(stage=2)``: gradients reduce-scattered during backward.

Each parameter group is cut, in reverse order (about the order backward produces gradients),
into buckets of at most ``bucket_cap_mb``. A bucket is flattened and padded to n equal slices;
rank r keeps slice r of every bucket, and the concatenation of its slices is the one flat
parameter its local optimizer updates (elementwise optimizers do not care about the order).

Every parameter has a post-accumulate-grad hook. When the last gradient of a bucket is final,
the hook copies the bucket's gradients into one flat buffer, drops the full gradients, and
starts an asynchronous reduce-scatter (average) that leaves this rank's slice of the summed
gradient; the backward goes on meanwhile, as DDP's all-reduces do. ``step`` waits for the
buckets, steps the shard, and all-gathers the updated slices back into the parameters.

Buckets are launched in the order their gradients complete: every rank runs the same backward
graph (the engine is single-threaded and deterministic), so the collectives line up. Buckets that
backward left incomplete (parameters without a gradient count as zeros) are sent at ``step``.
"""

from __future__ import annotations

import numpy as np

from ember._mutations import bump
from ember.nn.parameter import Parameter
from ember.tensor import _wrap

__all__ = ["FlatGroup", "GradientShards"]


class _Bucket:
    """Some parameters of one group, flat and padded to ``n`` slices of ``size`` elements."""

    def __init__(self, params: list, n: int, me: int, at: int):
        self.params = params
        self.offsets = np.cumsum([0] + [p._data.size for p in params[:-1]]).tolist()
        self.numel = sum(p._data.size for p in params)
        self.padded = -(-self.numel // n) * n
        self.size = self.padded // n
        self.lo, self.hi = me * self.size, (me + 1) * self.size
        self.at = at  # where this rank's slice sits in the group's shard
        self.pending = len(params)
        self.launched = False

    def flatten(self, get, dtype) -> np.ndarray:
        flat = np.zeros(self.padded, dtype)
        for p, o in zip(self.params, self.offsets):
            a = get(p)
            if a is not None:
                flat[o : o + p._data.size] = a.reshape(-1)
        return flat


class FlatGroup:
    """One parameter group: its buckets and this rank's shard (a Parameter for the local optimizer)."""

    def __init__(self, params: list, n: int, me: int, bucket_bytes: int):
        self.params = list(params)
        dtypes = {p._data.dtype for p in self.params}
        if len(dtypes) > 1:
            raise TypeError(f"ZeroRedundancyOptimizer(stage=2): a parameter group must have one dtype, got {dtypes}")
        self.dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        self.buckets: list[_Bucket] = []
        current, size, at = [], 0, 0
        for p in reversed(self.params):
            current.append(p)
            size += p._data.nbytes
            if size >= bucket_bytes:
                self.buckets.append(_Bucket(current, n, me, at))
                at += self.buckets[-1].size
                current, size = [], 0
        if current:
            self.buckets.append(_Bucket(current, n, me, at))
            at += self.buckets[-1].size
        self.shard_size = at
        self.shard_param = Parameter(_wrap(np.zeros(at, self.dtype)))
        self.refresh_shard()

    def refresh_shard(self) -> None:
        """Copy this rank's slices of the parameters into the shard (they may have been loaded or edited)."""
        dst = self.shard_param._data
        for b in self.buckets:
            dst[b.at : b.at + b.size] = b.flatten(lambda p: p._data, self.dtype)[b.lo : b.hi]

    def merge(self, shards: list[np.ndarray]) -> dict[int, np.ndarray]:
        """Per parameter index in the group: its whole (flat) value, from every rank's shard-shaped array."""
        out = {}
        index = {id(p): j for j, p in enumerate(self.params)}
        for b in self.buckets:
            full = np.concatenate([s[b.at : b.at + b.size] for s in shards])
            for p, o in zip(b.params, b.offsets):
                out[index[id(p)]] = full[o : o + p._data.size]
        return out

    def cut(self, values: dict[int, np.ndarray], dtype) -> np.ndarray:
        """This rank's shard-shaped array from whole (flat) values by parameter index (missing: zeros)."""
        index = {id(p): j for j, p in enumerate(self.params)}
        shard = np.zeros(self.shard_size, dtype)
        for b in self.buckets:
            full = b.flatten(lambda p: values.get(index[id(p)]), dtype)
            shard[b.at : b.at + b.size] = full[b.lo : b.hi]
        return shard


class GradientShards:
    """The hooks and collectives of ZeRO-2 over ``groups`` (see the module docstring)."""

    def __init__(self, groups: list[FlatGroup], pg):
        self.groups, self.pg = groups, pg
        self.where = {id(p): (g, b) for g in groups for b in g.buckets for p in b.params}
        self.inflight: list = []  # (group, bucket, work, sent buffer, received slice)
        self.hooks = [p.register_post_accumulate_grad_hook(self._ready) for g in groups for p in g.params]

    def _ready(self, p) -> None:
        g, b = self.where[id(p)]
        b.pending -= 1
        if b.pending == 0:
            self._launch(g, b)
        else:
            for item in self.inflight:  # let MPI progress the buckets already sent
                if not item[2].is_completed():
                    break

    def _launch(self, g: FlatGroup, b: _Bucket) -> None:
        from ember.distributed import ReduceOp
        from ember.distributed.collectives import _reduce_scatter_unchecked

        flat = b.flatten(lambda p: p._grad._data if p._grad is not None else None, g.dtype)
        bump()  # compiled steps' guards (ember/_mutations.py)
        for p in b.params:
            p._grad = None  # only this rank's slice of the gradient is kept
        out = np.empty(b.size, g.dtype)
        work = _reduce_scatter_unchecked(_wrap(out), _wrap(flat), self.pg, op=ReduceOp.AVG)
        self.inflight.append((g, b, work, flat, out))
        b.pending, b.launched = len(b.params), True

    def finish(self) -> None:
        """Send the buckets backward did not complete, wait for all, and give each shard its gradient."""
        from ember.profiler import record_function

        for g in self.groups:
            for b in g.buckets:
                if not b.launched or b.pending < len(b.params):
                    self._launch(g, b)
        grads = {}
        with record_function("ZeroRedundancyOptimizer.wait_reduce_scatter"):
            for g, b, work, _, out in self.inflight:
                work.wait()
                acc = grads.setdefault(id(g), np.zeros(g.shard_size, g.dtype))
                acc[b.at : b.at + b.size] += out  # twice when gradients were accumulated over backwards
        self.inflight = []
        bump()
        for g in self.groups:
            for b in g.buckets:
                b.launched = False
            g.shard_param._grad = _wrap(grads[id(g)]) if id(g) in grads else None

    def discard(self) -> None:
        """``zero_grad``: finish what is in flight (the peers take part) and drop the gradients."""
        for _, _, work, _, _ in self.inflight:
            work.wait()
        self.inflight = []
        bump()
        for g in self.groups:
            g.shard_param._grad = None
            for b in g.buckets:
                b.pending, b.launched = len(b.params), False

    def all_gather_params(self) -> None:
        """Every rank's updated slices back into the parameters (one async all-gather per bucket)."""
        from ember.distributed import all_gather_into_tensor

        pending = []
        for g in self.groups:
            shard = g.shard_param._data
            for b in g.buckets:
                full = np.empty(b.padded, g.dtype)
                mine = np.ascontiguousarray(shard[b.at : b.at + b.size])
                pending.append((b, full, all_gather_into_tensor(_wrap(full), _wrap(mine), self.pg, async_op=True)))
        for b, full, work in pending:
            work.wait()
            for p, o in zip(b.params, b.offsets):
                p._data[...] = full[o : o + p._data.size].reshape(p._data.shape)
