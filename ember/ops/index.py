"""Indexing: ``x[key]``, gather/scatter, index_select/index_add, masked_fill, sort/topk, nonzero.

Reading with basic keys (ints, slices, None, Ellipsis) gives a view; any tensor or list in the
key makes it advanced indexing, which copies. Gradients of reads scatter back with ``add.at`` so
repeated indices accumulate, as in PyTorch.
"""

from __future__ import annotations

import builtins
import sys
from collections import namedtuple

import numpy as np

from ember import _dtype
from ember._mode import mode as _mode
from ember.autograd.node import Node
from ember.ops._base import Tensor, _wrap_dim, check_tensor
from ember.ops._checks import check_gather_bounds, check_index_vector_bounds
from ember.ops.dispatch import Primitive, apply
from ember.ops.dispatch_views import apply_index

__all__ = [
    "argsort",
    "argwhere",
    "bincount",
    "gather",
    "getitem",
    "getitem_raw",
    "index_add",
    "index_add_args",
    "index_copy",
    "index_fill",
    "index_put",
    "index_put_zeros",
    "index_select",
    "kthvalue",
    "masked_fill",
    "masked_scatter",
    "masked_select",
    "median",
    "msort",
    "nonzero",
    "scatter",
    "scatter_add",
    "scatter_reduce",
    "setitem",
    "sort",
    "take",
    "take_along_dim",
    "topk",
    "unique",
]

_INDEX_HELP = "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid indices"


# --------------------------------------------------------------------------- keys
def _convert_key(key, shape) -> tuple[tuple, bool]:
    """Turn a PyTorch index into a NumPy one; returns (key, is_basic)."""
    if not isinstance(key, tuple):
        if type(key) is list and _sequence_as_tuple(key):
            key = tuple(key)
        else:
            key = (key,)
    out = []
    basic = True
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, slice):
            if isinstance(k, slice):
                k = _check_slice(k)
            out.append(k)
        elif isinstance(k, bool):
            out.append(np.asarray(k))
            basic = False
        elif isinstance(k, (int, np.integer)):
            out.append(int(k))
        elif isinstance(k, Tensor):
            d = k._device.backend.to_host(k._data) if k._device.type != "cpu" else k._data
            if d.dtype.kind in "fV":
                raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors (got {k.dtype})")
            if d.dtype == np.uint8:
                d = d.astype(bool)
            out.append(d)
            basic = False
        elif isinstance(k, (list, np.ndarray)):
            arr = np.asarray(k)
            if arr.size == 0:
                arr = arr.astype(np.int64)  # ``x[[]]``: an empty integer index, not a float one
            if arr.dtype.kind in "fV":
                raise IndexError(f"{_INDEX_HELP} (got a list of floats)")
            if arr.dtype == object:
                raise IndexError(f"{_INDEX_HELP} (got a ragged or mixed list)")
            out.append(arr if arr.size or arr.dtype.kind in "ib" else arr.astype(np.int64))
            basic = False
        else:
            raise IndexError(f"{_INDEX_HELP} (got {type(k).__name__})")
    _check_bounds(out, shape)
    return tuple(out), basic


def _sequence_as_tuple(key: list) -> bool:
    """PyTorch (like old NumPy) reads ``x[[t0, t1]]`` / ``x[[[0, 1], [1, 1]]]`` as ``x[t0, t1]``: a short
    list holding a tensor, a sequence, a slice, Ellipsis or None is a tuple of indices."""
    if len(key) >= 32:
        return False
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, (Tensor, list, tuple, slice, np.ndarray)):
            return True
    return False


def _check_slice(k: slice) -> slice:
    parts = []
    for v in (k.start, k.stop, k.step):
        if isinstance(v, Tensor):
            v = int(v.item())
        parts.append(v)
    if parts[2] is not None and parts[2] <= 0:
        raise ValueError("step must be greater than zero")
    return slice(*parts)


