"""Convolutions: ``conv1d`` and ``conv2d`` as fused primitives with their own gradients.

Three array implementations, chosen per call (best first):

* the direct C kernels (``ember/backends/ckernels/conv.c``; groups=1, float32/float64, a C
  compiler present): channels-last packing, then register-blocked multiply-adds. Fastest for the
  small channel counts of CNNs on small images by far (see BENCHMARKS.md);
* "shift and GEMM" (stride 1, 8-32 channels): one GEMM per kernel tap over the flattened padded
  image, no column matrix;
* im2col + one GEMM (everything else, groups included): every kernel window as a strided view
  (no loop over pixels), copied into a column matrix and multiplied by the weight; groups are a
  batch dimension of that one matmul.

Backward is three primitives that are closed under differentiation, so double backward works:

* ``Conv2dInputGrad(g, w)``: ``W^T g`` back on the input's grid (the direct kernel with the
  flipped kernel, or col2im); its gradient is ``conv2d`` and ``Conv2dWeightGrad``.
* ``Conv2dWeightGrad(x, g)``: the correlation of ``x`` with ``g``; its gradient is
  ``Conv2dInputGrad`` and ``conv2d``.
* the bias gradient is a plain sum.

``conv1d`` is ``conv2d`` on a height-1 image.
"""

from __future__ import annotations

import numpy as np

from ember import backends
from ember._lowp import f32_compute
from ember.amp.policy import autocast_args
from ember.autograd.node import Node
from ember.ops._base import Tensor, check_tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = ["conv1d", "conv2d"]


class _Geom:
    """Static parameters of one convolution: stride, padding (top, bottom, left, right), dilation, groups."""

    __slots__ = ("stride", "pad", "dilation", "groups", "kernel_args")

    def __init__(self, stride, pad, dilation, groups):
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.groups = groups
        self.kernel_args = (stride, pad, dilation)  # what the C kernels take (groups=1 only)


def _tuple(v, n: int, name: str, op: str) -> tuple:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(e) for e in v)
    if len(v) == 1:
        return v * n
    if len(v) != n:
        raise RuntimeError(f"{op}: expected {name} to be a single integer value or a list of {n} values")
    return v


def _out_size(size: int, pad_total: int, k: int, s: int, d: int) -> int:
    return (size + pad_total - d * (k - 1) - 1) // s + 1


def _pad_array(x: np.ndarray, pad: tuple, value=0) -> np.ndarray:
    pt, pb, pl, pr = pad
    if not (pt or pb or pl or pr):
        return x
    n, c, h, w = x.shape
    out = np.full_like(x, value, shape=(n, c, h + pt + pb, w + pl + pr))  # on x's device
    out[:, :, pt : pt + h, pl : pl + w] = x
    return out


def _windows(xp: np.ndarray, kh: int, kw: int, ho: int, wo: int, geom: _Geom) -> np.ndarray:
    """Read-only strided view ``(N, C, kh, kw, Ho, Wo)`` of every kernel window of the padded input."""
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    return backends.as_strided(xp, (n, c, kh, kw, ho, wo), (s_n, s_c, s_h * dh, s_w * dw, s_h * sh, s_w * sw))


