"""Grids and products composed from Tensor ops, so they are differentiable and go through the same
op records as everything else: ``meshgrid``, ``cartesian_prod``, ``combinations``, ``kron`` and
``block_diag``.

Example:
    >>> import ember
    >>> xs, ys = ember.meshgrid(ember.tensor([1, 2, 3]), ember.tensor([4, 5]), indexing="ij")
    >>> xs.shape
    ember.Size([3, 2])
    >>> ember.kron(ember.eye(2), ember.ones(1, 2))
    tensor([[1., 1., 0., 0.],
            [0., 0., 1., 1.]])
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from ember import _dtype
from ember.ops._base import Tensor

__all__ = ["meshgrid", "cartesian_prod", "combinations", "kron", "block_diag"]


def _tensor_list(tensors) -> list:
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tensors[0]
    return list(tensors)


def meshgrid(*tensors, indexing: str | None = None) -> tuple:
    """Coordinate grids from 0-D or 1-D tensors: ``indexing='ij'`` (matrix) or ``'xy'`` (Cartesian).

    Without ``indexing`` it is ``'ij'`` and warns, as PyTorch does.

    Example:
        >>> import ember
        >>> gx, gy = ember.meshgrid(ember.arange(3), ember.arange(2), indexing="xy")
        >>> gx.shape, gx[1].tolist()
        (ember.Size([2, 3]), [0, 1, 2])
    """
    ts = _tensor_list(tensors)
    if indexing is None:
        warnings.warn(
            "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument.",
            UserWarning,
            stacklevel=2,
        )
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f'torch.meshgrid: indexing must be one of "xy" or "ij", but received: {indexing}')
    if not ts:
        raise RuntimeError("meshgrid expects a non-empty TensorList")
    for t in ts:
        if t.dim() > 1:
            raise RuntimeError(
                f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got a tensor of shape {list(t.shape)}"
            )
        if t.dtype is not ts[0].dtype:
            raise RuntimeError("meshgrid expects all tensors to have the same dtype")
        if t.device != ts[0].device:
            raise RuntimeError("meshgrid expects all tensors to have the same device")
    swap = indexing == "xy" and len(ts) >= 2
    if swap:  # 'xy' is 'ij' with the first two inputs (and outputs) exchanged
        ts[0], ts[1] = ts[1], ts[0]
    shape = tuple(t.numel() for t in ts)
    out = []
    for i, t in enumerate(ts):
        view = [1] * len(ts)
        view[i] = shape[i]
        out.append(t.reshape(view).expand(shape))
    if swap:
        out[0], out[1] = out[1], out[0]
    return tuple(out)


def _check_1d(t: Tensor) -> None:
    if t.dim() != 1:
        raise RuntimeError(f"Expect a 1D vector, but got shape {list(t.shape)}")


def cartesian_prod(*tensors: Tensor) -> Tensor:
    """All tuples of one element from each 1-D tensor, as rows (itertools.product order).

    Example:
        >>> import ember
        >>> ember.cartesian_prod(ember.tensor([1, 2]), ember.tensor([3, 4])).tolist()
        [[1, 3], [1, 4], [2, 3], [2, 4]]
    """
    ts = _tensor_list(tensors)
    for t in ts:
        _check_1d(t)
    if len(ts) == 1:
        return ts[0]
    grids = meshgrid(*ts, indexing="ij")
    from ember.ops.movement import stack

    return stack([g.reshape(-1) for g in grids], 1)


def combinations(input: Tensor, r: int = 2, with_replacement: bool = False) -> Tensor:
    """The ``r``-length combinations of a 1-D tensor's elements, as rows (itertools order).

    Example:
        >>> import ember
        >>> ember.combinations(ember.tensor([1, 2, 3])).tolist()
        [[1, 2], [1, 3], [2, 3]]
    """
    _check_1d(input)
    if r < 0:
        raise RuntimeError(f"Expect a non-negative number, but got {r}")
    if r == 0:
        return input.new_empty(0)
    n = input.shape[0]
    pick = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    idx = np.array(list(pick(range(n), r)), dtype=np.int64).reshape(-1, r)
    from ember.ops.creation import tensor

    return input[tensor(idx, device=input.device)]


def kron(input: Tensor, other: Tensor) -> Tensor:
    """The Kronecker product: block ``(i, j, ...)`` of the result is ``input[i, j, ...] * other``.

    Example:
        >>> import ember
        >>> ember.kron(ember.tensor([1, 2]), ember.tensor([1, 10])).tolist()
        [1, 10, 2, 20]
    """
    nd = max(input.dim(), other.dim())
    a = input.reshape((1,) * (nd - input.dim()) + tuple(input.shape))
    b = other.reshape((1,) * (nd - other.dim()) + tuple(other.shape))
    # Interleave the axes: a as (a0, 1, a1, 1, ...), b as (1, b0, 1, b1, ...), then merge pairs.
    a_view = [s for d in a.shape for s in (d, 1)]
    b_view = [s for d in b.shape for s in (1, d)]
    out = a.reshape(a_view) * b.reshape(b_view)
    return out.reshape([x * y for x, y in zip(a.shape, b.shape)])


def block_diag(*tensors: Tensor) -> Tensor:
    """A block-diagonal matrix of 0-D, 1-D (one row) and 2-D tensors; other entries are zero.

    Example:
        >>> import ember
        >>> ember.block_diag(ember.tensor([[1, 2]]), ember.tensor(3)).tolist()
        [[1, 2, 0], [0, 0, 3]]
    """
    from ember.ops.creation import zeros
    from ember.ops.movement import cat

    mats = []
    for i, t in enumerate(tensors):
        if t.dim() > 2:
            raise RuntimeError(
                f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has {t.dim()} dimensions"
            )
        mats.append(t.reshape(1, -1) if t.dim() == 1 else t.reshape(1, 1) if t.dim() == 0 else t)
    if not mats:
        return zeros(1, 0)
    dt = mats[0].dtype
    for m in mats[1:]:
        dt = _dtype.promote_types(dt, m.dtype)
    dev = mats[0].device
    total = sum(m.shape[1] for m in mats)
    rows, col = [], 0
    for m in mats:
        r, c = m.shape
        parts = [zeros(r, col, dtype=dt, device=dev), m.to(dtype=dt), zeros(r, total - col - c, dtype=dt, device=dev)]
        rows.append(cat(parts, 1))
        col += c
    return cat(rows, 0)
