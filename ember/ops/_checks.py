"""Bounds checks of index tensors, per op, with PyTorch's errors.

NumPy would read ``a[-1]`` as the last element; PyTorch's ``gather``, ``scatter``,
``scatter_add``, ``index_select`` and ``index_add`` do not wrap negative indices, they raise. These
run before the NumPy indexing so an out-of-range index is an error, never a silent wrap. The first
offending index in memory order is reported, as PyTorch's serial loop does.

Example:
    >>> import numpy as np
    >>> from ember.ops._checks import check_gather_bounds
    >>> check_gather_bounds(np.array([0, 2]), 3, 0)  # in range: no error
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_gather_bounds", "check_index_vector_bounds"]


def _first_bad(idx, size: int):
    if not idx.size:
        return None
    bad = (idx < 0) | (idx >= size)
    if not bad.any():
        return None
    return int(idx.reshape(-1)[np.argmax(bad.reshape(-1))])


def check_gather_bounds(idx, size: int, axis: int) -> None:
    """gather / scatter / scatter_add / index_add: every index in ``[0, size)``."""
    bad = _first_bad(idx, size)
    if bad is not None:
        raise RuntimeError(f"index {bad} is out of bounds for dimension {axis} with size {size}")


def check_index_vector_bounds(op: str, idx, size: int, axis: int) -> None:
    """index_select (PyTorch's message for it differs) and index_add."""
    bad = _first_bad(idx, size)
    if bad is None:
        return
    if op == "index_select":
        raise RuntimeError(f"INDICES element is out of DATA bounds, id={bad} axis_dim={size}")
    raise RuntimeError(f"index {bad} is out of bounds for dimension {axis} with size {size}")