def _check_bounds(key, shape) -> None:
    """Raise PyTorch's IndexError for integer indices out of range and too many indices."""
    n_real = builtins.sum(
        1
        if not (k is None or k is Ellipsis) and not (isinstance(k, np.ndarray) and k.dtype == bool)
        else (k.ndim if isinstance(k, np.ndarray) else 0)
        for k in key
    )
    if n_real > len(shape):
        raise IndexError(f"too many indices for tensor of dimension {len(shape)}")
    dim = 0
    for pos, k in enumerate(key):
        if k is Ellipsis:
            rest = builtins.sum(
                (k2.ndim if isinstance(k2, np.ndarray) and k2.dtype == bool else 1)
                for k2 in key[pos + 1 :]
                if k2 is not None and k2 is not Ellipsis
            )
            dim = len(shape) - rest
            continue
        if k is None:
            continue
        if isinstance(k, int):
            size = shape[dim]
            if k >= size or k < -size:
                raise IndexError(f"index {k} is out of bounds for dimension {dim} with size {size}")
        elif isinstance(k, np.ndarray) and k.dtype != bool and k.size:
            size = shape[dim]
            hi, lo = int(k.max()), int(k.min())
            if hi >= size or lo < -size:
                bad = hi if hi >= size else lo
                raise IndexError(f"index {bad} is out of bounds for dimension {dim} with size {size}")
        elif isinstance(k, np.ndarray) and k.dtype == bool:
            for j, s in enumerate(k.shape):
                if dim + j < len(shape) and s != shape[dim + j]:
                    raise IndexError(
                        f"The shape of the mask {list(k.shape)} at index {j} does not match the shape of "
                        f"the indexed tensor {list(shape)} at index {dim + j}"
                    )
            dim += k.ndim
            continue
        dim += 1


# --------------------------------------------------------------------------- reading
class Index(Node):
    __slots__ = ("key", "basic")
    saves_values = False

    def backward(self, g):
        return (index_put_zeros(g, self.inputs[0]._data.shape, self.key, self.basic),)


def getitem(input: Tensor, key) -> Tensor:
    """``input[key]`` with PyTorch's indexing rules."""
    kc = key.__class__
    if kc is int:  # the common cases first: one in-range int, or one slice of ints with no step
        shape = input._data.shape
        if shape and -shape[0] <= key < shape[0]:
            return apply_index(_GETITEM, input, (key,))
    elif kc is slice and key.step is None and key.start.__class__ in _PLAIN and key.stop.__class__ in _PLAIN:
        if input._data.ndim:
            return apply_index(_GETITEM, input, (key,))
    if _mode.handler is not None and "ember.func" in sys.modules:  # inside vmap (needs ember.func)
        from ember.func import _batched_index

        if _batched_index.has_batched(key):
            return _batched_index.getitem_batched(input, key)
    nkey, basic = _convert_key(key, input._data.shape)
    return apply(_GETITEM, input, key=nkey, basic=basic)


_PLAIN = (int, type(None))  # slice bounds the fast path of getitem passes on unchecked


def _getitem_impl(x, key, basic):
    d = x._data
    out = d[key]
    if basic and out.__class__ is not np.ndarray and isinstance(out, np.generic):
        out = d[key + (Ellipsis,)]  # a 0-d view rather than a NumPy scalar
    return out


# Basic indexing gives a view (``apply`` sees that the array is one); "index" never does.
_GETITEM = Primitive("getitem", Index, _getitem_impl, view="maybe", params=("key", "basic"))
_INDEX = Primitive("index", Index, lambda x, key, basic: x._data[key])


class IndexPutZeros(Node):
    """``zeros(shape)[key] += g``: the gradient of a read; its own gradient is the read."""

    __slots__ = ("shape", "key", "basic")
    saves_values = False

    def backward(self, g):
        return (getitem_raw(g, self.key),)


def getitem_raw(x: Tensor, nkey) -> Tensor:
    return apply(_INDEX, x, key=nkey, basic=False)


def index_put_zeros(g: Tensor, shape, key, basic: bool = False) -> Tensor:
    return apply(_INDEX_PUT_ZEROS, g, shape=shape, key=key, basic=basic)


def _index_put_zeros_impl(g, shape, key, basic):
    out = g._device.backend.xp.zeros(shape, dtype=g._data.dtype)
    if basic:
        out[key] = g._data
    else:
        g._device.backend.scatter_add(out, key, g._data)
    return out


