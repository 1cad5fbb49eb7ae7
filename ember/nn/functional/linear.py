"""Linear maps, lookups and tensor utilities of ``nn.functional``: ``linear``, ``bilinear``,
``embedding``, ``dropout`` (and 1d/2d/3d), ``pad``, ``one_hot``, ``normalize``,
``cosine_similarity``, ``pairwise_distance``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ember._lowp import f32_compute
from ember.amp.policy import autocast_args
from ember.autograd.grad_mode import no_grad
from ember.autograd.node import Node
from ember.ops import elementwise as ew
from ember.ops._base import Tensor, _wrap_dim, check_tensor, grad_state
from ember.ops.dispatch import Primitive, apply
from ember.ops.linalg import matmul

__all__ = [
    "linear",
    "bilinear",
    "embedding",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "pad",
    "one_hot",
    "normalize",
    "cosine_similarity",
    "pairwise_distance",
]


# float16/bfloat16 products and bias sums accumulate in float32, as PyTorch's.
_mm = f32_compute(np.matmul)
_sum0 = f32_compute(lambda a: a.sum(0))


@f32_compute
def _affine(x2, wd, bd):
    dt = x2.dtype
    if dt.itemsize == 2 and dt.kind in "fV":  # float16/bfloat16: float32 GEMM and bias, rounded once
        out = x2.astype(np.float32) @ wd.astype(np.float32).T
        if bd is not None:
            out += bd.astype(np.float32)
        return out.astype(dt)
    out = x2 @ wd.T
    if bd is not None:
        out += bd
    return out


class Linear(Node):
    """``x @ W.T + b`` as one primitive: one GEMM per gradient, no broadcast-then-sum for ``b``."""

    __slots__ = ()
    reads_inputs = "others"  # dx reads W, dW reads x

    def backward(self, g):
        x, w, b = self.inputs
        k, m = w._data.shape[1], w._data.shape[0]
        if grad_state.enabled:  # create_graph: the same formulas in recorded ops
            g2 = g.reshape(-1, m)
            gx = matmul(g, w) if x._requires_grad else None
            gw = matmul(g2.mT, x.reshape(-1, k)) if w._requires_grad else None
            gb = g2.sum(0) if b is not None and b._requires_grad else None
            return gx, gw, gb
        need = (x._requires_grad, w._requires_grad, b is not None and b._requires_grad)
        return apply(_LINEAR_BACKWARD, g, x, w, need=need)


def _linear_backward_impl(g, x, w, need):
    """(gx, gw, gb) of ``x @ W.T + b`` on arrays: one GEMM each (None where not needed)."""
    k, m = w._data.shape[1], w._data.shape[0]
    g2 = g._data.reshape(-1, m)
    gx = _mm(g2, w._data).reshape(x._data.shape) if need[0] else None
    gw = _mm(g2.T, x._data.reshape(-1, k)) if need[1] else None
    gb = _sum0(g2) if need[2] else None
    return gx, gw, gb


_LINEAR_BACKWARD = Primitive("linear_backward", None, _linear_backward_impl, multi=True)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``.

    Example:
        >>> import ember
        >>> ember.nn.functional.linear(ember.ones(2, 3), ember.ones(4, 3)).shape
        ember.Size([2, 4])
    """
    input, weight, bias = autocast_args("linear", input, weight, bias)
    check_tensor(input, "linear")
    if input.ndim == 0 or input.shape[-1] != weight.shape[-1]:
        rows = input.numel() // input.shape[-1] if input.ndim else 1
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{input.shape[-1] if input.ndim else 1} and "
            f"{weight.shape[-1]}x{weight.shape[0] if weight.ndim > 1 else 1})"
        )
    xd, wd = input._data, weight._data
    fused = (
        wd.ndim == 2
        and xd.ndim >= 1
        and xd.dtype == wd.dtype
        and input._device.type != "cuda"
        and (bias is None or (bias._data.shape == (wd.shape[0],) and bias._data.dtype == wd.dtype))
    )
    if not fused:  # unusual shapes or dtypes: the composed form gives PyTorch's errors and rules
        out = matmul(input, weight.mT if weight.ndim > 1 else weight)
        return out + bias if bias is not None else out
    return apply(_LINEAR, input, weight, bias)


def _linear_impl(x, w, b):
    xd, wd = x._data, w._data
    out = _affine(xd.reshape(-1, xd.shape[-1]), wd, None if b is None else b._data)
    return out.reshape(xd.shape[:-1] + (wd.shape[0],))


