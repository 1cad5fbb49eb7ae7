"""Shape and movement ops: views (reshape, permute, expand, ...), cat/stack, flip, roll, tril.

View ops return tensors that share memory with their input, as in PyTorch. Each view remembers
how it was made from its parent (``_view_of``: parent, function, arguments), so that an in-place
op on a view can re-derive the view from an updated base (see ``ember/ops/inplace.py``).
"""

from __future__ import annotations

import builtins
import math

import numpy as np

from ember import _dtype, backends
from ember.amp.policy import autocast_args
from ember.autograd.node import Node
from ember.ops._base import CPU, Tensor, _wrap_dim, check_tensor, wrap_dims
from ember.ops.dispatch import Primitive, apply
from ember.ops.dispatch_views import apply_permute, apply_reshape

__all__ = [
    "adjoint",
    "apply_view_chain",
    "atleast_1d",
    "atleast_2d",
    "broadcast_shapes",
    "broadcast_tensors",
    "broadcast_to",
    "cat",
    "chunk",
    "clone",
    "concat",
    "concatenate",
    "contiguous",
    "diag",
    "diag_embed",
    "diagonal",
    "expand",
    "expand_as",
    "flatten",
    "flip",
    "fliplr",
    "flipud",
    "hstack",
    "moveaxis",
    "movedim",
    "narrow",
    "permute",
    "repeat",
    "repeat_interleave",
    "replay_view",
    "reshape",
    "reshape_as",
    "roll",
    "select",
    "split",
    "squeeze",
    "stack",
    "swapaxes",
    "swapdims",
    "t",
    "tensor_split",
    "tile",
    "trace",
    "transpose",
    "tril",
    "triu",
    "unbind",
    "unflatten",
    "unsqueeze",
    "view",
    "view_as",
    "view_chain",
    "vstack",
]


# --------------------------------------------------------------------------- view bookkeeping
def _is_view(out, d) -> bool:
    b = out.base
    return b is not None and (b is d or (d.base is not None and b is d.base))


def view_chain(view: Tensor) -> tuple:
    """The view ops, base first, that made ``view`` from its base: ``((prim, params), ...)``."""
    chain = []
    t = view
    while t._view_of is not None and t is not view._base:
        parent, prim, params, *values = t._view_of
        if params is None:  # ops.dispatch_views: the values of prim.params, by position
            params = dict(zip(prim.params, values))
        chain.append((prim, params))
        t = parent
    chain.reverse()
    return tuple(chain)


def apply_view_chain(chain: tuple, new_base: Tensor) -> Tensor:
    out = new_base
    for prim, params in chain:
        out = apply(prim, out, **params)
    return out


def replay_view(view: Tensor, new_base: Tensor) -> Tensor:
    """Apply to ``new_base`` the chain of view ops that made ``view`` from its base."""
    return apply_view_chain(view_chain(view), new_base)


def _shape_arg(shape) -> tuple:
    if len(shape) == 1:
        s0 = shape[0]
        if isinstance(s0, (tuple, list)):
            shape = s0
        elif isinstance(s0, Tensor):
            shape = s0.tolist()
    for s in shape:
        if type(s) is not int:  # NumPy integers, 0-d tensors: convert (rare, so checked lazily)
            return tuple(int(s) for s in shape)
    return tuple(shape)


def _infer_shape(shape: tuple, numel: int, op: str) -> tuple:
    if shape and math.prod(shape) == numel and min(shape) >= 0:
        return shape  # the common case: a fully specified, valid shape (no -1: min >= 0)
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred")
    for s in shape:
        if s < -1:
            raise RuntimeError(f"{op}: invalid shape dimension {s}")
    known = 1
    for s in shape:
        if s != -1:
            known *= s
    if neg:
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
    return shape


# --------------------------------------------------------------------------- reshape family
class Reshape(Node):
    __slots__ = ("shape",)
    saves_values = False

    def backward(self, g):
        return (reshape(g, self.inputs[0]._data.shape),)