_INDEX_PUT_ZEROS = Primitive("index_put_zeros", IndexPutZeros, _index_put_zeros_impl)


# --------------------------------------------------------------------------- writing
class IndexPut(Node):
    __slots__ = ("key", "accumulate")
    saves_values = False

    def backward(self, g):
        x, v = self.inputs
        gx = gv = None
        if isinstance(x, Tensor) and x._requires_grad:
            gx = g if self.accumulate else index_put(g, self.key, 0.0, _converted=True)
        if isinstance(v, Tensor) and v._requires_grad:
            from ember.ops.elementwise import sum_to

            gv = sum_to(getitem_raw(g, self.key), v)
        return gx, gv


def index_put(input: Tensor, indices, values, accumulate: bool = False, *, _converted: bool = False) -> Tensor:
    """Out-of-place ``input[indices] = values`` (``+=`` with ``accumulate``)."""
    d = input._data
    key = indices if _converted else _convert_key(indices if isinstance(indices, tuple) else tuple(indices), d.shape)[0]
    return apply(_INDEX_PUT, input, values, key=key, accumulate=accumulate)


def _index_put_impl(input, values, key, accumulate):
    d = input._data
    vd = values._data if isinstance(values, Tensor) else values
    if isinstance(vd, np.ndarray) and vd.dtype != d.dtype:
        vd = vd.astype(d.dtype)
    out = d.copy()
    try:
        if accumulate:
            input._device.backend.scatter_add(out, key, vd)
        else:
            out[key] = vd
    except ValueError as exc:
        raise RuntimeError(
            f"index_put: shape mismatch: value tensor of shape {list(np.shape(vd))} cannot be broadcast "
            f"to indexing result ({exc})"
        ) from None
    return out


_INDEX_PUT = Primitive("index_put", IndexPut, _index_put_impl)


def setitem(input: Tensor, key, value) -> None:
    """``input[key] = value`` in place (recorded in the graph when gradients flow)."""
    from ember.ops.inplace import apply_inplace

    d = input._data
    nkey, _ = _convert_key(key, d.shape)
    if isinstance(value, Tensor) and value._data.dtype.kind in "fV" and d.dtype.kind in "biu" and value._data.ndim:
        raise RuntimeError(
            f"Index put requires the source and destination dtypes match, got {input.dtype} for the destination and {value.dtype} for the source."
        )

    def write(x):
        return index_put(x, nkey, value, _converted=True)

    apply_inplace(input, write, (value,), raw=(_SETITEM, (value,), {"key": nkey}), op="setitem")


def _setitem_impl(x, value, key):
    vd = value._data if isinstance(value, Tensor) else value
    xd = x._data
    try:
        xd[key] = vd
    except ValueError:
        raise RuntimeError(
            f"shape mismatch: value tensor of shape {list(np.shape(vd))} cannot be broadcast to indexing "
            f"result of shape {list(np.shape(xd[key]))}"
        ) from None


_SETITEM = Primitive("setitem_", None, _setitem_impl, inplace=True)


# --------------------------------------------------------------------------- accumulating writes
# ``np.add.at`` (unbuffered, so repeated indices accumulate) is about 15x slower than a buffered
# fancy ``out[key] += src`` on rows. Repeats are rare in practice (MoE routing, topk gathers),
# and cheap to detect, so the buffered form is used whenever it is exact.
def _normalized(idx: np.ndarray, size: int) -> np.ndarray:
    return np.where(idx < 0, idx + size, idx) if idx.size and idx.min() < 0 else idx


