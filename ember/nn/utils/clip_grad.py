"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_`` (in place on ``.grad``)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ember.autograd.grad_mode import no_grad
from ember.tensor import Tensor, _wrap

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]


def _as_list(tensors) -> list:
    if isinstance(tensors, Tensor):
        return [tensors]
    return list(tensors)


def get_total_norm(tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """The ``norm_type``-norm of all the tensors together (as if concatenated)."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return _wrap(np.asarray(0.0, dtype=np.float32))
    host = [t._device.backend.to_host(t._data) for t in tensors]
    dtype = host[0].dtype
    if norm_type == math.inf:
        total = max(float(np.abs(h).max()) if h.size else 0.0 for h in host)
    elif norm_type == -math.inf:
        total = min(float(np.abs(h).min()) if h.size else math.inf for h in host)
    elif norm_type == 0:
        total = float(sum(np.count_nonzero(h) for h in host))
    else:
        # Per-tensor norms first (as PyTorch), then the norm of those norms.
        per = np.array([np.sum(np.abs(h.astype(np.float64)) ** norm_type) ** (1.0 / norm_type) for h in host])
        total = float(np.sum(per**norm_type) ** (1.0 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return _wrap(np.asarray(total, dtype=dtype), tensors[0]._device)


def clip_grads_with_norm_(parameters, max_norm: float, total_norm: Tensor, foreach=None) -> None:
    """Scale every gradient by ``min(1, max_norm / (total_norm + 1e-6))``."""
    params = _as_list(parameters)
    coef = float(max_norm) / (float(total_norm) + 1e-6)
    if coef >= 1.0:
        return
    with no_grad():
        for p in params:
            if p.grad is not None:
                g = p.grad
                g._data *= np.asarray(coef, dtype=g._data.dtype)
                g._bump_version()


def clip_grad_norm_(
    parameters: Iterable[Tensor] | Tensor,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Rescale gradients in place so their total norm is at most ``max_norm``; returns the norm before.

    Example:
        >>> import ember
        >>> p = ember.nn.Parameter(ember.zeros(2))
        >>> p.grad = ember.tensor([3.0, 4.0])
        >>> ember.nn.utils.clip_grad_norm_([p], 1.0)
        tensor(5.)
        >>> round(float(p.grad.norm()), 4)
        1.0
    """
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    with no_grad():
        for p in _as_list(parameters):
            if p.grad is not None:
                np.clip(p.grad._data, -clip_value, clip_value, out=p.grad._data)
                p.grad._bump_version()
