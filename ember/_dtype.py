"""Ember's dtypes and PyTorch's type-promotion rules.

A :class:`dtype` wraps a NumPy dtype. Promotion follows PyTorch, not NumPy: operands are grouped
into tensors with dimensions, zero-dimensional tensors and Python scalars, and a lower-priority
group only changes the result when it brings a higher *category* (bool < integer < floating).
So ``int64 tensor + 2.5`` is ``float32`` (the default dtype), and ``float16 tensor + 1e3`` stays
``float16``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = [
    "dtype",
    "bool_",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "ALL",
    "LOW_PRECISION",
    "FLOAT_KINDS",
    "defaults",
    "from_numpy_dtype",
    "to_dtype",
    "promote_types",
    "scalar_dtype",
    "result_type",
    "is_float_np",
]

_BOOL, _INT, _FLOAT = 0, 1, 2


class dtype:
    """A tensor element type, printed like PyTorch's (``ember.float32``).

    Example:
        >>> import ember
        >>> ember.tensor([1.0]).dtype
        ember.float32
    """

    __slots__ = ("name", "np", "category", "itemsize", "is_floating_point", "is_signed")

    def __init__(self, name: str, np_dtype, category: int):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.category = category
        self.itemsize = self.np.itemsize
        self.is_floating_point = category == _FLOAT
        self.is_signed = category != _BOOL and self.np.kind != "u"

    is_complex = False

    def __repr__(self) -> str:
        return f"ember.{self.name}"

    def __reduce__(self):
        return (_lookup_name, (self.name,))

    def to_real(self) -> dtype:
        return self


bool_ = dtype("bool", np.bool_, _BOOL)
uint8 = dtype("uint8", np.uint8, _INT)
int8 = dtype("int8", np.int8, _INT)
int16 = dtype("int16", np.int16, _INT)
int32 = dtype("int32", np.int32, _INT)
int64 = dtype("int64", np.int64, _INT)
float16 = dtype("float16", np.float16, _FLOAT)
# NumPy has no bfloat16: ml_dtypes adds one (its arrays have kind "V", so code that asks "is this
# array floating point?" uses ``is_float_np`` below, not ``kind == "f"``).
bfloat16 = dtype("bfloat16", ml_dtypes.bfloat16, _FLOAT)
float32 = dtype("float32", np.float32, _FLOAT)
float64 = dtype("float64", np.float64, _FLOAT)

ALL = (bool_, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64)
LOW_PRECISION = (float16, bfloat16)
FLOAT_KINDS = "fV"  # array.dtype.kind of Ember's floating dtypes (bfloat16 reports "V")
_BY_NP = {d.np: d for d in ALL}
_BY_NAME = {d.name: d for d in ALL}


def _lookup_name(name: str) -> dtype:
    return _BY_NAME[name]


class _Defaults:
    """The process-wide default floating dtype (``ember.set_default_dtype``)."""

    float = float32


defaults = _Defaults()


def from_numpy_dtype(np_dtype) -> dtype:
    """Map a NumPy dtype to Ember's; raises TypeError for kinds Ember has no dtype for."""
    d = _BY_NP.get(np_dtype)
    if d is None:
        d = _BY_NP.get(np.dtype(np_dtype))
    if d is None:
        raise TypeError(
            f"can't convert np.ndarray of type {np.dtype(np_dtype)}; the supported types are: "
            + ", ".join(x.name for x in ALL)
        )
    return d


def to_dtype(d) -> dtype:
    """Accept an Ember dtype, a NumPy dtype, a Python type or a name and return Ember's dtype."""
    if type(d) is dtype:
        return d
    if d is float:
        return defaults.float
    if d is int:
        return int64
    if d is bool:
        return bool_
    if isinstance(d, str) and d in _BY_NAME:
        return _BY_NAME[d]
    try:
        return from_numpy_dtype(np.dtype(d))
    except TypeError as exc:
        raise TypeError(f"{d!r} is not an ember dtype") from exc


def promote_types(a: dtype, b: dtype) -> dtype:
    """PyTorch's ``promote_types``: the higher category wins; within one, NumPy's rule."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.category == _BOOL:
        return a
    if a.category == _FLOAT and a.itemsize == b.itemsize == 2:
        return float32  # float16 with bfloat16: neither holds the other, PyTorch picks float32
    return _BY_NP[np.promote_types(a.np, b.np)]


def scalar_dtype(value) -> dtype:
    """The dtype a Python scalar stands for when it meets tensors."""
    if isinstance(value, bool):
        return bool_
    if isinstance(value, int):
        return int64
    if isinstance(value, float):
        return defaults.float
    if isinstance(value, np.generic):
        return from_numpy_dtype(value.dtype)
    raise TypeError(f"unsupported scalar type {type(value).__name__}")


def result_type(*operands) -> dtype:
    """The dtype of an op over tensors and Python scalars, by PyTorch's three-group rule."""
    dim_t = zero_t = scal = None
    for x in operands:
        d = getattr(x, "dtype", None)
        if type(d) is dtype:
            if x._data.ndim:
                dim_t = d if dim_t is None else promote_types(dim_t, d)
            else:
                zero_t = d if zero_t is None else promote_types(zero_t, d)
        elif x is not None:
            d = scalar_dtype(x)
            scal = d if scal is None else promote_types(scal, d)
    out = dim_t
    for group in (zero_t, scal):
        if group is not None and (out is None or group.category > out.category):
            out = group
    return out


def is_float_np(np_dtype) -> bool:
    """Whether a NumPy dtype is one of Ember's floating dtypes (bfloat16 included)."""
    return np_dtype.kind == "f" or np_dtype == bfloat16.np
