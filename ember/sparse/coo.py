"""Sparse COO tensors: ``ember.sparse_coo_tensor``, ``Tensor.to_sparse()`` and the layouts.

A sparse COO tensor is a :class:`~ember.Tensor` subclass made of two ordinary tensors:
``indices`` (int64, ``(sparse_dim, nnz)``) and ``values`` (``(nnz, *dense_dims)``). Autograd goes
through ``values``: every op on a sparse tensor (``to_dense``, ``coalesce``, ``sparse.mm``) is
written with the values tensor as its differentiable input, so gradients reach the values (and
whatever made them) with no sparse-specific engine support. A sparse leaf made with
``requires_grad=True`` keeps a leaf values tensor, and its ``.grad`` is a sparse tensor holding
dL/dA at the stored positions.

Backed by NumPy only (sort, ``np.unique``, ``np.add.reduceat``): SciPy is not needed. The dense
array slot of the base class holds a stand-in that has the shape and dtype but refuses to be
read, so a dense op that does not know sparse tensors raises ``NotImplementedError`` instead of
computing on wrong data.
"""

from __future__ import annotations

import math

import numpy as np

from ember import _dtype
from ember._device import CPU
from ember.ops._base import _wrap
from ember.tensor import Tensor

__all__ = ["layout", "strided", "sparse_coo", "SparseCOOTensor", "sparse_coo_tensor", "to_sparse"]


