"""Differentiable collectives (``torch.distributed.nn.functional``) and Megatron's region markers.

Each forward runs a collective on a fresh output; each backward runs the matching collective on
the gradient: all_reduce <-> all_reduce, all_gather <-> reduce_scatter, broadcast <-> reduce,
all_to_all <-> all_to_all with the splits swapped. Every rank runs the same backward graph, so
the backward collectives line up across ranks.

Tensor parallelism (Megatron-LM) uses two conjugate markers around a parallel region:
``copy_to_group`` (identity forward, all-reduce backward) and ``reduce_from_group`` (all-reduce
forward, identity backward); ``gather_from_group`` / ``scatter_to_group`` move between a
sharded last dimension and the whole one.

Example (2 ranks):
    >>> y = reduce_from_group(x @ w_shard.T)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

import ember.distributed as dist
from ember.autograd.function import Function
from ember.tensor import _wrap

__all__ = [
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_tensor",
    "reduce_scatter_tensor",
    "all_to_all_single",
    "copy_to_group",
    "reduce_from_group",
    "gather_from_group",
    "scatter_to_group",
]


def _fresh(t):
    return _wrap(np.array(t._data, copy=True, order="C"))


class _AllReduce(Function):
    @staticmethod
    def forward(ctx, x, op, group):
        ctx.group, ctx.op = group, op
        out = _fresh(x)
        dist.all_reduce(out, op=op, group=group)
        return out

    @staticmethod
    def backward(ctx, g):
        if ctx.op not in (dist.ReduceOp.SUM, dist.ReduceOp.AVG):
            raise RuntimeError(f"all_reduce backward is defined for SUM and AVG only, got {ctx.op!r}")
        return _AllReduce.apply(g, ctx.op, ctx.group), None, None


def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None):
    """All-reduce that returns a new tensor; its gradient is the all-reduce of the output's gradient."""
    return _AllReduce.apply(tensor, op, group)


class _Broadcast(Function):
    @staticmethod
    def forward(ctx, x, src, group):
        ctx.src, ctx.group = src, group
        out = _fresh(x)
        dist.broadcast(out, src=src, group=group)
        return out

    @staticmethod
    def backward(ctx, g):
        out = _fresh(g)
        dist.reduce(out, dst=ctx.src, group=ctx.group)
        if dist.get_rank() != ctx.src:
            out._data[...] = 0
        return out, None, None


def broadcast(tensor, src: int, group=None):
    """Rank ``src``'s tensor on every rank; gradients are summed back to ``src`` (zero elsewhere)."""
    return _Broadcast.apply(tensor, src, group)


class _AllGatherTensor(Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        n = dist.get_world_size(group)
        moved = np.ascontiguousarray(np.moveaxis(x._data, dim, 0))
        out = np.empty((n * moved.shape[0],) + moved.shape[1:], moved.dtype)
        dist.all_gather_into_tensor(_wrap(out), _wrap(moved), group=group)
        return _wrap(np.ascontiguousarray(np.moveaxis(out, 0, dim)))

    @staticmethod
    def backward(ctx, g):
        return _ReduceScatterTensor.apply(g, ctx.dim, ctx.group), None, None


class _ReduceScatterTensor(Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        n = dist.get_world_size(group)
        moved = np.ascontiguousarray(np.moveaxis(x._data, dim, 0))
        if moved.shape[0] % n:
            raise ValueError(f"reduce_scatter_tensor: dim {dim} of size {moved.shape[0]} is not divisible by {n} ranks")
        out = np.empty((moved.shape[0] // n,) + moved.shape[1:], moved.dtype)
        dist.reduce_scatter_tensor(_wrap(out), _wrap(moved), group=group)
        return _wrap(np.ascontiguousarray(np.moveaxis(out, 0, dim)))

    @staticmethod
    def backward(ctx, g):
        return _AllGatherTensor.apply(g, ctx.dim, ctx.group), None, None


def all_gather_tensor(tensor, dim: int = 0, group=None):
    """Concatenate every rank's ``tensor`` along ``dim``; backward reduce-scatters the gradient."""
    return _AllGatherTensor.apply(tensor, dim % max(tensor.ndim, 1), group)


def reduce_scatter_tensor(tensor, dim: int = 0, group=None):
    """Sum across ranks and keep this rank's block of ``dim``; backward all-gathers the gradient."""
    return _ReduceScatterTensor.apply(tensor, dim % max(tensor.ndim, 1), group)


def all_gather(tensor, group=None) -> tuple:
    """Every rank's ``tensor`` (a tuple, as torch.distributed.nn.functional.all_gather)."""
    n = dist.get_world_size(group)
    whole = all_gather_tensor(tensor.unsqueeze(0), 0, group)
    return tuple(whole[i] for i in range(n))


class _AllToAllSingle(Function):
    @staticmethod
    def forward(ctx, x, output_split_sizes, input_split_sizes, group):
        ctx.splits, ctx.group = (output_split_sizes, input_split_sizes), group
        n = dist.get_world_size(group)
        rows = sum(output_split_sizes) if output_split_sizes else x.shape[0]
        out = _wrap(np.empty((rows,) + tuple(x.shape[1:]), x._data.dtype))
        dist.all_to_all_single(
            out, _fresh(x) if not x._data.flags.c_contiguous else x, output_split_sizes, input_split_sizes, group
        )
        del n
        return out

    @staticmethod
    def backward(ctx, g):
        out_splits, in_splits = ctx.splits
        return _AllToAllSingle.apply(g.contiguous(), in_splits, out_splits, ctx.group), None, None, None


def all_to_all_single(output_split_sizes, input_split_sizes, input, group=None):
    """Differentiable ``all_to_all_single`` (argument order as torch.distributed.nn.functional)."""
    return _AllToAllSingle.apply(input, output_split_sizes, input_split_sizes, group)


class _CopyToGroup(Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _wrap(x._data)

    @staticmethod
    def backward(ctx, g):
        return _AllReduce.apply(g, dist.ReduceOp.SUM, ctx.group), None


class _ReduceFromGroup(Function):
    @staticmethod
    def forward(ctx, x, group):
        out = _fresh(x)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, g):
        return g, None


def copy_to_group(x, group=None):
    """Identity forward; backward all-reduces the gradient (entry of a tensor-parallel region)."""
    return _CopyToGroup.apply(x, group)


def reduce_from_group(x, group=None):
    """All-reduce forward; identity backward (exit of a row-parallel region)."""
    return _ReduceFromGroup.apply(x, group)


def gather_from_group(x, group=None):
    """Concatenate the last dimension across ranks; backward keeps this rank's slice."""
    return _GatherLast.apply(x, group)


def scatter_to_group(x, group=None):
    """Keep this rank's slice of the last dimension; backward gathers the gradient."""
    return _ScatterLast.apply(x, group)


class _GatherLast(Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _AllGatherTensor.forward(ctx, x, x.ndim - 1, group)

    @staticmethod
    def backward(ctx, g):
        return _ScatterLast.apply(g, ctx.group), None


class _ScatterLast(Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        n, r = dist.get_world_size(group), dist.get_rank(group)
        size = x.shape[-1]
        if size % n:
            raise ValueError(f"scatter_to_group: last dimension {size} is not divisible by {n} ranks")
        k = size // n
        return _wrap(np.ascontiguousarray(x._data[..., r * k : (r + 1) * k]))

    @staticmethod
    def backward(ctx, g):
        return _GatherLast.apply(g, ctx.group), None
