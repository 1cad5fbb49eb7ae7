"""NumPy-facing wrappers of the C kernels: each returns the result arrays, or None when the kernels
are unavailable or the arrays are not what they handle (not NumPy float32/float64, empty, mixed
dtypes). Callers then take their NumPy path. Inputs are made C-contiguous here (one copy at most).

Example:
    >>> import numpy as np
    >>> from ember.backends.ckernels import ops
    >>> y = ops.softmax(np.zeros((2, 4), np.float32), log=False)  # None without a C compiler
"""

from __future__ import annotations

import os

import numpy as np

from ember.backends import ckernels
from ember.backends.ckernels.signatures import KERNELS, Kernel

__all__ = [
    "PARALLEL_MIN",
    "ROW_PARALLEL_MIN",
    "softmax",
    "softmax_backward",
    "layer_norm",
    "layer_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "lstm_step_kernels",
    "gelu",
    "gelu_backward",
    "has_conv",
    "conv2d",
    "conv2d_pack_grad",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "max_pool2d",
    "max_pool2d_backward",
    "has_gemm",
    "GEMM_MIN",
    "use_tiles",
    "matmul",
    "linear",
    "pack_b",
    "lstm_sequence_forward",
    "lstm_sequence_backward",
]

_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
_fns: dict = {}
# OpenMP pays off only on large arrays; below this many elements a kernel runs on one thread.
PARALLEL_MIN = 1 << 17
# The row kernels (softmax, layer_norm, gelu) sit between GEMMs in transformers. After a parallel
# region libgomp's idle threads spin for a while, taking the cores from OpenBLAS's threads in the
# next GEMM (a GPT step measured 3x slower), so these go parallel only on very large arrays.
ROW_PARALLEL_MIN = 1 << 22
_parent = {"pid": os.getpid()}


def _fn(name: str, *arrays):
    """The kernel ``name`` (a checked :class:`Kernel`) for the arrays' dtype, or None (no library,
    non-NumPy, mixed dtypes)."""
    a = arrays[0]
    if type(a) is not np.ndarray or a.size == 0:
        return None
    dt = a.dtype
    if dt not in _SUFFIX or any(type(b) is not np.ndarray or b.dtype != dt for b in arrays[1:] if b is not None):
        return None
    key = name + _SUFFIX[dt]
    fn = _fns.get(key)
    if fn is None:
        lib = ckernels.get()
        if lib is None:
            return None
        # Calls go through the declared signature: every buffer is checked before the C call.
        fn = _fns[key] = Kernel(KERNELS[name], getattr(lib, key), dt, key)
    return fn


