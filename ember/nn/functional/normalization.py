"""Normalization: fused ``layer_norm`` and training-mode ``batch_norm``; ``group_norm``,
``rms_norm`` and ``local_response_norm`` as compositions of primitives.

``layer_norm`` is a hot path in transformers, so it is one primitive. With the C kernels
(``ember.backends.ckernels``; CPU float32/float64) forward and backward are one kernel each and
the node keeps the input with per-row mean and ``1/std``; otherwise the NumPy forward keeps the
normalized input and ``1/std`` and the plain backward is three NumPy expressions. Under
``create_graph=True`` the backward is the same formula in Tensor ops over a re-recorded forward.
"""

from __future__ import annotations

import numpy as np

from ember._lowp import f32_compute
from ember.autograd.grad_mode import no_grad
from ember.autograd.node import Node
from ember.nn.functional._checks import check_channel_params, check_group_norm_params, check_param_dtypes
from ember.ops import elementwise as ew
from ember.ops._base import Tensor, check_tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = ["layer_norm", "group_norm", "rms_norm", "batch_norm", "instance_norm", "local_response_norm"]


def _normalized_shape(normalized_shape) -> tuple:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


def _check_norm_shape(input: Tensor, shape: tuple, op: str) -> None:
    k = len(shape)
    if k == 0 or tuple(input.shape[input.ndim - k :]) != shape or input.ndim < k:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], "
            f"but got input of size{list(input.shape)}"
        )


_einsum = f32_compute(np.einsum)  # NumPy's einsum takes no bfloat16: float32 compute, rounded back


class LayerNorm(Node):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last ``k`` dims.

    Saved: ``xhat`` and ``rstd`` (NumPy forward), or ``xc`` (the contiguous input), ``mean`` and
    ``rstd`` with ``xhat`` None (C forward); mean/rstd in keepdims shape either way.
    """

    __slots__ = ("axes", "eps", "xhat", "rstd", "xc", "mean")

    def backward(self, g):
        x, w, b = self.inputs
        lead = tuple(range(x._data.ndim - len(self.axes)))
        if grad_state.enabled:
            return _norm_backward_graph(g, x, w, b, self.axes, self.eps, lead)
        need = (x._requires_grad, w is not None and w._requires_grad, b is not None and b._requires_grad)
        return apply(_LAYER_NORM_BACKWARD, g, x, w, node=self, need=need)


def _layer_norm_backward_impl(g, x, w, node, need):
    """(gx, gw, gb) of layer norm on arrays, from the node's saved statistics."""
    lead = tuple(range(x._data.ndim - len(node.axes)))
    xhat, rstd = node.xhat, node.rstd
    gd = g._data
    if xhat is None:  # saved by the C kernel (ember/backends/cpu_kernels.py): the input and mean
        xhat = (node.xc - node.mean) * rstd
    gw = (gd * xhat).sum(axis=lead).astype(w._data.dtype, copy=False) if need[1] else None
    gb = gd.sum(axis=lead) if need[2] else None
    gx = None
    if need[0]:
        gxhat = gd * w._data if w is not None else gd
        gx = _norm_input_grad(gxhat, xhat, rstd, node.axes, x._data.dtype)
    return gx, gw, gb


def _norm_backward_meta(g, x, w, node, need):
    empty = g._device.backend.xp.empty
    gx = empty(x._data.shape, x._data.dtype) if need[0] else None
    gw = empty(w._data.shape, w._data.dtype) if need[1] else None
    gb = empty(w._data.shape, w._data.dtype) if need[2] else None
    return gx, gw, gb


_LAYER_NORM_BACKWARD = Primitive("layer_norm_backward", None, _layer_norm_backward_impl, multi=True)
_LAYER_NORM_BACKWARD.register("meta", _norm_backward_meta)


def _norm_backward_graph(g, x, w, b, axes, eps, param_axes, wshape=None):
    """Layer/batch norm gradients in recorded Tensor ops (``create_graph``): statistics over
    ``axes``, parameter gradients summed over ``param_axes``, ``w`` broadcast as ``wshape``."""
    mean = x.mean(axes, keepdim=True)
    xc = x - mean
    rstd = ew.rsqrt((xc * xc).mean(axes, keepdim=True) + eps)
    xhat = xc * rstd
    gw = (g * xhat).sum(param_axes) if w is not None and w._requires_grad else None
    gb = g.sum(param_axes) if b is not None and b._requires_grad else None
    gx = None
    if x._requires_grad:
        gxhat = g if w is None else g * (w if wshape is None else w.reshape(wshape))
        gx = rstd * (gxhat - gxhat.mean(axes, keepdim=True) - xhat * (gxhat * xhat).mean(axes, keepdim=True))
    return gx, gw, gb


def _norm_input_grad(gxhat, xhat, rstd, axes, dtype):
    """``rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))`` on arrays, over ``axes``."""
    a = gxhat.mean(axis=axes, keepdims=True)
    c = (gxhat * xhat).mean(axis=axes, keepdims=True)
    gxhat = gxhat - a
    gxhat -= xhat * c
    gxhat *= rstd
    return gxhat.astype(dtype, copy=False)


