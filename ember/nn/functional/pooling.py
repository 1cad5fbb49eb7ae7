"""Pooling: max, average and adaptive average pooling over strided window views.

``max_pool2d`` and ``avg_pool2d`` read every window through one strided view of the padded
input (no loop over pixels). Their gradients are linear maps with their own primitives, so they
can be differentiated again: max pooling scatters the gradient to the argmax element of each
window (the first one on ties, as PyTorch) and its gradient's gradient gathers from the same
positions; average pooling spreads ``g / divisor`` over the window (a loop over kernel offsets,
each one vectorized) and its gradient's gradient is average pooling again.
``adaptive_avg_pool2d`` is two small averaging matrices (``A_h @ x @ A_w^T``), a plain mean for
a 1x1 output. The 1-D forms run the 2-D ones on a height-1 image.
"""

from __future__ import annotations

import math

import numpy as np

from ember import backends
from ember.autograd.node import Node
from ember.ops._base import Tensor, _wrap, check_tensor
from ember.ops.dispatch import Primitive, apply

__all__ = [
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
]


def _tuple(v, name: str, op: str) -> tuple:
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(int(e) for e in v)
    if len(v) == 1:
        return v * 2
    if len(v) != 2:
        raise RuntimeError(f"{op}: {name} must either be a single int, or a tuple of two ints")
    return v


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``: in ceil mode the last window must start inside the input."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


class _Pool:
    """Geometry of one 2-D pooling call (kernel, stride, padding, dilation, sizes)."""

    __slots__ = ("k", "s", "p", "d", "in_hw", "out_hw", "ceil")

    def __init__(self, op, x, kernel_size, stride, padding, dilation, ceil_mode):
        self.k = _tuple(kernel_size, "kernel_size", op)
        self.s = (
            self.k
            if stride is None or (not isinstance(stride, int) and len(stride) == 0)
            else _tuple(stride, "stride", op)
        )
        self.p = _tuple(padding, "padding", op)
        self.d = _tuple(dilation, "dilation", op)
        self.ceil = bool(ceil_mode)
        if min(self.k) <= 0:
            raise RuntimeError(f"{op}: kernel_size must be greater than zero, but got {self.k}")
        if min(self.s) <= 0:
            raise RuntimeError(f"{op}: stride must be greater than zero, but got {self.s}")
        if min(self.d) <= 0:
            raise RuntimeError(f"{op}: dilation must be greater than zero, but got {self.d}")
        if self.p[0] > self.k[0] // 2 or self.p[1] > self.k[1] // 2:
            raise RuntimeError(
                f"{op}: pad should be at most half of effective kernel size, but got pad={self.p}, kernel_size={self.k}"
            )
        h, w = x._data.shape[-2:]
        self.in_hw = (h, w)
        self.out_hw = tuple(
            _pool_out(n, k, s, p, d, self.ceil) for n, k, s, p, d in zip((h, w), self.k, self.s, self.p, self.d)
        )
        if min(self.out_hw) <= 0:
            raise RuntimeError(
                f"{op}: Given input size: ({x._data.shape[-3]}x{h}x{w}). Calculated output size: "
                f"({x._data.shape[-3]}x{self.out_hw[0]}x{self.out_hw[1]}). Output size is too small"
            )

    def padded(self, xd: np.ndarray, value) -> np.ndarray:
        """Pad so that every window (including ceil-mode overhang) lies inside the array."""
        (h, w), (ho, wo) = self.in_hw, self.out_hw
        need_h = (ho - 1) * self.s[0] + self.d[0] * (self.k[0] - 1) + 1
        need_w = (wo - 1) * self.s[1] + self.d[1] * (self.k[1] - 1) + 1
        ph, pw = self.p
        bh, bw = max(need_h - h - ph, 0), max(need_w - w - pw, 0)
        if not (ph or pw or bh or bw):
            return xd
        out = np.full_like(xd, value, shape=xd.shape[:-2] + (h + ph + bh, w + pw + bw))  # on xd's device
        out[..., ph : ph + h, pw : pw + w] = xd
        return out

    def windows(self, xp: np.ndarray) -> np.ndarray:
        """``(N, C, Ho, Wo, kh, kw)`` read-only view of every window."""
        n, c = xp.shape[:2]
        s_n, s_c, s_h, s_w = xp.strides
        (ho, wo), (kh, kw) = self.out_hw, self.k
        shape = (n, c, ho, wo, kh, kw)
        strides = (s_n, s_c, s_h * self.s[0], s_w * self.s[1], s_h * self.d[0], s_w * self.d[1])
        return backends.as_strided(xp, shape, strides)


