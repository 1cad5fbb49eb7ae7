"""Backends: one module per device kind, each exposing the same small array API.

``cpu`` (NumPy) is the reference. A backend module provides ``xp`` (its array module, NumPy's API)
and the few helpers whose spelling differs between array libraries (scatter-add, random numbers,
conversion to host memory). Ops call NumPy's ufuncs directly: CuPy arrays take part in them through
NumPy's ``__array_ufunc__`` / ``__array_function__`` protocols, so most op code is shared.
"""

from __future__ import annotations

import importlib

__all__ = ["get"]

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


def __getattr__(name: str):
    # ``ember.backends.cuda`` / ``.cudnn`` / ``.mps`` as attributes (PyTorch programs set flags on
    # them right after ``import torch``), imported on first access so CuPy loads only when asked.
    if name in ("cpu", "cuda", "cudnn", "mps"):
        return importlib.import_module(f"ember.backends.{name}")
    raise AttributeError(f"module 'ember.backends' has no attribute '{name}'")
