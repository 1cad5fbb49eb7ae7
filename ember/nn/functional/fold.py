"""``unfold`` (im2col) and ``fold`` (col2im): sliding blocks of an image as columns, and back.

Both rest on one index vector: for every kernel tap and block position, the flat position in
the padded image that it reads. ``unfold`` is a gather with it (``index_select`` on the
flattened padded image) and ``fold`` the matching scatter-add (``index_add``), so the two are
adjoint, each is the other's gradient, and both differentiate through ordinary Tensor ops.
Each runs over the positions in sorted order plus a permutation, because a scatter-add onto
sorted positions is one segmented sum, while overlapping windows in tap order would repeat
each target up to kh*kw times out of order.
"""

from __future__ import annotations

import numpy as np

from ember.nn.functional.linear import pad as _pad
from ember.ops._base import _wrap, check_tensor
from ember.ops.creation import zeros
from ember.tensor import Tensor

__all__ = ["unfold", "fold"]


def _pair(v, name: str, op: str) -> tuple:
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(int(e) for e in v)
    if len(v) == 1:
        return v * 2
    if len(v) != 2:
        raise RuntimeError(f"{op}: {name} must be an int or a pair of ints, got {v}")
    return v


def _blocks(op, spatial, kernel, dilation, padding, stride):
    """Blocks per dim, and the (kh*kw*L,) flat read positions in the padded image (tap-major)."""
    (h, w), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = spatial, kernel, dilation, padding, stride
    for name, v, lo in (("kernel_size", kernel, 1), ("dilation", dilation, 1), ("stride", stride, 1)):
        if min(v) < lo:
            raise RuntimeError(f"{op}: {name} should be greater than zero, but got {name}: {v}")
    if min(padding) < 0:
        raise RuntimeError(f"{op}: padding should be non-negative, but got padding: {padding}")
    nh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    nw = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    wp = w + 2 * pw
    tap_r = (np.arange(kh) * dh)[:, None, None, None]
    tap_c = (np.arange(kw) * dw)[None, :, None, None]
    blk_r = (np.arange(max(nh, 0)) * sh)[None, None, :, None]
    blk_c = (np.arange(max(nw, 0)) * sw)[None, None, None, :]
    flat = ((tap_r + blk_r) * wp + (tap_c + blk_c)).reshape(-1).astype(np.int64)
    return nh, nw, flat


def _sorting(flat: np.ndarray):
    """The permutation that sorts ``flat`` (stable), and its inverse."""
    order = np.argsort(flat, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return order, inverse


def unfold(input: Tensor, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Sliding ``kernel_size`` blocks of ``(N, C, H, W)`` as columns ``(N, C*kh*kw, L)`` (im2col).

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.unfold(ember.randn(2, 3, 4, 4), kernel_size=2).shape
        ember.Size([2, 12, 9])
    """
    op = "unfold"
    check_tensor(input, op)
    if input.dim() not in (3, 4):
        raise RuntimeError(
            "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got: "
            f"{list(input.shape)}"
        )
    k, d = _pair(kernel_size, "kernel_size", op), _pair(dilation, "dilation", op)
    p, s = _pair(padding, "padding", op), _pair(stride, "stride", op)
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    n, c, h, w = x.shape
    nh, nw, flat = _blocks(op, (h, w), k, d, p, s)
    if nh < 1 or nw < 1:
        raise RuntimeError(
            f"Given input with spatial size ({h}, {w}), kernel_size={k}, dilation={d}, padding={p}, calculated "
            f"shape of the array of sliding blocks as ({nh}, {nw}), but its components must be at least one."
        )
    xp = _pad(x, (p[1], p[1], p[0], p[0])) if p != (0, 0) else x
    order, inverse = _sorting(flat)
    # Gather in sorted order, then permute: both gradients are then fast (a segmented sum, a permutation).
    cols = xp.reshape(n, c, -1).index_select(2, _wrap(flat[order])).index_select(2, _wrap(inverse))
    out = cols.reshape(n, c * k[0] * k[1], nh * nw)
    return out.squeeze(0) if unbatched else out


def fold(input: Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Sum columns ``(N, C*kh*kw, L)`` back into an ``(N, C, *output_size)`` image (col2im).

    Overlapping blocks add up, so ``fold(unfold(x))`` is ``x`` times how many blocks cover each pixel.

    Example:
        >>> import ember
        >>> import ember.nn.functional as F
        >>> F.fold(ember.ones(1, 4, 9), output_size=(4, 4), kernel_size=2)[0, 0]
        tensor([[1., 2., 2., 1.],
                [2., 4., 4., 2.],
                [2., 4., 4., 2.],
                [1., 2., 2., 1.]])
    """
    op = "fold"
    check_tensor(input, op)
    if input.dim() not in (2, 3):
        raise RuntimeError(
            "Expected 2D or 3D (batch mode) tensor with optional 0 dim batch size for input, but got: "
            f"{list(input.shape)}"
        )
    size = _pair(output_size, "output_size", op)
    k, d = _pair(kernel_size, "kernel_size", op), _pair(dilation, "dilation", op)
    p, s = _pair(padding, "padding", op), _pair(stride, "stride", op)
    unbatched = input.dim() == 2
    x = input.unsqueeze(0) if unbatched else input
    n, ck, length = x.shape
    if ck % (k[0] * k[1]):
        raise RuntimeError(
            "Expected size of input's dimension 1 to be divisible by the product of kernel_size, but got "
            f"input.size(1)={ck} and kernel_size={k}."
        )
    nh, nw, flat = _blocks(op, size, k, d, p, s)
    if nh < 1 or nw < 1 or nh * nw != length:
        raise RuntimeError(
            f"Given output_size={size}, kernel_size={k}, dilation={d}, padding={p}, stride={s}, expected size of "
            f"input's dimension 2 to match the calculated number of sliding blocks {nh} * {nw} = {nh * nw}, but "
            f"got input.size(2)={length}."
        )
    c = ck // (k[0] * k[1])
    hp, wp = size[0] + 2 * p[0], size[1] + 2 * p[1]
    canvas = zeros((n, c, hp * wp), dtype=x.dtype, device=x.device)
    order, _ = _sorting(flat)
    src = x.reshape(n, c, -1).index_select(2, _wrap(order))  # sorted targets: one segmented sum
    out = canvas.index_add(2, _wrap(flat[order]), src).reshape(n, c, hp, wp)
    if p != (0, 0):
        out = out[:, :, p[0] : p[0] + size[0], p[1] : p[1] + size[1]]
    return out.squeeze(0) if unbatched else out