def _im2col(x: np.ndarray, kh: int, kw: int, ho: int, wo: int, geom: _Geom) -> np.ndarray:
    """Columns ``(groups, C/groups*kh*kw, N*Ho*Wo)``, contiguous (the one copy of the forward).

    Batch and pixels share the column axis so that each group is a single large GEMM.
    """
    n, c = x.shape[:2]
    g = geom.groups
    win = _windows(_pad_array(x, geom.pad), kh, kw, ho, wo, geom)
    return win.transpose(1, 2, 3, 0, 4, 5).reshape(g, (c // g) * kh * kw, n * ho * wo)


def _grad_rows(gd: np.ndarray, groups: int) -> np.ndarray:
    """The output gradient as ``(groups, N*Ho*Wo, O/groups)`` (a view of one NHWC copy)."""
    n, o, ho, wo = gd.shape
    gt = backends.contiguous(gd.transpose(0, 2, 3, 1)).reshape(n * ho * wo, groups, o // groups)
    return gt.transpose(1, 0, 2)


# --------------------------------------------------------------------------- stride-1 kernels
# For stride 1 and few channels, "shift and GEMM" beats im2col: lay the padded input out
# channel-major and flattened, ``(C, N*Hp*Wp)``. Output pixel ``p`` (on the padded grid) of kernel
# offset ``(i, j)`` then reads input column ``p + i*dh*Wp + j*dw``, so each offset is one GEMM
# with a contiguous column slice of that one buffer: no 9x column matrix, no col2im. Columns that
# fall on padding are computed and dropped (the waste is Hp*Wp / (Ho*Wo), so small images with
# wide kernels stay on im2col). BLAS does better with K = C*kh*kw than with K = C once C is large.
def _use_shift(x_shape, w_shape, geom: _Geom) -> bool:
    n, c, h, w = x_shape
    o, _, kh, kw = w_shape
    if geom.stride != (1, 1) or geom.groups != 1 or kh * kw == 1:
        return False
    if not (8 <= c <= 32 and 8 <= o <= 32):
        return False
    pt, pb, pl, pr = geom.pad
    hp, wp = h + pt + pb, w + pl + pr
    ho, wo = hp - geom.dilation[0] * (kh - 1), wp - geom.dilation[1] * (kw - 1)
    return ho > 0 and wo > 0 and hp * wp <= 1.4 * ho * wo


class _Shift:
    """Geometry of the flattened padded grid: ``L = N*Hp*Wp`` columns; offset ``s`` per kernel tap."""

    __slots__ = ("hp", "wp", "ho", "wo", "size", "smax", "offsets")

    def __init__(self, x_shape, w_shape, geom: _Geom):
        n, _, h, w = x_shape
        kh, kw = w_shape[2:]
        pt, pb, pl, pr = geom.pad
        dh, dw = geom.dilation
        self.hp, self.wp = h + pt + pb, w + pl + pr
        self.ho, self.wo = self.hp - dh * (kh - 1), self.wp - dw * (kw - 1)
        self.size = n * self.hp * self.wp
        self.smax = dh * (kh - 1) * self.wp + dw * (kw - 1)
        self.offsets = [(i, j, i * dh * self.wp + j * dw) for i in range(kh) for j in range(kw)]


def _padded_cm(xd, geom: _Geom, sh: _Shift):
    """The padded input, channel-major and flat: ``(C, N*Hp*Wp)``."""
    n, c, h, w = xd.shape
    pt, _, pl, _ = geom.pad
    buf = np.zeros_like(xd, shape=(c, n, sh.hp, sh.wp))
    buf[:, :, pt : pt + h, pl : pl + w] = xd.transpose(1, 0, 2, 3)
    return buf.reshape(c, sh.size)


def _grad_cm(gd, sh: _Shift):
    """``g`` on the padded output grid, channel-major, after ``smax`` zero columns: ``(O, smax + L)``."""
    n, o = gd.shape[:2]
    g2 = np.zeros_like(gd, shape=(o, sh.smax + sh.size))
    g2[:, sh.smax :].reshape(o, n, sh.hp, sh.wp)[:, :, : sh.ho, : sh.wo] = gd.transpose(1, 0, 2, 3)
    return g2


def _accumulate_taps(taps, acc):
    """``acc = sum_k a_k @ b_k`` over ``taps = [(a_k, b_k)]``, one scratch buffer for the products."""
    tmp = np.empty_like(acc)
    for k, (a, b) in enumerate(taps):
        if k == 0:
            np.matmul(a, b, out=acc)
        else:
            np.matmul(a, b, out=tmp)
            acc += tmp
    return acc


def _shift_forward(xd, wd, geom: _Geom):
    n = xd.shape[0]
    o = wd.shape[0]
    sh = _Shift(xd.shape, wd.shape, geom)
    lc = sh.size - sh.smax  # every valid output column lies below this
    buf = _padded_cm(xd, geom, sh)
    wk = backends.contiguous(wd.transpose(2, 3, 0, 1))  # (kh, kw, O, C)
    acc = np.empty_like(xd, shape=(o, sh.size))  # the last smax columns are never read
    _accumulate_taps([(wk[i, j], buf[:, s : s + lc]) for i, j, s in sh.offsets], acc[:, :lc])
    return backends.contiguous(acc.reshape(o, n, sh.hp, sh.wp)[:, :, : sh.ho, : sh.wo].transpose(1, 0, 2, 3))


def _shift_input_grad(gd, wd, x_shape, geom: _Geom, g2=None):
    n, c, h, w = x_shape
    sh = _Shift(x_shape, wd.shape, geom)
    if g2 is None:
        g2 = _grad_cm(gd, sh)
    pt, _, pl, _ = geom.pad
    # Only the columns of the padded grid that hold real input pixels are computed.
    q0 = pt * sh.wp + pl
    q1 = (n - 1) * sh.hp * sh.wp + (pt + h - 1) * sh.wp + pl + w
    wk = backends.contiguous(wd.transpose(2, 3, 1, 0))  # (kh, kw, C, O)
    taps = [(wk[i, j], g2[:, sh.smax - s + q0 : sh.smax - s + q1]) for i, j, s in sh.offsets]
    acc = np.empty_like(gd, shape=(c, sh.size))  # columns outside [q0, q1) are padding, never read
    _accumulate_taps(taps, acc[:, q0:q1])
    acc = acc.reshape(c, n, sh.hp, sh.wp)[:, :, pt : pt + h, pl : pl + w]
    return backends.contiguous(acc.transpose(1, 0, 2, 3))


def _shift_weight_grad(xd, gd, w_shape, geom: _Geom, g2=None):
    sh = _Shift(xd.shape, w_shape, geom)
    if g2 is None:
        g2 = _grad_cm(gd, sh)
    lc = sh.size - sh.smax
    buf = _padded_cm(xd, geom, sh)
    gv = g2[:, sh.smax : sh.smax + lc]
    o, c, kh, kw = w_shape
    out = np.empty_like(xd, shape=(kh, kw, o, c))
    for i, j, s in sh.offsets:
        np.matmul(gv, buf[:, s : s + lc].T, out=out[i, j])
    return backends.contiguous(out.transpose(2, 3, 0, 1))


# --------------------------------------------------------------------------- array kernels
# Three implementations, best first: the direct C kernels (groups=1, float32/float64, a C
# compiler), shift-and-GEMM (stride 1, few channels), and im2col + GEMM (everything). ``k`` is
# the C kernels' module when the cpu implementations (ember/backends/cpu_kernels.py) call these,
# None in the NumPy implementations every device runs.
def _input_grad_path(x_shape, w_shape, geom: _Geom, dtype, k=None) -> str:
    if k is not None and geom.groups == 1 and k.has_conv(dtype):
        return "direct"
    return "shift" if _use_shift(x_shape, w_shape, geom) else "im2col"


@f32_compute  # float16/bfloat16: float32 compute (the C kernels take float32/64)
def _grad_layout(gd, x_shape, w_shape, geom: _Geom, k=None):
    """``(path, buffer)``: the output gradient rearranged once for the input gradient's kernel
    (and reused by the weight gradient's where the layouts agree)."""
    path = _input_grad_path(x_shape, w_shape, geom, gd.dtype, k)
    if path == "direct":
        return path, k.conv2d_pack_grad(gd, x_shape, w_shape, geom.kernel_args)
    if path == "shift":
        return path, _grad_cm(gd, _Shift(x_shape, w_shape, geom))
    return path, _grad_rows(gd, geom.groups)


@f32_compute  # float16/bfloat16: float32 compute (the C kernels take float32/64)
def _conv_forward(xd, wd, bd, geom: _Geom, k=None):
    """The convolution of arrays, bias included (``bd`` may be None)."""
    if k is not None and geom.groups == 1:
        out = k.conv2d(xd, wd, bd, geom.kernel_args)
        if out is not None:
            return out
    if _use_shift(xd.shape, wd.shape, geom):
        out = _shift_forward(xd, wd, geom)
    else:
        out = _im2col_forward(xd, wd, geom)
    if bd is not None:
        out += bd.reshape(1, -1, 1, 1)
    return out


def _im2col_forward(xd, wd, geom: _Geom):
    n, c, h, w = xd.shape
    o, _, kh, kw = wd.shape
    g = geom.groups
    pt, pb, pl, pr = geom.pad
    ho = _out_size(h, pt + pb, kh, geom.stride[0], geom.dilation[0])
    wo = _out_size(w, pl + pr, kw, geom.stride[1], geom.dilation[1])
    cols = _im2col(xd, kh, kw, ho, wo, geom)
    out = np.matmul(wd.reshape(g, o // g, -1), cols)  # (g, O/g, N*Ho*Wo)
    return backends.contiguous(out.reshape(o, n, ho, wo).transpose(1, 0, 2, 3))


@f32_compute  # float16/bfloat16: float32 compute (the C kernels take float32/64)
def _input_grad(gd, wd, x_shape, geom: _Geom, layout=None, k=None):
    """The input gradient: ``layout`` is :func:`_grad_layout`'s result when already made."""
    if gd.size == 0:  # an empty batch (or output): nothing reaches the input
        return np.zeros_like(gd, shape=x_shape)
    path, buf = layout or (_input_grad_path(x_shape, wd.shape, geom, gd.dtype, k), None)
    if path == "direct":
        return k.conv2d_input_grad(gd, wd, x_shape, geom.kernel_args, buf)
    if path == "shift":
        return _shift_input_grad(gd, wd, x_shape, geom, buf)
    return _col2im_input_grad(gd, wd, x_shape, geom, buf)


def _col2im_input_grad(gd, wd, x_shape, geom: _Geom, rows=None):
    """col2im of ``W^T g``: per kernel offset one (grouped) GEMM and one strided add.

    The accumulator is NHWC so that every strided add runs over long contiguous rows.
    """
    n, o, ho, wo = gd.shape
    _, cg, kh, kw = wd.shape
    _, c, h, w = x_shape
    g = geom.groups
    pt, pb, pl, pr = geom.pad
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    if rows is None:
        rows = _grad_rows(gd, g)
    wt = wd.reshape(g, o // g, cg, kh, kw)
    acc = np.zeros_like(gd, shape=(n, h + pt + pb, w + pl + pr, g, cg))
    for i in range(kh):
        for j in range(kw):
            part = np.matmul(rows, wt[:, :, :, i, j])  # (g, N*Ho*Wo, Cg)
            part = part.transpose(1, 0, 2).reshape(n, ho, wo, g, cg)
            hs, ws = i * dh, j * dw
            acc[:, hs : hs + sh * (ho - 1) + 1 : sh, ws : ws + sw * (wo - 1) + 1 : sw] += part
    acc = acc[:, pt : pt + h, pl : pl + w].reshape(n, h, w, c)
    return backends.contiguous(acc.transpose(0, 3, 1, 2))


@f32_compute  # float16/bfloat16: float32 compute (the C kernels take float32/64)
def _weight_grad(xd, gd, w_shape, geom: _Geom, layout=None, k=None):
    """The weight gradient: ``layout`` is :func:`_grad_layout`'s result when already made."""
    if gd.size == 0 or xd.size == 0:  # an empty batch: a zero weight gradient
        return np.zeros_like(gd, shape=w_shape)
    path, buf = layout or (None, None)
    if k is not None and geom.groups == 1:
        out = k.conv2d_weight_grad(xd, gd, w_shape, geom.kernel_args, buf if path == "direct" else None)
        if out is not None:
            return out
    if _use_shift(xd.shape, w_shape, geom):
        return _shift_weight_grad(xd, gd, w_shape, geom, buf if path == "shift" else None)
    n, o, ho, wo = gd.shape
    _, cg, kh, kw = w_shape
    g = geom.groups
    cols = _im2col(xd, kh, kw, ho, wo, geom)
    rows = buf if path == "im2col" else _grad_rows(gd, g)
    gw = np.matmul(rows.transpose(0, 2, 1), cols.transpose(0, 2, 1))  # (g, O/g, K)
    return gw.reshape(w_shape)


# --------------------------------------------------------------------------- primitives
class Conv2d(Node):
    __slots__ = ("geom",)

    def backward(self, g):
        x, w, b = self.inputs
        need = (x._requires_grad, w._requires_grad)
        if not grad_state.enabled:
            gx, gw = apply(_CONV2D_BACKWARD, g, x, w, geom=self.geom, need=need)
        else:  # create_graph: the two gradients as differentiable primitives
            gx = conv2d_input_grad(g, w, x._data.shape, self.geom) if need[0] else None
            gw = conv2d_weight_grad(x, g, w._data.shape, self.geom) if need[1] else None
        gb = g.sum((0, 2, 3)) if b is not None and b._requires_grad else None
        return gx, gw, gb


def _conv2d_backward_impl(g, x, w, geom, need, k=None):
    """(gx, gw) on arrays; the rearranged ``g`` is made once when both are needed."""
    gd, x_shape, w_shape = g._data, x._data.shape, w._data.shape
    layout = _grad_layout(gd, x_shape, w_shape, geom, k) if all(need) else None
    gx = _input_grad(gd, w._data, x_shape, geom, layout, k) if need[0] else None
    gw = _weight_grad(x._data, gd, w_shape, geom, layout, k) if need[1] else None
    return gx, gw


def _conv2d_backward_meta(g, x, w, geom, need):
    zeros = g._device.backend.xp.empty
    return (zeros(x._data.shape, g._data.dtype) if need[0] else None), (
        zeros(w._data.shape, g._data.dtype) if need[1] else None
    )


class Conv2dInputGrad(Node):
    """``W^T g`` scattered back to the input shape; linear in both ``g`` and ``w``."""

    __slots__ = ("geom", "x_shape")

    def backward(self, gg):
        g, w = self.inputs
        dg = _conv2d_raw(gg, w, None, self.geom) if g._requires_grad else None
        dw = conv2d_weight_grad(gg, g, w._data.shape, self.geom) if w._requires_grad else None
        return dg, dw


class Conv2dWeightGrad(Node):
    """Correlation of the input with the output gradient; linear in both ``x`` and ``g``."""

    __slots__ = ("geom", "w_shape")

    def backward(self, ggw):
        x, g = self.inputs
        dx = conv2d_input_grad(g, ggw, x._data.shape, self.geom) if x._requires_grad else None
        dg = _conv2d_raw(x, ggw, None, self.geom) if g._requires_grad else None
        return dx, dg


def conv2d_input_grad(g: Tensor, w: Tensor, x_shape: tuple, geom: _Geom) -> Tensor:
    return apply(_CONV2D_INPUT_GRAD, g, w, geom=geom, x_shape=tuple(x_shape))


def conv2d_weight_grad(x: Tensor, g: Tensor, w_shape: tuple, geom: _Geom) -> Tensor:
    return apply(_CONV2D_WEIGHT_GRAD, x, g, geom=geom, w_shape=tuple(w_shape))


def _conv2d_raw(x: Tensor, w: Tensor, b, geom: _Geom) -> Tensor:
    t = apply(_CONV2D, x, w, b, geom=geom)
    node = t._node
    if node is not None:
        # Only the input is kept (as in PyTorch), not the im2col columns, which would be
        # kh*kw times its size: the backward repacks it.
        node.save_versions(*(i for i in node.inputs if i is not None))
    return t


def _conv2d_meta(x, w, b, geom):
    n, _, h, wd = x._data.shape
    o, _, kh, kw = w._data.shape
    pt, pb, pl, pr = geom.pad
    ho = _out_size(h, pt + pb, kh, geom.stride[0], geom.dilation[0])
    wo = _out_size(wd, pl + pr, kw, geom.stride[1], geom.dilation[1])
    return x._device.backend.xp.empty((n, o, ho, wo), x._data.dtype)


def _meta_of(shape_param: str):
    return lambda a, b, geom, **p: a._device.backend.xp.empty(p[shape_param], a._data.dtype)


_CONV2D = Primitive(
    "conv2d", Conv2d, lambda x, w, b, geom: _conv_forward(x._data, w._data, None if b is None else b._data, geom)
)
_CONV2D_INPUT_GRAD = Primitive(
    "conv2d_input_grad", Conv2dInputGrad, lambda g, w, geom, x_shape: _input_grad(g._data, w._data, x_shape, geom)
)
_CONV2D_WEIGHT_GRAD = Primitive(
    "conv2d_weight_grad", Conv2dWeightGrad, lambda x, g, geom, w_shape: _weight_grad(x._data, g._data, w_shape, geom)
)
_CONV2D_BACKWARD = Primitive("conv2d_backward", None, _conv2d_backward_impl, multi=True)
# Meta: the output shapes by formula (the array code packs real buffers).
_CONV2D.register("meta", _conv2d_meta)
_CONV2D_INPUT_GRAD.register("meta", _meta_of("x_shape"))
_CONV2D_WEIGHT_GRAD.register("meta", _meta_of("w_shape"))
_CONV2D_BACKWARD.register("meta", _conv2d_backward_meta)


# --------------------------------------------------------------------------- public API
def _same_padding(k: tuple, d: tuple) -> tuple:
    pads = []
    for ki, di in zip(k, d):
        total = di * (ki - 1)
        pads.extend([total // 2, total - total // 2])
    return tuple(pads)


def _check_conv(op, x, w, b, groups, nd):
    check_tensor(x, op)
    check_tensor(w, op, "weight")
    if w._data.ndim != nd + 2:
        raise RuntimeError(f"{op}: expected weight to be {nd + 2}-D, but got {w._data.ndim}-D weight {list(w.shape)}")
    if x._data.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(
            f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {op}, but got input of size: "
            f"{list(x.shape)}"
        )
    if x._data.dtype != w._data.dtype:
        raise RuntimeError(f"{op}: Input type ({x.dtype}) and weight type ({w.dtype}) should be the same")
    if x._data.dtype.kind not in "fV":
        raise RuntimeError(f"{op}: expected a floating point input, got {x.dtype}")
    if b is not None:
        check_tensor(b, op, "bias")
        if b._data.dtype != x._data.dtype:
            raise RuntimeError(f"{op}: Input type ({x.dtype}) and bias type ({b.dtype}) should be the same")
        if b._data.shape != (w._data.shape[0],):
            raise RuntimeError(f"{op}: expected bias of shape [{w._data.shape[0]}], got {list(b.shape)}")
    if groups < 1:
        raise RuntimeError(f"{op}: non-positive groups is not supported")
    o = w._data.shape[0]
    if o == 0:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be at least 1 at dimension 0, but got weight of size "
            f"{list(w.shape)} instead"
        )
    if o % groups:
        raise RuntimeError(f"{op}: Given groups={groups}, expected weight to be divisible by {groups} at dimension 0")
    c = x._data.shape[-nd - 1]
    if c != w._data.shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(w.shape)}, expected input{list(x.shape)} to have "
            f"{w._data.shape[1] * groups} channels, but got {c} channels instead"
        )


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) over ``(N, C, H, W)`` or ``(C, H, W)`` input, as in PyTorch.

    ``padding`` is an int, a pair, or the strings ``'valid'`` (no padding) and ``'same'`` (output as
    large as the input; stride 1 only, extra padding goes to the bottom/right as in PyTorch).

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.conv2d(ember.ones(1, 2, 5, 5), ember.ones(4, 2, 3, 3), padding=1).shape
        ember.Size([1, 4, 5, 5])
    """
    input, weight, bias = autocast_args("conv2d", input, weight, bias)
    _check_conv("conv2d", input, weight, bias, groups, 2)
    stride = _tuple(stride, 2, "stride", "conv2d")
    dilation = _tuple(dilation, 2, "dilation", "conv2d")
    kh, kw = weight._data.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pad = (0, 0, 0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            pad = _same_padding((kh, kw), dilation)
        else:
            raise ValueError(f"Invalid padding string '{padding}', should be one of {{'valid', 'same'}}")
    else:
        ph, pw = _tuple(padding, 2, "padding", "conv2d")
        if ph < 0 or pw < 0:
            raise RuntimeError("conv2d: negative padding is not supported")
        pad = (ph, ph, pw, pw)
    if min(stride) < 1:
        raise RuntimeError("conv2d: non-positive stride is not supported")
    if min(dilation) < 1:
        raise RuntimeError("conv2d: dilation should be greater than zero")
    unbatched = input._data.ndim == 3
    x = input.unsqueeze(0) if unbatched else input
    h, w = x._data.shape[2:]
    hp, wp = h + pad[0] + pad[1], w + pad[2] + pad[3]
    if hp < dilation[0] * (kh - 1) + 1 or wp < dilation[1] * (kw - 1) + 1:
        raise RuntimeError(
            f"conv2d: Calculated padded input size per channel: ({hp} x {wp}). Kernel size: "
            f"({dilation[0] * (kh - 1) + 1} x {dilation[1] * (kw - 1) + 1}). Kernel size can't be greater than "
            "actual input size"
        )
    out = _conv2d_raw(x, weight, bias, _Geom(stride, pad, dilation, int(groups)))
    return out.squeeze(0) if unbatched else out


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution over ``(N, C, L)`` or ``(C, L)`` input (``conv2d`` on a height-1 image).

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.conv1d(ember.ones(1, 2, 8), ember.ones(3, 2, 3), padding="same").shape
        ember.Size([1, 3, 8])
    """
    input, weight, bias = autocast_args("conv1d", input, weight, bias)
    _check_conv("conv1d", input, weight, bias, groups, 1)
    (s,) = _tuple(stride, 1, "stride", "conv1d")
    (d,) = _tuple(dilation, 1, "dilation", "conv1d")
    pad = padding if isinstance(padding, str) else (0, _tuple(padding, 1, "padding", "conv1d")[0])
    x = input.unsqueeze(-2)
    out = conv2d(x, weight.unsqueeze(2), bias, (1, s), pad, (1, d), groups)
    return out.squeeze(-2)
