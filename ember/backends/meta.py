"""The meta backend: arrays with a shape and a dtype and no data, as PyTorch's ``meta`` device.

A :class:`MetaArray` takes part in NumPy's array API (``__array_ufunc__``,
``__array_function__`` and the ndarray methods ops use), so the same op implementations that
run on NumPy arrays run on meta arrays and infer the output's shape and dtype without reading
or allocating data. That is how ``ember.ops.dispatch`` infers shapes, how a model is built on
``device="meta"`` (a 175B-parameter GPT costs no memory), and how capture mode traces.

Shapes come from NumPy itself: a meta array keeps an ndarray of the zero-byte dtype
``np.dtype([])`` of its shape, and structural functions (reshape, indexing, concatenate,
broadcast_to, take, ...) run on that, so their shape rules are NumPy's and cost no memory.
Values are never available: ``bool()``, ``item()`` and conversion to NumPy raise, as reading a
meta tensor does in PyTorch; ops whose output shape depends on values (``nonzero``, boolean
masks) raise ``NotImplementedError``.

Example:
    >>> import ember
    >>> x = ember.empty(1000, 1000, 1000, device="meta")
    >>> (x @ x).shape, x.device
    (ember.Size([1000, 1000, 1000]), device(type='meta'))
"""

from __future__ import annotations

import math
import types

import numpy as np

__all__ = ["MetaArray", "xp", "name", "is_available", "asarray", "to_host", "scatter_add", "new_generator"]

name = "meta"
_V0 = np.dtype([])  # itemsize 0: an ndarray of this dtype has a shape and no memory


def _shell(shape) -> np.ndarray:
    return np.empty(shape, _V0)


def _no_data(what: str):
    return RuntimeError(f"{what}: meta tensors have no data (shapes and dtypes only)")


class _Flags:
    """What ops read of ``ndarray.flags``: meta arrays are writeable; C-contiguity is tracked
    (transposes, strided slices and broadcasts make non-contiguous views, as in NumPy)."""

    __slots__ = ("c_contiguous",)
    f_contiguous = False
    writeable = True
    owndata = True

    def __init__(self, contiguous: bool):
        self.c_contiguous = contiguous

    def __getitem__(self, key):
        return getattr(self, key.lower(), True)


_CONTIGUOUS, _STRIDED = _Flags(True), _Flags(False)


