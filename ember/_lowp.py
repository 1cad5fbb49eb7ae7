"""float16 / bfloat16 arrays through float32 compute.

PyTorch accumulates matrix products, convolutions and reductions of the 2-byte float types in
float32 and rounds the result once. NumPy would accumulate float16 in float16 (and without BLAS),
and Ember's C kernels take only float32/float64 buffers, so the array code of those ops goes
through :func:`f32_compute`: low-precision inputs are widened to float32, the float32 code runs,
and the float results are rounded back to the input's dtype.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

__all__ = ["LOW_NP", "is_low", "f32_compute", "call_f32"]

LOW_NP = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
_F32 = np.dtype(np.float32)


def is_low(arr) -> bool:
    """Whether ``arr`` is a NumPy array (or scalar) of a 2-byte float dtype."""
    return getattr(arr, "dtype", None) in LOW_NP


def _widen(x):
    if isinstance(x, tuple):
        return tuple(_widen(v) for v in x)
    return x.astype(_F32) if is_low(x) else x


def _round(x, dt, first=None):
    if x.__class__ is not tuple and not isinstance(x, np.generic) and getattr(x, "dtype", None) == _F32:
        return x.astype(dt)  # NumPy arrays, and meta arrays (capture's shape and dtype inference)
    if isinstance(x, tuple):
        n = len(x) if first is None else first
        return tuple(_round(v, dt) if i < n else v for i, v in enumerate(x))
    return x


def f32_compute(fn):
    """Wrap an array function so 2-byte float arguments run through its float32 path.

    The dtype of the first low-precision argument is the one results are rounded back to.

    Example:
        >>> import numpy as np, ml_dtypes
        >>> mm = f32_compute(np.matmul)
        >>> mm(np.ones((2, 3), ml_dtypes.bfloat16), np.ones((3, 1), ml_dtypes.bfloat16)).dtype
        dtype(bfloat16)
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        low = next((a.dtype for a in args if is_low(a)), None)
        if low is None:
            return fn(*args, **kwargs)
        args = tuple(_widen(a) for a in args)
        kwargs = {k: _widen(v) for k, v in kwargs.items()}
        return _round(fn(*args, **kwargs), low)

    return wrapper


def call_f32(fn, *args, round_first: int | None = None, **kwargs):
    """``fn(*args, **kwargs)``, through float32 when an argument is float16/bfloat16.

    The C kernels take float32/float64 buffers only: their call sites go through here, so a
    2-byte float array is widened before it reaches a kernel, and the kernel's float results are
    rounded back. ``round_first=n`` rounds only the first ``n`` results of a tuple (the output),
    keeping saved statistics (mean, 1/std) in float32 as PyTorch does.

    Example:
        >>> import numpy as np
        >>> call_f32(np.sqrt, np.array([4.0], np.float16)).dtype
        dtype('float16')
    """
    low = next((a.dtype for a in args if is_low(a)), None)
    if low is None:
        return fn(*args, **kwargs)
    args = tuple(_widen(a) for a in args)
    return _round(fn(*args, **kwargs), low, round_first)
