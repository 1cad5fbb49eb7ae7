"""``ember.sparse.FloatTensor(indices, values, size)`` and friends: PyTorch's legacy constructors.

Older graph code (pygcn's ``sparse_mx_to_torch_sparse_tensor``, for one) builds its adjacency
with ``torch.sparse.FloatTensor(indices, values, shape)``; each of these is
``sparse_coo_tensor`` with a fixed dtype. ``FloatTensor(*size)`` makes an empty sparse tensor.
"""

from __future__ import annotations

import warnings

import numpy as np

from ember import _dtype
from ember.ops._base import _wrap
from ember.sparse.coo import SparseCOOTensor, sparse_coo_tensor

__all__ = ["FloatTensor", "DoubleTensor", "LongTensor", "IntTensor"]


def _legacy(name: str, dtype):
    def make(*args, size=None, device=None):
        if args and all(isinstance(a, int) for a in args) or (not args and size is not None):
            shape = tuple(args) if args else tuple(size)
            values = _wrap(np.zeros((0,), dtype.np))
            return SparseCOOTensor._make(_wrap(np.zeros((len(shape), 0), np.int64)), values, shape, True)
        if len(args) == 3:
            indices, values, size = args
        elif len(args) == 2:
            indices, values = args
        else:
            raise TypeError(f"ember.sparse.{name}: expected (indices, values[, size]) or sizes, got {len(args)} args")
        warnings.warn(
            f"ember.sparse.{name}(indices, values, shape, *, device=) is deprecated.  Please use "
            "ember.sparse_coo_tensor(indices, values, shape, dtype=, device=).",
            UserWarning,
            stacklevel=2,
        )
        return sparse_coo_tensor(indices, values, size, dtype=dtype, device=device)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"Legacy constructor: ``sparse_coo_tensor(indices, values, size, dtype=ember.{dtype.name})``."
    return make


FloatTensor = _legacy("FloatTensor", _dtype.float32)
DoubleTensor = _legacy("DoubleTensor", _dtype.float64)
LongTensor = _legacy("LongTensor", _dtype.int64)
IntTensor = _legacy("IntTensor", _dtype.int32)
