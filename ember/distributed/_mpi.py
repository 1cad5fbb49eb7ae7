"""The one place ember.distributed touches mpi4py: a lazy import with a clear error, and buffers.

Importing ``mpi4py.MPI`` initialises MPI, so it happens only when distributed is first used
(``init_process_group``), never at ``import ember``. Tensors travel as NumPy buffers handed to
mpi4py's uppercase (buffer) methods: a contiguous tensor is sent and received in place, with
no copy; only non-contiguous tensors and reductions of 16-bit floats go through a temporary.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mpi", "is_available", "as_buffer", "reduce_dtype", "mpi_datatype"]

_INSTALL_HINT = "pip install 'ember[dist]'  (mpi4py and the mpich wheel)"


def is_available() -> bool:
    """True when mpi4py can be imported (without initialising MPI)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def mpi():
    """The ``mpi4py.MPI`` module; raises a RuntimeError naming the fix when it is missing."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(
            f"ember.distributed runs on MPI but mpi4py (or its MPI library) is not importable: {e}. "
            f"Install it with: {_INSTALL_HINT}"
        ) from e
    return MPI


def as_buffer(t) -> tuple[np.ndarray, bool]:
    """A contiguous NumPy array for tensor ``t`` and whether it is ``t``'s own memory.

    When it is not (a non-contiguous view, or a GPU tensor), the caller copies results back.
    """
    if t._device.type != "cpu":
        return np.ascontiguousarray(t._device.backend.to_host(t._data)), False
    d = t._data
    if d.flags.c_contiguous:
        return d, True
    return np.ascontiguousarray(d), False


def write_back(t, arr: np.ndarray) -> None:
    """Store ``arr`` into tensor ``t`` in place (for buffers that were temporaries)."""
    if t._device.type != "cpu":
        t._data[...] = t._device.backend.from_host(arr) if hasattr(t._device.backend, "from_host") else arr
    else:
        t._data[...] = arr.reshape(t._data.shape)


def reduce_dtype(dtype: np.dtype) -> np.dtype | None:
    """The dtype a reduction runs in: the array's own, or float32 for 16-bit floats MPI lacks."""
    if dtype == np.float16 or dtype.name == "bfloat16":
        return np.dtype(np.float32)
    return None


def mpi_datatype(dtype: np.dtype):
    """The MPI datatype of a NumPy dtype (for typed reductions)."""
    MPI = mpi()
    t = MPI._typedict.get(np.dtype(dtype).char)
    if t is None:
        raise TypeError(f"ember.distributed: no MPI reduction for dtype {dtype}")
    return t
