"""Activation functions, with fused eager primitives for softmax, log_softmax and gelu.

The fused ops (DESIGN.md decision 3) compute their forward with one C kernel
(``ember.backends.ckernels``, for contiguous CPU float32/float64 rows reduced over the last dim)
or else in a few NumPy passes, and keep the arrays their gradient needs. Their ``backward`` has two paths: plain backward works on those arrays
directly (fast), and under ``create_graph=True`` it is written in Tensor ops over a re-recorded
forward, so gradients of gradients stay exact. The other activations are short compositions of
primitive ops.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ember import _dtype
from ember.autograd.node import Node
from ember.ops import elementwise as ew
from ember.ops._base import Tensor, _wrap_dim, check_tensor, grad_state
from ember.ops.dispatch import Primitive, apply

__all__ = [
    "softmax",
    "log_softmax",
    "softmin",
    "gelu",
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "selu",
    "celu",
    "silu",
    "mish",
    "softplus",
    "hardtanh",
    "hardtanh_",
    "sigmoid",
    "tanh",
    "hardsigmoid",
    "hardswish",
    "logsigmoid",
    "softsign",
    "tanhshrink",
    "threshold",
    "glu",
    "prelu",
]


def _check_out_version(node) -> None:
    if node.out_vc[0] != 0:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: the output of {node.name()} is at version {node.out_vc[0]}; expected version 0 instead."
        )


def _softmax_dim(name: str, ndim: int) -> int:
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        stacklevel=3,
    )
    return 0 if ndim in (0, 1, 3) else 1


def _prepare(input, dim, dtype, name):
    check_tensor(input, name)
    if dtype is not None:
        input = input.to(_dtype.to_dtype(dtype))
    elif input._data.dtype.kind != "f":
        raise RuntimeError(f"\"{name}_lastdim_kernel_impl\" not implemented for '{input.dtype.name.capitalize()}'")
    if dim is None:
        dim = _softmax_dim(name, input._data.ndim)
    return input, _wrap_dim(dim, max(input._data.ndim, 1), name)


# --------------------------------------------------------------------------- softmax / log_softmax
class Softmax(Node):
    """``exp(x - max) / sum``; gradient ``y * (g - sum(g * y))``."""

    __slots__ = ("dim", "out", "out_vc")

    def backward(self, g):
        _check_out_version(self)
        x = self.inputs[0]
        if grad_state.enabled:  # create_graph: differentiable in x and g
            y = softmax(x, self.dim)
            return (y * (g - (g * y).sum(self.dim, keepdim=True)),)
        return (apply(_SOFTMAX_BACKWARD, g, Tensor._from(self.out, g), dim=self.dim, log=False),)


class LogSoftmax(Node):
    """``x - max - log(sum(exp(x - max)))``; gradient ``g - exp(y) * sum(g)``."""

    __slots__ = ("dim", "out", "out_vc")

    def backward(self, g):
        _check_out_version(self)
        x = self.inputs[0]
        if grad_state.enabled:
            y = log_softmax(x, self.dim)
            return (g - y.exp() * g.sum(self.dim, keepdim=True),)
        return (apply(_SOFTMAX_BACKWARD, g, Tensor._from(self.out, g), dim=self.dim, log=True),)


def _softmax_backward_impl(g, y, dim, log):
    """The input gradient of softmax (log_softmax) from its output ``y`` (the saved array)."""
    gd, yd = g._data, y._data
    if log:
        gx = np.exp(yd)
        gx *= gd.sum(axis=dim, keepdims=True)
        np.subtract(gd, gx, out=gx)
        return gx
    gx = gd * yd
    gx -= yd * gx.sum(axis=dim, keepdims=True)
    return gx


_SOFTMAX_BACKWARD = Primitive("softmax_backward", None, _softmax_backward_impl)


def _softmax_array(d, dim):
    if d.ndim == 0:
        return np.ones_like(d)
    e = d - d.max(axis=dim, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=dim, keepdims=True)
    return e


def _log_softmax_array(d, dim):
    if d.ndim == 0:
        return np.zeros_like(d)
    s = d - d.max(axis=dim, keepdims=True)
    lse = np.log(np.exp(s).sum(axis=dim, keepdims=True))
    s -= lse
    return s


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """``exp(x) / exp(x).sum(dim)``, computed stably (the max is subtracted first).

    Example:
        >>> import ember
        >>> ember.nn.functional.softmax(ember.tensor([1.0, 1.0]), dim=0)
        tensor([0.5000, 0.5000])
    """
    input, dim = _prepare(input, dim, dtype, "softmax")
    return apply(_SOFTMAX, input, dim=dim)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """``log(softmax(x))`` without forming the softmax (stable for large logits).

    Example:
        >>> import ember
        >>> ember.nn.functional.log_softmax(ember.tensor([0.0, 0.0]), dim=0).exp()
        tensor([0.5000, 0.5000])
    """
    input, dim = _prepare(input, dim, dtype, "log_softmax")
    return apply(_LOG_SOFTMAX, input, dim=dim)


# Both keep their output array for backward (``save_out``).
_SOFTMAX = Primitive("softmax", Softmax, lambda x, dim: _softmax_array(x._data, dim), save_out=True)
_LOG_SOFTMAX = Primitive("log_softmax", LogSoftmax, lambda x, dim: _log_softmax_array(x._data, dim), save_out=True)


def softmin(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype=None) -> Tensor:
    """``softmax(-x)``."""
    if dim is None:
        dim = _softmax_dim("softmin", input.ndim)
    return softmax(-input, dim, dtype=dtype)


# --------------------------------------------------------------------------- gelu
_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


_ERF_COEFFS = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(a):
    """erf on an array. Float32/16 use Abramowitz-Stegun 7.1.26 (absolute error < 1.5e-7, below
    float32 resolution, about 3x faster than SciPy's); float64 uses the exact elementwise erf."""
    if a.dtype == np.float64:
        from ember.ops.elementwise import _erf_array

        return _erf_array(a)
    dt = a.dtype.type
    x = np.abs(a)
    t = 1.0 / (1.0 + dt(0.3275911) * x)
    c1, c2, c3, c4, c5 = (dt(c) for c in _ERF_COEFFS)
    poly = t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * c5))))
    x *= -x
    np.exp(x, out=x)
    x *= poly
    np.subtract(1.0, x, out=x)
    return np.copysign(x, a)


