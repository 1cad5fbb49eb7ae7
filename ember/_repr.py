"""``repr(tensor)`` in PyTorch's layout: ``tensor([1., 2.], requires_grad=True)``.

This follows ``torch/_tensor_str.py`` step by step, so the strings match PyTorch's exactly:
one formatter per tensor decides the mode (whole-valued floats print as ``1.``; scientific
notation when non-zero magnitudes span more than 1000x, exceed 1e8, or, for non-integers, go
below 1e-4) and a common width taken over the non-zero finite values; rows wrap at 80
characters; tensors over 1000 elements are summarized with ``...`` (3 edge items per dim).
"""

from __future__ import annotations

import math

import numpy as np

from ember import _dtype

__all__ = ["format_array", "tensor_repr"]

_QUIET_DTYPES = ("int64", "bool")
_PRECISION = 4
_THRESHOLD = 1000
_EDGEITEMS = 3
_LINEWIDTH = 80


class _Formatter:
    """Decides int/scientific mode and the column width for all elements of one tensor."""

    def __init__(self, values: np.ndarray):
        self.floating = values.dtype.kind in "fV"
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1
        flat = values.reshape(-1)
        if not self.floating:
            for v in flat.tolist():
                self.max_width = max(self.max_width, len(f"{v}"))
            return
        finite = flat[np.isfinite(flat) & (flat != 0)].astype(np.float64)
        if finite.size == 0:
            return
        absv = np.abs(finite)
        mn, mx = absv.min(), absv.max()
        vals = finite.tolist()
        self.int_mode = bool(np.all(finite == np.ceil(finite)))
        if self.int_mode:
            self.sci_mode = mx / mn > 1000.0 or mx > 1.0e8
            if not self.sci_mode:
                self.max_width = max(self.max_width, *(len(f"{v:.0f}") + 1 for v in vals))
        else:
            self.sci_mode = mx / mn > 1000.0 or mx > 1.0e8 or mn < 1.0e-4
            if not self.sci_mode:
                self.max_width = max(self.max_width, *(len(f"{v:.{_PRECISION}f}") for v in vals))
        if self.sci_mode:
            self.max_width = max(self.max_width, *(len(f"{v:.{_PRECISION}e}") for v in vals))

    def format(self, value) -> str:
        if self.floating:
            if self.sci_mode:
                ret = f"{value:{self.max_width}.{_PRECISION}e}"
            elif self.int_mode:
                ret = f"{value:.0f}"
                if not (math.isinf(value) or math.isnan(value)):
                    ret += "."
            else:
                ret = f"{value:.{_PRECISION}f}"
        else:
            ret = f"{value}"
        return (self.max_width - len(ret)) * " " + ret


def _summarized(arr: np.ndarray) -> np.ndarray:
    """The elements a summarized print shows (first and last 3 along each dim)."""
    for axis in range(arr.ndim):
        if arr.shape[axis] > 2 * _EDGEITEMS:
            idx = list(range(_EDGEITEMS)) + list(range(arr.shape[axis] - _EDGEITEMS, arr.shape[axis]))
            arr = np.take(arr, idx, axis)
    return arr


def _vector_str(arr: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    per_line = max(1, int(math.floor((_LINEWIDTH - indent) / (fmt.max_width + 2))))
    vals = arr.tolist()
    if summarize and len(vals) > 2 * _EDGEITEMS:
        data = [fmt.format(v) for v in vals[:_EDGEITEMS]] + [" ..."] + [fmt.format(v) for v in vals[-_EDGEITEMS:]]
    else:
        data = [fmt.format(v) for v in vals]
    lines = [", ".join(data[i : i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + ("," + "\n" + " " * (indent + 1)).join(lines) + "]"


def _tensor_str(arr: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    if arr.ndim == 0:
        return fmt.format(arr.item())
    if arr.ndim == 1:
        return _vector_str(arr, indent, summarize, fmt)
    n = arr.shape[0]
    if summarize and n > 2 * _EDGEITEMS:
        rows = list(range(_EDGEITEMS)) + [None] + list(range(n - _EDGEITEMS, n))
    else:
        rows = list(range(n))
    slices = ["..." if i is None else _tensor_str(arr[i], indent + 1, summarize, fmt) for i in rows]
    return "[" + ("," + "\n" * (arr.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def format_array(arr: np.ndarray, indent: int) -> str:
    """The bracketed body of a tensor's repr, as PyTorch prints it at this indent."""
    summarize = arr.size > _THRESHOLD
    fmt = _Formatter(_summarized(arr) if summarize else arr)
    return _tensor_str(arr, indent, summarize, fmt)


def tensor_repr(t) -> str:
    arr = t._device.backend.to_host(t._data)
    prefix = "tensor("
    suffixes = []
    if t._device.type != "cpu":
        suffixes.append(f"device='{t._device}'")
    if arr.size == 0:
        body = "[]"
        if arr.shape != (0,):
            suffixes.insert(0, f"size={tuple(arr.shape)}")
    else:
        body = format_array(arr, len(prefix))
    dt = _dtype.from_numpy_dtype(arr.dtype)
    if not (dt is _dtype.defaults.float or dt.name in _QUIET_DTYPES):
        suffixes.append(f"dtype={dt!r}")
    if t._node is not None:
        suffixes.append(f"grad_fn=<{t._node.name()}>")
    elif t._requires_grad:
        suffixes.append("requires_grad=True")
    tail = ""
    if suffixes:
        tail = ", " + ", ".join(suffixes)
    return f"{prefix}{body}{tail})"