def reshape(input, *shape) -> Tensor:
    """The same elements in a new shape; a view when the memory layout allows, else a copy.

    Example:
        >>> import ember
        >>> ember.arange(6).reshape(2, 3).shape
        ember.Size([2, 3])
    """
    p = 1  # non-negative Python ints whose product is the size (x.reshape(4, 4)) pass as they are
    for s in shape:
        if s.__class__ is not int or s < 0:
            p = -1
            break
        p *= s
    if p != input._data.size:
        shape = _infer_shape(_shape_arg(shape), input._data.size, "reshape")
    return apply_reshape(_RESHAPE, input, shape)


# A view when NumPy's reshape gives one (``apply`` checks), else a copy.
_RESHAPE = Primitive("reshape", Reshape, lambda x, shape: x._data.reshape(shape), view="maybe", params=("shape",))


def _view_impl(x, shape):
    d = x._data
    try:
        if x._device is not CPU:
            return d.reshape(shape)
        out = d.reshape(shape)  # (reshape(copy=False) costs twice this on small arrays)
        b = out.base
        if b is d or (b is not None and b is d.base):
            return out
        raise ValueError("a copy")  # the strides allow no view: refuse, as PyTorch does
    except ValueError:
        raise RuntimeError(
            "view size is not compatible with input tensor's size and stride (at least one dimension "
            f"spans across two contiguous subspaces): input shape {list(d.shape)}, strides "
            f"{list(x.stride())}, requested {list(shape)}. Use .reshape(...) instead."
        ) from None


def _view_cpu(x, shape):
    out = x._data.reshape(shape)  # (reshape(copy=False) costs twice this on small arrays)
    b = out.base
    d = x._data
    if b is d or (b is not None and b is d.base):
        return out
    return _view_impl(x, shape)  # the strides allow no view: raises


_VIEW = Primitive("view", Reshape, _view_impl, cpu=_view_cpu, view=True, params=("shape",))
# Shares memory but is no autograd view (it has no gradient), as before the dispatcher.
_VIEW_DTYPE = Primitive("view_dtype", None, lambda x, dtype: x._data.view(dtype.np))


def view(input, *shape) -> Tensor:
    """Like reshape, but always a view: raises when the strides don't allow one.

    ``x.view(dtype)`` reinterprets the bytes as another dtype of the same size.
    """
    p = 1  # non-negative Python ints whose product is the size (x.view(4, 4)) pass as they are
    for s in shape:
        if s.__class__ is not int or s < 0:
            p = -1
            break
        p *= s
    if p != input._data.size:
        if len(shape) == 1 and isinstance(shape[0], _dtype.dtype):
            target = shape[0]
            if target.itemsize != input._data.itemsize:
                raise RuntimeError("view(dtype): only dtypes of the same element size are supported")
            return apply(_VIEW_DTYPE, input, dtype=target)
        shape = _infer_shape(_shape_arg(shape), input._data.size, "view")
    return apply_reshape(_VIEW, input, shape)


def view_as(input, other) -> Tensor:
    return view(input, other._data.shape)


def reshape_as(input, other) -> Tensor:
    return reshape(input, other._data.shape)


