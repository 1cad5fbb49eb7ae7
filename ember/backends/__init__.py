"""Backends: one module per device kind, each exposing the same small array API.

``cpu`` (NumPy) is the reference. A backend module provides ``xp`` (its array module, NumPy's API)
and the few helpers whose spelling differs between array libraries (scatter-add, random numbers,
conversion to host memory). Ops call NumPy's ufuncs directly: CuPy arrays take part in them through
NumPy's ``__array_ufunc__`` / ``__array_function__`` protocols, so most op code is shared.
"""

from __future__ import annotations

import importlib

import numpy as np

__all__ = ["get", "on_host", "as_strided", "like", "contiguous"]

_LOADED: dict = {}


def get(kind: str):
    """Return the backend module for a device kind ('cpu', 'cuda' or 'meta'), importing it on first use."""
    mod = _LOADED.get(kind)
    if mod is None:
        if kind not in ("cpu", "cuda", "meta"):
            raise RuntimeError(f"Expected one of cpu, cuda, meta device type at start of device string: {kind}")
        mod = importlib.import_module(f"ember.backends.{kind}")
        _LOADED[kind] = mod
    return mod


def on_host(a) -> bool:
    """Whether array ``a`` lives in host memory (NumPy) or has none (meta): not on a GPU."""
    return isinstance(a, np.ndarray) or getattr(a, "is_meta", False)


def as_strided(a, shape: tuple, strides: tuple):
    """A read-only strided view of ``a`` in ``a``'s own memory (NumPy's or CuPy's ``as_strided``).

    Example:
        >>> as_strided(np.arange(4.0), (3, 2), (8, 8)).tolist()
        [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]
    """
    if on_host(a):
        return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=False)
    return get("cuda").xp.lib.stride_tricks.as_strided(a, shape, strides)


def contiguous(a):
    """``a`` in C order: itself when it already is, else a C-ordered copy on its own device
    (``np.ascontiguousarray`` would pull a CuPy array to the host, which CuPy refuses).

    Example:
        >>> contiguous(np.arange(6.0).reshape(2, 3).T).flags.c_contiguous
        True
    """
    return a if a.flags.c_contiguous else a.copy()


def like(a, host: np.ndarray):
    """``host`` (a NumPy array) moved to the memory ``a`` lives in: itself for host and meta arrays,
    a CuPy copy for a CuPy ``a``. For masks and constants that ops build with NumPy."""
    return host if on_host(a) else get("cuda").asarray(host)


def __getattr__(name: str):
    # ``ember.backends.cuda`` / ``.cudnn`` / ``.mps`` as attributes (PyTorch programs set flags on
    # them right after ``import torch``), imported on first access so CuPy loads only when asked.
    if name in ("cpu", "cuda", "cudnn", "mps"):
        return importlib.import_module(f"ember.backends.{name}")
    raise AttributeError(f"module 'ember.backends' has no attribute '{name}'")