def _index_add_into(out, axis: int, idx: np.ndarray, src, device) -> None:
    """``out[(:,) * axis + (idx,)] += src`` with repeated indices accumulated."""
    key = (slice(None),) * axis + (idx,)
    if not isinstance(out, np.ndarray):
        device.backend.scatter_add(out, key, src)
        return
    if idx.size < 2:
        out[key] += src
        return
    size = out.shape[axis]
    counts = np.bincount(_normalized(idx, size), minlength=size)
    most = int(counts.max())
    if most == 1 and idx.size == size:
        # A permutation: gather the source into place (a fancy-indexed += is much slower).
        out += src.take(np.argsort(_normalized(idx, size)), axis=axis)
    elif most == 1:
        out[key] += src
    elif not np.any(np.diff(_normalized(idx, size)) < 0):
        _index_add_sorted(out, axis, _normalized(idx, size), src)
    elif most <= 8 and src.size > idx.size:
        # A few repeats: one buffered add per occurrence rank (the k-th time an index appears).
        idx = _normalized(idx, size)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        first = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        rank = np.empty(idx.size, dtype=np.intp)
        rank[order] = np.arange(idx.size) - np.repeat(first, np.diff(np.r_[first, idx.size]))
        for r in range(most):
            sel = np.flatnonzero(rank == r)
            out[(slice(None),) * axis + (idx[sel],)] += src.take(sel, axis=axis)
    else:
        np.add.at(out, key, src)


def _index_add_sorted(out, axis: int, idx: np.ndarray, src) -> None:
    """The index_add of sorted indices (resampling, segment sums): one segmented sum per run."""
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    sums = np.add.reduceat(src, starts, axis=axis)
    if starts.size == out.shape[axis]:  # every target once, in order: a plain add
        out += sums
    else:
        out[(slice(None),) * axis + (idx[starts],)] += sums


def _scatter_add_into(out, axis: int, index: np.ndarray, src, device) -> None:
    """``out[_full_index(index, axis)] += src`` with repeated targets accumulated."""
    key = _full_index(index, axis)
    if not isinstance(out, np.ndarray):
        device.backend.scatter_add(out, key, src)
        return
    if index.size > 1 and index.ndim:
        # Two entries hit the same element only if they share every other coordinate: sort
        # along the scatter axis and look for equal neighbours.
        srt = np.sort(_normalized(index, out.shape[axis] if out.ndim else 1), axis=axis)
        if not (np.diff(srt, axis=axis) == 0).any():
            out[key] += src
            return
    np.add.at(out, key, src)


# --------------------------------------------------------------------------- gather / scatter
def _full_index(index: np.ndarray, axis: int) -> tuple:
    """NumPy fancy index addressing ``out[..., index[i,j,k], ...]`` along ``axis``."""
    grids = np.indices(index.shape, sparse=True)
    key = list(grids)
    key[axis] = index
    return tuple(key)


def _is_meta(a) -> bool:
    """A meta array: no values to check (bounds are checked where the data lives)."""
    return getattr(a, "is_meta", False)


def _check_gather(op, input, dim, index, src=None):
    check_tensor(index, op, "index")
    if index._data.dtype != np.int64 and index._data.dtype.kind not in "i":
        raise RuntimeError(f"{op}(): Expected dtype int64 for index")
    nd = builtins.max(input._data.ndim, 1)
    axis = _wrap_dim(dim, nd, op)
    if index._data.ndim != input._data.ndim and index._data.size:
        raise RuntimeError(
            f"Index tensor must have the same number of dimensions as {'input' if src is None else 'self'} tensor"
        )
    for k in range(index._data.ndim):
        if k != axis and index._data.shape[k] > input._data.shape[k]:
            raise RuntimeError(
                f"Size does not match at dimension {k} expected index {list(index.shape)} to be smaller "
                f"than self {list(input.shape)} apart from dimension {axis}"
            )
    idx = index._data
    if not _is_meta(idx):
        check_gather_bounds(idx, input._data.shape[axis] if input._data.ndim else 1, axis)
    if idx.size and not _is_meta(idx):
        size = input._data.shape[axis] if input._data.ndim else 1
        if idx.max() >= size or idx.min() < -size:
            raise RuntimeError(
                f"{op}(): index {int(idx.max() if idx.max() >= size else idx.min())} is out of bounds for dimension {axis} with size {size}"
            )
    return axis


class Gather(Node):
    __slots__ = ("axis",)
    saves_values = False

    def backward(self, g):
        x = self.inputs[0]
        from ember.ops.creation import zeros_like

        return (scatter_add(zeros_like(x, dtype=g.dtype), self.axis, self.inputs[1], g),)