def flatten(input, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims ``start_dim..end_dim`` into one."""
    shape = input._data.shape
    if not shape:
        return reshape(input, (1,))
    s = _wrap_dim(start_dim, len(shape), "flatten")
    e = _wrap_dim(end_dim, len(shape), "flatten")
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    n = 1
    for k in shape[s : e + 1]:
        n *= k
    return reshape(input, shape[:s] + (n,) + shape[e + 1 :])


def unflatten(input, dim: int, sizes) -> Tensor:
    """Split one dim into ``sizes`` (one entry may be -1)."""
    shape = input._data.shape
    d = _wrap_dim(dim, len(shape), "unflatten")
    sizes = _infer_shape(tuple(sizes), shape[d], "unflatten")
    return (
        view(input, shape[:d] + sizes + shape[d + 1 :])
        if input.is_contiguous()
        else reshape(input, shape[:d] + sizes + shape[d + 1 :])
    )


def squeeze(input, dim=None) -> Tensor:
    """Remove dims of size 1 (all, or those in ``dim``)."""
    shape = input._data.shape
    if dim is None:
        new = tuple(s for s in shape if s != 1)
    else:
        axes = wrap_dims(dim, len(shape), "squeeze") if shape else ()
        new = tuple(s for i, s in enumerate(shape) if not (i in axes and s == 1))
    return apply(_RESHAPE, input, shape=new)


def unsqueeze(input, dim: int) -> Tensor:
    """Insert a dim of size 1 at ``dim``."""
    shape = input._data.shape
    d = _wrap_dim(dim, len(shape) + 1, "unsqueeze")
    return reshape(input, shape[:d] + (1,) + shape[d:])


# --------------------------------------------------------------------------- permutations
class Permute(Node):
    __slots__ = ("dims",)
    saves_values = False

    def backward(self, g):
        inv = [0] * len(self.dims)
        for i, p in enumerate(self.dims):
            inv[p] = i
        return (permute(g, inv),)


def permute(input, *dims) -> Tensor:
    """Reorder dims (a view)."""
    d = input._data
    dims = _shape_arg(dims)
    if len(dims) != d.ndim:
        raise RuntimeError(
            f"permute(sparse_coo): number of dimensions in the tensor input does not match the length "
            f"of the desired ordering of dimensions i.e. input.dim() = {d.ndim} is not equal to len(dims) = {len(dims)}"
        )
    dims = tuple(_wrap_dim(p, d.ndim, "permute") for p in dims)
    if len(set(dims)) != len(dims):
        raise RuntimeError("permute(): duplicate dims are not allowed.")
    return apply_permute(_PERMUTE, input, dims)


_PERMUTE = Primitive("permute", Permute, lambda x, dims: x._data.transpose(dims), view=True, params=("dims",))


def transpose(input, dim0: int, dim1: int) -> Tensor:
    """Swap two dims (a view)."""
    n = input._data.ndim
    if n == 2 and dim0.__class__ is int and dim1.__class__ is int and -2 <= dim0 < 2 and -2 <= dim1 < 2:
        return apply_permute(_PERMUTE, input, _T2 if (dim0 - dim1) % 2 else _T1)  # a matrix: no helpers
    if n == 0:
        return apply(_RESHAPE, input, shape=())
    a, b = _wrap_dim(dim0, n, "transpose"), _wrap_dim(dim1, n, "transpose")
    dims = list(range(n))
    dims[a], dims[b] = dims[b], dims[a]
    return apply_permute(_PERMUTE, input, tuple(dims))  # valid by construction: no permute() checks


_T2 = (1, 0)
_T1 = (0, 1)


swapaxes = swapdims = transpose


def t(input) -> Tensor:
    """Transpose a matrix (tensors of at most 2 dims)."""
    n = input._data.ndim
    if n == 2:
        return apply_permute(_PERMUTE, input, _T2)
    if n > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {n}D")
    return apply(_RESHAPE, input, shape=input._data.shape)


def adjoint(input) -> Tensor:
    return transpose(input, -2, -1)


def movedim(input, source, destination) -> Tensor:
    n = input._data.ndim
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [_wrap_dim(s, n, "movedim") for s in src]
    dst = [_wrap_dim(s, n, "movedim") for s in dst]
    order = [i for i in range(n) if i not in src]
    for s, dd in sorted(zip(dst, src)):
        order.insert(s, dd)
    return permute(input, order)


moveaxis = movedim


# --------------------------------------------------------------------------- expand / repeat
class Expand(Node):
    __slots__ = ("target",)
    saves_values = False

    def backward(self, g):
        from ember.ops.elementwise import sum_to

        return (sum_to(g, self.inputs[0]),)


def expand(input, *sizes) -> Tensor:
    """Broadcast size-1 dims to ``sizes`` without copying (-1 keeps a dim)."""
    d = input._data
    sizes = _shape_arg(sizes)
    if len(sizes) < d.ndim:
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to the "
            f"number of dimensions in the tensor ({d.ndim})"
        )
    lead = len(sizes) - d.ndim
    target = []
    for i, s in enumerate(sizes):
        cur = d.shape[i - lead] if i >= lead else None
        if s == -1:
            if cur is None:
                raise RuntimeError("expand: -1 is not allowed in a leading, non-existing dimension")
            s = cur
        elif cur is not None and cur != s and cur != 1:
            raise RuntimeError(
                f"The expanded size of the tensor ({s}) must match the existing size ({cur}) at "
                f"non-singleton dimension {i}.  Target sizes: {list(sizes)}.  Tensor sizes: {list(d.shape)}"
            )
        target.append(s)
    target = tuple(target)
    if target == d.shape:
        return apply(_RESHAPE, input, shape=target)
    return apply(_EXPAND, input, target=target)


_EXPAND = Primitive("expand", Expand, lambda x, target: np.broadcast_to(x._data, target), view=True, params=("target",))


@_EXPAND.register("cpu")
def _expand_cpu(x, target):
    d = x._data
    if d.ndim == 0 and d.__class__ is np.ndarray:
        # A 0-d array spread over a shape (the gradient of a full sum, in every loss.backward()):
        # the read-only all-zero-strides view np.broadcast_to makes, at a third of its cost.
        out = np.ndarray(target, d.dtype, d, 0, (0,) * len(target))
        out.flags.writeable = False
        return out
    return np.broadcast_to(d, target)


def expand_as(input, other) -> Tensor:
    return expand(input, other._data.shape)


def broadcast_to(input, shape) -> Tensor:
    return expand(input, shape)


def broadcast_tensors(*tensors):
    shape = np.broadcast_shapes(*(x._data.shape for x in tensors))
    return tuple(expand(x, shape) for x in tensors)


def broadcast_shapes(*shapes):
    from ember.tensor import Size

    return Size(np.broadcast_shapes(*shapes))


def repeat(input, *sizes) -> Tensor:
    """Tile the tensor ``sizes[i]`` times along each dim (a copy)."""
    sizes = _shape_arg(sizes)
    d = input._data
    if len(sizes) < d.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor")
    x = reshape(input, (1,) * (len(sizes) - d.ndim) + d.shape)
    # Interleave a new axis of size r before each dim, expand it, and merge: no Python loops.
    shape = x._data.shape
    inter = []
    for s in shape:
        inter += [1, s]
    big = []
    for r, s in zip(sizes, shape):
        big += [r, s]
    y = expand(reshape(x, inter), big)
    y = clone(y) if y._data.flags.c_contiguous else contiguous(y)  # always a copy, as in PyTorch
    return reshape(y, tuple(r * s for r, s in zip(sizes, shape)))


def tile(input, *dims) -> Tensor:
    """Repeat along each dim; ``dims`` shorter than the tensor's rank is padded with ones."""
    dims = _shape_arg(dims)
    if len(dims) < input._data.ndim:
        dims = (1,) * (input._data.ndim - len(dims)) + dims
    return repeat(input, dims)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None) -> Tensor:
    """Repeat each element ``repeats`` times along ``dim`` (flattened when None).

    With a single 1-D integer tensor argument, ``repeat_interleave(r)`` repeats ``arange(len(r))``.
    """
    from ember.ops.index import index_select

    if repeats is None:
        return apply(_REPEAT_COUNTS, input)
    if dim is None:
        input = flatten(input)
        dim = 0
    n = input._data.shape[dim]
    if not isinstance(repeats, Tensor):
        from ember.ops.creation import full

        repeats = full((n,), repeats, dtype=_dtype.int64, device=input.device)
    return index_select(input, dim, apply(_REPEAT_COUNTS, repeats))