def _batched(x: Tensor, op: str):
    if x._data.ndim not in (3, 4):
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor for input, but got: {list(x.shape)}")
    return (x.unsqueeze(0), True) if x._data.ndim == 3 else (x, False)


# --------------------------------------------------------------------------- max pooling
class MaxPool(Node):
    """Forward: select the argmax of each window; backward: scatter to those positions."""

    __slots__ = ("idx", "in_shape", "geo")
    saves_values = False

    def backward(self, g):
        return (_max_scatter(g, self.idx, self.in_shape),)


class MaxScatter(Node):
    __slots__ = ("idx", "in_shape")
    saves_values = False

    def backward(self, gg):
        return (_max_gather(gg, self.idx),)


def _max_gather(x: Tensor, idx: np.ndarray) -> Tensor:
    return apply(_MAX_GATHER, x, idx=idx, in_shape=x._data.shape)


def _max_gather_impl(x, idx, in_shape):
    n, c = idx.shape[:2]
    flat = x._data.reshape(n, c, -1)
    return np.take_along_axis(flat, idx.reshape(n, c, -1), axis=2).reshape(idx.shape)


def _max_scatter(g: Tensor, idx: np.ndarray, in_shape: tuple) -> Tensor:
    return apply(_MAX_SCATTER, g, idx=idx, in_shape=in_shape)


def _max_scatter_impl(g, idx, in_shape):
    """Each window's gradient added at the position of its maximum."""
    n, c = idx.shape[:2]
    hw = in_shape[2] * in_shape[3]
    # One bincount over (plane, position) keys: repeated argmaxes of overlapping windows add up.
    keys = idx.reshape(n * c, -1) + backends.like(idx, (np.arange(n * c, dtype=np.int64) * hw)[:, None])
    out = np.bincount(keys.ravel(), weights=g._data.ravel(), minlength=n * c * hw)
    return out.astype(g._data.dtype, copy=False).reshape(in_shape)


def _empty_like_param(name: str, dtype_of=None):
    """A meta implementation: an empty array of the shape given by parameter ``name``."""

    def impl(x, **params):
        shape = params[name]
        return x._device.backend.xp.empty(shape if isinstance(shape, tuple) else shape.shape, x._data.dtype)

    return impl


_MAX_GATHER = Primitive("max_pool2d_gather", MaxPool, _max_gather_impl)
_MAX_SCATTER = Primitive("max_pool2d_backward", MaxScatter, _max_scatter_impl)
_MAX_GATHER.register("meta", _empty_like_param("idx"))
_MAX_SCATTER.register("meta", _empty_like_param("in_shape"))


def _max_pool_numpy(xd: np.ndarray, geo: _Pool):
    """Max pooling on strided window views: ``(out, flat H*W index of each maximum)``."""
    fill = -np.inf if xd.dtype.kind in "fV" else np.iinfo(xd.dtype).min
    win = geo.windows(geo.padded(xd, fill))
    n, c, ho, wo, kh, kw = win.shape
    flat = win.reshape(n, c, ho, wo, kh * kw)
    arg = np.argmax(flat, axis=-1)  # first maximum on ties; NaN wins, as in PyTorch
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    # Flat index into the unpadded H*W plane of the chosen element.
    ki, kj = np.divmod(arg, kw)
    rows = backends.like(arg, np.arange(ho)[:, None] * geo.s[0] - geo.p[0]) + ki * geo.d[0]
    cols = backends.like(arg, np.arange(wo)[None, :] * geo.s[1] - geo.p[1]) + kj * geo.d[1]
    return out, (rows * geo.in_hw[1] + cols).astype(np.int64)