class MetaArray:
    """An array's shape and dtype, without data; NumPy functions and ufuncs accept it."""

    __slots__ = ("_v", "dtype", "base", "flags")
    is_meta = True
    __array_priority__ = 2000

    def __init__(self, shell: np.ndarray, dtype, base=None, contiguous: bool = True):
        self._v = shell
        self.dtype = np.dtype(dtype)
        self.base = base
        self.flags = _CONTIGUOUS if contiguous else _STRIDED

    # ----- attributes -----
    @property
    def shape(self) -> tuple:
        return self._v.shape

    @property
    def ndim(self) -> int:
        return self._v.ndim

    @property
    def size(self) -> int:
        return self._v.size

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self._v.size * self.dtype.itemsize

    @property
    def strides(self) -> tuple:
        out, step = [], self.dtype.itemsize
        for s in reversed(self._v.shape):
            out.append(step)
            step *= max(s, 1)
        return tuple(reversed(out))

    @property
    def T(self) -> MetaArray:
        return self.transpose()

    def __len__(self) -> int:
        if not self._v.ndim:
            raise TypeError("len() of unsized object")
        return self._v.shape[0]

    def __repr__(self) -> str:
        return f"MetaArray(shape={self.shape}, dtype={self.dtype})"

    # ----- no values -----
    def __bool__(self):
        raise _no_data("bool()")

    def __float__(self):
        raise _no_data("float()")

    def __int__(self):
        raise _no_data("int()")

    def __index__(self):
        raise _no_data("index")

    def item(self, *args):
        raise _no_data("item()")

    def tolist(self):
        raise _no_data("tolist()")

    def __array__(self, dtype=None, copy=None):
        raise _no_data("conversion to a NumPy array")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # ----- structure -----
    def _like(self, shell, dtype=None, view=True, contiguous=None) -> MetaArray:
        base = (self.base if self.base is not None else self) if view else None
        if contiguous is None:
            contiguous = self.flags.c_contiguous or not view
        return MetaArray(shell, self.dtype if dtype is None else dtype, base, contiguous)

    def reshape(self, *shape, order="C", copy=None):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shell = self._v.reshape(shape)
        if not self.flags.c_contiguous and _significant(self._v.shape) != _significant(shell.shape):
            return self._like(shell.copy(), view=False)  # NumPy copies here too
        return self._like(shell)

    def view(self, dtype=None):
        if dtype is not None and np.dtype(dtype).itemsize != self.dtype.itemsize:
            raise NotImplementedError("meta: view() to a dtype of another size")
        return self._like(self._v.view(), dtype)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        perm = tuple(a % self.ndim for a in axes) if axes else tuple(reversed(range(self.ndim)))
        shell = self._v.transpose(perm)
        moved = [p for p in perm if self._v.shape[p] != 1] != sorted(p for p in perm if self._v.shape[p] != 1)
        return self._like(shell, contiguous=self.flags.c_contiguous and not moved)

    def swapaxes(self, a, b):
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.transpose(perm)

    def squeeze(self, axis=None):
        return self._like(self._v.squeeze(axis))

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return self._like(self._v.diagonal(offset, axis1, axis2), contiguous=False)

    def ravel(self, order="C"):
        return self._like(self._v.reshape(-1))

    def flatten(self, order="C"):
        return self._like(self._v.reshape(-1).copy(), view=False)

    def copy(self, order="C"):
        return self._like(self._v.copy(), view=False)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        dtype = np.dtype(dtype)
        if dtype == self.dtype and not copy:
            return self
        return MetaArray(self._v.copy(), dtype)

    def fill(self, value) -> None:
        pass

    def take(self, indices, axis=None, out=None, mode="raise"):
        return np.take(self, indices, axis=axis)

    def repeat(self, repeats, axis=None):
        return np.repeat(self, repeats, axis)

    def __getitem__(self, key):
        key = _shell_key(key)
        basic = _is_basic(key)
        out = self._v[key]
        contiguous = not basic or (self.flags.c_contiguous and _keeps_contiguous(key, self._v.shape, out.shape))
        return self._like(out, view=basic, contiguous=contiguous)

    def __setitem__(self, key, value) -> None:
        # Writes check that the value broadcasts to the selected region, and store nothing.
        region = self._v[_shell_key(key)]
        vshape = np.shape(value._v) if isinstance(value, MetaArray) else np.shape(value)
        np.broadcast_shapes(vshape, region.shape)

    # ----- reductions as methods -----
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return _reduce(self, axis, keepdims, _sum_dtype(self.dtype, dtype))

    def prod(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return _reduce(self, axis, keepdims, _sum_dtype(self.dtype, dtype))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        dt = np.dtype(dtype) if dtype is not None else (self.dtype if self.dtype.kind in "fV" else np.dtype(np.float64))
        return _reduce(self, axis, keepdims, dt)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
        return self.mean(axis, dtype, keepdims=keepdims)

    std = var

    def max(self, axis=None, out=None, keepdims=False, **kw):
        return _reduce(self, axis, keepdims, self.dtype)

    min = max

    def any(self, axis=None, out=None, keepdims=False, **kw):
        return _reduce(self, axis, keepdims, np.bool_)

    all = any

    def argmax(self, axis=None, out=None, keepdims=False):
        if axis is None:
            return _reduce(self, None, keepdims, np.intp)
        return _reduce(self, axis, keepdims, np.intp)

    argmin = argmax

    # ----- NumPy protocols -----
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        return _ufunc(ufunc, method, inputs, out, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        impl = _FUNCTIONS.get(func.__name__)
        if impl is None:
            raise NotImplementedError(f"numpy.{func.__name__} has no meta implementation (shapes and dtypes only)")
        return impl(*args, **kwargs)


# ----- operators: through the ufuncs, so the dtype rules are NumPy's
def _binop(ufunc, reflected=False):
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


def _iop(ufunc):
    def op(self, other):
        ufunc(self, other, out=self)
        return self

    return op


for _name, _uf in {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "truediv": np.true_divide,
    "floordiv": np.floor_divide,
    "mod": np.remainder,
    "pow": np.power,
    "matmul": np.matmul,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
}.items():
    setattr(MetaArray, f"__{_name}__", _binop(_uf))
    setattr(MetaArray, f"__r{_name}__", _binop(_uf, True))
    setattr(MetaArray, f"__i{_name}__", _iop(_uf))
for _name, _uf in {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal}.items():
    setattr(MetaArray, f"__{_name}__", _binop(_uf))
MetaArray.__eq__ = _binop(np.equal)
MetaArray.__ne__ = _binop(np.not_equal)
MetaArray.__hash__ = object.__hash__
MetaArray.__neg__ = lambda self: np.negative(self)
MetaArray.__pos__ = lambda self: self
MetaArray.__abs__ = lambda self: np.abs(self)
MetaArray.__invert__ = lambda self: np.invert(self)


# ----- helpers
def _shape(x) -> tuple:
    return x._v.shape if isinstance(x, MetaArray) else np.shape(x)


def _sample(x):
    """A stand-in carrying ``x``'s dtype for NumPy's dtype rules (Python numbers stay weak)."""
    if isinstance(x, MetaArray):
        return np.zeros((), x.dtype)
    if isinstance(x, np.ndarray):
        return np.zeros((), x.dtype)
    return x


def _shell_key(key):
    """An index with meta index arrays replaced by zero-filled broadcast arrays of their shape."""
    if isinstance(key, tuple):
        return tuple(_shell_index(k) for k in key)
    return _shell_index(key)


def _shell_index(k):
    if isinstance(k, MetaArray):
        if k.dtype == np.bool_:
            raise NotImplementedError("meta: boolean mask indexing (the result's shape depends on the values)")
        return np.broadcast_to(np.zeros((), np.intp), k.shape)
    if isinstance(k, np.ndarray) and k.dtype == np.bool_:
        return k
    return k


def _significant(shape) -> tuple:
    return tuple(s for s in shape if s != 1)


def _keeps_contiguous(key, shape, out_shape) -> bool:
    """Whether a basic index of a contiguous array gives a contiguous view: after the first
    dim that is cut (an int, or a partial slice), every later dim must be taken whole."""
    parts = key if isinstance(key, tuple) else (key,)
    cut = False
    dim = 0
    for k in parts:
        if k is None:
            continue
        if k is Ellipsis:
            dim = len(shape) - sum(1 for p in parts[parts.index(k) + 1 :] if p is not None)
            continue
        if dim >= len(shape):
            break
        size = shape[dim]
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            whole = step == 1 and start == 0 and stop == size
            if cut and not whole and size != 1 and len(range(start, stop, step)) != 1:
                return False
            if step != 1 and len(range(start, stop, step)) > 1:
                return False
            cut = cut or not whole
        else:
            cut = True
        dim += 1
    return True


def _is_basic(key) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return not any(isinstance(k, (np.ndarray, list)) for k in parts)


def _norm_axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        return tuple(a % ndim if ndim else 0 for a in axis)
    return (axis % ndim if ndim else 0,)


def _reduce(x, axis, keepdims, dtype) -> MetaArray:
    shape = _shape(x)
    axes = _norm_axes(axis, len(shape))
    if keepdims:
        out = tuple(1 if i in axes else s for i, s in enumerate(shape))
    else:
        out = tuple(s for i, s in enumerate(shape) if i not in axes)
    return MetaArray(_shell(out), dtype)


def _sum_dtype(dt, requested):
    if requested is not None:
        return np.dtype(requested)
    if dt.kind in "bi":
        return np.dtype(np.int64)
    if dt.kind == "u":
        return np.dtype(np.uint64)
    return dt


def _ufunc(ufunc, method, inputs, out, kwargs):
    if method == "at":
        return None  # an unbuffered write: nothing to store
    kwargs.pop("casting", None)
    kwargs.pop("where", None)
    if method == "__call__":
        if ufunc is np.matmul:
            a, b = inputs
            res = MetaArray(_shell(_matmul_shape(_shape(a), _shape(b))), np.result_type(_sample(a), _sample(b)))
        else:
            shape = np.broadcast_shapes(*(_shape(x) for x in inputs))
            with np.errstate(all="ignore"):
                dts = ufunc(*(_sample(x) for x in inputs), **kwargs)
            if ufunc.nout > 1:
                return tuple(MetaArray(_shell(shape), np.asarray(d).dtype) for d in dts)
            res = MetaArray(_shell(shape), np.asarray(dts).dtype)
    elif method in ("reduce", "accumulate"):
        x = inputs[0]
        axis = kwargs.pop("axis", 0)
        keepdims = kwargs.pop("keepdims", False)
        dtype = kwargs.pop("dtype", None)
        dt = getattr(ufunc, method)(np.zeros((1,), _sample(x).dtype), dtype=dtype).dtype
        if method == "accumulate":
            res = MetaArray(_shell(_shape(x)), dt)
        else:
            res = _reduce(x, axis, keepdims, dt)
    else:
        raise NotImplementedError(f"meta: {ufunc.__name__}.{method}")
    if out is not None:
        o = out[0] if isinstance(out, tuple) else out
        return o
    return res


def _matmul_shape(sa: tuple, sb: tuple) -> tuple:
    a1, b1 = len(sa) == 1, len(sb) == 1
    sa = (1,) + sa if a1 else sa
    sb = sb + (1,) if b1 else sb
    if sa[-1] != sb[-2]:
        raise ValueError(f"matmul: shapes {sa} and {sb} do not align")
    shape = np.broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1])
    if a1:
        shape = shape[:-2] + shape[-1:]
    if b1:
        shape = shape[:-1]
    return shape