# The indices 0..n-1, each repeated by its count (the counts' values are read: no meta form).
def _repeat_counts(r):
    counts = r._device.backend.to_host(r._data)  # the output's size is the counts' sum: read on the host
    return backends.like(r._data, np.repeat(np.arange(counts.size, dtype=np.int64), counts))


_REPEAT_COUNTS = Primitive("repeat_interleave_counts", None, _repeat_counts)


# --------------------------------------------------------------------------- copies
class Copy(Node):
    __slots__ = ()
    saves_values = False

    def backward(self, g):
        return (g,)


def contiguous(input, memory_format=None) -> Tensor:
    """Self if already C-contiguous, else a contiguous copy."""
    d = input._data
    if d.flags.c_contiguous:
        return input
    return apply(_CONTIGUOUS, input)


_CONTIGUOUS = Primitive("contiguous", Copy, lambda x: x._data.copy())
_CONTIGUOUS.register("cpu", lambda x: np.ascontiguousarray(x._data))


def clone(input, *, memory_format=None) -> Tensor:
    """A copy with its own memory; gradients flow back to ``input``."""
    return apply(_CLONE, input)


_CLONE = Primitive("clone", Copy, lambda x: x._data.copy())


# --------------------------------------------------------------------------- slicing helpers
def narrow(input, dim: int, start: int, length: int) -> Tensor:
    """The slice ``start:start+length`` of ``dim`` (a view)."""
    n = input._data.ndim
    d = _wrap_dim(dim, n, "narrow")
    size = input._data.shape[d]
    if isinstance(start, Tensor):
        start = int(start.item())
    if start < 0:
        start += size
    if start < 0 or start + length > size or length < 0:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    key = (slice(None),) * d + (slice(start, start + length),)
    return input[key]


