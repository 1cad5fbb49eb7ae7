"""NumPy-facing wrappers of the C kernels: each returns the result arrays, or None when the kernels
are unavailable or the arrays are not what they handle (not NumPy float32/float64, empty, mixed
dtypes). Callers then take their NumPy path. Inputs are made C-contiguous here (one copy at most).

Example:
    >>> import numpy as np
    >>> from ember.backends.ckernels import ops
    >>> y = ops.softmax(np.zeros((2, 4), np.float32), log=False)  # None without a C compiler
"""

from __future__ import annotations

import os

import numpy as np

from ember.backends import ckernels

_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
_fns: dict = {}
# OpenMP pays off only on large arrays; below this many elements a kernel runs on one thread.
PARALLEL_MIN = 1 << 17
_parent = {"pid": os.getpid()}


def _fn(name: str, *arrays):
    """The kernel ``name`` for the arrays' dtype, or None (no library, non-NumPy, mixed dtypes)."""
    a = arrays[0]
    if type(a) is not np.ndarray or a.size == 0:
        return None
    dt = a.dtype
    if dt not in _SUFFIX or any(type(b) is not np.ndarray or b.dtype != dt for b in arrays[1:] if b is not None):
        return None
    key = name + _SUFFIX[dt]
    fn = _fns.get(key)
    if fn is None:
        lib = ckernels.get()
        if lib is None:
            return None
        fn = _fns[key] = getattr(lib, key)
    return fn


def _threads(n: int) -> int:
    """OpenMP threads for ``n`` elements. Opt-in: only after ``ember.set_num_threads(k)`` with
    k > 1 (on a shared, loaded machine a parallel region waits for its slowest thread, which
    measured up to 5x slower than one thread), only for large arrays, and never in a forked child
    (libgomp's thread pool does not survive fork)."""
    from ember._threads import _state as threads

    k = threads["n"] or 1
    if k == 1 or n < PARALLEL_MIN or not ckernels.uses_openmp() or os.getpid() != _parent["pid"]:
        return 1
    return max(1, min(k, n // (PARALLEL_MIN // 2)))


def _c(a):
    return np.ascontiguousarray(a)


def _ptr(a) -> int | None:
    return None if a is None else a.ctypes.data


def softmax(x, log: bool):
    """softmax (or log_softmax) over the last axis."""
    fn = _fn("softmax_fwd", x)
    if fn is None or x.ndim == 0:
        return None
    x = _c(x)
    y = np.empty_like(x)
    cols = x.shape[-1]
    fn(_ptr(x), _ptr(y), x.size // cols, cols, int(log), _threads(x.size))
    return y


def softmax_backward(y, g, log: bool):
    """Gradient of softmax (log_softmax) over the last axis, from its output ``y`` and ``g``."""
    fn = _fn("softmax_bwd", y, g)
    if fn is None or y.ndim == 0 or g.shape != y.shape:
        return None
    y, g = _c(y), _c(g)
    gx = np.empty_like(y)
    cols = y.shape[-1]
    fn(_ptr(y), _ptr(g), _ptr(gx), y.size // cols, cols, int(log), _threads(y.size))
    return gx


def layer_norm(x, w, b, k: int, eps: float):
    """Layer norm over the last ``k`` axes: returns (out, x contiguous, mean, rstd), mean and rstd
    shaped like ``x`` with the last ``k`` axes kept as 1 (NumPy ``keepdims``)."""
    fn = _fn("layer_norm_fwd", x, w, b)
    if fn is None or x.ndim < k:
        return None
    x = _c(x)
    w = None if w is None else _c(w)
    b = None if b is None else _c(b)
    stat_shape = x.shape[: x.ndim - k] + (1,) * k
    cols = x.size // int(np.prod(stat_shape))
    rows = x.size // cols
    y = np.empty_like(x)
    mean = np.empty(stat_shape, x.dtype)
    rstd = np.empty(stat_shape, x.dtype)
    fn(_ptr(x), _ptr(w), _ptr(b), _ptr(y), _ptr(mean), _ptr(rstd), rows, cols, float(eps), _threads(x.size))
    return y, x, mean, rstd


def layer_norm_backward(x, w, g, mean, rstd, pshape: tuple, need_gx: bool, need_gw: bool, need_gb: bool):
    """Gradients (gx, gw, gb) of layer norm (None where not needed), from :func:`layer_norm`'s
    saved contiguous ``x``, ``mean`` and ``rstd``; gw and gb have shape ``pshape``."""
    fn = _fn("layer_norm_bwd", x, w, g, mean, rstd)
    if fn is None or g.shape != x.shape:
        return None
    g = _c(g)
    wc = None if w is None else _c(w)
    rows = mean.size
    cols = x.size // rows
    nchunks = _threads(x.size)
    gx = np.empty_like(x) if need_gx else None
    gw = np.empty((nchunks, cols), x.dtype) if need_gw else None
    gb = np.empty((nchunks, cols), x.dtype) if need_gb else None
    fn(_ptr(x), _ptr(wc), _ptr(g), _ptr(mean), _ptr(rstd), _ptr(gx), _ptr(gw), _ptr(gb), rows, cols, nchunks)
    gw = None if gw is None else gw.sum(axis=0).reshape(pshape)
    gb = None if gb is None else gb.sum(axis=0).reshape(pshape)
    return gx, gw, gb


def gelu(x, approximate: str):
    """gelu elementwise (``approximate`` is 'none' or 'tanh')."""
    fn = _fn("gelu_fwd", x)
    if fn is None:
        return None
    x = _c(x)
    y = np.empty_like(x)
    fn(_ptr(x), _ptr(y), x.size, int(approximate == "tanh"), _threads(x.size))
    return y


def gelu_backward(x, g, approximate: str):
    """``g`` times the derivative of gelu at ``x``."""
    fn = _fn("gelu_bwd", x, g)
    if fn is None or g.shape != x.shape:
        return None
    x, g = _c(x), _c(g)
    gx = np.empty_like(x)
    fn(_ptr(x), _ptr(g), _ptr(gx), x.size, int(approximate == "tanh"), _threads(x.size))
    return gx
