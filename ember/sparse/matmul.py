"""Sparse-dense matrix products (``ember.sparse.mm``, ``ember.spmm``, ``sparse @ dense``) and ``sparse.sum``.

``SparseMM`` is one primitive: ``out[r] += v * dense[c]`` for every stored ``(r, c, v)``, computed
as one gather, one multiply and a segmented sum over the entries sorted by row
(``np.add.reduceat``), so the work is ``O(nnz * p)``. Its inputs are the sparse operand's values
tensor and the dense operand, and its gradient is written with Tensor ops, so it differentiates
again:

* to the values: ``sum_j g[r, j] * dense[c, j]`` (a gather of both and a row sum), which is
  PyTorch's gradient for ``torch.sparse.mm`` (the dense gradient masked to the stored entries);
* to the dense operand: ``S^T @ g``, the same primitive with rows and columns swapped.
"""

from __future__ import annotations

import numpy as np

from ember.autograd.node import Node
from ember.ops._base import _wrap, check_tensor
from ember.ops.dispatch import Primitive, apply
from ember.sparse.coo import SparseCOOTensor
from ember.tensor import Tensor

__all__ = ["mm", "matmul", "spmm", "sum", "addmm"]


def _spmm_array(vals: np.ndarray, rows: np.ndarray, cols: np.ndarray, dense: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, dense.shape[1]), dtype=np.result_type(vals.dtype, dense.dtype))
    if rows.size == 0:
        return out
    prod = dense[cols] * vals[:, None]  # (nnz, p)
    if rows.size > 1 and np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        rows, prod = rows[order], prod[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    out[rows[starts]] = np.add.reduceat(prod, starts, axis=0)
    return out


class SparseMM(Node):
    """``S @ D`` for a 2-D sparse ``S`` given as (values, rows, cols, n rows); inputs (values, D)."""

    __slots__ = ("rows", "cols", "n")

    def backward(self, g):
        vals, dense = self.inputs
        gv = gd = None
        if vals._requires_grad:
            r, c = _wrap(self.rows), _wrap(self.cols)
            gv = (g.index_select(0, r) * dense.index_select(0, c)).sum(-1)
        if dense._requires_grad:
            gd = _spmm(vals, self.cols, self.rows, g, dense.shape[0])
        return gv, gd


def _spmm(vals: Tensor, rows: np.ndarray, cols: np.ndarray, dense: Tensor, n: int) -> Tensor:
    return apply(_SPMM, vals, dense, rows=rows, cols=cols, n=n)


_SPMM = Primitive(
    "sparse_mm", SparseMM, lambda vals, dense, rows, cols, n: _spmm_array(vals._data, rows, cols, dense._data, n)
)
_SPMM.register(
    "meta",
    lambda vals, dense, rows, cols, n: dense._device.backend.xp.empty((n,) + dense._data.shape[1:], dense._data.dtype),
)


def _check_mm(op: str, sparse: SparseCOOTensor, dense: Tensor) -> None:
    check_tensor(dense, op, "mat2")
    if dense.is_sparse:
        raise NotImplementedError(f"{op}: sparse @ sparse is not supported by Ember's sparse COO tensors")
    if sparse.dim() != 2 or sparse.sparse_dim() != 2:
        raise RuntimeError(f"{op}: expected a 2-D sparse matrix (2 sparse dims), got shape {list(sparse.shape)}")
    if dense.dim() != 2:
        raise RuntimeError(f"{op}: expected a 2-D dense matrix, got {dense.dim()}-D {list(dense.shape)}")
    if sparse.shape[1] != dense.shape[0]:
        raise RuntimeError(
            f"{op}: mat1 and mat2 shapes cannot be multiplied ({sparse.shape[0]}x{sparse.shape[1]} and "
            f"{dense.shape[0]}x{dense.shape[1]})"
        )
    if sparse.dtype != dense.dtype:
        raise RuntimeError(
            f"{op}: expected scalar type {sparse.dtype} but found {dense.dtype} (sparse {list(sparse.shape)}, "
            f"dense {list(dense.shape)})"
        )


def mm(mat1: Tensor, mat2: Tensor) -> Tensor:
    """Matrix product of a 2-D sparse ``mat1`` and a dense ``mat2`` (dense result), or of dense and sparse.

    Gradients flow to ``mat1``'s values and to ``mat2``, as in ``torch.sparse.mm``.

    Example:
        >>> import ember
        >>> a = ember.sparse_coo_tensor([[0, 1], [1, 0]], [2.0, 3.0], (2, 2))
        >>> ember.sparse.mm(a, ember.ones(2, 1))
        tensor([[2.],
                [3.]])
    """
    if not mat1.is_sparse:
        if not getattr(mat2, "is_sparse", False):
            from ember.ops.linalg import mm as dense_mm

            return dense_mm(mat1, mat2)
        # dense @ sparse = (sparse^T @ dense^T)^T
        check_tensor(mat1, "mm")
        if mat1.dim() != 2:
            raise RuntimeError(f"mm: expected a 2-D dense matrix, got {mat1.dim()}-D {list(mat1.shape)}")
        return mm(mat2.t(), mat1.transpose(0, 1)).transpose(0, 1)
    _check_mm("mm", mat1, mat2)
    idx = mat1._indices()._data
    return _spmm(mat1._values(), idx[0], idx[1], mat2, mat1.shape[0])


spmm = mm


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """``input @ other`` where one side is sparse: matrix-matrix or sparse matrix-vector."""
    if input.is_sparse and not getattr(other, "is_sparse", False) and isinstance(other, Tensor) and other.dim() == 1:
        return mm(input, other.unsqueeze(1)).squeeze(1)
    return mm(input, other)


def sum(input: SparseCOOTensor, dim=None, dtype=None) -> Tensor:  # noqa: A001 - PyTorch's name
    """Sum of a sparse tensor: all of it (a 0-d dense tensor) or over ``dim``.

    Summing some of the sparse dims leaves a (coalesced) sparse tensor; summing them all leaves a
    dense one. Differentiable with respect to the values.

    Example:
        >>> import ember
        >>> s = ember.sparse_coo_tensor([[0, 1, 1], [2, 0, 2]], [3.0, 4.0, 5.0], (2, 3))
        >>> ember.sparse.sum(s)
        tensor(12.)
        >>> ember.sparse.sum(s, 1).to_dense()
        tensor([3., 9.])
    """
    if not input.is_sparse:
        raise RuntimeError(f"sparse.sum: expected a sparse tensor, got a dense one of shape {list(input.shape)}")
    vals = input._values() if dtype is None else input._values().to(dtype)
    if dim is None:
        return vals.sum()
    nd = input.dim()
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    dims = sorted({d % nd for d in dims})
    sd = input.sparse_dim()
    dense_dims = [d - sd + 1 for d in dims if d >= sd]  # axes of the values tensor
    if dense_dims:
        vals = vals.sum(tuple(dense_dims))
    keep = [d for d in range(sd) if d not in dims]
    if not keep:
        return vals.sum(0)
    idx = _wrap(np.ascontiguousarray(input._indices()._data[keep]))
    shape = [input.shape[d] for d in keep] + [input.shape[d] for d in range(sd, nd) if d not in dims]
    return SparseCOOTensor._make(idx, vals, tuple(shape), False).coalesce()


def addmm(mat: Tensor, mat1: Tensor, mat2: Tensor, *, beta: float = 1.0, alpha: float = 1.0) -> Tensor:
    """``beta * mat + alpha * (mat1 @ mat2)`` with a sparse ``mat1`` (``torch.sparse.addmm``).

    Example:
        >>> import ember
        >>> a = ember.sparse_coo_tensor([[0, 1], [1, 0]], [2.0, 3.0], (2, 2))
        >>> ember.sparse.addmm(ember.ones(2, 1), a, ember.ones(2, 1), alpha=2.0)
        tensor([[5.],
                [7.]])
    """
    prod = mm(mat1, mat2)
    if alpha != 1:
        prod = prod * alpha
    if mat.is_sparse:
        mat = mat.to_dense()
    return prod + (mat if beta == 1 else mat * beta)