class layout:
    """A tensor's memory layout: ``ember.strided`` (dense) or ``ember.sparse_coo``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ember.{self.name}"

    def __reduce__(self):
        return self.name


strided = layout("strided")
sparse_coo = layout("sparse_coo")

_SUPPORTED = (
    "to_dense, coalesce, indices/values, sparse.mm, sparse.sum, mm, matmul/@, t, dense + sparse, "
    "sparse + sparse, multiplication and division by a scalar"
)


class _SparseStorage:
    """Stands in for the dense array of a sparse tensor: shape and dtype, but no elements."""

    __slots__ = ("shape", "dtype", "ndim", "size", "itemsize")

    def __init__(self, shape: tuple, dtype: np.dtype) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)
        self.itemsize = self.dtype.itemsize

    def _refuse(self, what: str):
        raise NotImplementedError(
            f"{what} is not supported for sparse COO tensors (shape {list(self.shape)}, {self.dtype}); Ember's "
            f"sparse tensors support {_SUPPORTED}. Call .to_dense() first."
        )

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse(f"'{name}'")

    def __array__(self, *args, **kwargs):
        self._refuse("reading the elements as a dense array")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._refuse(f"the dense operation '{ufunc.__name__}'")

    def __array_function__(self, func, types, args, kwargs):
        self._refuse(f"the dense operation '{func.__name__}'")

    def __getitem__(self, key):
        self._refuse("indexing")


class SparseCOOTensor(Tensor):
    """A sparse tensor in coordinate format (``layout=ember.sparse_coo``); see :func:`sparse_coo_tensor`."""

    is_sparse = True
    layout = sparse_coo

    @staticmethod
    def _make(indices: Tensor, values: Tensor, shape, coalesced: bool) -> SparseCOOTensor:
        t = Tensor.__new__(SparseCOOTensor)
        t._data = _SparseStorage(shape, values._data.dtype)
        t._device = values._device
        t._sp_indices = indices
        t._sp_values = values
        t._coalesced = bool(coalesced)
        return t

    # ----- structure -----
    def sparse_dim(self) -> int:
        return self._sp_indices.shape[0]

    def dense_dim(self) -> int:
        return self.dim() - self.sparse_dim()

    def _nnz(self) -> int:
        return self._sp_values.shape[0]

    def is_coalesced(self) -> bool:
        return self._coalesced

    def _indices(self) -> Tensor:
        return self._sp_indices

    def _values(self) -> Tensor:
        return self._sp_values

    def indices(self) -> Tensor:
        if not self._coalesced:
            raise RuntimeError("Cannot get indices on an uncoalesced tensor, please call .coalesce() first")
        return self._sp_indices

    def values(self) -> Tensor:
        if not self._coalesced:
            raise RuntimeError("Cannot get values on an uncoalesced tensor, please call .coalesce() first")
        return self._sp_values

    def is_contiguous(self, memory_format=None) -> bool:
        raise RuntimeError("is_contiguous is not supported for sparse tensors (they have no strides)")

    # ----- autograd goes through the values -----
    @property
    def requires_grad(self) -> bool:
        return self._sp_values.requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self._sp_values.requires_grad = value

    def requires_grad_(self, requires_grad: bool = True) -> SparseCOOTensor:
        self._sp_values.requires_grad_(requires_grad)
        return self

    @property
    def _requires_grad(self) -> bool:  # read by the base class and by apply()
        return self._sp_values._requires_grad

    @property
    def grad(self):
        """The gradient with respect to the tensor as a whole: dL/dA at the stored positions.

        Every copy of a repeated index carries the same value of dL/dA, so the result keeps one
        per position (coalesced), as PyTorch's sparse gradient does.
        """
        g = self._sp_values.grad
        if g is None:
            return None
        if self._coalesced:
            return SparseCOOTensor._make(self._sp_indices, g, self.shape, True)
        sd = self.sparse_dim()
        idx = self._sp_indices._data
        lin = np.ravel_multi_index(tuple(idx), tuple(self.shape[:sd]))
        _, first = np.unique(lin, return_index=True)
        return SparseCOOTensor._make(_wrap(np.ascontiguousarray(idx[:, first])), g[_wrap(first)], self.shape, True)

    @grad.setter
    def grad(self, value) -> None:
        if value is not None:
            raise RuntimeError("sparse tensors: only `.grad = None` can be assigned")
        self._sp_values.grad = None

    @property
    def grad_fn(self):
        return self._sp_values.grad_fn

    @property
    def is_leaf(self) -> bool:
        return self._sp_values.is_leaf

    def detach(self) -> SparseCOOTensor:
        return SparseCOOTensor._make(self._sp_indices, self._sp_values.detach(), self.shape, self._coalesced)

    def clone(self, *, memory_format=None) -> SparseCOOTensor:
        return SparseCOOTensor._make(self._sp_indices.clone(), self._sp_values.clone(), self.shape, self._coalesced)

    # ----- conversion -----
    def coalesce(self) -> SparseCOOTensor:
        """Sorted, unique indices; values at repeated indices are summed (differentiably).

        Example:
            >>> import ember
            >>> s = ember.sparse_coo_tensor([[0, 0]], [1.0, 2.0], (3,))
            >>> s.coalesce().values()
            tensor([3.])
        """
        if self._coalesced:
            return self
        from ember.ops.creation import zeros
        from ember.ops.index import index_add

        sd = self.sparse_dim()
        idx = self._sp_indices._data
        sizes = self.shape[:sd]
        if idx.shape[1] == 0:
            return SparseCOOTensor._make(self._sp_indices, self._sp_values, self.shape, True)
        lin = np.ravel_multi_index(tuple(idx), sizes) if sd else np.zeros(idx.shape[1], np.int64)
        uniq, inverse = np.unique(lin, return_inverse=True)
        new_idx = np.stack(np.unravel_index(uniq, sizes)).astype(np.int64) if sd else np.zeros((0, 1), np.int64)
        vals = self._sp_values
        out = zeros((uniq.size,) + tuple(vals.shape[1:]), dtype=vals.dtype, device=vals.device)
        summed = index_add(out, 0, _wrap(inverse.reshape(-1).astype(np.int64)), vals)
        return SparseCOOTensor._make(_wrap(new_idx), summed, self.shape, True)

    def to_dense(self, dtype=None, *, masked_grad: bool = True) -> Tensor:
        """The dense tensor (repeated indices summed); differentiable with respect to the values.

        Example:
            >>> import ember
            >>> ember.sparse_coo_tensor([[0, 1], [1, 0]], [2.0, 3.0], (2, 2)).to_dense()
            tensor([[0., 2.],
                    [3., 0.]])
        """
        from ember.ops.creation import zeros
        from ember.ops.index import index_add

        sd = self.sparse_dim()
        sizes = tuple(self.shape[:sd])
        vals = self._sp_values if dtype is None else self._sp_values.to(dtype)
        idx = self._sp_indices._data
        lin = np.ravel_multi_index(tuple(idx), sizes) if sd else np.zeros(idx.shape[1], np.int64)
        flat = zeros((math.prod(sizes),) + tuple(vals.shape[1:]), dtype=vals.dtype, device=vals.device)
        flat = index_add(flat, 0, _wrap(lin.astype(np.int64)), vals)
        return flat.reshape(tuple(self.shape))

    def to_sparse(self, *args, **kwargs) -> SparseCOOTensor:
        return self

    to_sparse_coo = to_sparse

    def to(self, *args, **kwargs) -> SparseCOOTensor:
        """Moves or casts the values (``to(dtype)``, ``to("cpu")``); the indices stay int64 on the CPU."""
        vals = self._sp_values.to(*args, **kwargs)
        if vals is self._sp_values:
            return self
        return SparseCOOTensor._make(self._sp_indices, vals, self.shape, self._coalesced)

    def cpu(self) -> SparseCOOTensor:
        return self.to("cpu")

    def float(self) -> SparseCOOTensor:
        return self.to(_dtype.float32)

    def double(self) -> SparseCOOTensor:
        return self.to(_dtype.float64)

    # ----- shape -----
    def t(self) -> SparseCOOTensor:
        """The transpose of a 2-D sparse tensor (the two index rows swapped)."""
        if self.dim() != 2 or self.sparse_dim() != 2:
            raise RuntimeError(f"t() expects a 2-D sparse tensor with 2 sparse dims, but got shape {list(self.shape)}")
        idx = _wrap(np.ascontiguousarray(self._sp_indices._data[::-1]))
        return SparseCOOTensor._make(idx, self._sp_values, (self.shape[1], self.shape[0]), False)

    def transpose(self, dim0: int, dim1: int) -> SparseCOOTensor:
        if sorted((dim0 % max(self.dim(), 1), dim1 % max(self.dim(), 1))) == [0, 1] and self.dim() == 2:
            return self.t()
        raise NotImplementedError("transpose of sparse COO tensors: only the two dims of a 2-D tensor are supported")

    # ----- arithmetic with scalars, matrix products -----
    def _scaled(self, fn) -> SparseCOOTensor:
        return SparseCOOTensor._make(self._sp_indices, fn(self._sp_values), self.shape, self._coalesced)

    def __mul__(self, other):
        if isinstance(other, (int, float)) or (isinstance(other, Tensor) and not other.is_sparse and other.dim() == 0):
            return self._scaled(lambda v: v * other)
        return NotImplemented if not isinstance(other, Tensor) else self._refuse_binary("mul", other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, (int, float)) or (isinstance(other, Tensor) and not other.is_sparse and other.dim() == 0):
            return self._scaled(lambda v: v / other)
        return NotImplemented if not isinstance(other, Tensor) else self._refuse_binary("div", other)

    def __neg__(self):
        return self._scaled(lambda v: -v)

    def __add__(self, other):
        if isinstance(other, SparseCOOTensor):
            if tuple(other.shape) != tuple(self.shape) or other.sparse_dim() != self.sparse_dim():
                raise RuntimeError(
                    f"add: expected sizes to match, got {list(self.shape)} and {list(other.shape)} (sparse + sparse)"
                )
            from ember.ops.movement import cat

            idx = _wrap(np.concatenate([self._sp_indices._data, other._sp_indices._data], axis=1))
            return SparseCOOTensor._make(idx, cat([self._sp_values, other._sp_values]), self.shape, False)
        if isinstance(other, Tensor):
            raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")
        return NotImplemented

    def __radd__(self, other):
        # `dense + sparse` is dense, as in PyTorch (Python asks this subclass first).
        if isinstance(other, Tensor):
            return other + self.to_dense()
        return NotImplemented

    def _refuse_binary(self, op, other):
        raise NotImplementedError(
            f"{op}(sparse, {'sparse' if other.is_sparse else 'dense'}) with shapes {list(self.shape)} and "
            f"{list(other.shape)} is not supported by Ember's sparse COO tensors (only by a scalar)"
        )

    def mm(self, mat2: Tensor) -> Tensor:
        from ember.sparse.matmul import mm

        return mm(self, mat2)

    def matmul(self, other: Tensor) -> Tensor:
        from ember.sparse.matmul import matmul

        return matmul(self, other)

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        # `dense @ sparse`: Python asks this subclass first, so tensor.py needs no hook.
        from ember.sparse.matmul import matmul

        return matmul(other, self)

    # ----- printing -----
    def __repr__(self) -> str:
        pad = " " * 7
        ind = repr(self._sp_indices).replace("\n", "\n" + pad + " " * 8)
        val = repr(self._sp_values.detach()).replace("\n", "\n" + pad + " " * 7)
        s = f"tensor(indices={ind},\n{pad}values={val},\n{pad}size={tuple(self.shape)}, nnz={self._nnz()}, "
        s += "layout=ember.sparse_coo"
        if self._sp_values.grad_fn is not None:
            s += f",\n{pad}grad_fn=<{self._sp_values.grad_fn.name()}>"
        elif self.requires_grad:
            s += ", requires_grad=True"
        return s + ")"

    __str__ = __repr__


def _as_tensor(x, dtype=None, device=None) -> Tensor:
    from ember.ops.creation import tensor

    if isinstance(x, Tensor):
        return x if dtype is None else x.to(dtype)
    return tensor(x, dtype=dtype, device=device)


def sparse_coo_tensor(
    indices,
    values,
    size=None,
    *,
    dtype=None,
    device=None,
    requires_grad: bool = False,
    check_invariants: bool | None = None,
    is_coalesced: bool | None = None,
) -> SparseCOOTensor:
    """A sparse COO tensor with ``values[k]`` at ``indices[:, k]`` (repeats are summed when read).

    ``indices`` is ``(sparse_dim, nnz)`` of integers; ``values`` ``(nnz, *dense_dims)``. Without
    ``size`` the shape is the smallest that holds the indices. Gradients flow to ``values``.

    Example:
        >>> import ember
        >>> i = ember.tensor([[0, 1, 1], [2, 0, 2]])
        >>> s = ember.sparse_coo_tensor(i, [3.0, 4.0, 5.0], (2, 3))
        >>> s.to_dense()
        tensor([[0., 0., 3.],
                [4., 0., 5.]])
    """
    ind = _as_tensor(indices)
    vals = _as_tensor(values, dtype, device)
    if ind._data.dtype.kind not in "iu":
        raise RuntimeError(f"sparse_coo_tensor: indices must be an int64 tensor, but got {ind.dtype}")
    if ind.dim() != 2:
        raise RuntimeError(
            f"sparse_coo_tensor: indices must be sparse_dim x nnz, but got: {list(ind.shape)} (a {ind.dim()}-D tensor)"
        )
    if vals.dim() == 0:
        raise RuntimeError("sparse_coo_tensor: values must be at least 1-D (nnz, ...), but got a 0-D tensor")
    sd, nnz = ind.shape
    if vals.shape[0] != nnz:
        raise RuntimeError(
            f"indices and values must have same nnz, but got nnz from indices: {nnz}, nnz from values: {vals.shape[0]}"
        )
    idx = ind._data.astype(np.int64, copy=False)
    dense_shape = tuple(vals.shape[1:])
    if size is None:
        sparse_shape = tuple(int(m) + 1 for m in idx.max(1)) if nnz else (0,) * sd
        shape = sparse_shape + dense_shape
    else:
        shape = tuple(int(s) for s in size)
        if len(shape) != sd + len(dense_shape):
            raise RuntimeError(
                f"'len(size) == sparse_dim + dense_dim' is not satisfied: len(size) = {len(shape)}, "
                f"sparse_dim = {sd}, dense_dim = {len(dense_shape)}"
            )
        if tuple(shape[sd:]) != dense_shape:
            raise RuntimeError(
                f"sparse_coo_tensor: values have dense shape {list(dense_shape)}, but size gives {list(shape[sd:])}"
            )
    if nnz:
        if idx.min() < 0:
            raise RuntimeError(f"found negative index {int(idx.min())} in the indices of sparse_coo_tensor")
        for d in range(sd):
            hi = int(idx[d].max())
            if hi >= shape[d]:
                raise RuntimeError(
                    f"size is inconsistent with indices: for dim {d}, size is {shape[d]} but found index {hi}"
                )
    if requires_grad:
        vals = vals.detach().requires_grad_(True)
    if vals._device is not CPU:
        raise NotImplementedError(f"sparse COO tensors are CPU-only in Ember, got values on {vals.device}")
    coalesced = bool(is_coalesced) if is_coalesced is not None else nnz <= 1
    return SparseCOOTensor._make(_wrap(np.ascontiguousarray(idx)), vals, shape, coalesced)


def to_sparse(self: Tensor, sparse_dim: int | None = None, *, layout=None, blocksize=None, dense_dim=None):
    """The sparse COO form of a dense tensor (``Tensor.to_sparse()``): its nonzeros, coalesced.

    Example:
        >>> import ember
        >>> ember.tensor([[0.0, 1.0], [2.0, 0.0]]).to_sparse().values()
        tensor([1., 2.])
    """
    if layout is not None and layout is not sparse_coo:
        raise NotImplementedError(f"to_sparse: only layout=ember.sparse_coo is supported, got {layout}")
    if self.is_sparse:
        return self
    nd = self.dim()
    sd = nd if sparse_dim is None else int(sparse_dim)
    if not 0 < sd <= nd:
        raise RuntimeError(f"to_sparse: sparse_dim argument must be in [1, {nd}], but got {sd}")
    d = self._data
    nz = d != 0
    if sd < nd:
        nz = nz.reshape(d.shape[:sd] + (-1,)).any(-1)
    where = np.nonzero(nz)  # C order: lexicographically sorted, so the result is coalesced
    idx = np.stack(where).astype(np.int64) if where else np.zeros((sd, 0), np.int64)
    values = self[tuple(_wrap(w.astype(np.int64)) for w in where)]
    return SparseCOOTensor._make(_wrap(idx.reshape(sd, -1)), values, tuple(self.shape), True)