_LINEAR = Primitive("linear", Linear, _linear_impl)


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y_k = x1 @ W_k @ x2 + b_k`` with ``weight`` of shape (out, in1, in2)."""
    _check_bilinear(input1, input2, weight, bias)
    # (..., 1, 1, in1) @ (out, in1, in2) -> (..., out, 1, in2), then contract in2 with input2.
    left = matmul(input1.unsqueeze(-2).unsqueeze(-2), weight).squeeze(-2)
    out = (left * input2.unsqueeze(-2)).sum(-1)
    return out + bias if bias is not None else out


def _check_bilinear(input1, input2, weight, bias) -> None:
    """PyTorch's checks and messages for ``bilinear``."""
    if weight.dim() != 3:
        raise RuntimeError(f"bilinear(): weight must be 3-D (out, in1, in2), got {weight.dim()}-D {list(weight.shape)}")
    if input1.dim() != input2.dim():
        raise RuntimeError(f"bilinear(): input dimensions do not match: got {input1.dim()} and {input2.dim()}")
    for d in range(input1.dim() - 1):
        if input1.shape[d] != input2.shape[d]:
            raise RuntimeError(
                f"bilinear(): input batch dimensions do not match at dim {d}: got {input1.shape[d]} and "
                f"{input2.shape[d]}"
            )
    for i, (x, k) in enumerate(((input1, 1), (input2, 2))):
        if x.shape[-1] != weight.shape[k]:
            raise RuntimeError(
                f"bilinear(): input{i + 1} size does not match weight size: got {x.shape[-1]} but expected "
                f"{weight.shape[k]}"
            )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise RuntimeError(
            f"bilinear(): bias size does not match weight size: got {bias.shape[-1] if bias.dim() else 0} but "
            f"expected {weight.shape[0]}"
        )


# --------------------------------------------------------------------------- embedding
class Embedding(Node):
    """Row lookup; the gradient scatter-adds rows, skipping ``padding_idx``."""

    __slots__ = ("padding_idx", "scale_grad_by_freq")
    saves_values = False

    def backward(self, g):
        w, index = self.inputs
        if grad_state.enabled:
            idx = index._device.backend.to_host(index._data).reshape(-1).astype(np.int64, copy=False)
            return (self._backward_graph(g, w, idx, w._data.shape[1]), None)
        params = {"padding_idx": self.padding_idx, "scale_grad_by_freq": self.scale_grad_by_freq}
        return apply(_EMBEDDING_BACKWARD, g, w, index, **params), None

    def _backward_graph(self, g, w, idx, dim):
        from ember.ops.creation import tensor, zeros
        from ember.ops.index import index_add

        rows = g.reshape(-1, dim)
        if self.scale_grad_by_freq:
            counts = np.bincount(idx, minlength=w._data.shape[0])
            rows = rows / Tensor._from(counts[idx][:, None].astype(g._data.dtype), g)
        out = index_add(zeros(w._data.shape, dtype=g.dtype), 0, tensor(idx), rows)
        if self.padding_idx is not None:
            mask = np.ones((w._data.shape[0], 1), dtype=g._data.dtype)
            mask[self.padding_idx] = 0
            out = out * Tensor._from(mask, g)
        return out


