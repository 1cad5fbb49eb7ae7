"""Bucketing without gradients: ``searchsorted``, ``bucketize`` and ``histc``, as in PyTorch.

These return indices or counts, so they are primitives without a gradient rule (NumPy's
``searchsorted`` and ``bincount``) with PyTorch's argument checks and messages.

Example:
    >>> import ember
    >>> ember.bucketize(ember.tensor([0.5, 3.0, 9.0]), ember.tensor([1.0, 3.0, 5.0]))
    tensor([0, 1, 3])
    >>> ember.histc(ember.tensor([1.0, 2.0, 1.0]), bins=4, min=0, max=3)
    tensor([0., 2., 1., 0.])
"""

from __future__ import annotations

import numpy as np

from ember.ops._base import Tensor
from ember.ops.dispatch import Primitive, apply

__all__ = ["searchsorted", "bucketize", "histc"]


def _side(right: bool, side: str | None) -> str:
    if side is None:
        return "right" if right else "left"
    if side not in ("left", "right"):
        raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but got {side}")
    if right and side == "left":
        raise RuntimeError(
            "torch.searchsorted(): side and right can't be set to opposites, got side of left while right was True"
        )
    return side


def searchsorted(
    sorted_sequence: Tensor,
    input,
    *,
    out_int32: bool = False,
    right: bool = False,
    side: str | None = None,
    sorter: Tensor | None = None,
) -> Tensor:
    """Indices where ``input``'s values would be inserted into the innermost dim of ``sorted_sequence``.

    ``right`` / ``side='right'`` take the index after equal values; ``sorter`` holds the indices that
    sort an unsorted ``sorted_sequence``; ``out_int32`` gives int32 instead of int64.

    Example:
        >>> import ember
        >>> ember.searchsorted(ember.tensor([1, 3, 5, 7]), ember.tensor([3, 6]), right=True)
        tensor([2, 3])
    """
    side = _side(right, side)
    s = sorted_sequence._data
    scalar = not isinstance(input, Tensor)
    v = np.asarray(input) if scalar else input._data
    if s.ndim == 0:
        raise RuntimeError(
            "torch.searchsorted(): boundaries tensor should have positive dimension, but got 0 dimension"
        )
    if s.ndim > 1 and (v.ndim != s.ndim or v.shape[:-1] != s.shape[:-1]):
        raise RuntimeError(
            "torch.searchsorted(): boundaries tensor should be 1 dimension or the first N-1 dimensions of "
            f"boundaries tensor and input value tensor must match, but we got boundaries tensor {list(s.shape)} "
            f"and input value tensor {list(v.shape)}"
        )
    if sorter is not None:
        if sorter._data.dtype != np.int64:
            raise RuntimeError(
                f"torch.searchsorted(): sorter must be a tensor of long dtype but got dtype {sorter.type()[6:-6]}"
            )
        if sorter._data.shape != s.shape:
            raise RuntimeError(
                "torch.searchsorted(): boundary and sorter must have the same size, but got boundary tensor "
                f"{list(s.shape)}and got sorter tensor {list(sorter._data.shape)}"
            )
    return apply(_SEARCHSORTED, sorted_sequence, input, sorter, side=side, out_int32=out_int32)


def _searchsorted_impl(sorted_sequence, input, sorter, side, out_int32):
    s = sorted_sequence._data
    v = input._data if isinstance(input, Tensor) else np.asarray(input)
    if sorter is not None:
        s = np.take_along_axis(s, sorter._data, -1)
    if s.ndim == 1:
        out = np.searchsorted(s, v, side=side)
    else:
        rows_s, rows_v = s.reshape(-1, s.shape[-1]), v.reshape(-1, v.shape[-1])
        out = np.stack([np.searchsorted(a, b, side=side) for a, b in zip(rows_s, rows_v)]).reshape(v.shape)
    return np.asarray(out, dtype=np.int32 if out_int32 else np.int64)


_SEARCHSORTED = Primitive("searchsorted", None, _searchsorted_impl)


def bucketize(input, boundaries: Tensor, *, out_int32: bool = False, right: bool = False) -> Tensor:
    """The bucket of each value of ``input`` given 1-D increasing ``boundaries`` (``right`` as torch).

    Example:
        >>> import ember
        >>> ember.bucketize(ember.tensor([1, 4]), ember.tensor([1, 3, 5]), right=True)
        tensor([1, 2])
    """
    if boundaries._data.ndim != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries._data.ndim})")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def histc(input: Tensor, bins: int = 100, min: float = 0, max: float = 0) -> Tensor:  # noqa: A002 - torch's names
    """Counts of ``input``'s values in ``bins`` equal-width bins over ``[min, max]``, in input's dtype.

    ``min == max`` (the default) uses the data's range; values outside the range are ignored and
    values equal to ``max`` count in the last bin, as in PyTorch.

    Example:
        >>> import ember
        >>> ember.histc(ember.tensor([1.0, 2.0, 1.0, 4.0]), bins=4)
        tensor([2., 1., 0., 1.])
    """
    x = input._data
    if x.dtype.kind not in "fV":
        raise NotImplementedError(f"\"histogram_cpu\" not implemented for '{input.type()[6:-6]}'")
    if bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
    return apply(_HISTC, input, bins=bins, lo=float(min), hi=float(max))


def _histc_impl(input, bins, lo, hi):
    x = input._data
    if lo == hi and x.size:
        lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    if lo > hi:
        raise RuntimeError("torch.histc: max must be larger than min")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise RuntimeError(f"torch.histc: range of [{lo:g}, {hi:g}] is not finite")
    # Bin positions in the input's dtype, as PyTorch computes them, so edge cases land alike.
    lo_t, hi_t = x.dtype.type(lo), x.dtype.type(hi)
    flat = x.reshape(-1)
    flat = flat[(flat >= lo_t) & (flat <= hi_t)]
    idx = ((flat - lo_t) * x.dtype.type(bins) / (hi_t - lo_t)).astype(np.int64)
    idx = np.minimum(idx, bins - 1)  # the maximum belongs to the last bin
    return np.bincount(idx, minlength=bins).astype(x.dtype)


_HISTC = Primitive("histc", None, cpu=_histc_impl)  # the range may come from the data: no meta form