def _dtype_of(*arrays):
    return np.result_type(*(_sample(a) for a in arrays))


def _structural(fn, dtype_from=0):
    """A NumPy function that only moves elements: run it on the zero-byte shells."""

    def impl(*args, **kwargs):
        arrays = [a for a in _flat(args) if isinstance(a, MetaArray)]
        # The first argument is the data; later array arguments are indices or sizes, whose
        # values NumPy reads: zeros of their shape stand in for them.
        shells = (_to_shells(args[0]),) + tuple(_index_stand_in(a) for a in args[1:])
        out = fn(*shells, **{k: _index_stand_in(v) for k, v in kwargs.items()})
        dt = _dtype_of(*arrays) if dtype_from is None else arrays[0].dtype
        if isinstance(out, (list, tuple)):
            return type(out)(MetaArray(o, dt) for o in out)
        return MetaArray(out, dt)

    return impl


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        else:
            yield a


def _index_stand_in(x):
    if isinstance(x, MetaArray):
        if x.dtype.kind not in "iu":
            return x._v
        return np.broadcast_to(np.zeros((), np.intp), x.shape)
    return x


def _to_shells(x):
    if isinstance(x, MetaArray):
        return x._v
    if isinstance(x, np.ndarray) and x.dtype != _V0:
        return np.broadcast_to(np.empty((), _V0), x.shape)
    if isinstance(x, list):
        return [_to_shells(a) for a in x]
    if isinstance(x, tuple):
        return tuple(_to_shells(a) for a in x)
    return x