def gather(input, dim: int, index, *, sparse_grad: bool = False) -> Tensor:
    """``out[i][j] = input[index[i][j]][j]`` (for dim 0), as in PyTorch."""
    if input._data.ndim == 0 and index._data.ndim == 0:
        from ember.ops.movement import reshape

        return reshape(gather(reshape(input, (1,)), 0, reshape(index, (1,))), ())
    axis = _check_gather("gather", input, dim, index)
    return apply(_GATHER, input, index, axis=axis)


_GATHER = Primitive("gather", Gather, lambda x, index, axis: x._data[_full_index(index._data, axis)])


def take_along_dim(input, indices, dim=None) -> Tensor:
    if dim is None:
        return gather(input.reshape(-1), 0, indices.reshape(-1))
    return gather(input, dim, indices)


def take(input, index) -> Tensor:
    return getitem(input.reshape(-1), index)


class Scatter(Node):
    __slots__ = ("axis",)
    saves_values = False

    def backward(self, g):
        x, index, src = self.inputs
        gx = scatter(g, self.axis, index, 0.0) if isinstance(x, Tensor) and x._requires_grad else None
        gs = gather(g, self.axis, index) if isinstance(src, Tensor) and src._requires_grad else None
        return gx, None, gs


def scatter(input, dim: int, index, src=None, *, value=None, reduce=None) -> Tensor:
    """Out-of-place ``out[index[i][j]][j] = src[i][j]`` (dim 0); ``src`` may be a number."""
    if src is None:
        src = value
    if reduce is not None:
        if reduce == "add":
            return scatter_add(input, dim, index, src)
        raise RuntimeError(f"scatter(): reduce '{reduce}' is not supported by Ember (use scatter_reduce)")
    axis = _check_gather("scatter", input, dim, index, src)
    return apply(_SCATTER, input, index, src, axis=axis)


def _scatter_impl(input, index, src, axis):
    idx = index._data
    out = input._data.copy()
    key = _full_index(idx, axis)
    if isinstance(src, Tensor):
        sd = src._data[tuple(slice(0, s) for s in idx.shape)]
        out[key] = sd.astype(out.dtype, copy=False)
    else:
        out[key] = src
    return out


_SCATTER = Primitive("scatter", Scatter, _scatter_impl)


class ScatterAdd(Node):
    __slots__ = ("axis",)
    saves_values = False

    def backward(self, g):
        x, index, src = self.inputs
        gs = gather(g, self.axis, index) if isinstance(src, Tensor) and src._requires_grad else None
        return (g if x._requires_grad else None), None, gs


def scatter_add(input, dim: int, index, src) -> Tensor:
    """Out-of-place ``out[index[i][j]][j] += src[i][j]`` with repeated indices summed."""
    axis = _check_gather("scatter_add", input, dim, index, src)
    return apply(_SCATTER_ADD, input, index, src, axis=axis)


def _scatter_add_impl(input, index, src, axis):
    idx = index._data
    out = input._data.copy()
    sd = src._data[tuple(slice(0, s) for s in idx.shape)]
    _scatter_add_into(out, axis, idx, sd.astype(out.dtype, copy=False), input._device)
    return out


_SCATTER_ADD = Primitive("scatter_add", ScatterAdd, _scatter_add_impl)


def scatter_reduce(input, dim, index, src, reduce: str, *, include_self: bool = True) -> Tensor:
    if reduce == "sum":
        return scatter_add(input, dim, index, src)
    raise RuntimeError(f"scatter_reduce(): reduce '{reduce}' is not supported by Ember yet (only 'sum')")


# --------------------------------------------------------------------------- index_select / index_add
def _check_index_vector(op, index, size, axis):
    check_tensor(index, op, "index")
    idx = index._data
    if idx.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector")
    if idx.dtype.kind not in "iu":
        raise IndexError(f"{op}(): Expected dtype int32/int64 for index")
    if not _is_meta(idx):
        check_index_vector_bounds(op, idx, size, axis)
    if idx.size and not _is_meta(idx) and (idx.max() >= size or idx.min() < -size):
        bad = int(idx.max()) if idx.max() >= size else int(idx.min())
        raise IndexError(f"{op}(): index {bad} out of range for tensor of size {size} at dimension {axis}")
    return idx.reshape(-1)


