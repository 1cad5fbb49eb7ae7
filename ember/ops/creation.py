"""Tensor factories: ``tensor``, ``zeros``, ``arange``, ``randn``, ... with PyTorch's signatures."""

from __future__ import annotations

import math

import numpy as np

from ember import _dtype
from ember._device import CPU, to_device
from ember._mutations import bump as _bump
from ember.ops._base import Tensor, _wrap
from ember.ops.dispatch import Primitive, apply
from ember.ops.sampling import bernoulli, multinomial, poisson  # noqa: F401 - primitives, in their own module
from ember.random import numpy_generator

__all__ = [
    "arange",
    "as_tensor",
    "asarray",
    "bernoulli",
    "empty",
    "empty_like",
    "eye",
    "from_numpy",
    "full",
    "full_like",
    "linspace",
    "logspace",
    "multinomial",
    "normal",
    "ones",
    "ones_like",
    "poisson",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
    "range_",
    "tensor",
    "zeros",
    "zeros_like",
]


def _finish(arr, dtype, device, requires_grad: bool) -> Tensor:
    """Place a host array on ``device`` with ``dtype`` and set ``requires_grad``."""
    dev = to_device(device)
    if dtype is not None:
        npd = _dtype.to_dtype(dtype).np
        if arr.dtype != npd:
            arr = arr.astype(npd)
    if dev is not CPU:
        arr = dev.backend.asarray(arr)
    t = _wrap(arr, dev)
    if requires_grad:
        t.requires_grad = True
    return t


def _infer_array(data, exact: bool = False) -> np.ndarray:
    """NumPy array from Python data, with PyTorch's dtype inference for Python numbers.
    ``exact``: a dtype is given, so Python floats stay float64 here (cast once, by the caller)."""
    if isinstance(data, Tensor):
        return data._device.backend.to_host(data._data).copy()
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biufV":
            raise TypeError(f"can't convert np.ndarray of type {data.dtype} to an ember tensor")
        return data.copy()
    if isinstance(data, (list, tuple)) and _contains_tensor(data):
        data = _tensors_to_lists(data)
    arr = np.asarray(data)
    if arr.dtype == object:
        raise ValueError(
            f"expected a sequence of equal-length sequences of numbers, got ragged or mixed data: {str(data)[:80]}"
        )
    if arr.dtype.kind in "fV" and not isinstance(data, np.generic) and not exact:
        # Python floats take the default dtype; NumPy scalars inside lists keep theirs (torch too).
        arr = arr.astype(_np_scalar_float(data) or _dtype.defaults.float.np)
    elif arr.dtype.kind in "fV":
        pass
    elif arr.dtype.kind in "iu" and not isinstance(data, np.generic):
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "biufV":
        raise TypeError(f"Could not infer dtype of {type(data).__name__}")
    return arr


def _np_scalar_float(data):
    """The widest NumPy float scalar dtype inside nested lists, or None when there is none."""
    found = None
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, np.floating):
            found = x.dtype if found is None else np.promote_types(found, x.dtype)
    if found is not None:
        found = np.promote_types(found, _dtype.defaults.float.np)
    return found


def _contains_tensor(data) -> bool:
    for x in data:
        if isinstance(x, Tensor):
            return True
        if isinstance(x, (list, tuple)) and _contains_tensor(x):
            return True
    return False


def _tensors_to_lists(data):
    if isinstance(data, Tensor):
        return data.tolist()
    if isinstance(data, (list, tuple)):
        return [_tensors_to_lists(x) for x in data]
    return data


def tensor(data, *, dtype=None, device=None, requires_grad: bool = False, pin_memory: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested lists, numbers, NumPy arrays).

    Python floats give the default float dtype (float32), ints give int64, bools give bool.

    Example:
        >>> import ember
        >>> ember.tensor([[1, 2], [3, 4]], dtype=ember.float32)
        tensor([[1., 2.],
                [3., 4.]])
    """
    # with a dtype, Python floats are rounded once, to it (as torch: not through float32 first)
    return _finish(_infer_array(data, exact=dtype is not None), dtype, device, requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like ``tensor``, but shares memory with a NumPy array or tensor when no conversion is needed."""
    if isinstance(data, Tensor):
        if (dtype is None or _dtype.to_dtype(dtype) is data.dtype) and (
            device is None or to_device(device) == data.device
        ):
            return data
        return data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray):
        return _finish(data, dtype, device, False)
    return tensor(data, dtype=dtype, device=device)