def _where(cond, a=None, b=None):
    if a is None:
        raise NotImplementedError("meta: where(condition) (the result's shape depends on the values)")
    return MetaArray(_shell(np.broadcast_shapes(_shape(cond), _shape(a), _shape(b))), _dtype_of(a, b))


def _clip(a, a_min=None, a_max=None, out=None, **kw):
    parts = [x for x in (a, a_min, a_max) if x is not None]
    return MetaArray(_shell(np.broadcast_shapes(*(_shape(x) for x in parts))), _dtype_of(*parts))


def _same(dtype=None):
    def impl(a, *args, **kwargs):
        return MetaArray(_shell(_shape(a)), dtype or a.dtype)

    return impl


def _like_factory(a, dtype=None, *args, shape=None, **kwargs):
    fill = kwargs.pop("fill_value", None)  # noqa: F841 - values are not stored
    return MetaArray(_shell(_shape(a) if shape is None else shape), dtype or a.dtype)


def _full_like(a, fill_value, dtype=None, **kwargs):
    return MetaArray(_shell(_shape(a)), dtype or a.dtype)


def _einsum(subscripts, *operands, **kwargs):
    ins, _, out = subscripts.replace(" ", "").partition("->")
    sizes = {}
    for sub, x in zip(ins.split(","), operands):
        for c, s in zip(sub, _shape(x)):
            if s != 1 or c not in sizes:
                sizes[c] = s
    return MetaArray(_shell(tuple(sizes[c] for c in out)), _dtype_of(*operands))