class IndexSelect(Node):
    __slots__ = ("axis",)
    saves_values = False

    def backward(self, g):
        x, index = self.inputs
        return (apply(_INDEX_SELECT_BACKWARD, g, index, axis=self.axis, shape=x._data.shape),)


class IndexSelectBackward(Node):
    """The gradient of index_select's gradient (``create_graph``): index_select again."""

    __slots__ = ("axis", "shape")
    saves_values = False

    def backward(self, gg):
        return (index_select(gg, self.axis, self.inputs[1]),)


def _index_select_backward_impl(g, index, axis, shape):
    gx = g._device.backend.xp.zeros(shape, dtype=g._data.dtype)
    if not len(shape):
        gx = gx.reshape(1)
    _index_add_into(gx, axis, index._data.reshape(-1), g._data, g._device)
    return gx.reshape(shape)


_INDEX_SELECT_BACKWARD = Primitive("index_select_backward", IndexSelectBackward, _index_select_backward_impl)


def index_select(input, dim: int, index) -> Tensor:
    """The slices ``index`` of ``dim``, in order (a copy)."""
    axis = _wrap_dim(dim, builtins.max(input._data.ndim, 1), "index_select")
    shape = input._data.shape or (1,)
    _check_index_vector("index_select", index, shape[axis], axis)
    return apply(_INDEX_SELECT, input, index, axis=axis)


def _index_select_impl(x, index, axis):
    idx = index._data.reshape(-1)
    d = x._data
    return d.take(idx, axis=axis) if d.ndim else d.reshape(1).take(idx)


_INDEX_SELECT = Primitive("index_select", IndexSelect, _index_select_impl)


class IndexAdd(Node):
    __slots__ = ("axis", "alpha")
    saves_values = False

    def backward(self, g):
        x, index, src = self.inputs
        gs = None
        if isinstance(src, Tensor) and src._requires_grad:
            gs = index_select(g, self.axis, index)
            if self.alpha != 1:
                gs = gs * self.alpha
        return (g if x._requires_grad else None), None, gs


def index_add(input, dim: int, index, source, *, alpha=1) -> Tensor:
    """Out-of-place ``out.index_select(dim, index) += alpha * source`` (repeats accumulate)."""
    axis, _, _ = index_add_args(input, dim, index, source)
    return apply(_INDEX_ADD, input, index, source, axis=axis, alpha=alpha)


def _index_add_impl(input, index, source, axis, alpha):
    out = input._data.copy()
    sd = source._data
    if alpha != 1:
        sd = sd * alpha
    _index_add_into(out, axis, index._data.reshape(-1), sd.astype(out.dtype, copy=False), input._device)
    return out


_INDEX_ADD = Primitive("index_add", IndexAdd, _index_add_impl)


def index_add_args(input, dim: int, index, source):
    """Validated (axis, index array, source array) of an index_add."""
    axis = _wrap_dim(dim, builtins.max(input._data.ndim, 1), "index_add")
    idx = _check_index_vector("index_add", index, input._data.shape[axis], axis)
    sd = source._data
    expect = list(input._data.shape)
    expect[axis] = idx.size
    if list(sd.shape) != expect:
        raise RuntimeError(
            f"index_add_(): source shape {list(sd.shape)} does not match the self shape {list(input.shape)} "
            f"with dimension {axis} replaced by the index length {idx.size}"
        )
    return axis, idx, sd


def index_copy(input, dim, index, source) -> Tensor:
    axis = _wrap_dim(dim, input._data.ndim, "index_copy")
    key = (slice(None),) * axis + (index,)
    return index_put(input, key, source)


def index_fill(input, dim, index, value) -> Tensor:
    axis = _wrap_dim(dim, input._data.ndim, "index_fill")
    return index_put(input, (slice(None),) * axis + (index,), value)