def select(input, dim: int, index: int) -> Tensor:
    n = input._data.ndim
    d = _wrap_dim(dim, n, "select")
    return input[(slice(None),) * d + (index,)]


def split(tensor, split_size_or_sections, dim: int = 0):
    """Split into chunks of a given size, or into the given list of sizes (views)."""
    n = tensor._data.ndim
    d = _wrap_dim(dim, n, "split")
    size = tensor._data.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0 and size:
            raise RuntimeError(f"split expects split_size be non-negative, but got split_size={step}")
        bounds = list(range(0, size, step)) if size else [0]
        sizes = [builtins.min(step, size - b) for b in bounds]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != size:
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {size} (input tensor's size at "
                f"dimension {d}), but got split_sizes={sizes}"
            )
    out, start = [], 0
    for s in sizes:
        out.append(narrow(tensor, d, start, s))
        start += s
    return tuple(out)


def chunk(input, chunks: int, dim: int = 0):
    """Split into ``chunks`` nearly equal pieces (the last may be smaller)."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    size = input._data.shape[_wrap_dim(dim, input._data.ndim, "chunk")]
    step = -(-size // chunks) if size else 1
    return split(input, builtins.max(step, 1), dim)


def tensor_split(input, indices_or_sections, dim: int = 0):
    d = _wrap_dim(dim, input._data.ndim, "tensor_split")
    size = input._data.shape[d]
    if isinstance(indices_or_sections, int):
        n = indices_or_sections
        q, r = divmod(size, n)
        sizes = [q + 1] * r + [q] * (n - r)
    else:
        idx = [0] + list(indices_or_sections) + [size]
        sizes = [builtins.max(0, builtins.min(b, size) - builtins.min(a, size)) for a, b in zip(idx, idx[1:])]
    return split(input, sizes, d)


def unbind(input, dim: int = 0):
    """All slices along ``dim`` as a tuple of views."""
    d = _wrap_dim(dim, input._data.ndim, "unbind")
    return tuple(select(input, d, i) for i in range(input._data.shape[d]))


# --------------------------------------------------------------------------- joining
class Cat(Node):
    __slots__ = ("axis", "sizes", "dtype")
    saves_values = False

    def backward(self, g):
        pieces = split(g, self.sizes, self.axis)
        return tuple(p if isinstance(x, Tensor) and x._requires_grad else None for p, x in zip(pieces, self.inputs))


def cat(tensors, dim: int = 0, *, out=None) -> Tensor:
    """Join tensors along an existing dim.

    Example:
        >>> import ember
        >>> ember.cat([ember.zeros(1, 2), ember.ones(1, 2)]).shape
        ember.Size([2, 2])
    """
    (tensors,) = autocast_args("cat", tensors)
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
    for i, x in enumerate(tensors):
        check_tensor(x, "cat", f"tensors[{i}]")
    # PyTorch skips 1-D empty tensors (legacy behaviour) when joining.
    parts = [x for x in tensors if not (x._data.ndim == 1 and x._data.size == 0)] or tensors[:1]
    ref = parts[0]._data
    axis = _wrap_dim(dim, ref.ndim, "cat")
    from ember import _dtype

    rt = _dtype.result_type(*parts)
    for i, x in enumerate(parts):
        s = x._data.shape
        if len(s) != ref.ndim:
            raise RuntimeError(f"torch.cat(): Tensors must have same number of dimensions: got {ref.ndim} and {len(s)}")
        for k in range(ref.ndim):
            if k != axis and s[k] != ref.shape[k]:
                raise RuntimeError(
                    f"torch.cat(): Sizes of tensors must match except in dimension {axis}. Expected size "
                    f"{ref.shape[k]} but got size {s[k]} for tensor number {i} in the list."
                )
    res = apply(_CAT, *parts, axis=axis, sizes=[x._data.shape[axis] for x in parts], dtype=rt)
    if out is not None:
        out.copy_(res)
        return out
    return res


concat = concatenate = cat


def _cat_impl(*parts, axis, sizes, dtype):
    arrays = [x._data if x._data.dtype == dtype.np else x._data.astype(dtype.np) for x in parts]
    return np.concatenate(arrays, axis=axis)


_CAT = Primitive("cat", Cat, _cat_impl)


def stack(tensors, dim: int = 0, *, out=None) -> Tensor:
    """Join tensors along a new dim."""
    (tensors,) = autocast_args("stack", tensors)
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    shape = tensors[0]._data.shape
    for i, x in enumerate(tensors):
        if x._data.shape != shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(shape)} at entry 0 and "
                f"{list(x._data.shape)} at entry {i}"
            )
    d = _wrap_dim(dim, len(shape) + 1, "stack")
    return cat([unsqueeze(x, d) for x in tensors], d, out=out)


def hstack(tensors) -> Tensor:
    tensors = [atleast_1d(x) for x in tensors]
    return cat(tensors, 0 if tensors[0]._data.ndim == 1 else 1)


def vstack(tensors) -> Tensor:
    return cat([atleast_2d(x) for x in tensors], 0)


def atleast_1d(x) -> Tensor:
    return reshape(x, (1,)) if x._data.ndim == 0 else x


def atleast_2d(x) -> Tensor:
    x = atleast_1d(x)
    return unsqueeze(x, 0) if x._data.ndim == 1 else x


# --------------------------------------------------------------------------- flip / roll / tril
class Flip(Node):
    __slots__ = ("axes",)
    saves_values = False

    def backward(self, g):
        return (flip(g, self.axes),)


def flip(input, *dims_args, dims=None) -> Tensor:
    """Reverse the order of elements along ``dims`` (a copy, as in PyTorch).

    Takes ``flip(x, [0, 1])``, ``x.flip(0, 1)`` and ``flip(x, dims=0)``.
    """
    if dims is None:
        dims = dims_args[0] if len(dims_args) == 1 else dims_args
    if isinstance(dims, int):
        dims = (dims,)
    axes = wrap_dims(dims, input._data.ndim, "flip")
    return apply(_FLIP, input, axes=axes)


_FLIP = Primitive("flip", Flip, lambda x, axes: np.flip(x._data, axes).copy())


def fliplr(input) -> Tensor:
    return flip(input, (1,))


def flipud(input) -> Tensor:
    return flip(input, (0,))


class Roll(Node):
    __slots__ = ("shifts", "axes")
    saves_values = False

    def backward(self, g):
        return (roll(g, tuple(-s for s in self.shifts), self.axes),)


def roll(input, shifts, dims=None) -> Tensor:
    """Shift elements cyclically along ``dims`` (the flattened tensor when None)."""
    if dims is None:
        flat = roll(flatten(input), shifts, 0)
        return reshape(flat, input._data.shape)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}")
    axes = tuple(_wrap_dim(d, input._data.ndim, "roll") for d in dims)
    return apply(_ROLL, input, shifts=shifts, axes=axes)


_ROLL = Primitive("roll", Roll, lambda x, shifts, axes: np.roll(x._data, shifts, axes))


class TriMask(Node):
    __slots__ = ("k", "upper")
    saves_values = False

    def backward(self, g):
        return ((triu if self.upper else tril)(g, self.k),)


def tril(input, diagonal: int = 0) -> Tensor:
    """Zero the elements above the ``diagonal``-th diagonal of the last two dims."""
    if input._data.ndim < 2:
        raise RuntimeError("tril: input tensor must have at least 2 dimensions")
    return apply(_TRI, input, k=diagonal, upper=False)


def triu(input, diagonal: int = 0) -> Tensor:
    """Zero the elements below the ``diagonal``-th diagonal of the last two dims."""
    if input._data.ndim < 2:
        raise RuntimeError("triu: input tensor must have at least 2 dimensions")
    return apply(_TRI, input, k=diagonal, upper=True)


_TRI = Primitive("tri_mask", TriMask, lambda x, k, upper: (np.triu if upper else np.tril)(x._data, k))


class Diagonal(Node):
    __slots__ = ("offset", "d1", "d2")
    saves_values = False

    def backward(self, g):
        x = self.inputs[0]
        shape = x._data.shape
        idx = _diag_index(shape, self.offset, self.d1, self.d2)
        from ember.ops.index import index_put_zeros

        # NumPy puts the indexed (diagonal) dim first unless the two index arrays are adjacent.
        pos = builtins.min(self.d1, self.d2) if builtins.abs(self.d1 - self.d2) == 1 else 0
        return (index_put_zeros(movedim(g, -1, pos), shape, idx),)


def _diag_index(shape, offset, d1, d2):
    n = builtins.max(0, builtins.min(shape[d1] - builtins.max(-offset, 0), shape[d2] - builtins.max(offset, 0)))
    i = np.arange(n) + builtins.max(-offset, 0)
    j = np.arange(n) + builtins.max(offset, 0)
    key = [slice(None)] * len(shape)
    key[d1] = i
    key[d2] = j
    return tuple(key)  # a list would be read by NumPy as one index array


def diagonal(input, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The diagonal of the (dim1, dim2) planes, as a new last dim (a view, as in PyTorch)."""
    n = input._data.ndim
    a, b = _wrap_dim(dim1, n, "diagonal"), _wrap_dim(dim2, n, "diagonal")
    if a == b:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return apply(_DIAGONAL, input, offset=offset, d1=a, d2=b)


