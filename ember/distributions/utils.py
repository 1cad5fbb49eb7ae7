"""Helpers shared by the distributions: broadcasting parameters, probabilities <-> logits."""

from __future__ import annotations

from numbers import Number

import numpy as np

from ember import _dtype
from ember.autograd.grad_mode import enable_grad
from ember.ops.creation import tensor
from ember.ops.movement import broadcast_tensors
from ember.tensor import Tensor

__all__ = ["broadcast_all", "lazy_property", "logits_to_probs", "probs_to_logits", "clamp_probs", "sum_rightmost"]


def broadcast_all(*values) -> tuple:
    """Broadcast tensors and numbers to one shape; numbers take the first tensor's dtype (or the default)."""
    like = next((v for v in values if isinstance(v, Tensor)), None)
    for v in values:
        if not isinstance(v, (Tensor, Number)):
            raise ValueError("Input arguments must all be instances of numbers.Number or ember.Tensor.")
    dtype = like.dtype if like is not None else _dtype.defaults.float
    device = like.device if like is not None else None
    ts = [v if isinstance(v, Tensor) else tensor(v, dtype=dtype, device=device) for v in values]
    return tuple(broadcast_tensors(*ts)) if len(ts) > 1 else tuple(ts)


class lazy_property:
    """Computed on first access and cached on the instance (so ``param in obj.__dict__`` says if given)."""

    def __init__(self, fn):
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        # Under enable_grad, as PyTorch: a first access inside no_grad (sample) must not cache a
        # value cut from the graph that later log_prob/entropy calls would differentiate through.
        with enable_grad():
            value = self.fn(obj)
        obj.__dict__[self.fn.__name__] = value
        return value


def clamp_probs(probs: Tensor) -> Tensor:
    eps = float(np.finfo(probs._data.dtype).eps)
    return probs.clamp(min=eps, max=1 - eps)


def probs_to_logits(probs: Tensor, is_binary: bool = False) -> Tensor:
    ps = clamp_probs(probs)
    return ps.log() - (-ps).log1p() if is_binary else ps.log()


def logits_to_probs(logits: Tensor, is_binary: bool = False) -> Tensor:
    from ember.nn import functional as F

    return logits.sigmoid() if is_binary else F.softmax(logits, -1)


def sum_rightmost(value: Tensor, dim: int) -> Tensor:
    """Sum the ``dim`` rightmost dims."""
    if dim == 0:
        return value
    return value.reshape(tuple(value.shape[: value.dim() - dim]) + (-1,)).sum(-1)


def xlogy(x: Tensor, y: Tensor) -> Tensor:
    """``x * log(y)``, with 0 where x is 0 (so 0 log 0 = 0)."""
    from ember.ops.elementwise import where

    return where(x == 0, x * 0, x * y.log())


def tiny(t: Tensor) -> float:
    return float(np.finfo(t._data.dtype).tiny)