def asarray(obj, *, dtype=None, device=None, copy=None, requires_grad=False) -> Tensor:
    t = as_tensor(obj, dtype=dtype, device=device)
    if copy:
        t = t.clone()
    if requires_grad:
        t.requires_grad_()
    return t


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A tensor sharing memory with ``ndarray`` (writes show through both ways)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    _dtype.from_numpy_dtype(ndarray.dtype)
    return _wrap(ndarray)


def _size(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = []
    for s in size:
        if isinstance(s, Tensor):
            s = int(s.item())
        if not isinstance(s, (int, np.integer)):
            raise TypeError(f"size must be a sequence of ints, but got an element of type {type(s).__name__}")
        if s < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {s}: {list(size)}")
        out.append(int(s))
    return tuple(out)


def _shape_arg(shape: tuple, size, op: str) -> tuple:
    """The shape given positionally (``zeros(2, 3)``) or as ``size=`` (``zeros(size=(2, 3))``)."""
    if size is None:
        return shape
    if shape:
        raise TypeError(f"{op}() got multiple values for argument 'size'")
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"{op}(): argument 'size' must be tuple of ints, not {type(size).__name__}")
    return (size,)


def _float_np(dtype):
    d = _dtype.to_dtype(dtype) if dtype is not None else _dtype.defaults.float
    return d.np


def _filled(size, value, dtype, device, requires_grad, out=None) -> Tensor:
    shape = _size(size)
    if dtype is None:
        npd = _dtype.scalar_dtype(value).np if not isinstance(value, Tensor) else value._data.dtype
    else:
        npd = _dtype.to_dtype(dtype).np
    t = apply(_FULL, shape=shape, value=value, dtype=npd, device=to_device(device))
    if requires_grad:
        t.requires_grad = True
    if out is not None:
        _bump()  # compiled steps' guards (ember/_mutations.py)
        out._data = t._data
        return out
    return t


def _full_impl(shape, value, dtype, device):
    xp = device.backend.xp
    return xp.full(shape, value, dtype=dtype) if value != 0 else xp.zeros(shape, dtype=dtype)


# Factories: no tensor inputs; the output lives on the ``device`` parameter's device.
_FULL = Primitive("full", None, _full_impl, out_device=True)


def _host_impl(make):
    """A factory computed on the host by ``make(**params) -> ndarray``, then placed on the device."""

    def impl(device, **params):
        arr = make(**params)
        return arr if device is CPU else device.backend.asarray(arr)

    return impl


def _host_prim(name: str, make, shape) -> Primitive:
    """A factory primitive; on meta only ``shape(**params)`` and the dtype are computed."""
    prim = Primitive(name, None, _host_impl(make), out_device=True)
    prim.register("meta", lambda device, **p: device.backend.xp.empty(shape(**p), p["dtype"]))
    return prim


def _sample_dtype(npd):
    return npd if np.dtype(npd).itemsize > 2 else np.float32  # float16/bfloat16: sample in float32


