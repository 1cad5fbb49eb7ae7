"""Resampling: ``interpolate`` (nearest, nearest-exact, (bi/tri)linear, bicubic, area) and pixel shuffles.

Interpolation is separable: along each spatial axis the output reads one (nearest) or two
(linear) input slices through ``index_select`` and mixes them with constant weights. The source
indices and weights are computed once in NumPy with PyTorch's formulas and precision (the scale
in the input's float type; ``scale_factor`` used as given unless ``recompute_scale_factor``), so
the values match PyTorch's kernels and the gradients come from the Tensor ops. Bicubic reads four
taps per axis (clamped at the border) with Keys' cubic weights (A = -0.75), as PyTorch does.

``pixel_shuffle``/``pixel_unshuffle`` are a reshape, a permute and a reshape.
"""

from __future__ import annotations

import math

import numpy as np

from ember.ops._base import _wrap, check_tensor
from ember.tensor import Tensor

__all__ = ["interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "pixel_shuffle", "pixel_unshuffle"]

_MODES = ("nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact")
_NEEDS = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


def _scale(in_size: int, out_size: int, scale, ftype) -> np.floating:
    """PyTorch's ``compute_scales_value``: 1/scale_factor when given, else in/out (in ``ftype``)."""
    if scale is not None and scale > 0:
        return ftype(1.0 / scale)
    return ftype(in_size) / ftype(out_size)


def _nearest_index(in_size: int, out_size: int, scale, exact: bool, ftype) -> np.ndarray:
    dst = np.arange(out_size)
    if out_size == in_size and not exact:
        return dst
    s = _scale(in_size, out_size, scale, ftype)
    pos = (dst.astype(ftype) + ftype(0.5)) * s if exact else dst.astype(ftype) * s
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def _linear_weights(in_size: int, out_size: int, scale, align_corners: bool, ftype):
    """(i0, i1, lambda1): output j reads ``(1 - l) * x[i0] + l * x[i1]``."""
    dst = np.arange(out_size).astype(ftype)
    if align_corners:
        s = ftype(in_size - 1) / ftype(out_size - 1) if out_size > 1 else ftype(0)
        src = dst * s
    else:
        s = _scale(in_size, out_size, scale, ftype)
        src = np.maximum(s * (dst + ftype(0.5)) - ftype(0.5), ftype(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = (src - i0.astype(ftype)).astype(ftype)
    return i0, i1, lam


def _cubic_weights(in_size: int, out_size: int, scale, align_corners: bool, ftype):
    """Four taps per output (indices clamped to the border) and Keys' cubic weights, A = -0.75."""
    dst = np.arange(out_size).astype(ftype)
    if align_corners:
        s = ftype(in_size - 1) / ftype(out_size - 1) if out_size > 1 else ftype(0)
        src = dst * s
    else:
        s = _scale(in_size, out_size, scale, ftype)
        src = s * (dst + ftype(0.5)) - ftype(0.5)  # no clamp at 0 for cubic, as in PyTorch
    i = np.floor(src).astype(np.int64)
    t = (src - i.astype(ftype)).astype(ftype)
    a = ftype(-0.75)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
    taps = [np.clip(i + k, 0, in_size - 1) for k in (-1, 0, 1, 2)]
    return taps, weights


def _weights_tensor(lam: np.ndarray, axis: int, ndim: int, like: Tensor) -> Tensor:
    shape = [1] * ndim
    shape[axis] = lam.size
    return _wrap(lam.astype(like._data.dtype).reshape(shape), like.device)


def _output_size(input: Tensor, size, scale_factor, recompute_scale_factor):
    dim = input.dim() - 2
    spatial = list(input.shape[2:])
    if size is not None and scale_factor is not None:
        raise ValueError("only one of size or scale_factor should be defined")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor is not meaningful with an explicit size.")
        if isinstance(size, (list, tuple)):
            if len(size) != dim:
                raise ValueError(
                    "Input and output must have the same number of spatial dimensions, but got input with spatial "
                    f"dimensions of {spatial} and output size of {tuple(size)}. Please provide input tensor in "
                    "(N, C, d1, d2, ...,dK) format and output size in (o1, o2, ...,oK) format."
                )
            out = [int(s) for s in size]
        else:
            out = [int(size)] * dim
        return out, [None] * dim
    if scale_factor is None:
        raise ValueError("either size or scale_factor should be defined")
    if isinstance(scale_factor, (list, tuple)):
        if len(scale_factor) != dim:
            raise ValueError(
                "Input and scale_factor must have the same number of spatial dimensions, but got input with spatial "
                f"dimensions of {spatial} and scale_factor of shape {tuple(scale_factor)}. Please provide input "
                "tensor in (N, C, d1, d2, ...,dK) format and scale_factor in (s1, s2, ...,sK) format."
            )
        scales = [float(s) for s in scale_factor]
    else:
        scales = [float(scale_factor)] * dim
    out = [math.floor(float(n) * s) for n, s in zip(spatial, scales)]
    return out, ([None] * dim if recompute_scale_factor else scales)


def interpolate(
    input: Tensor,
    size=None,
    scale_factor=None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resize the spatial dims of ``(N, C, d1[, d2[, d3]])`` input to ``size`` or by ``scale_factor``.

    Modes: ``nearest``, ``nearest-exact``, ``linear`` (3-D), ``bilinear`` and ``bicubic`` (4-D),
    ``trilinear`` (5-D) with ``align_corners`` False (default) or True, and ``area`` (adaptive
    average pooling). ``antialias=True`` is not supported.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.interpolate(ember.tensor([[[1.0, 2.0]]]), scale_factor=2, mode="linear")
        tensor([[[1.0000, 1.2500, 1.7500, 2.0000]]])
    """
    check_tensor(input, "interpolate")
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise ValueError(
                "align_corners option can only be set with the interpolating modes: linear | bilinear | bicubic | "
                "trilinear"
            )
    elif align_corners is None:
        align_corners = False
    dim = input.dim() - 2
    if mode not in _MODES or not 1 <= dim <= 3:
        raise NotImplementedError(
            f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.dim()}D) for the modes: "
            f"nearest | linear | bilinear | bicubic | trilinear | area | nearest-exact (got {mode})"
        )
    if mode in _NEEDS and _NEEDS[mode] != dim:
        raise NotImplementedError(f"Got {input.dim()}D input, but {mode} mode needs {_NEEDS[mode] + 2}D input")
    if antialias:
        if mode not in ("bilinear", "bicubic") or input.dim() != 4:
            raise ValueError(
                "Anti-alias option is restricted to bilinear, bicubic, and lanczos modes and requires a 4-D tensor "
                "as input"
            )
        raise NotImplementedError("interpolate: antialias=True is not supported by Ember")
    if mode == "area" and size is None:
        recompute_scale_factor = True
    out_size, scales = _output_size(input, size, scale_factor, recompute_scale_factor)
    if min(out_size) <= 0:
        raise RuntimeError(
            f"interpolate: input {list(input.shape)} gives a non-positive output size {out_size} ({mode} mode)"
        )
    if mode == "area":
        return _area(input, out_size)
    if mode in ("nearest", "nearest-exact"):
        ftype = np.float32
    else:
        if not input.dtype.is_floating_point:
            raise RuntimeError(f"interpolate: {mode} mode needs a floating point input, got {input.dtype}")
        ftype = np.float64 if input._data.dtype == np.float64 else np.float32
    x = input
    for k in range(dim):
        axis = 2 + k
        n_in, n_out = x.shape[axis], out_size[k]
        if mode in ("nearest", "nearest-exact"):
            idx = _nearest_index(n_in, n_out, scales[k], mode == "nearest-exact", ftype)
            if n_in != n_out or not np.array_equal(idx, np.arange(n_out)):
                x = x.index_select(axis, _wrap(idx))
            continue
        if mode == "bicubic":
            taps, weights = _cubic_weights(n_in, n_out, scales[k], align_corners, ftype)
            parts = [
                x.index_select(axis, _wrap(t)) * _weights_tensor(w, axis, x.dim(), x) for t, w in zip(taps, weights)
            ]
            x = parts[0] + parts[1] + parts[2] + parts[3]
            continue
        i0, i1, lam = _linear_weights(n_in, n_out, scales[k], align_corners, ftype)
        w1 = _weights_tensor(lam, axis, x.dim(), x)
        w0 = _weights_tensor(ftype(1) - lam, axis, x.dim(), x)
        x = x.index_select(axis, _wrap(i0)) * w0 + x.index_select(axis, _wrap(i1)) * w1
    return x


def _area(input: Tensor, out_size) -> Tensor:
    from ember.nn.functional.pooling import adaptive_avg_pool1d, adaptive_avg_pool2d

    if len(out_size) == 1:
        return adaptive_avg_pool1d(input, out_size[0])
    if len(out_size) == 2:
        return adaptive_avg_pool2d(input, tuple(out_size))
    raise NotImplementedError("interpolate: mode='area' on 5-D input is not supported by Ember")


def upsample(input, size=None, scale_factor=None, mode: str = "nearest", align_corners=None) -> Tensor:
    """Deprecated alias of :func:`interpolate` (PyTorch's ``F.upsample``)."""
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None) -> Tensor:
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None) -> Tensor:
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)


def pixel_shuffle(input: Tensor, upscale_factor: int) -> Tensor:
    """``(*, C*r*r, H, W) -> (*, C, H*r, W*r)``: sub-pixel convolution's rearrangement.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.pixel_shuffle(ember.randn(1, 8, 3, 3), 2).shape
        ember.Size([1, 2, 6, 6])
    """
    check_tensor(input, "pixel_shuffle")
    r = int(upscale_factor)
    if input.dim() < 3:
        raise RuntimeError(
            f"pixel_shuffle expects input to have at least 3 dimensions, but got input with {input.dim()} dimension(s)"
        )
    if r <= 0:
        raise RuntimeError(f"pixel_shuffle expects a positive upscale_factor, but got {r}")
    *batch, c, h, w = input.shape
    if c % (r * r):
        raise RuntimeError(
            "pixel_shuffle expects its input's 'channel' dimension to be divisible by the square of upscale_factor, "
            f"but input.size(-3)={c} is not divisible by {r * r}"
        )
    nb = len(batch)
    x = input.reshape(*batch, c // (r * r), r, r, h, w)
    x = x.permute(*range(nb), nb, nb + 3, nb + 1, nb + 4, nb + 2)  # (*, C, H, r, W, r)
    return x.reshape(*batch, c // (r * r), h * r, w * r)


def pixel_unshuffle(input: Tensor, downscale_factor: int) -> Tensor:
    """``(*, C, H*r, W*r) -> (*, C*r*r, H, W)``: the inverse of :func:`pixel_shuffle`.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.pixel_unshuffle(ember.randn(1, 2, 6, 6), 2).shape
        ember.Size([1, 8, 3, 3])
    """
    check_tensor(input, "pixel_unshuffle")
    r = int(downscale_factor)
    if input.dim() < 3:
        raise RuntimeError(
            f"pixel_unshuffle expects input to have at least 3 dimensions, but got input with {input.dim()} "
            "dimension(s)"
        )
    if r <= 0:
        raise RuntimeError(f"pixel_unshuffle expects a positive downscale_factor, but got {r}")
    *batch, c, h, w = input.shape
    if h % r:
        raise RuntimeError(
            f"pixel_unshuffle expects height to be divisible by downscale_factor, but input.size(-2)={h} is not "
            f"divisible by {r}"
        )
    if w % r:
        raise RuntimeError(
            f"pixel_unshuffle expects width to be divisible by downscale_factor, but input.size(-1)={w} is not "
            f"divisible by {r}"
        )
    nb = len(batch)
    x = input.reshape(*batch, c, h // r, r, w // r, r)
    x = x.permute(*range(nb), nb, nb + 2, nb + 4, nb + 1, nb + 3)  # (*, C, r, r, H, W)
    return x.reshape(*batch, c * r * r, h // r, w // r)