def _embedding_backward_impl(g, w, index, padding_idx, scale_grad_by_freq):
    """The weight gradient: the rows of ``g`` added at their indices (``padding_idx`` gets none)."""
    idx = index._data.reshape(-1)
    rows = g._data.reshape(-1, w._data.shape[1])
    if scale_grad_by_freq:
        counts = np.bincount(idx, minlength=w._data.shape[0])
        rows = rows / counts[idx][:, None]
    out = g._device.backend.xp.zeros(w._data.shape, dtype=g._data.dtype)
    if g._device.type == "cpu" and idx.size:
        # Sort + reduceat is much faster than an unbuffered scatter-add for big batches.
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        starts = np.flatnonzero(np.r_[True, sidx[1:] != sidx[:-1]])
        out[sidx[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    elif idx.size:
        g._device.backend.scatter_add(out, idx, rows)
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


_EMBEDDING_BACKWARD = Primitive("embedding_backward", None, _embedding_backward_impl)


def _embedding_renorm_(weight: Tensor, idx: np.ndarray, max_norm: float, norm_type: float) -> None:
    rows = np.unique(idx)
    with no_grad():
        w = weight._data
        norms = np.linalg.norm(w[rows].astype(np.float64), ord=norm_type, axis=1)
        scale = np.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
        w[rows] = (w[rows] * scale[:, None]).astype(w.dtype)
        weight._bump_version()


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Rows of ``weight`` picked by the integer ``input``; output shape ``input.shape + (dim,)``.

    ``padding_idx`` rows get no gradient; ``max_norm`` renormalizes the looked-up rows of
    ``weight`` in place, as PyTorch does. ``sparse=True`` still produces a dense gradient.

    Example:
        >>> import ember
        >>> w = ember.arange(6.0).reshape(3, 2)
        >>> ember.nn.functional.embedding(ember.tensor([2, 0]), w)
        tensor([[4., 5.],
                [0., 1.]])
    """
    check_tensor(input, "embedding")
    if input._data.dtype.kind not in "iu":
        raise RuntimeError(
            "Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; "
            f"but got {input.type()} instead (while checking arguments for embedding)"
        )
    if weight.ndim != 2:
        raise RuntimeError("'weight' must be 2-D")
    num = weight.shape[0]
    if padding_idx is not None:
        if padding_idx > 0 and padding_idx >= num:
            raise AssertionError("Padding_idx must be within num_embeddings")
        if padding_idx < 0:
            if padding_idx < -num:
                raise AssertionError("Padding_idx must be within num_embeddings")
            padding_idx = num + padding_idx
    if max_norm is not None:
        idx = input._device.backend.to_host(input._data).astype(np.int64, copy=False)
        _check_rows(idx, num)
        _embedding_renorm_(weight, idx, max_norm, norm_type)
    return apply(_EMBEDDING, weight, input, padding_idx=padding_idx, scale_grad_by_freq=scale_grad_by_freq)


def _check_rows(idx, num: int) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
        raise IndexError(f"index {bad} is out of bounds for dimension 0 with size {num}")


def _embedding_impl(w, index, padding_idx, scale_grad_by_freq):
    idx = index._data
    if not getattr(idx, "is_meta", False):
        _check_rows(idx, w._data.shape[0])
    return w._data.take(idx.astype(np.int64, copy=False), axis=0)


# The indices are the second input: the implementation reads them, the gradient goes to the weight.
_EMBEDDING = Primitive("embedding", Embedding, _embedding_impl)


# --------------------------------------------------------------------------- dropout
def _check_p(p: float) -> None:
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _dropout_mask(input: Tensor, p: float, shape) -> Tensor:
    return apply(_DROPOUT_MASK, input, p=p, shape=tuple(shape))


def _dropout_mask_impl(x, p, shape):
    """Kept elements scaled by ``1/(1-p)``, the others 0, in the input's dtype (random)."""
    from ember.random import numpy_generator

    keep = numpy_generator(None).random(shape) >= p
    scale = np.asarray(0.0 if p == 1.0 else 1.0 / (1.0 - p), dtype=x._data.dtype)
    mask = keep.astype(x._data.dtype) * scale
    return mask if x._device.type == "cpu" else x._device.backend.asarray(mask)


_DROPOUT_MASK = Primitive("dropout_mask", None, _dropout_mask_impl)
_DROPOUT_MASK.register("meta", lambda x, p, shape: x._device.backend.xp.empty(shape, x._data.dtype))


def _apply_mask(input: Tensor, mask: Tensor, inplace: bool) -> Tensor:
    if inplace:
        return input.mul_(mask)
    return input * mask


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)`` (training only).

    Example:
        >>> import ember
        >>> x = ember.ones(4)
        >>> ember.nn.functional.dropout(x, 0.5, training=False) is x
        True
    """
    _check_p(p)
    if not training or p == 0.0:
        return input
    return _apply_mask(input, _dropout_mask(input, p, input._data.shape), inplace)


def _feature_dropout(input: Tensor, p: float, training: bool, inplace: bool, batched: bool = True) -> Tensor:
    """PyTorch's ``feature_dropout``: one draw per (sample, channel) of an (N, C, ...) input.

    ``batched=False`` reads the input as (C, ...), as PyTorch does by unsqueezing a batch dim.
    """
    lead = 2 if batched else 1
    if not training or p == 0.0 or input.numel() == 0:
        return input
    if input.ndim + (0 if batched else 1) < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    shape = tuple(input.shape[:lead]) + (1,) * (input.ndim - lead)
    return _apply_mask(input, _dropout_mask(input, p, shape), inplace)


def _deprecated_dim_warning(name: str, ndim: int, spatial: int) -> None:
    warnings.warn(
        f"{name}: Received a {ndim}-D input to {name}, which is deprecated and will result in an error in a future "
        f"release. To retain the behavior and silence this warning, please use dropout instead. Note that {name} "
        f"exists to provide channel-wise dropout on inputs with {spatial} spatial dimensions, a channel dimension, "
        f"and an optional batch dimension (i.e. {spatial + 1}D or {spatial + 2}D inputs).",
        stacklevel=3,
    )


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, L) or (C, L) inputs (other ranks are an error, as in PyTorch)."""
    _check_p(p)
    if input.ndim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {input.ndim}D input. Note that dropout1d exists to "
            "provide channel-wise dropout on inputs with 1 spatial dimension, a channel dimension, and an optional "
            "batch dimension (i.e. 2D or 3D inputs)."
        )
    return _feature_dropout(input, p, training, inplace, batched=input.ndim == 3)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W) inputs.

    As in PyTorch, other ranks warn: a 3-D input is read as (N, C, L) (1-D channel dropout), and
    2-D or 5-D inputs are deprecated (channels are still dim 1).
    """
    _check_p(p)
    if input.ndim not in (3, 4):
        _deprecated_dim_warning("dropout2d", input.ndim, 2)
    if input.ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L), where C is the channel dim. This behavior will "
            "change in a future release to interpret the input as one without a batch dimension, i.e. shape "
            "(C, H, W). To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2,
        )
    return _feature_dropout(input, p, training, inplace)


def dropout3d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) inputs (other ranks warn, as in PyTorch)."""
    _check_p(p)
    if input.ndim not in (4, 5):
        _deprecated_dim_warning("dropout3d", input.ndim, 3)
    return _feature_dropout(input, p, training, inplace, batched=input.ndim == 5)


