"""``repr(tensor)`` in PyTorch's layout: ``tensor([1., 2.], requires_grad=True)``.

Floats print with 4 decimals, or in scientific notation when magnitudes span more than 1000x
(or exceed 1e8, or go below 1e-4); whole-valued floats print as ``1.``. Large tensors are
summarized with ``...`` beyond 1000 elements, as in PyTorch.
"""

from __future__ import annotations

import numpy as np

from ember import _dtype

_QUIET_DTYPES = ("int64", "bool")


def _float_formatter(values: np.ndarray):
    finite = values[np.isfinite(values)].astype(np.float64)
    nonzero = np.abs(finite[finite != 0])
    if finite.size == 0:
        return lambda v: _special(v) or f"{v:.4f}"
    int_mode = bool(np.all(finite == np.ceil(finite)))
    sci = False
    if nonzero.size:
        mx, mn = nonzero.max(), nonzero.min()
        if int_mode:
            sci = mx / mn > 1000.0 or mx > 1.0e8
        else:
            sci = mx / mn > 1000.0 or mx > 1.0e8 or mn < 1.0e-4
    if sci:
        return lambda v: _special(v) or f"{v:.4e}"
    if int_mode:
        return lambda v: _special(v) or f"{v:.0f}."
    return lambda v: _special(v) or f"{v:.4f}"


def _special(v) -> str | None:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return None


def _format_data(arr: np.ndarray, indent: int) -> str:
    if arr.dtype.kind == "f":
        shown = arr if arr.size <= 1000 else _edges(arr)
        fmt = _float_formatter(shown)
        width = max((len(fmt(v)) for v in shown.reshape(-1)), default=1)

        def formatter(v):
            return fmt(v).rjust(width)

        kinds = {"float_kind": formatter}
    elif arr.dtype.kind == "b":
        kinds = {"bool": lambda v: "True" if v else "False"}
        width = 5 if not arr.all() else 4

        def formatter(v):
            return ("True" if v else "False").rjust(width)

        kinds = {"bool": formatter}
    else:
        kinds = None
    return np.array2string(
        arr,
        separator=", ",
        prefix=" " * indent,
        formatter=kinds,
        threshold=1000,
        edgeitems=3,
        max_line_width=80,
    )


def _edges(arr: np.ndarray) -> np.ndarray:
    """The elements that a summarized print shows (first and last 3 along each dim)."""
    for axis in range(arr.ndim):
        if arr.shape[axis] > 6:
            arr = np.concatenate([np.take(arr, range(3), axis), np.take(arr, range(-3, 0), axis)], axis)
    return arr


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
        body = _format_data(arr, len(prefix))
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