def max_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """2-D max pooling over ``(N, C, H, W)`` or ``(C, H, W)``; ``return_indices`` gives flat ``H*W`` indices.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.max_pool2d(ember.arange(16.0).reshape(1, 1, 4, 4), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    check_tensor(input, "max_pool2d")
    x, squeeze = _batched(input, "max_pool2d")
    geo = _Pool("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    t, i = apply(_MAX_POOL, x, geo=geo)
    if squeeze:
        t, i = t.squeeze(0), i.squeeze(0)
    return (t, i) if return_indices else t


def _max_pool_impl(x, geo):
    """(output, flat H*W index of each window's maximum); the node keeps the indices."""
    xd = x._data
    out, idx = _max_pool_numpy(xd, geo)
    return (out, idx), {"idx": idx, "in_shape": xd.shape}


def _max_pool_meta(x, geo):
    xd = x._data
    empty = x._device.backend.xp.empty
    shape = xd.shape[:2] + tuple(geo.out_hw)
    idx = empty(shape, np.int64)
    return (empty(shape, xd.dtype), idx), {"idx": idx, "in_shape": xd.shape}


_MAX_POOL = Primitive("max_pool2d", MaxPool, _max_pool_impl, multi=True, extras=True)
_MAX_POOL.register("meta", _max_pool_meta)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """1-D max pooling over ``(N, C, L)`` or ``(C, L)``."""
    one = lambda v: (1, v if isinstance(v, int) else v[0])  # noqa: E731
    stride = None if stride is None or (not isinstance(stride, int) and len(stride) == 0) else one(stride)
    res = max_pool2d(
        input.unsqueeze(-2), one(kernel_size), stride, (0, one(padding)[1]), one(dilation), ceil_mode, return_indices
    )
    if return_indices:
        return res[0].squeeze(-2), res[1].squeeze(-2)
    return res.squeeze(-2)


# --------------------------------------------------------------------------- average pooling
def _avg_divisor(geo: _Pool, count_include_pad: bool, divisor_override) -> np.ndarray:
    """``(Ho, Wo)`` divisors as PyTorch computes them (windows clipped to the padded input)."""
    if divisor_override:
        return np.full(geo.out_hw, float(divisor_override))
    sizes = []
    for o, n, k, s, p in zip(geo.out_hw, geo.in_hw, geo.k, geo.s, geo.p):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        pool = end - start
        start_c, end_c = np.maximum(start, 0), np.minimum(end, n)
        sizes.append(pool if count_include_pad else end_c - start_c)
    return np.multiply.outer(sizes[0], sizes[1]).astype(np.float64)


class AvgPool(Node):
    __slots__ = ("geo", "div", "in_shape")
    saves_values = False

    def backward(self, g):
        return (_avg_spread(g, self.geo, self.div, self.in_shape),)


class AvgSpread(Node):
    __slots__ = ("geo", "div", "in_shape")
    saves_values = False

    def backward(self, gg):
        return (_avg_sum(gg, self.geo, self.div),)


def _avg_sum(x: Tensor, geo: _Pool, div: np.ndarray) -> Tensor:
    return apply(_AVG_POOL, x, geo=geo, div=div, in_shape=x._data.shape)


def _avg_sum_impl(x, geo, div, in_shape):
    xd = x._data
    win = geo.windows(geo.padded(xd, 0))
    return (win.sum(axis=(-2, -1)) / backends.like(xd, div)).astype(xd.dtype, copy=False)


def _avg_spread(g: Tensor, geo: _Pool, div: np.ndarray, in_shape: tuple) -> Tensor:
    return apply(_AVG_SPREAD, g, geo=geo, div=div, in_shape=in_shape)


def _avg_spread_impl(g, geo, div, in_shape):
    gd = (g._data / backends.like(g._data, div)).astype(g._data.dtype, copy=False)
    (h, w), (ho, wo) = geo.in_hw, geo.out_hw
    acc = geo.padded(np.zeros_like(gd, shape=in_shape), 0)
    for i in range(geo.k[0]):
        for j in range(geo.k[1]):
            hs, ws = i * geo.d[0], j * geo.d[1]
            acc[:, :, hs : hs + geo.s[0] * (ho - 1) + 1 : geo.s[0], ws : ws + geo.s[1] * (wo - 1) + 1 : geo.s[1]] += gd
    ph, pw = geo.p
    return backends.contiguous(acc[:, :, ph : ph + h, pw : pw + w])


_AVG_POOL = Primitive("avg_pool2d", AvgPool, _avg_sum_impl)
_AVG_SPREAD = Primitive("avg_pool2d_backward", AvgSpread, _avg_spread_impl)
_AVG_POOL.register(
    "meta", lambda x, geo, div, in_shape: x._device.backend.xp.empty(in_shape[:2] + tuple(geo.out_hw), x._data.dtype)
)
_AVG_SPREAD.register("meta", _empty_like_param("in_shape"))


def avg_pool2d(
    input: Tensor,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling over ``(N, C, H, W)`` or ``(C, H, W)``, divisors exactly as PyTorch.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.avg_pool2d(ember.ones(1, 1, 4, 4), 2, padding=1, count_include_pad=False).shape
        ember.Size([1, 1, 3, 3])
    """
    check_tensor(input, "avg_pool2d")
    if input._data.dtype.kind not in "fV":
        raise RuntimeError(f"avg_pool2d: expected a floating point input, got {input.dtype}")
    x, squeeze = _batched(input, "avg_pool2d")
    geo = _Pool("avg_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    out = _avg_sum(x, geo, _avg_divisor(geo, count_include_pad, divisor_override))
    return out.squeeze(0) if squeeze else out


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> Tensor:
    """1-D average pooling over ``(N, C, L)`` or ``(C, L)``."""
    one = lambda v: (1, v if isinstance(v, int) else v[0])  # noqa: E731
    stride = None if stride is None or (not isinstance(stride, int) and len(stride) == 0) else one(stride)
    out = avg_pool2d(input.unsqueeze(-2), one(kernel_size), stride, (0, one(padding)[1]), ceil_mode, count_include_pad)
    return out.squeeze(-2)


# --------------------------------------------------------------------------- adaptive pooling
def _adaptive_ranges(n: int, o: int) -> list:
    return [(math.floor(i * n / o), math.ceil((i + 1) * n / o)) for i in range(o)]


def _avg_matrix(n: int, o: int, like: Tensor) -> Tensor:
    a = np.zeros((o, n), dtype=like._data.dtype)
    for i, (s, e) in enumerate(_adaptive_ranges(n, o)):
        a[i, s:e] = 1.0 / (e - s)
    return _wrap(backends.like(like._data, a), like._device)


def _out_pair(output_size, in_hw) -> tuple:
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    return tuple(in_hw[i] if s is None else int(s) for i, s in enumerate(output_size))


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average over PyTorch's adaptive bins ``[floor(i*H/Ho), ceil((i+1)*H/Ho))``.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.adaptive_avg_pool2d(ember.ones(2, 3, 7, 5), (3, 2)).shape
        ember.Size([2, 3, 3, 2])
    """
    check_tensor(input, "adaptive_avg_pool2d")
    if input._data.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    h, w = input._data.shape[-2:]
    ho, wo = _out_pair(output_size, (h, w))
    if ho == 1 and wo == 1:
        return input.mean((-2, -1), keepdim=True)
    out = input
    if wo != w:
        out = out @ _avg_matrix(w, wo, input).mT
    if ho != h:
        out = _avg_matrix(h, ho, input) @ out
    return out


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """1-D adaptive average pooling over ``(N, C, L)`` or ``(C, L)``."""
    size = output_size if isinstance(output_size, int) else output_size[0]
    return adaptive_avg_pool2d(input.unsqueeze(-2), (1, size)).squeeze(-2)


def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """Max over adaptive bins; a loop over output cells (small outputs are the common case)."""
    check_tensor(input, "adaptive_max_pool2d")
    from ember.ops.movement import stack

    h, w = input._data.shape[-2:]
    ho, wo = _out_pair(output_size, (h, w))
    rows = []
    for hs, he in _adaptive_ranges(h, ho):
        cells = [input[..., hs:he, ws:we].flatten(-2).max(-1)[0] for ws, we in _adaptive_ranges(w, wo)]
        rows.append(stack(cells, -1))
    out = stack(rows, -2)
    if return_indices:
        raise NotImplementedError("adaptive_max_pool2d(return_indices=True) is not supported")
    return out