class Gelu(Node):
    """GELU; the gradient is ``Phi(x) + x * phi(x)`` (exact) or the derivative of the tanh form.

    ``saved`` is the forward's Phi(x) or tanh(inner) from the NumPy path; None after the C
    kernel, whose backward recomputes them from x.
    """

    __slots__ = ("approximate", "saved")

    def backward(self, g):
        x = self.inputs[0]
        if grad_state.enabled:
            return (g * _gelu_grad_tensor(x, self.approximate),)
        return (apply(_GELU_BACKWARD, g, x, approximate=self.approximate, saved=self.saved),)


def _gelu_backward_impl(g, x, approximate, saved):
    """The input gradient of gelu on arrays (``saved``: the NumPy forward's Phi(x) or tanh)."""
    d = x._data
    if saved is None:
        saved = _gelu_saved(d, approximate)
    if approximate == "tanh":
        t = saved  # tanh(inner) from the forward
        dt = (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * d * d)
        gx = 0.5 * (1.0 + t) + 0.5 * d * dt
    else:
        gx = d * d
        gx *= -0.5
        np.exp(gx, out=gx)
        gx *= d
        gx *= _INV_SQRT_2PI
        gx += saved  # the normal CDF from the forward
    gx *= g._data
    return gx.astype(d.dtype, copy=False)


_GELU_BACKWARD = Primitive("gelu_backward", None, _gelu_backward_impl)


def _gelu_saved(d, approximate: str):
    """What the NumPy gelu keeps for backward: tanh(inner) (tanh form) or Phi(x) (exact)."""
    if approximate == "tanh":
        return np.tanh(_SQRT_2_OVER_PI * (d + 0.044715 * d**3))
    saved = _erf(d / _SQRT_2)
    saved += 1.0
    saved *= 0.5
    return saved


def _gelu_grad_tensor(x: Tensor, approximate: str) -> Tensor:
    if approximate == "tanh":
        t = ew.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1.0 + ew.erf(x / _SQRT_2))
    return cdf + x * _INV_SQRT_2PI * ew.exp(-0.5 * x * x)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """Gaussian Error Linear Unit: ``x * Phi(x)``, or its tanh approximation (``approximate='tanh'``).

    Example:
        >>> import ember
        >>> ember.nn.functional.gelu(ember.tensor([0.0, 1.0]))
        tensor([0.0000, 0.8413])
    """
    check_tensor(input, "gelu")
    if approximate not in ("none", "tanh"):
        raise RuntimeError(f"approximate argument must be either none or tanh (got '{approximate}')")
    if input._data.dtype.kind != "f":
        raise RuntimeError(f"\"GeluKernelImpl\" not implemented for '{input.dtype.name.capitalize()}'")
    t = apply(_GELU, input, approximate=approximate)
    if t._node is not None:
        t._node.save_versions(input)
    return t


def _gelu_impl(input, approximate):
    d = input._data
    saved = _gelu_saved(d, approximate)
    if approximate == "tanh":
        out = saved + 1.0
        out *= 0.5 * d
    else:
        out = d * saved
    return out.astype(d.dtype, copy=False), {"saved": saved}


_GELU = Primitive("gelu", Gelu, _gelu_impl, extras=True)


