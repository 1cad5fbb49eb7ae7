"""``cdist``: pairwise p-norm distances between two sets of row vectors (added as ops/README.md shows).

``cdist(x1, x2, p)`` for ``x1`` of shape ``(..., P, M)`` and ``x2`` of shape ``(..., R, M)`` is
``(..., P, R)`` with ``out[..., i, j] = ||x1[..., i, :] - x2[..., j, :]||_p`` (batch dims
broadcast). One primitive: its implementation works on arrays of any backend's NumPy API (the
meta device included), its gradient rule is written in Tensor ops, so it can be differentiated
again.
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd.node import Node
from ember.ops._base import Tensor, check_tensor
from ember.ops.dispatch import Primitive, apply

__all__ = ["cdist"]


class Cdist(Node):
    """d out / d x1 = sum_j g_ij * sign(diff) |diff|^(p-1) / out^(p-1); x2 gets the negative."""

    __slots__ = ("p",)

    def backward(self, g):
        x1, x2 = self.inputs
        p = self.p
        diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # (..., P, R, M)
        if p == 0:
            w = diff * 0.0
        elif p == 1:
            w = diff.sign()
        else:
            d = cdist(x1, x2, p).unsqueeze(-1)  # (..., P, R, 1)
            if p == math.inf:  # only the coordinates that attain the maximum
                w = diff.sign() * (diff.abs() == d).to(diff.dtype)
            else:
                safe = d.masked_fill(d == 0, 1.0)
                w = diff.sign() * diff.abs() ** (p - 1) / safe ** (p - 1)
                w = w.masked_fill(d == 0, 0.0)  # zero distance: zero gradient, as in PyTorch
        gw = g.unsqueeze(-1) * w
        g1 = gw.sum(-2) if x1._requires_grad else None
        g2 = -gw.sum(-3) if x2._requires_grad else None
        return _sum_to(g1, x1), _sum_to(g2, x2)


def _sum_to(g, x):
    if g is None:
        return None
    from ember.ops.elementwise import sum_to

    return sum_to(g, x)


def _cdist_impl(x1, x2, p):
    diff = np.abs(x1._data[..., :, None, :] - x2._data[..., None, :, :])
    if p == 0:
        out = np.count_nonzero(diff, axis=-1).astype(diff.dtype)
    elif p == math.inf:
        out = diff.max(axis=-1) if diff.shape[-1] else diff.sum(axis=-1)
    elif p == 1:
        out = diff.sum(axis=-1)
    elif p == 2:
        out = np.sqrt(np.square(diff).sum(axis=-1))
    else:
        out = np.power(np.power(diff, p).sum(axis=-1), 1.0 / p)
    return out.astype(x1._data.dtype, copy=False)


_CDIST = Primitive("cdist", Cdist, _cdist_impl)


def cdist(x1: Tensor, x2: Tensor, p: float = 2.0, compute_mode: str = "use_mm_for_euclid_dist_if_necessary") -> Tensor:
    """Pairwise ``p``-norm distances between the rows of ``x1`` (..., P, M) and ``x2`` (..., R, M).

    Example:
        >>> import ember
        >>> ember.cdist(ember.tensor([[0.0, 0.0]]), ember.tensor([[3.0, 4.0], [1.0, 0.0]]))
        tensor([[5., 1.]])
    """
    check_tensor(x1, "cdist", "x1")
    check_tensor(x2, "cdist", "x2")
    if x1.ndim < 2 or x2.ndim < 2:
        raise RuntimeError(f"cdist only supports at least 2D tensors, X1 got: {x1.ndim}D, X2 got: {x2.ndim}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} X2: {x2.shape[-1]}")
    if not (x1.is_floating_point() and x2.is_floating_point()):
        raise RuntimeError(f"cdist only supports floating-point dtypes, X1 got: {x1.dtype}")
    if x1.dtype != x2.dtype:
        raise RuntimeError(f"cdist: X1 and X2 must have the same dtype, got {x1.dtype} and {x2.dtype}")
    if p < 0:
        raise RuntimeError(f"cdist only supports non-negative p values, got {p}")
    return apply(_CDIST, x1, x2, p=float(p))