def _reduction(name):
    def impl(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
        return (
            getattr(a, name)(axis=axis, dtype=dtype, keepdims=keepdims)
            if name
            in (
                "sum",
                "prod",
                "mean",
            )
            else getattr(a, name)(axis=axis, keepdims=keepdims)
        )

    return impl


def _count_nonzero(a, axis=None, keepdims=False):
    return _reduce(a, axis, keepdims, np.intp)


def _data_dependent(name):
    def impl(*args, **kwargs):
        raise NotImplementedError(f"meta: {name} (the result's shape depends on the values)")

    return impl


def _no_op(*args, **kwargs):
    return None


def _searchsorted(a, v, side="left", sorter=None):
    return MetaArray(_shell(_shape(v)), np.intp)


def _repeat(a, repeats, axis=None):
    if not isinstance(repeats, (int, np.integer)):
        raise NotImplementedError("meta: repeat with per-element counts (the shape depends on the values)")
    return _structural(np.repeat)(a, repeats, axis)


def _isclose(a, b, *args, **kwargs):
    return MetaArray(_shell(np.broadcast_shapes(_shape(a), _shape(b))), np.bool_)


def _pad(array, pad_width, mode="constant", **kwargs):
    return MetaArray(np.pad(array._v, pad_width), array.dtype)


_FUNCTIONS = {
    name: _structural(getattr(np, name))
    for name in """reshape transpose swapaxes moveaxis expand_dims squeeze broadcast_to flip roll ravel
        take take_along_axis tril triu diagonal atleast_1d atleast_2d atleast_3d copy ascontiguousarray
        broadcast_arrays split array_split tile stack concatenate""".split()
}


def _broadcast_to(array, shape, subok=False):
    out = np.broadcast_to(array._v, shape)
    expanded = _significant(out.shape) != _significant(array.shape)
    return MetaArray(out, array.dtype, array if array.base is None else array.base, not expanded)


_FUNCTIONS["broadcast_to"] = _broadcast_to
_FUNCTIONS["concatenate"] = _structural(np.concatenate, dtype_from=None)
_FUNCTIONS["stack"] = _structural(np.stack, dtype_from=None)
_FUNCTIONS.update(
    where=_where,
    clip=_clip,
    einsum=_einsum,
    isclose=_isclose,
    nan_to_num=_same(),
    sort=_same(),
    argsort=_same(np.intp),
    argpartition=_same(np.intp),
    zeros_like=_like_factory,
    ones_like=_like_factory,
    empty_like=_like_factory,
    full_like=_full_like,
    count_nonzero=_count_nonzero,
    searchsorted=_searchsorted,
    repeat=_repeat,
    pad=_pad,
    copyto=_no_op,
    put_along_axis=_no_op,
    shape=lambda a: _shape(a),
    ndim=lambda a: len(_shape(a)),
    size=lambda a, axis=None: math.prod(_shape(a)) if axis is None else _shape(a)[axis],
    may_share_memory=lambda a, b, **k: False,
    shares_memory=lambda a, b, **k: False,
    result_type=lambda *a: _dtype_of(*a),
    nonzero=_data_dependent("nonzero"),
    argwhere=_data_dependent("argwhere"),
    unique=_data_dependent("unique"),
    bincount=_data_dependent("bincount"),
    flatnonzero=_data_dependent("flatnonzero"),
)
for _name in ("sum", "prod", "mean", "max", "min", "amax", "amin", "any", "all", "std", "var"):
    _FUNCTIONS[_name] = _reduction({"amax": "max", "amin": "min"}.get(_name, _name))


def _scan(a, axis=None, dtype=None, out=None):
    shape = _shape(a) if axis is not None else (math.prod(_shape(a)),)
    return MetaArray(_shell(shape), _sum_dtype(a.dtype, dtype))


_FUNCTIONS["cumsum"] = _FUNCTIONS["cumprod"] = _scan
_FUNCTIONS["argmax"] = lambda a, axis=None, out=None, keepdims=False: a.argmax(axis, keepdims=keepdims)
_FUNCTIONS["argmin"] = _FUNCTIONS["argmax"]


# ----- the backend API
def _empty(shape, dtype=np.float32, *args, **kwargs):
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    return MetaArray(_shell(tuple(shape)), dtype)


def _full(shape, fill_value, dtype=None, *args, **kwargs):
    return _empty(shape, dtype if dtype is not None else np.asarray(fill_value).dtype)


def _arange(start, stop=None, step=1, dtype=None, **kwargs):
    if stop is None:
        start, stop = 0, start
    n = max(0, math.ceil((stop - start) / step))
    return _empty((n,), dtype if dtype is not None else np.result_type(start, stop, step))


def _eye(n, m=None, k=0, dtype=float, **kwargs):
    return _empty((n, n if m is None else m), dtype)


#: The array module of the meta device (``device.backend.xp``): factories of meta arrays; every
#: other NumPy function reaches meta arrays through NumPy's own protocols.
xp = types.SimpleNamespace(
    empty=_empty,
    zeros=_empty,
    ones=_empty,
    full=_full,
    arange=_arange,
    eye=_eye,
    asarray=lambda data, dtype=None: asarray(data, dtype),
    broadcast_to=np.broadcast_to,
    concatenate=np.concatenate,
    flip=np.flip,
    ndarray=MetaArray,
)


def is_available() -> bool:
    return True


def asarray(data, dtype=None) -> MetaArray:
    """A meta array of ``data``'s shape and dtype (the values are dropped)."""
    if isinstance(data, MetaArray):
        return data if dtype is None else data.astype(dtype, copy=False)
    shape = np.shape(data)
    dt = np.dtype(dtype) if dtype is not None else np.asarray(data).dtype if not hasattr(data, "dtype") else data.dtype
    return MetaArray(_shell(shape), dt)


def to_host(arr):
    from ember._mode import mode

    if mode.data_read is not None:  # ember.compile: a graph break (its lazy mode may compute it)
        real = mode.data_read(arr, "to_host")
        if real is not None:
            return real
    raise NotImplementedError("Cannot copy out of meta tensor; no data! (meta tensors have shapes and dtypes only)")


def scatter_add(target, index, values) -> None:
    """Nothing to add into: the write is checked for shapes only."""
    target[index] = values


def new_generator(seed: int):
    return np.random.Generator(np.random.PCG64(seed))
