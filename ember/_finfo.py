"""``ember.finfo`` and ``ember.iinfo``: the numeric limits of floating and integer dtypes.

The fields and their values are PyTorch's (``bits``, ``eps``, ``max``, ``min``, ``tiny``,
``smallest_normal``, ``resolution``, ``dtype``); the numbers come from NumPy, and from ml_dtypes
for bfloat16, which NumPy's ``finfo`` does not know.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ember import _dtype

__all__ = ["finfo", "iinfo"]


class finfo:
    """Machine limits of a floating dtype (the default dtype when none is given).

    Example:
        >>> import ember
        >>> ember.finfo(ember.bfloat16).eps
        0.0078125
        >>> ember.finfo(ember.float16).max
        65504.0
    """

    def __init__(self, type=None):
        d = _dtype.defaults.float if type is None else _dtype.to_dtype(type)
        if not d.is_floating_point:
            raise TypeError(
                "ember.finfo() requires a floating point input type. Use ember.iinfo to handle 'ember.finfo'"
            )
        info = ml_dtypes.finfo(d.np) if d is _dtype.bfloat16 else np.finfo(d.np)
        self.bits = int(info.bits)
        self.eps = float(info.eps)
        self.max = float(info.max)
        self.min = float(info.min)
        self.tiny = float(info.tiny)
        self.smallest_normal = float(info.smallest_normal)
        # 10 ** -(decimal digits of precision), as PyTorch and NumPy define it (ml_dtypes rounds
        # bfloat16's to 0.0100098).
        self.resolution = float(10.0 ** -int(-np.log10(self.eps)))
        self.dtype = d.name

    def __eq__(self, other) -> bool:
        return isinstance(other, finfo) and self.dtype == other.dtype

    def __hash__(self) -> int:
        return hash(("finfo", self.dtype))

    def __repr__(self) -> str:
        return (
            f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
            f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})"
        )


class iinfo:
    """Machine limits of an integer dtype.

    Example:
        >>> import ember
        >>> ember.iinfo(ember.int8).min, ember.iinfo(ember.int8).max
        (-128, 127)
    """

    def __init__(self, type):
        d = _dtype.to_dtype(type)
        if d is _dtype.bool_:
            raise TypeError("ember.bool is not supported by ember.iinfo")
        if d.is_floating_point:
            raise TypeError("ember.iinfo() requires an integer input type. Use ember.finfo to handle 'ember.iinfo'")
        info = np.iinfo(d.np)
        self.bits, self.min, self.max = int(info.bits), int(info.min), int(info.max)
        self.dtype = d.name

    def __eq__(self, other) -> bool:
        return isinstance(other, iinfo) and self.dtype == other.dtype

    def __hash__(self) -> int:
        return hash(("iinfo", self.dtype))

    def __repr__(self) -> str:
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"
