"""The CPU backend: NumPy arrays. This module is the living definition of the backend API."""

from __future__ import annotations

import numpy as np

from ember.backends import _malloc

__all__ = ["xp", "name", "tune_allocator", "is_available", "asarray", "to_host", "scatter_add", "new_generator"]

xp = np
name = "cpu"


def tune_allocator(enabled: bool = True) -> bool:
    """Reuse freed large buffers instead of fresh pages per op (see ``_malloc``); on by default."""
    return _malloc.tune(enabled)


tune_allocator(True)


def is_available() -> bool:
    return True


def asarray(data, dtype=None):
    """Make a backend array from host data (lists, scalars, NumPy arrays, other backends)."""
    if hasattr(data, "get") and not isinstance(data, (np.ndarray, dict)):
        data = data.get()  # a CuPy array coming back to the host
    return np.asarray(data, dtype=dtype)


def to_host(arr) -> np.ndarray:
    """A NumPy view (or copy, for other backends) of a backend array."""
    return arr


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` with repeated indices accumulated (unbuffered)."""
    np.add.at(target, index, values)


def new_generator(seed: int):
    return np.random.Generator(np.random.PCG64(seed))