def _diagonal_impl(x, offset, d1, d2):
    a, b, n = d1, d2, x._data.ndim
    d = x._data
    out = d.diagonal(offset, a, b)
    if x._device is CPU and out.size:
        # NumPy's diagonal is a read-only view; the same strides through as_strided are writable.
        key = [slice(None)] * n
        key[a] = slice(builtins.max(-offset, 0), None)
        key[b] = slice(builtins.max(offset, 0), None)
        start = d[tuple(key)]
        out = np.lib.stride_tricks.as_strided(start, out.shape, out.strides, writeable=d.flags.writeable)
    return out


_DIAGONAL = Primitive("diagonal", Diagonal, _diagonal_impl, view=True)


def diag(input, diagonal: int = 0) -> Tensor:
    """A 1-D input becomes a diagonal matrix; a 2-D input gives its diagonal."""
    if input._data.ndim == 1:
        n = input._data.shape[0] + builtins.abs(diagonal)
        from ember.ops.index import index_put_zeros

        key = _diag_index((n, n), diagonal, 0, 1)
        return index_put_zeros(input, (n, n), key)
    return globals()["diagonal"](input, diagonal)


def diag_embed(input, offset=0, dim1=-2, dim2=-1) -> Tensor:
    if (offset, dim1, dim2) != (0, -2, -1):
        raise RuntimeError("diag_embed: only the default offset and dims are supported")
    n = input._data.shape[-1]
    from ember.ops.creation import eye as _eye

    eye = _eye(n, dtype=input.dtype, device=input.device)
    return unsqueeze(input, -1) * eye


def trace(input) -> Tensor:
    (input,) = autocast_args("trace", input)
    return diagonal(input).sum()