# --------------------------------------------------------------------------- compositions
def _maybe_inplace(input: Tensor, fn, inplace: bool, op: str) -> Tensor:
    """``fn(input)``, or written into ``input`` as a recorded in-place op (``inplace=True``)."""
    if inplace:
        from ember.ops.inplace import apply_inplace

        return apply_inplace(input, fn, (), op=op + "_")
    return fn(input)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """``max(x, 0)``."""
    return _maybe_inplace(input, ew.relu, inplace, "relu")


def relu_(input: Tensor) -> Tensor:
    return relu(input, inplace=True)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """``min(max(x, 0), 6)``."""
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return _maybe_inplace(input, lambda x: ew.where(x > 0, x, x * negative_slope), inplace, "leaky_relu")


def leaky_relu_(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return leaky_relu(input, negative_slope, inplace=True)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    return _maybe_inplace(input, lambda x: ew.where(x > 0, x, ew.expm1(ew.clamp(x, max=0.0)) * alpha), inplace, "elu")


def selu(input: Tensor, inplace: bool = False) -> Tensor:
    alpha = 1.6732632423543772848170429916717
    scale = 1.0507009873554804934193349852946
    return _maybe_inplace(input, lambda x: scale * elu(x, alpha), inplace, "selu")


def celu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    return _maybe_inplace(
        input, lambda x: ew.where(x > 0, x, ew.expm1(ew.clamp(x, max=0.0) / alpha) * alpha), inplace, "celu"
    )


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * sigmoid(x)`` (Swish)."""
    return _maybe_inplace(input, lambda x: x * ew.sigmoid(x), inplace, "silu")


class LogSigmoid(Node):
    """``log(sigmoid(x)) = -softplus(-x)``; gradient ``sigmoid(-x)`` (smooth everywhere, also at 0)."""

    __slots__ = ()

    def backward(self, g):
        return (g * ew.sigmoid(-self.inputs[0]),)


def _logsigmoid(x: Tensor) -> Tensor:
    return apply(_LOGSIGMOID, x)


def _logsigmoid_impl(x):
    d = x._data if x._data.dtype.kind == "f" else x._data.astype(np.float32)
    # min(x, 0) - log1p(exp(-|x|)): no overflow for any x.
    return np.minimum(d, 0) - np.log1p(np.exp(-np.abs(d)))


_LOGSIGMOID = Primitive("logsigmoid", LogSigmoid, _logsigmoid_impl)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta * x)) / beta``, linear where ``beta * x > threshold`` (as PyTorch)."""
    bx = input * beta
    soft = -_logsigmoid(-bx) / beta
    return ew.where(bx > threshold, input, soft)


def mish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return _maybe_inplace(input, lambda x: x * ew.tanh(softplus(x)), inplace, "mish")


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """``clamp(x, min_val, max_val)``."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    return _maybe_inplace(input, lambda x: ew.clamp(x, min_val, max_val), inplace, "hardtanh")


def hardtanh_(input: Tensor, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    return hardtanh(input, min_val, max_val, inplace=True)


def sigmoid(input: Tensor) -> Tensor:
    return ew.sigmoid(input)


def tanh(input: Tensor) -> Tensor:
    return ew.tanh(input)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``."""
    return _maybe_inplace(input, lambda x: ew.clamp(x + 3.0, 0.0, 6.0) / 6.0, inplace, "hardsigmoid")


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6``."""
    return _maybe_inplace(input, lambda x: x * ew.clamp(x + 3.0, 0.0, 6.0) / 6.0, inplace, "hardswish")


def logsigmoid(input: Tensor) -> Tensor:
    """``log(sigmoid(x))``, computed stably."""
    return _logsigmoid(input)


def softsign(input: Tensor) -> Tensor:
    return input / (1.0 + ew.abs(input))


def tanhshrink(input: Tensor) -> Tensor:
    return input - ew.tanh(input)


def threshold(input: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    """``x`` where ``x > threshold``, else ``value``."""
    return _maybe_inplace(input, lambda x: ew.where(x > threshold, x, value), inplace, "threshold")


def glu(input: Tensor, dim: int = -1) -> Tensor:
    """Gated linear unit: first half of ``dim`` times sigmoid of the second half."""
    n = input.shape[dim]
    if n % 2:
        raise RuntimeError(
            f"glu: Halving dimension must be even, but dimension {_wrap_dim(dim, input.ndim)} is size {n}"
        )
    a, b = input.chunk(2, dim)
    return a * ew.sigmoid(b)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``x`` where positive, ``weight * x`` elsewhere; ``weight`` has 1 or C (dim 1) entries."""
    w = weight
    if input.ndim >= 2 and weight.numel() > 1:
        w = weight.reshape((-1,) + (1,) * (input.ndim - 2))
    return ew.where(input > 0, input, input * w)
