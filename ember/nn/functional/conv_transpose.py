"""Transposed convolutions: ``conv_transpose1d`` and ``conv_transpose2d``.

A transposed convolution is the input gradient of a convolution: the convolution that maps an
image of the output's size to one of the input's size, with ``weight`` read as ``(C_in, C_out /
groups, kh, kw)``, has as its input gradient (the ``Conv2dInputGrad`` primitive of
:mod:`ember.nn.functional.conv`) exactly ``conv_transpose2d(input, weight)``. So this file reuses
that primitive and its kernels (the direct C kernel, shift-and-GEMM, col2im) and its gradients:
the gradient to ``input`` is a ``conv2d`` and the gradient to ``weight`` a ``Conv2dWeightGrad``,
both closed under differentiation. ``output_padding`` adds rows and columns at the bottom
and right: within ``padding`` they are rows the crop would have removed, beyond it zeros (no
kernel tap reaches them), added by a ``pad`` after the primitive.
"""

from __future__ import annotations

from ember.nn.functional.conv import _Geom, _tuple, conv2d_input_grad
from ember.nn.functional.linear import pad as _pad
from ember.ops._base import check_tensor
from ember.tensor import Tensor

__all__ = ["conv_transpose1d", "conv_transpose2d"]


def _check_transpose(op, x, w, b, groups, nd):
    """The checks of ``conv`` with the roles of the weight's first two axes swapped."""
    check_tensor(x, op)
    check_tensor(w, op, "weight")
    if w.dim() != nd + 2:
        raise RuntimeError(f"{op}: expected weight to be {nd + 2}-D, but got {w.dim()}-D weight {list(w.shape)}")
    if x.dim() not in (nd + 1, nd + 2):
        raise RuntimeError(
            f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {op}, but got input of size: "
            f"{list(x.shape)}"
        )
    if groups < 1:
        raise RuntimeError(f"{op}: non-positive groups is not supported")
    if w.shape[0] % groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, but got weight "
            f"of size [{list(w.shape)}] instead"
        )
    c = x.shape[-nd - 1]
    if c != w.shape[0]:
        raise RuntimeError(
            f"Given transposed=1, weight of size {list(w.shape)}, expected input{list(x.shape)} to have "
            f"{w.shape[0]} channels, but got {c} channels instead"
        )
    for name, t in (("weight", w), ("bias", b)):
        if t is not None and t.dtype != x.dtype:
            raise RuntimeError(f"{op}: Input type ({x.dtype}) and {name} type ({t.dtype}) should be the same")
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"{op}: expected a floating point input, got {x.dtype}")
    if b is not None:
        check_tensor(b, op, "bias")
        if tuple(b.shape) != (w.shape[1] * groups,):
            raise RuntimeError(f"{op}: expected bias of shape [{w.shape[1] * groups}], got {list(b.shape)}")


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> Tensor:
    """2-D transposed convolution ("deconvolution") over ``(N, C_in, H, W)`` or ``(C_in, H, W)``.

    ``weight`` is ``(C_in, C_out / groups, kh, kw)``; the output has ``C_out`` channels and height
    ``(H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1`` (width alike).

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.conv_transpose2d(ember.ones(1, 4, 5, 5), ember.ones(4, 2, 3, 3), stride=2).shape
        ember.Size([1, 2, 11, 11])
    """
    op = "conv_transpose2d"
    groups = int(groups)
    _check_transpose(op, input, weight, bias, groups, 2)
    stride = _tuple(stride, 2, "stride", op)
    padding = _tuple(padding, 2, "padding", op)
    output_padding = _tuple(output_padding, 2, "output_padding", op)
    dilation = _tuple(dilation, 2, "dilation", op)
    if min(stride) < 1:
        raise RuntimeError(f"{op}: non-positive stride is not supported")
    if min(dilation) < 1:
        raise RuntimeError(f"{op}: dilation should be greater than zero")
    if min(padding) < 0:
        raise RuntimeError(f"{op}: negative padding is not supported")
    if any(op_ >= max(s, d) or op_ < 0 for op_, s, d in zip(output_padding, stride, dilation)):
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {output_padding[0]} output_padding_width: {output_padding[1]} "
            f"stride_height: {stride[0]} stride_width: {stride[1]} "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}"
        )
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    # Without output_padding: the size whose convolution is exactly (h, w).
    base = [
        (size - 1) * s - 2 * p + d * (k - 1) + 1
        for size, s, p, d, k in zip((h, w), stride, padding, dilation, (kh, kw))
    ]
    full = [b_ + o for b_, o in zip(base, output_padding)]
    if min(full) <= 0 or min(base) <= 0:
        raise RuntimeError(
            f"Given input size per channel: ({h} x {w}). Calculated output size per channel: "
            f"({full[0]} x {full[1]}). Output size is too small"
        )
    c_out = weight.shape[1] * groups
    # output_padding first shrinks the crop at the bottom/right (those rows do get kernel taps);
    # what exceeds the padding is rows no tap reaches: zeros, added by a pad.
    used = [min(o, p) for o, p in zip(output_padding, padding)]
    extra = [o - u for o, u in zip(output_padding, used)]
    pads = (padding[0], padding[0] - used[0], padding[1], padding[1] - used[1])
    geom = _Geom(stride, pads, dilation, groups)
    out = conv2d_input_grad(x, weight, (n, c_out, base[0] + used[0], base[1] + used[1]), geom)
    if extra != [0, 0]:
        out = _pad(out, (0, extra[1], 0, extra[0]))
    if bias is not None:
        out = out + bias.reshape(1, c_out, 1, 1)
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> Tensor:
    """1-D transposed convolution over ``(N, C_in, L)`` or ``(C_in, L)`` (the 2-D one at height 1).

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.conv_transpose1d(ember.ones(1, 4, 5), ember.ones(4, 2, 3), stride=2).shape
        ember.Size([1, 2, 11])
    """
    op = "conv_transpose1d"
    _check_transpose(op, input, weight, bias, int(groups), 1)
    (s,) = _tuple(stride, 1, "stride", op)
    (p,) = _tuple(padding, 1, "padding", op)
    (o,) = _tuple(output_padding, 1, "output_padding", op)
    (d,) = _tuple(dilation, 1, "dilation", op)
    # Height 1 with stride 1 and dilation 1: output_padding there must be 0, which is allowed.
    out = conv_transpose2d(input.unsqueeze(-2), weight.unsqueeze(2), bias, (1, s), (0, p), (0, o), groups, (1, d))
    return out.squeeze(-2)
