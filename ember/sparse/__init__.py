"""``ember.sparse``: sparse COO tensors and their products (``torch.sparse``).

Example:
    >>> import ember
    >>> adj = ember.sparse_coo_tensor([[0, 1, 2], [1, 2, 0]], [1.0, 1.0, 1.0], (3, 3))
    >>> (adj @ ember.eye(3)).sum()
    tensor(3.)
"""

from ember.sparse.coo import SparseCOOTensor, layout, sparse_coo, sparse_coo_tensor, strided
from ember.sparse.legacy import DoubleTensor, FloatTensor, IntTensor, LongTensor
from ember.sparse.matmul import (
    addmm,
    matmul,
    mm,
    spmm,
    sum,  # noqa: A004 - PyTorch's name
)

__all__ = ["SparseCOOTensor", "layout", "sparse_coo", "strided", "sparse_coo_tensor", "mm", "spmm", "sum", "matmul"]
__all__ += ["addmm", "FloatTensor", "DoubleTensor", "LongTensor", "IntTensor"]