def _threads(n: int, minimum: int = PARALLEL_MIN) -> int:
    """OpenMP threads for ``n`` elements: up to ``ember.get_num_threads()`` (as for PyTorch: all
    cores unless limited), one per ``minimum / 2`` elements, so small arrays stay serial (a
    parallel region waits for its slowest thread, which costs more than it saves on small work),
    and never in a forked child (libgomp's thread pool does not survive fork)."""
    if n < minimum or not ckernels.uses_openmp() or os.getpid() != _parent["pid"]:
        return 1  # decided before get_num_threads, which reads the environment and the affinity
    from ember._threads import get_num_threads

    return max(1, min(get_num_threads(), n // (minimum // 2)))


def _c(a):
    return np.ascontiguousarray(a)


def softmax(x, log: bool):
    """softmax (or log_softmax) over the last axis."""
    fn = _fn("softmax_fwd", x)
    if fn is None or x.ndim == 0:
        return None
    x = _c(x)
    y = np.empty_like(x)
    cols = x.shape[-1]
    fn(x, y, x.size // cols, cols, int(log), _threads(x.size, ROW_PARALLEL_MIN))
    return y


def softmax_backward(y, g, log: bool):
    """Gradient of softmax (log_softmax) over the last axis, from its output ``y`` and ``g``."""
    fn = _fn("softmax_bwd", y, g)
    if fn is None or y.ndim == 0 or g.shape != y.shape:
        return None
    y, g = _c(y), _c(g)
    gx = np.empty_like(y)
    cols = y.shape[-1]
    fn(y, g, gx, y.size // cols, cols, int(log), _threads(y.size, ROW_PARALLEL_MIN))
    return gx


def layer_norm(x, w, b, k: int, eps: float):
    """Layer norm over the last ``k`` axes: returns (out, x contiguous, mean, rstd), mean and rstd
    shaped like ``x`` with the last ``k`` axes kept as 1 (NumPy ``keepdims``)."""
    fn = _fn("layer_norm_fwd", x, w, b)
    if fn is None or x.ndim < k:
        return None
    x = _c(x)
    w = None if w is None else _c(w)
    b = None if b is None else _c(b)
    stat_shape = x.shape[: x.ndim - k] + (1,) * k
    cols = x.size // int(np.prod(stat_shape))
    rows = x.size // cols
    y = np.empty_like(x)
    mean = np.empty(stat_shape, x.dtype)
    rstd = np.empty(stat_shape, x.dtype)
    fn(x, w, b, y, mean, rstd, rows, cols, float(eps), _threads(x.size, ROW_PARALLEL_MIN))
    return y, x, mean, rstd


def layer_norm_backward(x, w, g, mean, rstd, pshape: tuple, need_gx: bool, need_gw: bool, need_gb: bool):
    """Gradients (gx, gw, gb) of layer norm (None where not needed), from :func:`layer_norm`'s
    saved contiguous ``x``, ``mean`` and ``rstd``; gw and gb have shape ``pshape``."""
    fn = _fn("layer_norm_bwd", x, w, g, mean, rstd)
    if fn is None or g.shape != x.shape:
        return None
    g = _c(g)
    wc = None if w is None else _c(w)
    rows = mean.size
    cols = x.size // rows
    nchunks = _threads(x.size, ROW_PARALLEL_MIN)
    gx = np.empty_like(x) if need_gx else None
    gw = np.empty((nchunks, cols), x.dtype) if need_gw else None
    gb = np.empty((nchunks, cols), x.dtype) if need_gb else None
    fn(x, wc, g, mean, rstd, gx, gw, gb, rows, cols, nchunks)
    gw = None if gw is None else gw.sum(axis=0).reshape(pshape)
    gb = None if gb is None else gb.sum(axis=0).reshape(pshape)
    return gx, gw, gb


def batch_norm(x, w, b, eps: float):
    """Training batch norm over every axis but 1: returns (out, x contiguous, mean, var, rstd), the
    statistics of shape (C,) with the biased variance; None without the kernels."""
    fn = _fn("batch_norm_fwd", x, w, b)
    if fn is None or x.ndim < 2:
        return None
    x = _c(x)
    w = None if w is None else _c(w)
    b = None if b is None else _c(b)
    n, c = x.shape[:2]
    y = np.empty_like(x)
    mean, var, rstd = (np.empty(c, x.dtype) for _ in range(3))
    scratch = np.empty(2 * c)  # float64 accumulators of the (N, C) case
    fn(x, w, b, y, mean, var, rstd, n, c, x.size // (n * c), float(eps),
       scratch, _threads(x.size))  # fmt: skip
    return y, x, mean, var, rstd


def batch_norm_backward(x, w, g, mean, rstd, need_gx: bool, need_gw: bool, need_gb: bool):
    """Gradients (gx, gw, gb) of training batch norm (None where not needed), from
    :func:`batch_norm`'s contiguous ``x``, ``mean`` and ``rstd``."""
    fn = _fn("batch_norm_bwd", x, w, g, mean, rstd)
    if fn is None or g.shape != x.shape:
        return None
    g = _c(g)
    w = None if w is None else _c(w)
    n, c = x.shape[:2]
    gx = np.empty_like(x) if need_gx else None
    gw = np.empty(c, x.dtype) if need_gw else None
    gb = np.empty(c, x.dtype) if need_gb else None
    scratch = np.empty(2 * c)  # float64 accumulators of the (N, C) case
    fn(x, g, w, mean, rstd, gx, gw, gb, n, c, x.size // (n * c),
       scratch, _threads(x.size))  # fmt: skip
    return gx, gw, gb


def lstm_step_kernels(*arrays):
    """``(forward, backward)`` LSTM step kernels (raw ctypes functions, called once per time step
    with pointers) when every array is NumPy of one kernel dtype; None otherwise."""
    fwd = _fn("lstm_fwd_step", *arrays)
    return None if fwd is None else (fwd, _fn("lstm_bwd_step", *arrays))


def gelu(x, approximate: str):
    """gelu elementwise (``approximate`` is 'none' or 'tanh')."""
    fn = _fn("gelu_fwd", x)
    if fn is None:
        return None
    x = _c(x)
    y = np.empty_like(x)
    fn(x, y, x.size, int(approximate == "tanh"), _threads(x.size, ROW_PARALLEL_MIN))
    return y


def gelu_backward(x, g, approximate: str):
    """``g`` times the derivative of gelu at ``x``."""
    fn = _fn("gelu_bwd", x, g)
    if fn is None or g.shape != x.shape:
        return None
    x, g = _c(x), _c(g)
    gx = np.empty_like(x)
    fn(x, g, gx, x.size, int(approximate == "tanh"), _threads(x.size, ROW_PARALLEL_MIN))
    return gx


# --------------------------------------------------------------------------- conv2d
# Direct convolution (conv.c). Shapes: x (N, C, H, W), w (O, C, kh, kw), NCHW in and out; the
# kernels work on channels-last copies that these wrappers pack (zero padding included).
# ``geom`` is (stride, pad, dilation) with stride/dilation pairs and pad (top, bottom, left, right).
_CB = 4  # input-channel block of the weight gradient (conv.c's CB)


def has_conv(dtype) -> bool:
    """Whether the direct convolution kernels run for ``dtype`` (float32/float64 with a compiler)."""
    return np.dtype(dtype) in _SUFFIX and ckernels.get() is not None


def _ob(dtype, channels: int = 0) -> int:
    """Output channels per register block for ``channels`` outputs: conv.c's OB (64 bytes), or 2*OB
    where the library is built for AVX-512 and ``channels`` is a multiple of it (32 float32
    channels in 2 zmm registers per pixel: half the input loads per multiply-add)."""
    ob = 64 // np.dtype(dtype).itemsize
    return 2 * ob if channels and channels % (2 * ob) == 0 and ckernels.has_avx512() else ob


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pack(src, hd: int, wd: int, cd: int, oy: int, ox: int):
    """NCHW ``src`` into a zeroed channels-last ``(N, hd, wd, cd)`` buffer at pixel
    ``(oy + y, ox + x)``; pixels that fall outside are dropped."""
    fn = _fn("pack_nhwc", src)
    src = _c(src)
    n, c, h, w = src.shape
    dst = np.empty((n, hd, wd, cd), src.dtype)
    fn(src, dst, n, c, h, w, hd, wd, cd, oy, ox, _threads(dst.size))
    return dst


def _out_hw(h: int, w: int, kh: int, kw: int, geom) -> tuple:
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = geom
    return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def _weight_blocks(wt, op: int, ob: int):
    """``wt`` (kh, kw, C, O) as ``(op/ob, kh, kw, C, ob)``, zero-padded to ``op`` output channels:
    the weights of one block of output channels are contiguous for the kernel."""
    kh, kw, c, o = wt.shape
    out = np.zeros((op // ob, kh, kw, c, ob), wt.dtype)
    for k in range(op // ob):
        part = wt[..., k * ob : (k + 1) * ob]
        out[k, ..., : part.shape[-1]] = part
    return out


def _subsample_1x1(x, w_shape: tuple, geom):
    """A strided 1x1 convolution without padding reads every stride-th pixel only: take those
    (a smaller copy to pack) and convolve with stride 1."""
    stride, pad, dilation = geom
    if w_shape[2:] != (1, 1) or stride == (1, 1) or any(pad):
        return x, geom
    return x[:, :, :: stride[0], :: stride[1]], ((1, 1), pad, dilation)


def conv2d(x, w, b, geom):
    """Forward of a groups=1 convolution (``b`` may be None): the (N, O, Ho, Wo) output, or None."""
    fn = _fn("conv_fwd", x, w, b)
    if fn is None or x.ndim != 4:
        return None
    x, geom = _subsample_1x1(x, w.shape, geom)
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = geom
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = _out_hw(h, wd, kh, kw, geom)
    hp, wp = h + pt + pb, wd + pl + pr
    xp = _pack(x, hp, wp, c, pt, pl)
    ob = _ob(x.dtype, o)
    op = _round_up(o, ob)
    wk = _weight_blocks(w.transpose(2, 3, 1, 0), op, ob)
    b = None if b is None else _c(b)
    out = np.empty((n, o, ho, wo), x.dtype)
    fn(xp, wk, b, out, n, hp, wp, c, ho, wo, o, op, ob, kh, kw, sh, sw, dh, dw, ho * wo, wo, 1,
       _threads(out.size))  # fmt: skip
    return out


def _phases(size: int, k: int, s: int, d: int, p: int):
    """How the input gradient along one axis splits into stride phases.

    Input row ``y`` gets the output gradient's row ``(y + p - i*d) / s`` from every kernel tap
    ``i`` where that is a whole number, so the rows ``y = q + s*m`` of one residue ``q`` form a
    plain stride-1 correlation. Yields ``(q, taps, first, step, rows)`` for the residues that
    some tap reaches: ``g`` row ``m + first + t*step`` meets tap ``taps[t]``, for ``rows`` rows.
    """
    for q in range(min(s, size)):
        taps = [i for i in reversed(range(k)) if (q + p - i * d) % s == 0]
        if taps:
            first = (q + p - taps[0] * d) // s
            step = (taps[1] - taps[0]) * -d // s if len(taps) > 1 else 1
            yield q, taps, first, step, (size - q + s - 1) // s


def _grad_phases(x_shape: tuple, w_shape: tuple, geom):
    (sh, sw), (pt, _, pl, _), (dh, dw) = geom
    _, _, h, w = x_shape
    _, _, kh, kw = w_shape
    return list(_phases(h, kh, sh, dh, pt)), list(_phases(w, kw, sw, dw, pl))


def conv2d_pack_grad(g, x_shape: tuple, w_shape: tuple, geom):
    """The output gradient packed once for :func:`conv2d_input_grad` (and reused by
    :func:`conv2d_weight_grad`): ``(buffer, top, left)``, pixel ``(y, x)`` of ``g`` at
    ``buffer[:, top + y, left + x]`` of a channels-last buffer with the zero margins every stride
    phase reads. None without the kernels."""
    if _fn("pack_nhwc", g) is None or g.ndim != 4:
        return None
    rows, cols = _grad_phases(x_shape, w_shape, geom)
    if not rows or not cols:
        return None  # no tap reaches any input pixel: nothing to read
    span = [(first, first + (len(taps) - 1) * step + m) for _, taps, first, step, m in rows]
    top, bottom = min(a for a, _ in span), max(b for _, b in span)
    span = [(first, first + (len(taps) - 1) * step + m) for _, taps, first, step, m in cols]
    left, right = min(a for a, _ in span), max(b for _, b in span)
    op = _round_up(w_shape[0], _ob(g.dtype, w_shape[0]))
    return _pack(g, bottom - top, right - left, op, -top, -left), -top, -left


def conv2d_input_grad(g, w, x_shape: tuple, geom, packed=None):
    """Gradient of the input (N, C, H, W), or None without the kernels.

    The forward kernel on the packed output gradient with the kernel flipped and transposed, once
    per stride phase (row and column residues mod the stride; one phase for stride 1): each phase
    is a stride-1 correlation with the taps that reach it, written straight to its pixels, so no
    multiply-add is spent on the zeros of a dilated gradient.
    """
    fn = _fn("conv_fwd", g, w)
    if fn is None or g.ndim != 4:
        return None
    (sh, sw) = geom[0]
    n, c, h, wd = x_shape
    o = w.shape[0]
    rows, cols = _grad_phases(x_shape, w.shape, geom)
    covered = sum(m for *_, m in rows) == h and sum(m for *_, m in cols) == wd
    out = (np.empty if covered else np.zeros)((n, c, h, wd), g.dtype)
    if not rows or not cols:
        return out
    buf, top, left = packed or conv2d_pack_grad(g, x_shape, w.shape, geom)
    ob = _ob(g.dtype, c)
    op, cp = buf.shape[3], _round_up(c, ob)
    hb, wb = buf.shape[1:3]
    for qy, ty, ey, sy, my in rows:
        for qx, tx, ex, sx, mx in cols:
            wf = np.zeros((len(ty), len(tx), op, c), g.dtype)
            wf[:, :, :o] = w[:, :, ty][:, :, :, tx].transpose(2, 3, 0, 1)
            wf = _weight_blocks(wf, cp, ob)  # kept in a name: the kernel reads it through a raw pointer
            origin = (buf, ((top + ey) * wb + left + ex) * op)  # (array, element offset)
            fn(origin, wf, None, (out, qy * wd + qx), n, hb, wb, op, my, mx, c, cp, ob,
               len(ty), len(tx), 1, 1, sy, sx, h * wd, sh * wd, sw, _threads(n * c * my * mx))  # fmt: skip
    return out


def conv2d_weight_grad(x, g, w_shape: tuple, geom, packed=None):
    """Gradient of the weight (O, C, kh, kw), from the input and the output gradient (read from
    its :func:`conv2d_pack_grad` buffer when that holds all of it). None without the kernels."""
    fn = _fn("conv_wgrad", x, g)
    if fn is None or x.ndim != 4:
        return None
    x, geom = _subsample_1x1(x, w_shape, geom)
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = geom
    n, c, h, wd = x.shape
    o, _, kh, kw = w_shape
    _, _, ho, wo = g.shape
    hp, wp = h + pt + pb, wd + pl + pr
    ob = _ob(x.dtype, o)
    cp, op = _round_up(c, _CB), _round_up(o, ob)
    xp = _pack(x, hp, wp, cp, pt, pl)
    buf, top, left = packed or (None, 0, 0)
    if (
        buf is not None
        and buf.shape[3] == op
        and min(top, left) >= 0
        and top + ho <= buf.shape[1]
        and left + wo <= buf.shape[2]
    ):
        hb, wb = buf.shape[1:3]
        g_at, g_img, g_row = (buf, (top * wb + left) * op), hb * wb * op, wb * op
    else:
        buf = _pack(g, ho, wo, op, 0, 0)
        g_at, g_img, g_row = buf, ho * wo * op, wo * op
    nt = _threads(g.size)
    gw = np.zeros((nt, kh, kw, cp, op), x.dtype)
    fn(xp, g_at, gw, n, hp, wp, cp, ho, wo, op, ob, g_img, g_row, kh, kw, sh, sw, dh, dw, nt)
    gw = gw[0] if nt == 1 else gw.sum(axis=0)
    return np.ascontiguousarray(gw[:, :, :c, :o].transpose(3, 2, 0, 1))


# --------------------------------------------------------------------------- max pooling
def max_pool2d(x, out_hw: tuple, k: tuple, s: tuple, p: tuple, d: tuple):
    """Max pooling of (N, C, H, W): ``(out, idx)`` with idx the flat H*W index of each maximum,
    or None without the kernels."""
    fn = _fn("max_pool2d_fwd", x)
    if fn is None or x.ndim != 4:
        return None
    x = _c(x)
    n, c, h, w = x.shape
    out = np.empty((n, c) + tuple(out_hw), x.dtype)
    idx = np.empty(out.shape, np.int64)
    fn(x, out, idx, n * c, h, w, *out_hw, *k, *s, *p, *d, _threads(x.size))
    return out, idx


def max_pool2d_backward(g, idx, in_shape: tuple):
    """The gradient of max pooling: ``g`` added at ``idx`` in zeros of ``in_shape``, or None."""
    fn = _fn("max_pool2d_bwd", g)
    if fn is None or g.shape != idx.shape or idx.dtype != np.int64:
        return None
    g, idx = _c(g), _c(idx)
    gx = np.empty(in_shape, g.dtype)
    n, c = in_shape[:2]
    fn(g, idx, gx, n * c, in_shape[2] * in_shape[3], g[0, 0].size, _threads(gx.size))
    return gx


# --------------------------------------------------------------------------- GEMM and LSTM loops
# gemm.c: used where the library is built for AVX-512 (``has_gemm``), float32/float64.
def has_gemm(dtype) -> bool:
    """Whether :func:`matmul` and the LSTM loops below run for ``dtype``: float32/float64 and a
    library built for AVX-512 (on AVX2 NumPy's BLAS is faster than these tiles)."""
    return np.dtype(dtype) in _SUFFIX and ckernels.get() is not None and ckernels.has_avx512()


def _strided(a):
    """A 2-D array as ``(buffer, row stride, column stride)`` in elements, the buffer a contiguous
    array or ``(contiguous array, offset)``: no copy for C- or Fortran-ordered arrays (a transposed
    view) nor for a view with one unit stride into a contiguous array (columns sliced off)."""
    if a.flags.c_contiguous:
        return a, a.shape[1], 1
    if a.flags.f_contiguous:
        return a.T, 1, a.shape[0]
    isz, (s0, s1) = a.itemsize, a.strides
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    if min(s0, s1) == isz and max(s0, s1) % isz == 0 and base.flags.c_contiguous and base.dtype == a.dtype:
        return (base.reshape(-1), (a.ctypes.data - base.ctypes.data) // isz), s0 // isz, s1 // isz
    return np.ascontiguousarray(a), a.shape[1], 1


def _gnr(dtype) -> int:
    return 128 // np.dtype(dtype).itemsize  # gemm.c's GNR: two 64-byte vectors


# Below this many multiply-adds the call's checks cost more than the tiles gain over BLAS.
GEMM_MIN = 1 << 21


def use_tiles(m: int, n: int, kd: int, minimum: int = GEMM_MIN) -> bool:
    """Whether an (m x kd) @ (kd x n) product of a :func:`has_gemm` dtype runs on the tiles: at least
    ``minimum`` multiply-adds and one thread. With several threads BLAS's own threads run it: mixing
    them with OpenMP regions in one step makes each pool wait for the other's spinning threads (see
    ROW_PARALLEL_MIN). Compiled code decides alike (gemm.c's ``gemm_cblas``, set up by
    ``compile/codegen/blas.py`` with these thresholds)."""
    work = m * n * kd
    return work > 0 and work >= minimum and _threads(work // 64) == 1


def matmul(a, b, out=None, accumulate: bool = False, minimum: int = GEMM_MIN):
    """``a @ b`` (or ``out += a @ b``) of 2-D arrays with the AVX-512 tiles; ``a`` and ``b`` may be
    transposed views. None where :func:`has_gemm` is false, the shapes do not fit or the product
    has fewer than ``minimum`` multiply-adds."""
    fn = _fn("gemm", a, b, out)
    if fn is None or not ckernels.has_avx512() or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        return None
    (m, kd), n = a.shape, b.shape[1]
    if not use_tiles(m, n, kd, minimum):
        return None
    if out is None:
        out = np.empty((m, n), a.dtype)
    elif out.shape != (m, n) or not out.flags.c_contiguous:
        return None
    av, rsa, csa = _strided(a)
    bv, rsb, csb = _strided(b)
    bp = np.empty(_round_up(n, _gnr(a.dtype)) * min(kd, 256), a.dtype)  # gemm.c's GKC = 256, GMC = 128
    ap = np.empty(128 * min(kd, 256), a.dtype)
    fn(av, rsa, csa, bv, rsb, csb, out, n, m, n, kd, int(accumulate), bp, ap, 1)
    return out


def linear(x2, w, b):
    """``x2 @ w.T + b`` (``b`` may be None) of a 2-D ``x2`` with the AVX-512 tiles, or None (see
    :func:`matmul`)."""
    if b is not None and (type(b) is not np.ndarray or b.dtype != x2.dtype or b.shape != (w.shape[0],)):
        return None
    out = None
    if b is not None and type(x2) is np.ndarray and x2.ndim == 2:
        out = np.empty((x2.shape[0], w.shape[0]), x2.dtype)
        out[...] = b
    return matmul(x2, w.T, out, accumulate=b is not None)


def pack_b(b):
    """``b`` (K, N), possibly a transposed view, packed for the GEMM tiles: (ceil(N/GNR), K, GNR)."""
    fn = _fn("gemm_pack_b", b)
    kd, n = b.shape
    bv, rsb, csb = _strided(b)
    gnr = _gnr(b.dtype)
    bp = np.empty((-(-n // gnr), kd, gnr), b.dtype)
    fn(bv, rsb, csb, kd, n, bp)
    return bp


def lstm_sequence_forward(gi, bias, w_hh, state, reverse: bool):
    """One LSTM direction forward in one call: ``gi`` (T, B, 4H) input projections, ``w_hh`` (4H, H),
    ``state`` (B, 2H) = [h0 | c0]. Returns ``(out (T, B, 2H) of [h | c], act (T, B, 4H) gate
    activations in order i, f, g, o, tanh(c) (T, B, H))`` or None (see :func:`has_gemm`)."""
    fn = _fn("lstm_seq_fwd", gi, bias, w_hh, state)
    if fn is None or not ckernels.has_avx512() or gi.ndim != 3 or gi.shape[0] == 0:
        return None
    steps, batch, g4 = gi.shape
    hsz = g4 // 4
    gi, state = _c(gi), _c(state)
    bias = None if bias is None else _c(bias)
    out = np.empty((steps, batch, 2 * hsz), gi.dtype)
    act = np.empty_like(gi)
    tc = np.empty((steps, batch, hsz), gi.dtype)
    hh = np.empty((batch, g4), gi.dtype)
    nt = _threads(batch * g4 * hsz // 64)
    fn(gi, bias, pack_b(w_hh.T), state, 2 * hsz, act, out, tc, hh, steps, batch, hsz, int(reverse), nt)
    return out, act, tc


def lstm_sequence_backward(act, prev, tc, gout, w_hh, reverse: bool):
    """Backpropagation through one LSTM direction in one call, from :func:`lstm_sequence_forward`'s
    ``act`` and ``tc``, each step's starting state ``prev`` (T, B, 2H) and the output gradient
    ``gout`` (T, B, 2H). Returns ``(dgates (T, B, 4H), carry_h, carry_c)`` (the last two: the
    gradient of the initial h and c), or None."""
    fn = _fn("lstm_seq_bwd", act, prev, tc, gout, w_hh)
    if fn is None or not ckernels.has_avx512():
        return None
    steps, batch, g4 = act.shape
    hsz = g4 // 4
    gout = _c(gout)
    dgates = np.empty_like(act)
    carry_h = np.zeros((batch, hsz), act.dtype)
    carry_c = np.zeros((batch, hsz), act.dtype)
    nt = _threads(batch * g4 * hsz // 64)
    fn(act, _c(prev), tc, gout, pack_b(w_hh), carry_h, carry_c, dgates, steps, batch, hsz, int(reverse), nt)
    return dgates, carry_h, carry_c
