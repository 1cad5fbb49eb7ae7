"""A strict stand-in for CuPy, so the ``cuda`` code paths can be exercised on a machine without a GPU.

It is NumPy underneath, with CuPy's rules where code most often breaks them:
- no implicit conversion to NumPy (``np.asarray(x)`` raises, as CuPy's ``__array__`` does);
- NumPy arrays are not accepted as operands of ufuncs or array functions (CuPy raises
  ``TypeError: Unsupported type <class 'numpy.ndarray'>``); Python and NumPy scalars are;
- ``flags`` has ``c_contiguous``, ``f_contiguous`` and ``owndata``, and no ``writeable``.

It does not know which NumPy functions CuPy lacks, so passing here is necessary, not sufficient:
the real check is ``scripts/gpu_check.sh`` on a GPU machine. Use it with
``EMBER_TEST_STRICT_CUPY=1 pytest tests/test_devices.py tests/test_cuda_end_to_end.py``
(``tests/conftest.py`` installs it as ``cupy`` before Ember is imported).
"""

from __future__ import annotations

import sys
import types
import weakref

import numpy as np

__all__ = ["install"]


class _Flags:
    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, a: np.ndarray):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata


def _unwrap(x, what: str):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {np.ndarray} ({what})")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, what) for v in x)
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):  # CuPy's reductions and ufuncs give 0-d device arrays, never scalars
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _index(key):
    """Index keys may be device arrays or host ones (CuPy accepts both)."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


_OWNERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id(host array) -> its device array


class ndarray:  # noqa: N801 - CuPy's name
    __array_priority__ = 100

    def __init__(self, a: np.ndarray):
        self._a = a
        if a.base is None:
            _OWNERS[id(a)] = self  # ``view.base is x``, as in CuPy (ops test identity)

    # ----- CuPy's strictness -----
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [_unwrap(v, f"{ufunc.__name__} operand") for v in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(v, f"{ufunc.__name__} out") for v in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        args = _unwrap(list(args), func.__name__)
        kwargs = {k: _unwrap(v, func.__name__) for k, v in kwargs.items()}
        return _wrap(func(*args, **kwargs))

    # ----- attributes -----
    @property
    def flags(self):
        return _Flags(self._a)

    @property
    def base(self):
        b = self._a.base
        if not isinstance(b, np.ndarray):
            return None
        owner = _OWNERS.get(id(b))
        return owner if owner is not None else ndarray(b)

    @property
    def T(self):
        return ndarray(self._a.T)

    @property
    def data(self):  # CuPy's MemoryPointer: ``.ptr`` is the device address
        return types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0])

    def __getattr__(self, name):
        if name in ("ctypes", "__array_interface__", "__array_struct__"):
            raise AttributeError(name)  # device memory is not host memory
        attr = getattr(self._a, name)
        if not callable(attr):
            return attr

        def method(*args, **kwargs):
            args = [_unwrap(a, name) if not isinstance(a, np.ndarray) else a for a in args]
            if "out" in kwargs:
                kwargs["out"] = _unwrap(kwargs["out"], name)
            return _wrap(attr(*args, **{k: _unwrap(v, name) if k == "out" else v for k, v in kwargs.items()}))

        return method

    def diagonal(self, offset=0, axis1=0, axis2=1):
        """A writable view, as CuPy's (NumPy's is read-only): the same strides from the first element."""
        d = self._a
        out = d.diagonal(offset, axis1, axis2)
        if not out.size:
            return ndarray(out)
        key = [slice(None)] * d.ndim
        key[axis1] = slice(max(-offset, 0), None)
        key[axis2] = slice(max(offset, 0), None)
        return ndarray(np.lib.stride_tricks.as_strided(d[tuple(key)], out.shape, out.strides))

    def get(self):
        return self._a.copy()

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(v)) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return f"array({self._a!r}, device)"

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        self._a[_index(key)] = _unwrap(value, "__setitem__") if not isinstance(value, np.ndarray) else value


def _binary(ufunc, reflected=False):
    if reflected:
        return lambda self, other: ufunc(other, self)
    return lambda self, other: ufunc(self, other)


for _name, _uf in [
    ("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("truediv", np.true_divide),
    ("floordiv", np.floor_divide), ("mod", np.remainder), ("pow", np.power), ("matmul", np.matmul),
    ("and", np.bitwise_and), ("or", np.bitwise_or), ("xor", np.bitwise_xor),
    ("lshift", np.left_shift), ("rshift", np.right_shift),
]:  # fmt: skip
    setattr(ndarray, f"__{_name}__", _binary(_uf))
    setattr(ndarray, f"__r{_name}__", _binary(_uf, reflected=True))
    setattr(ndarray, f"__i{_name}__", lambda self, other, _uf=_uf: _uf(self, other, out=(self,)))
for _name, _uf in [("lt", np.less), ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal),
                   ("eq", np.equal), ("ne", np.not_equal)]:  # fmt: skip
    setattr(ndarray, f"__{_name}__", _binary(_uf))
ndarray.__neg__ = lambda self: np.negative(self)
ndarray.__pos__ = lambda self: np.positive(self)
ndarray.__abs__ = lambda self: np.absolute(self)
ndarray.__invert__ = lambda self: np.invert(self)
ndarray.__hash__ = None


def _host_or_device(x):
    return x._a if isinstance(x, ndarray) else x


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return ndarray(a._a.astype(dtype, copy=False)) if dtype is not None else a
    if isinstance(a, (list, tuple)):
        a = [_host_or_device(v) for v in a]
    return ndarray(np.array(a, dtype=dtype, copy=True))


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    out = asarray(a, dtype)
    return ndarray(out._a.copy()) if copy and isinstance(a, ndarray) else out


def asnumpy(a, stream=None, order="C", out=None):
    return a._a.copy() if isinstance(a, ndarray) else np.asarray(a)


def _module_function(name):
    fn = getattr(np, name)
    if not callable(fn) or isinstance(fn, (type, np.ufunc)):
        return fn  # a ufunc dispatches to ndarray.__array_ufunc__ by itself (``add.at`` too)

    def call(*args, **kwargs):
        args = _unwrap(list(args), name)
        kwargs = {k: _unwrap(v, name) for k, v in kwargs.items()}
        return _wrap(fn(*args, **kwargs))

    return call


class _Generator:
    def __init__(self, seed):
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name):
        fn = getattr(self._g, name)
        return lambda *a, **k: _wrap(fn(*_unwrap(list(a), name), **{k2: _unwrap(v, name) for k2, v in k.items()}))


def _scatter_add(target, index, values):
    np.add.at(target._a, _index(index), _unwrap(values, "scatter_add"))


def install() -> types.ModuleType:
    """Put the stand-in in ``sys.modules`` as ``cupy`` (and ``cupyx``)."""
    mod = types.ModuleType("cupy")
    mod.__doc__ = __doc__
    mod.ndarray = ndarray
    mod.asarray, mod.array, mod.asnumpy = asarray, array, asnumpy
    mod.__getattr__ = _module_function
    mod.random = types.SimpleNamespace(default_rng=_Generator)
    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    mod.lib = types.SimpleNamespace(
        stride_tricks=types.SimpleNamespace(
            as_strided=lambda x, shape=None, strides=None: ndarray(
                np.lib.stride_tricks.as_strided(x._a, shape, strides)
            )
        )
    )
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = _scatter_add
    sys.modules["cupy"], sys.modules["cupyx"] = mod, cupyx
    return mod