# --------------------------------------------------------------------------- masks
def masked_fill(input, mask, value) -> Tensor:
    """Replace elements where ``mask`` is True by ``value`` (a number or 0-d tensor)."""
    from ember.ops.elementwise import where

    check_tensor(mask, "masked_fill", "mask")
    if mask._data.dtype != np.bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype {mask.dtype}")
    if isinstance(value, Tensor):
        if value._data.ndim:
            raise RuntimeError(
                f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with {value._data.ndim} dimension(s)."
            )
        if not value._requires_grad:
            value = value.item()
    try:
        np.broadcast_shapes(mask._data.shape, input._data.shape)
    except ValueError:
        raise RuntimeError(
            f"masked_fill: The size of the mask {list(mask.shape)} must be broadcastable to the input "
            f"{list(input.shape)}"
        ) from None
    if not isinstance(value, Tensor):
        value = _dtype.scalar_dtype(value) and value
        if input._data.dtype.kind in "iub" and isinstance(value, float):
            value = Tensor._from(np.asarray(value, dtype=input._data.dtype), input)
    res = where(mask, value, input)
    if res._data.shape != input._data.shape:
        raise RuntimeError(
            f"masked_fill: mask {list(mask.shape)} broadcasts the input {list(input.shape)} to a larger shape"
        )
    return res if res._data.dtype == input._data.dtype else res.to(input.dtype)


def masked_select(input, mask) -> Tensor:
    shape = np.broadcast_shapes(input._data.shape, mask._data.shape)
    from ember.ops.movement import expand

    return getitem(expand(input, shape), expand(mask, shape))


def masked_scatter(input, mask, source) -> Tensor:
    n = int(mask._data.sum())
    return index_put(input, (mask,), source.reshape(-1)[:n])


# --------------------------------------------------------------------------- sorting / selection
sort_result = namedtuple("sort", ["values", "indices"])
topk_result = namedtuple("topk", ["values", "indices"])


def _argsort(d, axis, descending, stable=True):
    if not descending:
        return np.argsort(d, axis=axis, kind="stable")
    # Descending and stable without negating (which breaks NaN order and integer minima): sort
    # the reversed array ascending, reverse the result, and map positions back.
    n = d.shape[axis]
    rev = np.flip(d, axis)
    return (n - 1) - np.flip(np.argsort(rev, axis=axis, kind="stable"), axis)


