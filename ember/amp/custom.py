"""``ember.amp.custom_fwd`` / ``custom_bwd``: autocast for custom autograd Functions, as
``torch.amp.custom_fwd(device_type=..., cast_inputs=...)`` and ``torch.amp.custom_bwd``.

``custom_fwd`` decorates a Function's ``forward``: without ``cast_inputs`` the forward runs in the
current autocast state; with ``cast_inputs`` (a dtype) and autocast on for ``device_type``, the
floating-point tensors among the arguments (float64 excepted, as in PyTorch) are cast to it and
the forward runs with autocast off. ``custom_bwd`` runs ``backward`` in the autocast state the
forward saw (``ctx._fwd_used_autocast``, ``ctx._dtype``).

Example:
    >>> import ember
    >>> from ember.amp import custom_bwd, custom_fwd
    >>> class Square(ember.autograd.Function):
    ...     @staticmethod
    ...     @custom_fwd(device_type="cpu", cast_inputs=ember.float32)
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x * x
    ...
    ...     @staticmethod
    ...     @custom_bwd(device_type="cpu")
    ...     def backward(ctx, g):
    ...         (x,) = ctx.saved_tensors
    ...         return 2 * x * g
    >>> with ember.autocast("cpu", dtype=ember.bfloat16):
    ...     Square.apply(ember.ones(2, dtype=ember.bfloat16)).dtype
    ember.float32
"""

from __future__ import annotations

import collections.abc
import functools

import numpy as np

from ember.amp.autocast_mode import autocast, get_autocast_dtype, is_autocast_enabled
from ember.tensor import Tensor

__all__ = ["custom_fwd", "custom_bwd"]


def _cast(value, device_type: str, dtype):
    """``value`` with its eligible tensors cast (nested lists, tuples and dicts too)."""
    if isinstance(value, Tensor):
        ok = value.is_floating_point() and value.device.type == device_type and value.dtype.name != "float64"
        return value.to(dtype) if ok else value
    if isinstance(value, (str, bytes, np.ndarray)):
        return value
    if isinstance(value, collections.abc.Mapping):
        return {_cast(k, device_type, dtype): _cast(v, device_type, dtype) for k, v in value.items()}
    if isinstance(value, collections.abc.Iterable):
        items = (_cast(v, device_type, dtype) for v in value)
        return type(value)(items) if isinstance(value, (list, tuple)) else items
    return value


def _check_device_type(device_type) -> None:
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")


def custom_fwd(fwd=None, *, device_type: str, cast_inputs=None):
    """Decorate a custom Function's ``forward`` for autocast (see the module docstring).

    Example:
        >>> from ember.amp import custom_fwd
        >>> deco = custom_fwd(device_type="cpu")
    """
    _check_device_type(device_type)
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        ctx = args[0]
        ctx._dtype = get_autocast_dtype(device_type)
        if cast_inputs is None:
            ctx._fwd_used_autocast = is_autocast_enabled(device_type)
            return fwd(*args, **kwargs)
        ctx._fwd_used_autocast = False
        if is_autocast_enabled(device_type):
            with autocast(device_type=device_type, enabled=False):
                return fwd(*_cast(args, device_type, cast_inputs), **_cast(kwargs, device_type, cast_inputs))
        return fwd(*args, **kwargs)

    return decorate_fwd


def custom_bwd(bwd=None, *, device_type: str):
    """Decorate a custom Function's ``backward`` to run in its forward's autocast state.

    Example:
        >>> from ember.amp import custom_bwd
        >>> deco = custom_bwd(device_type="cpu")
    """
    _check_device_type(device_type)
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args, **kwargs):
        ctx = args[0]
        with autocast(device_type=device_type, enabled=ctx._fwd_used_autocast, dtype=ctx._dtype):
            return bwd(*args, **kwargs)

    return decorate_bwd