def layer_norm(
    input: Tensor, normalized_shape, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims, then scale and shift.

    Example:
        >>> import ember
        >>> y = ember.nn.functional.layer_norm(ember.tensor([[1.0, 3.0]]), (2,))
        >>> y
        tensor([[-1.0000,  1.0000]])
    """
    check_tensor(input, "layer_norm")
    shape = _normalized_shape(normalized_shape)
    _check_norm_shape(input, shape, "layer_norm")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{list(p.shape)} and normalized_shape = {list(shape)}"
            )
    d = input._data
    if d.dtype.kind not in "fV":
        raise RuntimeError(f"\"LayerNormKernelImpl\" not implemented for '{input.dtype.name.capitalize()}'")
    check_param_dtypes(input, weight, bias)
    axes = tuple(range(d.ndim - len(shape), d.ndim))
    t = apply(_LAYER_NORM, input, weight, bias, axes=axes, eps=eps)
    node = t._node
    if node is not None:
        node.save_versions(*(v for v in (input, weight) if v is not None))
    return t


def _layer_norm_impl(input, weight, bias, axes, eps):
    """The output, and what backward needs: the C kernel's (contiguous input, mean, 1/std), or
    NumPy's (normalized input, 1/std)."""
    d = input._data
    low = d.dtype.itemsize == 2  # float16/bfloat16: float32 statistics, rounded once, as PyTorch
    if low:
        d = d.astype(np.float32)
    mean = d.mean(axis=axes, keepdims=True)
    xc = d - mean
    var = np.mean(np.square(xc), axis=axes, keepdims=True)
    var += eps
    rstd = 1.0 / np.sqrt(var)
    xhat = xc
    xhat *= rstd
    out = xhat
    if weight is not None or bias is not None:
        out = xhat * weight._data if weight is not None else xhat.copy()
        if bias is not None:
            out += bias._data
    else:
        out = xhat.copy()  # xhat is kept for backward: the output must not alias it
    if low:
        out = out.astype(input._data.dtype)
    return out, {"xhat": xhat, "rstd": rstd, "xc": None, "mean": None}


_LAYER_NORM = Primitive("layer_norm", LayerNorm, _layer_norm_impl, extras=True)


def _data(t: Tensor | None):
    return None if t is None else t._data


def rms_norm(input: Tensor, normalized_shape, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """``x / sqrt(mean(x**2) + eps) * weight`` over the trailing dims; ``eps=None`` is the dtype's eps.

    Example:
        >>> import ember
        >>> ember.nn.functional.rms_norm(ember.tensor([[3.0, 4.0]]), (2,))
        tensor([[0.8485, 1.1314]])
    """
    check_tensor(input, "rms_norm")
    shape = _normalized_shape(normalized_shape)
    _check_norm_shape(input, shape, "rms_norm")
    if eps is None:
        eps = float(np.finfo(input._data.dtype).eps)
    axes = tuple(range(input.ndim - len(shape), input.ndim))
    out = input * ew.rsqrt((input * input).mean(axes, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out


def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Normalize over groups of channels (dim 1) and the spatial dims, then per-channel affine."""
    check_tensor(input, "group_norm")
    if input.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.ndim}")
    n, c = input.shape[0], input.shape[1]
    if c % num_groups:
        raise RuntimeError(
            f"Expected number of channels in input to be divisible by num_groups, but got input of shape "
            f"{list(input.shape)} and num_groups={num_groups}"
        )
    check_group_norm_params(input, weight, bias)
    grouped = input.reshape(n, num_groups, int(np.prod(input.shape[1:])) // num_groups)  # -1 fails for n = 0
    mean = grouped.mean(-1, keepdim=True)
    xc = grouped - mean
    rstd = ew.rsqrt((xc * xc).mean(-1, keepdim=True) + eps)
    out = (xc * rstd).reshape(input.shape)
    bshape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(bshape)
    if bias is not None:
        out = out + bias.reshape(bshape)
    return out


def _affine(input: Tensor, weight, bias, bshape) -> Tensor:
    """``input * weight + bias`` per channel, recorded (the empty-batch result of batch_norm)."""
    out = input * 1
    if weight is not None:
        out = out * weight.reshape(bshape)
    if bias is not None:
        out = out + bias.reshape(bshape)
    return out


def _update_running(running: Tensor, new: Tensor, momentum: float) -> None:
    with no_grad():
        running.mul_(1.0 - momentum).add_(new.detach().to(running.dtype) * momentum)


class BatchNorm(Node):
    """Training-mode batch norm over all dims but the channels (dim 1), with batch statistics.

    Saved: ``xhat`` and ``rstd`` (NumPy forward), or ``xc`` (the contiguous input), ``mean`` and
    ``rstd`` of shape (C,) with ``xhat`` None (C forward: no normalized copy is kept).
    """

    __slots__ = ("axes", "eps", "xhat", "rstd", "bshape", "xc", "mean")

    def backward(self, g):
        x, w, b = self.inputs
        if grad_state.enabled:
            return _norm_backward_graph(g, x, w, b, self.axes, self.eps, self.axes, self.bshape)
        need = (x._requires_grad, w is not None and w._requires_grad, b is not None and b._requires_grad)
        return apply(_BATCH_NORM_BACKWARD, g, x, w, node=self, need=need)


def _batch_norm_backward_impl(g, x, w, node, need):
    """(gx, gw, gb) of training batch norm on arrays, from the node's saved statistics."""
    xhat, rstd, axes = node.xhat, node.rstd, node.axes
    gd = g._data
    if xhat is None:  # saved by the C kernel (ember/backends/cpu_kernels.py): the input and mean
        rstd = rstd.reshape(node.bshape)
        xhat = (node.xc - node.mean.reshape(node.bshape)) * rstd
    gw = gb = gx = None
    if need[1]:
        n, c = gd.shape[:2]
        gw = _einsum("ncl,ncl->c", gd.reshape(n, c, -1), xhat.reshape(n, c, -1))
    if need[2]:
        gb = gd.sum(axis=axes)
    if need[0]:
        gxhat = gd * w._data.reshape(node.bshape) if w is not None else gd
        gx = _norm_input_grad(gxhat, xhat, rstd, axes, x._data.dtype)
    return gx, gw, gb


_BATCH_NORM_BACKWARD = Primitive("batch_norm_backward", None, _batch_norm_backward_impl, multi=True)
_BATCH_NORM_BACKWARD.register("meta", _norm_backward_meta)


def _batch_norm_train(input: Tensor, weight, bias, axes, bshape, eps: float):
    """The fused training forward: (output, batch mean (C,), biased batch var (C,)) tensors."""
    out, mean, var = apply(_BATCH_NORM, input, weight, bias, axes=axes, eps=eps, bshape=bshape)
    node = out._node
    if node is not None:
        node.save_versions(*(v for v in (input, weight) if v is not None))
    return out, mean, var


def _batch_norm_impl(input, weight, bias, axes, eps, bshape):
    d = input._data
    mean = d.mean(axis=axes, keepdims=True)
    xc = d - mean
    var = np.mean(np.square(xc), axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc
    xhat *= rstd
    if weight is not None:
        out = xhat * weight._data.reshape(bshape)
        if bias is not None:
            out += bias._data.reshape(bshape)
    elif bias is not None:
        out = xhat + bias._data.reshape(bshape)
    else:
        out = xhat.copy()  # xhat is kept for backward: the output must not alias it
    saved = {"xhat": xhat, "rstd": rstd, "xc": None, "mean": None}
    return (out, mean.reshape(-1), var.reshape(-1)), saved


# Outputs: the normalized input (with the node), and the batch mean and biased variance (C,)
# for the running statistics.
_BATCH_NORM = Primitive("batch_norm", BatchNorm, _batch_norm_impl, multi=True, extras=True)


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalization over all dims except 1 (channels).

    In training the batch statistics normalize the input (one fused primitive) and, when running
    buffers are given, update them in place: ``running = (1 - momentum) * running + momentum *
    batch_stat``, with the unbiased batch variance, as in PyTorch. Otherwise the running
    statistics are folded into one per-channel scale and shift.
    """
    check_tensor(input, "batch_norm")
    if input.ndim < 2:
        raise ValueError(f"expected 2D or 3D input (got {input.ndim}D input)")
    c = input.shape[1]
    axes = (0,) + tuple(range(2, input.ndim))
    bshape = (1, c) + (1,) * (input.ndim - 2)
    if input._data.dtype.kind not in "fV":
        raise RuntimeError(f"batch_norm: expected a floating point input, got {input.dtype}")
    check_channel_params(input, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if training:
        count = input.numel() // c
        if count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
        if count == 0:  # an empty batch: an empty output, running statistics unchanged (as PyTorch)
            return _affine(input, weight, bias, bshape)
        out, mean, var = _batch_norm_train(input, weight, bias, axes, bshape, eps)
        with no_grad():
            if running_mean is not None:
                _update_running(running_mean, mean, momentum)
            if running_var is not None:
                _update_running(running_var, var * (count / (count - 1)), momentum)
        return out
    if running_mean is None or running_var is None:
        raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
    scale = ew.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    out = input * scale.to(input.dtype).reshape(bshape) + shift.to(input.dtype).reshape(bshape)
    return out


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize each (sample, channel) over its spatial dims."""
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    axes = tuple(range(2, input.ndim))
    mean = input.mean(axes, keepdim=True)
    xc = input - mean
    out = xc * ew.rsqrt((xc * xc).mean(axes, keepdim=True) + eps)
    bshape = (1, input.shape[1]) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(bshape)
    if bias is not None:
        out = out + bias.reshape(bshape)
    return out


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """Normalize each channel by the energy of its ``size`` neighbouring channels."""
    from ember.nn.functional.linear import pad

    sq = input * input
    c = input.shape[1]
    padded = pad(sq, (0, 0) * (input.ndim - 2) + (size // 2, (size - 1) // 2))
    acc = padded.narrow(1, 0, c)
    for i in range(1, size):
        acc = acc + padded.narrow(1, i, c)
    return input / (k + alpha / size * acc) ** beta