def argsort(input, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    d = input._data
    axis = _wrap_dim(dim, d.ndim, "argsort") if d.ndim else None
    return apply(_ARGSORT, input, axis=axis, descending=descending)


def _argsort_impl(x, axis, descending):
    d = x._data
    if axis is None:
        return np.zeros((), dtype=np.int64)
    return _argsort(d, axis, descending).astype(np.int64)


_ARGSORT = Primitive("argsort", None, _argsort_impl)


def sort(input, dim: int = -1, descending: bool = False, stable: bool = False):
    """Sorted values along ``dim`` and the indices that sort (stable)."""
    idx = argsort(input, dim, descending)
    if input._data.ndim == 0:
        return sort_result(input.clone(), idx)
    return sort_result(gather(input, dim, idx), idx)


def msort(input) -> Tensor:
    return sort(input, 0).values


def topk(input, k: int, dim: int = -1, largest: bool = True, sorted: bool = True):
    """The ``k`` largest (or smallest) elements along ``dim`` and their indices."""
    d = input._data
    axis = _wrap_dim(dim, builtins.max(d.ndim, 1), "topk")
    size = d.shape[axis] if d.ndim else 1
    if k < 0 or k > size:
        raise RuntimeError(f"selected index k out of range (k={k}, size {size} along dim {axis})")
    it = apply(_TOPK_INDICES, input, k=k, axis=axis, largest=largest)
    if d.ndim == 0:
        return topk_result(input.clone(), it)
    return topk_result(gather(input, axis, it), it)


def _topk_indices_impl(x, k, axis, largest):
    """The indices of the ``k`` largest (smallest) elements along ``axis``, in sorted order."""
    d = x._data
    if d.ndim == 0:
        return np.zeros_like(d, dtype=np.int64)
    size = d.shape[axis]
    if k < size // 8 and size > 64:
        # Partition first: O(n) selection, then sort only the k survivors.
        if largest:  # the k largest sit at the end of an ascending partition (NaN counts as largest)
            part = np.argpartition(d, size - k, axis=axis)
            cand = _along(part, axis, size - k, size)
        else:
            part = np.argpartition(d, k - 1, axis=axis)
            cand = _along(part, axis, 0, k)
        vals = np.take_along_axis(d, cand, axis)
        order = _argsort(vals, axis, largest)
        idx = np.take_along_axis(cand, order, axis)
    else:
        idx = _along(_argsort(d, axis, largest), axis, 0, k)
    return idx.astype(np.int64)


def _along(a, axis: int, start: int, stop: int):
    """``a[..., start:stop, ...]`` on ``axis`` (a slice, so on any device)."""
    return a[(slice(None),) * axis + (slice(start, stop),)]


def _topk_indices_meta(x, k, axis, largest):
    shape = list(x._data.shape)
    if shape:
        shape[axis] = k
    return x._device.backend.xp.empty(tuple(shape), np.int64)


_TOPK_INDICES = Primitive("topk_indices", None, _topk_indices_impl)
_TOPK_INDICES.register("meta", _topk_indices_meta)


def kthvalue(input, k: int, dim: int = -1, keepdim: bool = False):
    vals, idx = sort(input, dim)
    axis = _wrap_dim(dim, input._data.ndim, "kthvalue")
    from ember.ops.movement import narrow, squeeze

    v, i = narrow(vals, axis, k - 1, 1), narrow(idx, axis, k - 1, 1)
    if not keepdim:
        v, i = squeeze(v, axis), squeeze(i, axis)
    return namedtuple("kthvalue", ["values", "indices"])(v, i)


def median(input, dim=None, keepdim: bool = False):
    if dim is None:
        flat = input.reshape(-1)
        n = flat._data.size
        return sort(flat).values[(n - 1) // 2]
    n = input._data.shape[_wrap_dim(dim, input._data.ndim, "median")]
    return kthvalue(input, (n - 1) // 2 + 1, dim, keepdim)


def nonzero(input, *, as_tuple: bool = False):
    """Indices of the non-zero elements: an (n, ndim) int64 tensor, or one tensor per dim."""
    idx = apply(_NONZERO, input)  # (n, ndim)
    if as_tuple:
        if input._data.ndim == 0:
            return (idx.reshape(-1),)
        return tuple(idx[:, k] for k in range(input._data.ndim))
    return idx


def _nonzero_impl(x):
    d = x._data
    if d.ndim == 0:
        return np.zeros((int(bool(d)), 0), dtype=np.int64)
    return np.argwhere(d).astype(np.int64)


# The output's shape depends on the values: cpu (and cuda) only, as PyTorch's meta device has none.
_NONZERO = Primitive("nonzero", None, cpu=_nonzero_impl)
_NONZERO.register("cuda", _nonzero_impl)


def argwhere(input) -> Tensor:
    return nonzero(input)


def unique(input, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False, dim=None):
    out = apply(_UNIQUE, input, return_inverse=return_inverse, return_counts=return_counts, dim=dim)
    out = tuple(t for t in out if t is not None)
    return out[0] if len(out) == 1 else out


def _unique_impl(x, return_inverse, return_counts, dim):
    d = x._data
    res = np.unique(d, return_inverse=True, return_counts=True, axis=dim)
    inverse = res[1].reshape(d.shape if dim is None else -1).astype(np.int64) if return_inverse else None
    return res[0], inverse, res[2].astype(np.int64) if return_counts else None


# Values, inverse indices and counts; the output's shape depends on the values: no meta form.
_UNIQUE = Primitive("unique", None, cpu=_unique_impl, multi=True)


def bincount(input, weights=None, minlength: int = 0) -> Tensor:
    return apply(_BINCOUNT, input, weights, minlength=minlength)


_BINCOUNT = Primitive(
    "bincount", None, cpu=lambda x, w, minlength: np.bincount(x._data, None if w is None else w._data, minlength)
)