def alpha_dropout(input: Tensor, p: float = 0.5, training: bool = False, inplace: bool = False) -> Tensor:
    """Dropout that keeps SELU's self-normalizing mean and variance."""
    _check_p(p)
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    alpha_p = -1.7580993408473766
    a = ((1 - p) * (1 + p * alpha_p**2)) ** -0.5
    b = -a * alpha_p * p
    keep_t = apply(_ALPHA_DROPOUT_MASK, input, p=p)
    return (input * keep_t + alpha_p * (1.0 - keep_t)) * a + b


def _alpha_dropout_mask_impl(x, p):
    """1 where an element is kept (probability ``1 - p``), else 0, in the input's dtype (random)."""
    from ember.random import numpy_generator

    keep = (numpy_generator(None).random(x._data.shape) >= p).astype(x._data.dtype)
    return keep if x._device.type == "cpu" else x._device.backend.asarray(keep)


_ALPHA_DROPOUT_MASK = Primitive("alpha_dropout_mask", None, _alpha_dropout_mask_impl)
_ALPHA_DROPOUT_MASK.register("meta", lambda x, p: x._device.backend.xp.empty(x._data.shape, x._data.dtype))


# --------------------------------------------------------------------------- pad
class ConstantPad(Node):
    """Gradient of padding with a constant: the interior slice of the upstream gradient."""

    __slots__ = ("key", "widths", "value")
    saves_values = False

    def backward(self, g):
        return (g[self.key],)