_RAND = _host_prim(
    "rand",
    lambda shape, dtype, generator: (
        numpy_generator(generator).random(shape, dtype=_sample_dtype(dtype)).astype(dtype, copy=False)
    ),
    lambda shape, **p: shape,
)
_RANDN = _host_prim(
    "randn",
    lambda shape, dtype, generator: (
        numpy_generator(generator).standard_normal(shape, dtype=_sample_dtype(dtype)).astype(dtype, copy=False)
    ),
    lambda shape, **p: shape,
)
_RANDINT = _host_prim(
    "randint",
    lambda shape, dtype, generator, low, high: (
        numpy_generator(generator).integers(low, high, size=shape, dtype=np.int64).astype(dtype, copy=False)
    ),
    lambda shape, **p: shape,
)
_ARANGE = _host_prim(
    "arange",
    lambda start, step, n, dtype: (
        start + np.arange(n, dtype=np.float64 if np.dtype(dtype).kind in "fV" else np.int64) * step
    ).astype(dtype),
    lambda n, **p: (n,),
)
_LINSPACE = _host_prim(
    "linspace",
    lambda start, end, steps, dtype: np.linspace(start, end, steps).astype(dtype),
    lambda steps, **p: (steps,),
)
_EYE = _host_prim("eye", lambda n, m, dtype: np.eye(n, m, dtype=dtype), lambda n, m, **p: (n, m))


def zeros(*shape, size=None, dtype=None, device=None, requires_grad: bool = False, out=None) -> Tensor:
    """A tensor of zeros (default float dtype); the shape as ints, a sequence, or ``size=``."""
    return _filled(_shape_arg(shape, size, "zeros"), 0, dtype or _dtype.defaults.float, device, requires_grad, out)


def ones(*shape, size=None, dtype=None, device=None, requires_grad: bool = False, out=None) -> Tensor:
    """A tensor of ones (default float dtype); the shape as ints, a sequence, or ``size=``."""
    return _filled(_shape_arg(shape, size, "ones"), 1, dtype or _dtype.defaults.float, device, requires_grad, out)