def _reflect_index(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    pos = np.arange(-lo, n + hi)
    if mode == "replicate":
        return np.clip(pos, 0, n - 1)
    if mode == "circular":
        return pos % n
    period = 2 * (n - 1)  # reflect
    if period == 0:
        return np.zeros_like(pos)
    pos = np.abs(pos) % period
    return np.where(pos >= n, period - pos, pos)


def pad(input: Tensor, pad, mode: str = "constant", value: float | None = None) -> Tensor:
    """Pad the last ``len(pad) // 2`` dims; ``pad`` lists (left, right) pairs from the last dim.

    Modes: ``'constant'`` (negative sizes crop), ``'reflect'``, ``'replicate'``, ``'circular'``.

    Example:
        >>> import ember
        >>> ember.nn.functional.pad(ember.tensor([[1.0, 2.0]]), (1, 1), mode="replicate")
        tensor([[1., 1., 2., 2.]])
    """
    check_tensor(input, "pad")
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > input.ndim:
        raise RuntimeError(
            f"Padding length should be less than or equal to two times the input dimension but got padding "
            f"length {len(pad)} and input of dimension {input.ndim}"
        )
    pairs = [(pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]  # pairs[i] pads dim -1-i
    if mode == "constant":
        return _constant_pad(input, pairs, 0.0 if value is None else value)
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if value is not None and value != 0:
        raise ValueError(f'Padding mode "{mode}" doesn\'t take in value argument')
    out = input
    for i, (lo, hi) in enumerate(pairs):
        dim = input.ndim - 1 - i
        n = input.shape[dim]
        if mode == "reflect" and (lo >= n or hi >= n):
            raise RuntimeError(
                f"Argument #4: Padding size should be less than the corresponding input dimension, but got: "
                f"padding ({lo}, {hi}) at dimension {dim} of input {list(input.shape)}"
            )
        if mode == "circular" and (lo > n or hi > n):
            raise RuntimeError("Padding value causes wrapping around more than once.")
        if lo == 0 and hi == 0:
            continue
        from ember.ops.creation import tensor
        from ember.ops.index import index_select

        out = index_select(out, dim, tensor(_reflect_index(n, lo, hi, mode)))
    return out


def _constant_pad(input: Tensor, pairs, value) -> Tensor:
    nd = input.ndim
    crop = [slice(None)] * nd
    widths = [(0, 0)] * nd
    for i, (lo, hi) in enumerate(pairs):
        dim = nd - 1 - i
        n = input.shape[dim]
        start = -lo if lo < 0 else 0
        stop = n + hi if hi < 0 else n
        if stop - start + max(lo, 0) + max(hi, 0) < 0:
            raise RuntimeError(
                f"The input size {n}, plus negative padding {lo} and {hi} resulted in a negative output size, "
                f"which is invalid. Check dimension {dim} of your input."
            )
        crop[dim] = slice(start, max(stop, start))
        widths[dim] = (max(lo, 0), max(hi, 0))
    x = input[tuple(crop)] if any(s != slice(None) for s in crop) else input
    if all(w == (0, 0) for w in widths):
        return x if x is not input else input.clone()
    key = tuple(slice(lo, lo + s) for (lo, _), s in zip(widths, x._data.shape))
    return apply(_CONSTANT_PAD, x, key=key, widths=tuple(widths), value=value)


_CONSTANT_PAD = Primitive(
    "constant_pad", ConstantPad, lambda x, key, widths, value: np.pad(x._data, widths, constant_values=value)
)


# --------------------------------------------------------------------------- misc
def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """Integer labels to int64 one-hot vectors (``num_classes=-1``: ``max + 1``).

    Example:
        >>> import ember
        >>> ember.nn.functional.one_hot(ember.tensor([0, 2]))
        tensor([[1, 0, 0],
                [0, 0, 1]])
    """
    check_tensor(tensor, "one_hot")
    if tensor._data.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    num_classes = int(num_classes)
    if num_classes == -1:  # the class count is read from the values (not possible on meta)
        d = tensor._device.backend.to_host(tensor._data)
        if d.size == 0:
            raise RuntimeError("Can not infer total number of classes from empty tensor.")
        num_classes = int(d.max()) + 1
    return apply(_ONE_HOT, tensor, num_classes=num_classes)


def _one_hot_impl(x, num_classes):
    d = x._data
    if d.size:
        if d.min() < 0:
            raise RuntimeError("Class values must be non-negative.")
        if d.max() >= num_classes:
            raise RuntimeError("Class values must be smaller than num_classes.")
    xp = x._device.backend.xp
    return (d[..., None] == xp.arange(num_classes)).astype(np.int64)


_ONE_HOT = Primitive("one_hot", None, _one_hot_impl)
_ONE_HOT.register("meta", lambda x, num_classes: x._device.backend.xp.empty(x._data.shape + (num_classes,), np.int64))


def _norm(x: Tensor, p: float, dim: int) -> Tensor:
    """``x.norm(p, dim, keepdim=True)``; the 2-norm is spelled out with a zero gradient at zero."""
    if p != 2:
        return x.norm(p, dim, keepdim=True)
    sq = (x * x).sum(dim, keepdim=True)
    pos = sq > 0
    return ew.where(pos, ew.sqrt(ew.where(pos, sq, 1.0)), 0.0)


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out=None) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``.

    Example:
        >>> import ember
        >>> ember.nn.functional.normalize(ember.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    return input / ew.clamp_min(_norm(input, p, dim), eps).expand_as(input)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between ``x1`` and ``x2`` along ``dim`` (broadcasting)."""
    from ember.ops.movement import broadcast_tensors

    a, b = broadcast_tensors(x1, x2)
    dim = _wrap_dim(dim, a.ndim, "cosine_similarity")
    na = ew.clamp_min(_norm(a, 2, dim), eps)
    nb = ew.clamp_min(_norm(b, 2, dim), eps)
    return ((a / na) * (b / nb)).sum(dim)


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last dim."""
    out = _norm(x1 - x2 + eps, p, -1)
    return out if keepdim else out.squeeze(-1)