def full(size, fill_value, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """A tensor filled with ``fill_value``; its dtype follows the value when not given."""
    return _filled((size,) if isinstance(size, int) else (tuple(size),), fill_value, dtype, device, requires_grad)


def empty(*shape, size=None, dtype=None, device=None, requires_grad: bool = False, memory_format=None) -> Tensor:
    """An uninitialized tensor (Ember zero-fills it: reading garbage is never useful)."""
    return zeros(*_shape_arg(shape, size, "empty"), dtype=dtype, device=device, requires_grad=requires_grad)


def _like(input, dtype, device):
    return (dtype or input.dtype), (device if device is not None else input.device)


def zeros_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return zeros(input._data.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return ones(input._data.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return full(input._data.shape, fill_value, dtype=dt, device=dev, requires_grad=requires_grad)


def empty_like(input, *, dtype=None, device=None, requires_grad: bool = False, memory_format=None) -> Tensor:
    return zeros_like(input, dtype=dtype, device=device, requires_grad=requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Values from ``start`` (default 0) up to but excluding ``end``, ``step`` apart.

    Integer arguments give int64; any float argument gives the default float dtype.
    """
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    start, end, step = vals
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(
            f"arange: upper bound and larger bound inconsistent with step sign (start={start}, end={end}, step={step})"
        )
    if dtype is None:
        dtype = _dtype.int64 if all(isinstance(v, int) for v in vals) else _dtype.defaults.float
    d = _dtype.to_dtype(dtype)
    n = max(0, math.ceil((end - start) / step))
    return _grad(apply(_ARANGE, start=start, step=step, n=n, dtype=d.np, device=to_device(device)), requires_grad)


def _grad(t: Tensor, requires_grad: bool) -> Tensor:
    if requires_grad:
        t.requires_grad = True
    return t


def range_(start, end, step=1, *, dtype=None, device=None) -> Tensor:
    return arange(
        start,
        end + step / 2 if step > 0 else end - abs(step) / 2,
        step,
        dtype=dtype or _dtype.defaults.float,
        device=device,
    )


def linspace(start, end, steps: int, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if int(steps) < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    t = apply(
        _LINSPACE,
        start=float(start),
        end=float(end),
        steps=int(steps),
        dtype=_float_np(dtype),
        device=to_device(device),
    )
    return _grad(t, requires_grad)


def logspace(
    start, end, steps: int, base: float = 10.0, *, dtype=None, device=None, requires_grad: bool = False
) -> Tensor:
    arr = np.logspace(float(start), float(end), int(steps), base=base).astype(_float_np(dtype))
    return _finish(arr, None, device, requires_grad)


def eye(n: int, m: int | None = None, *, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """The identity matrix (``n`` x ``m``)."""
    npd = _float_np(dtype) if dtype is None else _dtype.to_dtype(dtype).np
    return _grad(apply(_EYE, n=n, m=m if m is not None else n, dtype=npd, device=to_device(device)), requires_grad)


# --------------------------------------------------------------------------- random
def rand(*shape, size=None, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    t = apply(
        _RAND,
        shape=_size(_shape_arg(shape, size, "rand")),
        dtype=_float_np(dtype),
        generator=generator,
        device=to_device(device),
    )
    return _grad(t, requires_grad)


def randn(*shape, size=None, generator=None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    t = apply(
        _RANDN,
        shape=_size(_shape_arg(shape, size, "randn")),
        dtype=_float_np(dtype),
        generator=generator,
        device=to_device(device),
    )
    return _grad(t, requires_grad)


def rand_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return rand(input._data.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def randn_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dt, dev = _like(input, dtype, device)
    return randn(input._data.shape, dtype=dt, device=dev, requires_grad=requires_grad)


def randint(low=None, high=None, size=None, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Integers uniform in [low, high) (``randint(high, size)`` as in PyTorch)."""
    if size is None:
        if isinstance(high, (tuple, list)):
            low, high, size = 0, low, high
        else:
            raise TypeError("randint() missing required argument 'size'")
    elif high is None:
        low, high = 0, low
    elif low is None:
        low = 0
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    shape = _size((size,) if isinstance(size, int) else tuple(size))
    npd = _dtype.to_dtype(dtype).np if dtype is not None else np.dtype(np.int64)
    t = apply(_RANDINT, shape=shape, dtype=npd, generator=generator, low=low, high=high, device=to_device(device))
    return _grad(t, requires_grad)


def randint_like(input, low=0, high=None, *, dtype=None, device=None) -> Tensor:
    if high is None:
        low, high = 0, low
    dt, dev = _like(input, dtype, device)
    return randint(low, high, input._data.shape, dtype=dt, device=dev)


def randperm(n: int, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A random permutation of 0..n-1 (int64)."""
    arr = numpy_generator(generator).permutation(int(n)).astype(np.int64)
    return _finish(arr, dtype, device, requires_grad)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Normal samples; ``mean`` and ``std`` may be tensors (broadcast) or numbers with ``size``."""
    g = numpy_generator(generator)
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        m = mean._data if isinstance(mean, Tensor) else mean
        s = std._data if isinstance(std, Tensor) else std
        if isinstance(s, np.ndarray) and (s < 0).any() or not isinstance(s, np.ndarray) and s < 0:
            raise RuntimeError("normal expects all elements of std >= 0.0")
        like = mean if isinstance(mean, Tensor) else std
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        arr = (m + s * g.standard_normal(shape)).astype(like._data.dtype)
        return _finish(arr, dtype, like.device, requires_grad)
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    if size is None:
        raise TypeError("normal() with float mean and std needs a size")
    npd = _float_np(dtype)
    arr = (mean + std * g.standard_normal(_size((size,) if isinstance(size, int) else tuple(size)))).astype(npd)
    return _finish(arr, None, device, requires_grad)


# --------------------------------------------------------------------------- Tensor(...) constructor
def _tensor_init(self: Tensor, args, dtype, device, requires_grad) -> None:
    """``ember.Tensor(data)`` or ``ember.Tensor(*sizes)``: default float dtype, as torch.Tensor."""
    if len(args) == 1 and not isinstance(args[0], int):
        src = tensor(args[0], dtype=dtype or _dtype.defaults.float, device=device)
    else:
        src = zeros(*args, dtype=dtype, device=device)
    _bump()  # __init__ may be called again on an existing tensor
    self._data = src._data
    if src._device is not CPU:
        self._device = src._device
    if requires_grad:
        self.requires_grad = True
