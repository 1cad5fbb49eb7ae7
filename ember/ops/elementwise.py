"""Elementwise primitives: unary math and broadcasting binary arithmetic, with gradient rules.

Each primitive is a Node subclass whose ``backward`` is written in Tensor ops. The public
functions (``add``, ``exp``, ...) compute the NumPy result at once (eager) and record the node
only when some input requires grad. Binary ops take a Tensor and a Tensor or Python number and
follow PyTorch's broadcasting and type promotion.
"""

from __future__ import annotations

import math

import numpy as np

from ember import _dtype
from ember.autograd.node import Node
from ember.ops._base import CPU, Tensor, float_data, grad_state
from ember.ops.dispatch import REGISTRY, Primitive, apply, apply1, apply2

# The public functions (what ``from ember.ops.elementwise import *`` gives ``ember``).
__all__ = [
    "abs",
    "absolute",
    "acos",
    "acosh",
    "add",
    "addcdiv",
    "addcmul",
    "allclose",
    "arccos",
    "arccosh",
    "arcsin",
    "arcsinh",
    "arctan",
    "arctan2",
    "arctanh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "bitwise_and",
    "bitwise_not",
    "bitwise_or",
    "bitwise_xor",
    "ceil",
    "clamp",
    "clamp_max",
    "clamp_min",
    "clip",
    "cos",
    "cosh",
    "div",
    "eq",
    "equal",
    "erf",
    "exp",
    "exp2",
    "expm1",
    "fix",
    "floor",
    "floor_divide",
    "fmod",
    "frac",
    "ge",
    "greater",
    "greater_equal",
    "gt",
    "isclose",
    "isfinite",
    "isinf",
    "isnan",
    "le",
    "lerp",
    "less",
    "less_equal",
    "log",
    "log10",
    "log1p",
    "log2",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "lt",
    "maximum",
    "minimum",
    "mul",
    "nan_to_num",
    "ne",
    "neg",
    "negative",
    "not_equal",
    "pow",
    "reciprocal",
    "relu",
    "remainder",
    "round",
    "rsqrt",
    "rsub",
    "sgn",
    "sigmoid",
    "sign",
    "signbit",
    "sin",
    "sinh",
    "sqrt",
    "square",
    "sub",
    "tan",
    "tanh",
    "true_divide",
    "trunc",
    "where",
]


# --------------------------------------------------------------------------- binary machinery
def _broadcast_error(op: str, a, b) -> RuntimeError:
    sa = list(a.shape) if hasattr(a, "shape") else []
    sb = list(b.shape) if hasattr(b, "shape") else []
    # Find the first mismatching dimension from the right, as PyTorch reports it.
    for i in range(1, max(len(sa), len(sb)) + 1):
        x = sa[-i] if i <= len(sa) else 1
        y = sb[-i] if i <= len(sb) else 1
        if x != y and x != 1 and y != 1:
            dim = max(len(sa), len(sb)) - i
            return RuntimeError(
                f"{op}: The size of tensor a ({x}) must match the size of tensor b ({y}) at "
                f"non-singleton dimension {dim} (shapes {sa} and {sb})"
            )
    return RuntimeError(f"{op}: shapes {sa} and {sb} cannot be broadcast together")


def _cross_device(ad, bd, da, db, op: str):
    """Operands on two devices: as in PyTorch, a 0-d CPU tensor acts as a scalar and joins the
    other tensor's device; anything else is an error."""
    if not bd.ndim and db.type == "cpu":
        return ad, da.backend.xp.asarray(bd), da
    if not ad.ndim and da.type == "cpu":
        return db.backend.xp.asarray(ad), bd, db
    raise RuntimeError(
        f"{op}: Expected all tensors to be on the same device, but found at least two devices, {da} and {db}!"
    )


def _operands(a, b, op: str, float_result: bool = False):
    """Arrays of ``a`` and ``b`` cast to the promoted dtype; either may be a Python number."""
    if isinstance(a, Tensor):
        ad = a._data
        device = a._device
        if isinstance(b, Tensor):
            bd = b._data
            if b._device is not device and b._device != device:
                ad, bd, device = _cross_device(ad, bd, device, b._device, op)
            if ad.dtype is bd.dtype and (not float_result or ad.dtype.kind in "fV"):
                return ad, bd, device
        elif isinstance(b, (int, float)) and ad.dtype.kind == "f":  # a float result either way
            if not b:  # zeros stay Python numbers (0.0 and -0.0 would share a cache key)
                return ad, b, device
            c = _SCALARS.get((b, ad.dtype))
            if c is not None and (b.__class__ is float or b.__class__ is int) and ad.__class__ is np.ndarray:
                return ad, c, device
            return ad, _scalar_operand(b, ad), device
        else:
            if not isinstance(b, (int, float, bool, np.generic)):
                raise TypeError(f"{op}(): unsupported operand type {type(b).__name__}")
            bd = b
    else:
        if not isinstance(a, (int, float, bool, np.generic)):
            raise TypeError(f"{op}(): unsupported operand type {type(a).__name__}")
        ad = a
        bd = b._data
        device = b._device
    rt = _dtype.result_type(a, b)
    if float_result and rt.category != _dtype._FLOAT:
        rt = _dtype.defaults.float
    npd = rt.np
    if isinstance(ad, np.ndarray) or hasattr(ad, "dtype") and not isinstance(ad, np.generic):
        if ad.dtype != npd:
            ad = ad.astype(npd)
    else:
        ad = device.backend.xp.asarray(ad, dtype=npd) if device is not CPU else np.asarray(ad, dtype=npd)
    if isinstance(bd, np.ndarray) or hasattr(bd, "dtype") and not isinstance(bd, np.generic):
        if bd.dtype != npd:
            bd = bd.astype(npd)
    else:
        bd = device.backend.xp.asarray(bd, dtype=npd) if device is not CPU else np.asarray(bd, dtype=npd)
    return ad, bd, device


# Python numbers as 0-d arrays of the float dtype they meet: NumPy converts a Python scalar
# operand on every call (about 0.2 us, more than a 16-element op), a 0-d array of the array's
# dtype it takes as is, with the same result bit for bit (NumPy 2's rules convert the number to
# the array's dtype first). Zeros are left out (0.0 and -0.0 are one key), and numbers beyond the
# dtype's range (their conversion differs). Bounded: cleared when full.
_SCALARS: dict = {}
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}


def _scalar_operand(b, ad):
    """``b`` (a Python number) as a cached 0-d array of ``ad``'s float dtype, when that is safe."""
    dt = ad.dtype
    fmax = _FLOAT_MAX.get(dt)
    if (
        fmax is None
        or ad.__class__ is not np.ndarray
        or not (b.__class__ is float or b.__class__ is int)
        or not 0 < (b if b > 0 else -b) <= fmax  # (this module's abs is the op)
    ):
        return b
    if len(_SCALARS) >= 1024:
        _SCALARS.clear()
    c = _SCALARS[(b, dt)] = np.asarray(b, dt)
    return c


def _binary_impl(ufunc, op: str, float_result: bool = False):
    """The implementation of a broadcasting binary op: promote, then apply ``ufunc``."""

    def impl(a, b):
        ad, bd, _ = _operands(a, b, op, float_result)
        try:
            return ufunc(ad, bd)
        except ValueError:
            raise _broadcast_error(op, ad, bd) from None

    return impl


def _binary_prim(name: str, node_cls, ufunc, op: str | None = None, float_result: bool = False) -> Primitive:
    return Primitive(name, node_cls, _binary_impl(ufunc, op or name, float_result))


def _is_t(x) -> bool:
    return isinstance(x, Tensor)


def sum_to(g: Tensor, x) -> Tensor | None:
    """Reduce a broadcast gradient back to the shape of ``x`` (None for non-tensor ``x``)."""
    if not isinstance(x, Tensor):
        return None
    if not x._requires_grad:
        return None
    shape = x._data.shape
    gshape = g._data.shape
    if gshape == shape:
        return g if g._data.dtype == x._data.dtype else g.to(x.dtype)
    lead = len(gshape) - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and gshape[i + lead] != 1)
    from ember.ops.movement import reshape
    from ember.ops.reduce import sum as _sum

    if axes:
        g = _sum(g, dim=axes, keepdim=True)
    if g._data.shape != shape:
        g = reshape(g, shape)
    # A promoted op (float16 * float32) sends each gradient back in its input's own dtype,
    # reduced in the promoted dtype first, as PyTorch does.
    return g if g._data.dtype == x._data.dtype else g.to(x.dtype)


# --------------------------------------------------------------------------- binary primitives
class Add(Node):
    __slots__ = ()
    saves_values = False

    def backward(self, g):
        a, b = self.inputs
        return sum_to(g, a), sum_to(g, b)


class Sub(Node):
    __slots__ = ()
    saves_values = False

    def backward(self, g):
        a, b = self.inputs
        return sum_to(g, a), (sum_to(-g, b) if _is_t(b) and b._requires_grad else None)


class Mul(Node):
    __slots__ = ()
    reads_inputs = "others"  # d(a*b)/da reads only b

    def backward(self, g):
        a, b = self.inputs
        ga = sum_to(g * b, a) if _is_t(a) and a._requires_grad else None
        gb = sum_to(g * a, b) if _is_t(b) and b._requires_grad else None
        return ga, gb


class Div(Node):
    __slots__ = ()

    def backward(self, g):
        a, b = self.inputs
        ga = sum_to(g / b, a) if _is_t(a) and a._requires_grad else None
        gb = sum_to(-g * a / (b * b), b) if _is_t(b) and b._requires_grad else None
        return ga, gb


class Pow(Node):
    __slots__ = ()

    def backward(self, g):
        a0, b0 = self.inputs
        # Compute in the promoted dtype (a float16 base with a float32 exponent takes log in float32).
        a = a0.to(g.dtype) if _is_t(a0) and a0._data.dtype != g._data.dtype else a0
        b = b0.to(g.dtype) if _is_t(b0) and b0._data.dtype != g._data.dtype else b0
        ga = gb = None
        if _is_t(a0) and a0._requires_grad:
            if _is_t(b):
                ga = where(b == 0, 0.0, g * b * pow(a, b - 1))
            elif b == 0:
                ga = g * 0.0
            else:
                ga = g * b * pow(a, b - 1)
            ga = sum_to(ga, a0)
        if _is_t(b0) and b0._requires_grad:
            if _is_t(a):
                mask = (a == 0) & (b >= 0)
                gb = where(mask, 0.0, g * pow(a, b) * log(a))
            else:
                # A zero base: 0 for b >= 0, and pow(0, b) * log(0) = -inf-scaled for b < 0, as torch.
                gb = g * pow(a, b) * _scalar_log(a) if a != 0 else where(b >= 0, 0.0, g * pow(a, b) * -math.inf)
            gb = sum_to(gb, b0)
        return ga, gb


def _scalar_log(a) -> float:
    return math.log(a) if a > 0 else math.nan


class Maximum(Node):
    __slots__ = ()

    def backward(self, g):
        a, b = self.inputs
        # Ties split the gradient evenly, as PyTorch does.
        wa = (a > b).to(g.dtype) + (a == b).to(g.dtype) * 0.5
        return sum_to(g * wa, a), sum_to(g * (1.0 - wa), b)


class Minimum(Node):
    __slots__ = ()

    def backward(self, g):
        a, b = self.inputs
        wa = (a < b).to(g.dtype) + (a == b).to(g.dtype) * 0.5
        return sum_to(g * wa, a), sum_to(g * (1.0 - wa), b)


class Atan2(Node):
    __slots__ = ()

    def backward(self, g):
        a, b = self.inputs
        denom = a * a + b * b
        return sum_to(g * b / denom, a), sum_to(-g * a / denom, b)


class RoundedDiv(Node):
    """``div`` with ``rounding_mode``: piecewise constant, so both gradients are zero."""

    __slots__ = ()
    saves_values = False

    def backward(self, g):
        a, b = self.inputs
        ga = sum_to(g * 0.0, a) if _is_t(a) and a._requires_grad else None
        gb = sum_to(g * 0.0, b) if _is_t(b) and b._requires_grad else None
        return ga, gb


class FloorDivide(Node):
    """PyTorch records ``floor_divide`` but defines no derivative: backward raises."""

    __slots__ = ()
    saves_values = False

    def backward(self, g):
        raise RuntimeError("the derivative for 'floor_divide' is not implemented.")


class Remainder(Node):
    __slots__ = ()

    def backward(self, g):
        a, b = self.inputs
        gb = None
        if _is_t(b) and b._requires_grad:
            gb = sum_to(-g * floor_divide(a, b), b)
        return sum_to(g, a), gb


class Fmod(Node):
    __slots__ = ()

    def backward(self, g):
        a, b = self.inputs
        gb = None
        if _is_t(b) and b._requires_grad:
            gb = sum_to(-g * trunc(a / b), b)
        return sum_to(g, a), gb


def add(input, other, *, alpha=1, out=None) -> Tensor:
    """``input + alpha * other`` with broadcasting.

    Example:
        >>> import ember
        >>> ember.add(ember.tensor([1, 2]), 3)
        tensor([4, 5])
    """
    if alpha != 1 and not (_is_bool(input) and _is_bool(other)):
        other = mul(other, alpha)
    if out is None:
        return apply2(_ADD, input, other)
    return _maybe_out(apply2(_ADD, input, other), out)


def sub(input, other, *, alpha=1, out=None) -> Tensor:
    """``input - alpha * other`` with broadcasting."""
    # _any_bool written inline: this check is most of sub's cost beyond add's on small tensors
    if (input._data.dtype is _BOOL if isinstance(input, Tensor) else input.__class__ is bool) or (
        other._data.dtype is _BOOL if isinstance(other, Tensor) else other.__class__ is bool
    ):
        if _is_bool(input) and _is_bool(other):
            raise RuntimeError(
                "Subtraction, the `-` operator, with two bool tensors is not supported. "
                "Use the `^` or `logical_xor()` operator instead."
            )
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    if alpha != 1:
        other = mul(other, alpha)
    if out is None:
        return apply2(_SUB, input, other)
    return _maybe_out(apply2(_SUB, input, other), out)


_BOOL = np.dtype(np.bool_)  # (one instance: the identity test is the cheapest)


def rsub(input, other, *, alpha=1) -> Tensor:
    return sub(other, input, alpha=alpha)


def mul(input, other, *, out=None) -> Tensor:
    """Elementwise product with broadcasting."""
    if out is None:
        return apply2(_MUL, input, other)
    return _maybe_out(apply2(_MUL, input, other), out)


def div(input, other, *, rounding_mode=None, out=None) -> Tensor:
    """True division (``rounding_mode=None``), or ``'trunc'`` / ``'floor'`` rounding."""
    if rounding_mode is None:
        if out is None:
            return apply2(_DIV, input, other)
        res = apply2(_DIV, input, other)
    elif rounding_mode == "floor":
        res = apply2(_DIV_FLOOR, input, other)
    elif rounding_mode == "trunc":
        res = apply2(_DIV_TRUNC, input, other)
    else:
        raise ValueError(
            f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found '{rounding_mode}'"
        )
    return _maybe_out(res, out)


def _int_checks(a, b, kernel: str) -> None:
    """Integer division by zero raises (as PyTorch does), and bool has no division kernels."""
    kind = a.dtype.kind
    if kind == "b":
        raise NotImplementedError(f"\"{kernel}\" not implemented for 'Bool'")
    if kind in "iu" and not np.all(b):
        raise RuntimeError("ZeroDivisionError")


def _trunc_div(a, b):
    if a.dtype.kind in "fV":
        return np.trunc(np.true_divide(a, b)).astype(a.dtype, copy=False)
    _int_checks(a, b, "div_trunc_cpu")
    q = np.floor_divide(a, b)
    # Floor and trunc differ for an inexact negative quotient: round it up by one.
    return q + ((q < 0) & (q * b != a))


def _floor_div_array(a, b):
    if a.dtype.kind not in "fV":
        _int_checks(a, b, "div_floor_cpu")
    return np.floor_divide(a, b)


def _remainder_array(a, b):
    if a.dtype.kind not in "fV":
        _int_checks(a, b, "remainder_cpu")
    return np.remainder(a, b)


def _fmod_array(a, b):
    if a.dtype.kind not in "fV":
        _int_checks(a, b, "fmod_cpu")
    return np.fmod(a, b)


def _pow_array(a, b):
    if a.dtype.kind in "fV":
        return np.power(a, b)
    if a.dtype.kind == "b":
        # Only ``bool_tensor ** True`` reaches here (bool exponent tensors raise in ``pow``).
        return np.logical_or(a, np.logical_not(b))
    neg = b < 0
    if not neg.any():
        return np.power(a, b)
    # Integer powers with negative exponents, as PyTorch computes them: 1 and -1 keep a
    # magnitude of 1, every other base truncates to 0.
    pos = np.power(a, np.where(neg, 0, b))
    odd = (b & 1).astype(bool)
    recip = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0))
    return np.where(neg, recip, pos).astype(pos.dtype, copy=False)


_ADD = _binary_prim("add", Add, np.add)
_SUB = _binary_prim("sub", Sub, np.subtract)
_MUL = _binary_prim("mul", Mul, np.multiply)  # bool * bool is logical and, as NumPy computes it
_DIV = _binary_prim("div", Div, np.true_divide, float_result=True)
_DIV_FLOOR = _binary_prim("div_floor", RoundedDiv, _floor_div_array, "div")
_DIV_TRUNC = _binary_prim("div_trunc", RoundedDiv, _trunc_div, "div")
_POW = _binary_prim("pow", Pow, _pow_array)
_MAXIMUM = _binary_prim("maximum", Maximum, np.maximum)
_MINIMUM = _binary_prim("minimum", Minimum, np.minimum)
_ATAN2 = _binary_prim("atan2", Atan2, np.arctan2, float_result=True)
_REMAINDER = _binary_prim("remainder", Remainder, _remainder_array)
_FMOD = _binary_prim("fmod", Fmod, _fmod_array)
_FLOOR_DIVIDE = _binary_prim("floor_divide", FloorDivide, _floor_div_array)


def true_divide(input, other) -> Tensor:
    return div(input, other)


def pow(input, exponent, *, out=None) -> Tensor:
    """``input ** exponent`` elementwise; ``exponent`` may be a tensor or a number."""
    if isinstance(input, Tensor) and input._data.dtype.kind in "iub" and isinstance(exponent, int) and exponent < 0:
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    if isinstance(exponent, Tensor) and exponent._data.dtype.kind == "b" and _is_bool(input):
        raise NotImplementedError("\"pow\" not implemented for 'Bool'")
    return _maybe_out(apply2(_POW, input, exponent), out)


def maximum(input, other) -> Tensor:
    return apply2(_MAXIMUM, input, other)


def minimum(input, other) -> Tensor:
    return apply2(_MINIMUM, input, other)


def atan2(input, other) -> Tensor:
    return apply2(_ATAN2, input, other)


arctan2 = atan2


def remainder(input, other) -> Tensor:
    """Python-style modulus (sign of the divisor)."""
    return apply2(_REMAINDER, input, other)


def fmod(input, other) -> Tensor:
    """C-style modulus (sign of the dividend)."""
    return apply2(_FMOD, input, other)


def floor_divide(input, other) -> Tensor:
    """``floor(input / other)`` elementwise (Python's ``//``); it has no gradient, as in PyTorch."""
    return apply2(_FLOOR_DIVIDE, input, other)


def _any_bool(a, b) -> bool:
    """Either operand a bool (tensor or Python bool): one call on ``sub``'s hot path."""
    if a.__class__ is bool or b.__class__ is bool:
        return True
    if isinstance(a, Tensor) and a._data.dtype.kind == "b":
        return True
    return isinstance(b, Tensor) and b._data.dtype.kind == "b"


def _is_bool(x) -> bool:
    return x.__class__ is bool or (isinstance(x, Tensor) and x._data.dtype.kind == "b")


def _maybe_out(res: Tensor, out):
    if out is None:
        return res
    out.copy_(res)
    return out


# --------------------------------------------------------------------------- non-differentiable binary
_EQ = _binary_prim("eq", None, np.equal)
_NE = _binary_prim("ne", None, np.not_equal)
_LT = _binary_prim("lt", None, np.less)
_LE = _binary_prim("le", None, np.less_equal)
_GT = _binary_prim("gt", None, np.greater)
_GE = _binary_prim("ge", None, np.greater_equal)
_LOGICAL_AND = _binary_prim("logical_and", None, np.logical_and)
_LOGICAL_OR = _binary_prim("logical_or", None, np.logical_or)
_LOGICAL_XOR = _binary_prim("logical_xor", None, np.logical_xor)


def eq(input, other) -> Tensor:
    return apply2(_EQ, input, other)


def ne(input, other) -> Tensor:
    return apply2(_NE, input, other)


def lt(input, other) -> Tensor:
    return apply2(_LT, input, other)


def le(input, other) -> Tensor:
    return apply2(_LE, input, other)


def gt(input, other) -> Tensor:
    return apply2(_GT, input, other)


def ge(input, other) -> Tensor:
    return apply2(_GE, input, other)


greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def logical_and(input, other) -> Tensor:
    return apply2(_LOGICAL_AND, input, other)


def logical_or(input, other) -> Tensor:
    return apply2(_LOGICAL_OR, input, other)


def logical_xor(input, other) -> Tensor:
    return apply2(_LOGICAL_XOR, input, other)


def _bitwise(fn, name):
    prim = _binary_prim(name, None, fn)

    def op(input, other) -> Tensor:
        for x in (input, other):
            if isinstance(x, Tensor) and x._data.dtype.kind in "fV":
                raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{_TORCH_NAMES[x._data.dtype.name]}'")
        return apply2(prim, input, other)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name} of integer or bool tensors."
    return op


bitwise_and = _bitwise(np.bitwise_and, "bitwise_and")
bitwise_or = _bitwise(np.bitwise_or, "bitwise_or")
bitwise_xor = _bitwise(np.bitwise_xor, "bitwise_xor")


def equal(input: Tensor, other: Tensor) -> bool:
    """True when both tensors have the same shape and elements."""
    return input._data.shape == other._data.shape and bool((input._data == other._data).all())


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    return bool(np.allclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False) -> Tensor:
    return apply(_ISCLOSE, input, other, rtol=rtol, atol=atol, equal_nan=equal_nan)


def _isclose_impl(a, b, rtol, atol, equal_nan):
    bd = b._data if isinstance(b, Tensor) else b
    return np.isclose(a._data, bd, rtol=rtol, atol=atol, equal_nan=equal_nan)


_ISCLOSE = Primitive("isclose", None, _isclose_impl)


# --------------------------------------------------------------------------- unary machinery
def _unary_impl(fn, keep_int: bool = False):
    """The implementation of a unary op: ``fn`` on the array (integers as the default float)."""

    def impl(x):
        if not isinstance(x, Tensor):
            raise TypeError(f"{fn.__name__}(): argument 'input' must be Tensor, not {type(x).__name__}")
        d = x._data
        return fn(d if keep_int or d.dtype.kind in "fV" else float_data(x))

    return impl


def _unary_prim(name: str, node_cls, fn, *, keep_int: bool = False, save_out: bool = False) -> Primitive:
    return Primitive(name, node_cls, _unary_impl(fn, keep_int), save_out=save_out)


def _array_prim(name: str, fn) -> Primitive:
    """A non-differentiable op computed by ``fn`` on the input's array alone."""
    return Primitive(name, None, lambda x: fn(x._data))


class _UnaryOut(Node):
    """A unary op whose gradient reads its own output (kept as an array)."""

    __slots__ = ("out", "out_vc")

    def output(self) -> Tensor:
        if self.out_vc[0] != 0:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: the output of {self.name()} is at version {self.out_vc[0]}; expected version 0 instead."
            )
        t = Tensor.__new__(Tensor)
        t._data = self.out
        dev = self.inputs[0]._device
        if dev is not CPU:
            t._device = dev
        if grad_state.enabled:  # create_graph: the output's history is this very node
            t._node = self
            t._requires_grad = True
            _fw_attach(self, t)
        return t


class Neg(Node):
    __slots__ = ()
    saves_values = False

    def backward(self, g):
        return (-g,)


class Exp(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        return (g * self.output(),)


class Log(Node):
    __slots__ = ()

    def backward(self, g):
        return (g / self.inputs[0],)


class Log1p(Node):
    __slots__ = ()

    def backward(self, g):
        return (g / (self.inputs[0] + 1),)


class Expm1(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        return (g * (self.output() + 1),)


class Sqrt(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        return (g / (2 * self.output()),)


class Rsqrt(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        o = self.output()
        return (g * (-0.5) * o * o * o,)


class Reciprocal(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        o = self.output()
        return (-g * o * o,)


class Sin(Node):
    __slots__ = ()

    def backward(self, g):
        return (g * cos(self.inputs[0]),)


class Cos(Node):
    __slots__ = ()

    def backward(self, g):
        return (-g * sin(self.inputs[0]),)


class Tan(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        o = self.output()
        return (g * (1 + o * o),)


class Tanh(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        o = self.output()
        return (g * (1 - o * o),)


class Sigmoid(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        o = self.output()
        return (g * o * (1 - o),)


class Relu(_UnaryOut):
    __slots__ = ()

    def backward(self, g):
        return (g * (self.output() > 0),)


class Abs(Node):
    __slots__ = ()

    def backward(self, g):
        return (g * sign(self.inputs[0]),)


class Asin(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (g * rsqrt(1 - x * x),)


class Acos(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (-g * rsqrt(1 - x * x),)


class Atan(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (g / (1 + x * x),)


class Sinh(Node):
    __slots__ = ()

    def backward(self, g):
        return (g * cosh(self.inputs[0]),)


class Cosh(Node):
    __slots__ = ()

    def backward(self, g):
        return (g * sinh(self.inputs[0]),)


class Asinh(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (g * rsqrt(x * x + 1),)


class Acosh(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (g * rsqrt(x * x - 1),)


class Atanh(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (g / (1 - x * x),)


class Erf(Node):
    __slots__ = ()

    def backward(self, g):
        x = self.inputs[0]
        return (g * (2.0 / math.sqrt(math.pi)) * exp(-(x * x)),)


class ZeroGrad(Node):
    """Piecewise-constant ops (floor, round, sign, ...): the gradient is zero almost everywhere."""

    __slots__ = ()
    saves_values = False

    def backward(self, g):
        return (g * 0.0,)


# ``math.erf`` as a NumPy ufunc (object output): unlike ``np.vectorize`` it goes through
# ``__array_ufunc__``, so a meta array (capture, shape inference) gets its shape and dtype without
# its values being read.
_MATH_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf_array(x):
    """erf on an array: SciPy's when installed, else ``math.erf`` per element (exact, slower)."""
    try:
        from scipy.special import erf as _scipy_erf
    except ImportError:
        r = _MATH_ERF(x)  # a Python float for a 0-d array
        return np.array(r, x.dtype) if isinstance(r, float) else r.astype(x.dtype, copy=False)
    return _scipy_erf(x).astype(x.dtype, copy=False)


def _relu_array(x):
    dt = x.dtype
    zero = _ZEROS.get(dt)
    if zero is None:
        if dt.kind == "b":
            raise _bool_error("relu")
        zero = _ZEROS[dt] = np.zeros((), dt)
    # CuPy and meta arrays take a Python zero (CuPy refuses NumPy operands)
    return np.maximum(x, zero if x.__class__ is np.ndarray else 0)


# A 0-d zero per dtype: NumPy converts a Python 0 on every call, a 0-d array of the dtype it takes as is.
_ZEROS: dict = {}


def _bool_error(name: str, kernel: str | None = None) -> Exception:
    if name == "neg":
        return RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. "
            "If you are trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    if name == "relu":
        return RuntimeError("Boolean inputs not supported for relu")
    return NotImplementedError(f"\"{kernel or name + '_cpu'}\" not implemented for 'Bool'")


def _make_unary(name, node_cls, fn, *, keep_int=False, save_out=False, no_bool=False, doc=""):
    prim = _unary_prim(name, node_cls, fn, keep_int=keep_int, save_out=save_out)
    if no_bool:
        # Only ops PyTorch refuses on bool tensors pay for the check.
        def op(input, *, out=None):
            if isinstance(input, Tensor) and input._data.dtype.kind == "b":
                raise _bool_error(name, f"{name}_vml_cpu" if name in ("floor", "ceil", "trunc") else None)
            res = apply1(prim, input)
            return _maybe_out(res, out)

    else:

        def op(input, *, out=None):
            if out is None:
                return apply1(prim, input)
            return _maybe_out(apply1(prim, input), out)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc or f"Elementwise ``{name}``; integer inputs give the default float dtype."
    return op


def neg(input, *, out=None) -> Tensor:
    """Elementwise ``-input``."""
    try:  # NumPy refuses to negate bools: translate its error only then (free on the hot path)
        res = apply1(_NEG, input)
    except TypeError:
        if isinstance(input, Tensor) and input._data.dtype.kind == "b":
            raise _bool_error("neg") from None
        raise
    return _maybe_out(res, out)


_NEG = _unary_prim("neg", Neg, np.negative, keep_int=True)
negative = neg
exp = _make_unary("exp", Exp, np.exp, save_out=True)
log = _make_unary("log", Log, np.log)
log1p = _make_unary("log1p", Log1p, np.log1p)
expm1 = _make_unary("expm1", Expm1, np.expm1, save_out=True)
sqrt = _make_unary("sqrt", Sqrt, np.sqrt, save_out=True)
rsqrt = _make_unary("rsqrt", Rsqrt, lambda a: 1 / np.sqrt(a), save_out=True)
reciprocal = _make_unary("reciprocal", Reciprocal, np.reciprocal, save_out=True)
sin = _make_unary("sin", Sin, np.sin)
cos = _make_unary("cos", Cos, np.cos)
tan = _make_unary("tan", Tan, np.tan, save_out=True)
tanh = _make_unary("tanh", Tanh, np.tanh, save_out=True)
asin = _make_unary("asin", Asin, np.arcsin)
acos = _make_unary("acos", Acos, np.arccos)
atan = _make_unary("atan", Atan, np.arctan)
sinh = _make_unary("sinh", Sinh, np.sinh)
cosh = _make_unary("cosh", Cosh, np.cosh)
asinh = _make_unary("asinh", Asinh, np.arcsinh)
acosh = _make_unary("acosh", Acosh, np.arccosh)
atanh = _make_unary("atanh", Atanh, np.arctanh)
arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh
erf = _make_unary("erf", Erf, _erf_array)
relu = _make_unary("relu", Relu, _relu_array, keep_int=True, save_out=True, doc="``max(input, 0)`` elementwise.")
_RELU = REGISTRY["relu"]
_relu_impl = _RELU.cpu
_maximum = np.maximum


def _relu_cpu(x):
    """The relu implementation on CPU in one call (not the unary wrapper's two): ``np.maximum``
    with the dtype's cached zero, as :func:`_relu_array`; anything else (not a tensor, bool,
    a dtype's first call) goes through the general implementation."""
    try:
        d = x._data
        zero = _ZEROS[d.dtype]
    except (AttributeError, KeyError):
        return _relu_impl(x)
    return _maximum(d, zero) if d.__class__ is np.ndarray else _relu_impl(x)


_RELU.register("cpu", _relu_cpu)
abs = _make_unary("abs", Abs, np.abs, keep_int=True, no_bool=True, doc="Elementwise absolute value.")
absolute = abs


def _sign_array(x):
    if x.dtype.kind == "b":
        return x.copy()
    if x.dtype.kind in "fV":
        # (x > 0) - (x < 0), so NaN gives 0 as in PyTorch (np.sign gives NaN).
        return np.subtract(x > 0, x < 0, dtype=x.dtype)
    return np.sign(x)


sign = _make_unary("sign", ZeroGrad, _sign_array, keep_int=True, doc="-1, 0 or 1 by the sign of each element.")
sgn = sign
floor = _make_unary("floor", ZeroGrad, np.floor, keep_int=True, no_bool=True)
ceil = _make_unary("ceil", ZeroGrad, np.ceil, keep_int=True, no_bool=True)
trunc = _make_unary("trunc", ZeroGrad, np.trunc, keep_int=True, no_bool=True)
fix = trunc


def _sigmoid_array(x):
    if x.dtype is _F32 and x.__class__ is np.ndarray:
        # 1 / (1 + exp(-x)) in float64, rounded once: seven NumPy calls where the general form
        # below takes ten (on small tensors each call costs more than the arithmetic), and more
        # accurate than float32 arithmetic. -x is capped where exp would overflow (and warn):
        # below that every result rounds to 0 in float32 anyway.
        t = x.astype(np.float64)
        np.negative(t, out=t)
        np.minimum(t, _EXP_MAX_F64, out=t)
        np.exp(t, out=t)
        np.add(t, _ONE_F64, out=t)
        return np.reciprocal(t, out=t).astype(_F32)
    # exp of a negative argument only, so large |x| neither overflows nor loses precision.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_SIGMOID_UFUNC: list = [None]  # the compiled ufunc, or False without one; looked up on first use


def _load_sigmoid_ufunc():
    from ember.backends.ckernels import ufuncs

    mod = ufuncs.get()
    _SIGMOID_UFUNC[0] = uf = False if mod is None else mod.sigmoid
    return uf


_EXP_MAX_F64, _ONE_F64 = np.asarray(709.78, np.float64), np.asarray(1.0, np.float64)


sigmoid = _make_unary("sigmoid", Sigmoid, _sigmoid_array, save_out=True, doc="``1 / (1 + exp(-input))``.")
_SIGMOID = REGISTRY["sigmoid"]
_sigmoid_numpy = _SIGMOID.cpu


def _sigmoid_cpu(x):
    """Small float32/float64 inputs on CPU: one compiled ufunc call (ember/backends/ckernels/
    ufuncs.c, the same formulas as :func:`_sigmoid_array`, equal bit for bit), where NumPy takes
    seven. From about 2K elements NumPy's vectorized exp beats the ufunc's scalar one: NumPy."""
    try:
        d = x._data
    except AttributeError:
        return _sigmoid_numpy(x)  # (raises the usual TypeError)
    dt = d.dtype
    if (dt is _F32 or dt is _F64) and d.__class__ is np.ndarray and d.size <= 2048:
        uf = _SIGMOID_UFUNC[0]
        if uf is None:
            uf = _load_sigmoid_ufunc()
        if uf:
            return uf(d)
    return _sigmoid_numpy(x)


_SIGMOID.register("cpu", _sigmoid_cpu)


def round(input, *, decimals: int = 0) -> Tensor:
    """Round half to even, as PyTorch does."""
    if isinstance(input, Tensor) and input._data.dtype.kind == "b":
        raise _bool_error("round", "round_vml_cpu")
    return apply(_ROUND, input, decimals=decimals)


class Round(ZeroGrad):
    __slots__ = ("decimals",)


def _round_impl(x, decimals):
    if not isinstance(x, Tensor):
        raise TypeError(f"round(): argument 'input' must be Tensor, not {type(x).__name__}")
    return np.round(x._data, decimals)


_ROUND = Primitive("round", Round, _round_impl)


def frac(input) -> Tensor:
    """``input - trunc(input)``: the fractional part, for floating-point tensors only."""
    if isinstance(input, Tensor) and input._data.dtype.kind not in "fV":
        raise NotImplementedError(f"\"frac_cpu\" not implemented for '{_TORCH_NAMES[input._data.dtype.name]}'")
    return input - trunc(input)


_TORCH_NAMES = {
    "bool": "Bool",
    "uint8": "Byte",
    "int8": "Char",
    "int16": "Short",
    "int32": "Int",
    "int64": "Long",
    "float16": "Half",
    "float32": "Float",
    "float64": "Double",
}


def square(input) -> Tensor:
    """``input * input``; bool tensors square to int64, as ``pow(input, 2)`` does in PyTorch."""
    if isinstance(input, Tensor) and input._data.dtype.kind == "b":
        return pow(input, 2)
    return mul(input, input)


def log2(input) -> Tensor:
    return log(input) * (1.0 / math.log(2.0))


def log10(input) -> Tensor:
    return log(input) * (1.0 / math.log(10.0))


def exp2(input) -> Tensor:
    return pow(2.0, input)


_LOGICAL_NOT = _array_prim("logical_not", np.logical_not)


def logical_not(input) -> Tensor:
    return apply(_LOGICAL_NOT, input)


_BITWISE_NOT = _array_prim("bitwise_not", np.invert)


def bitwise_not(input) -> Tensor:
    if input._data.dtype.kind in "fV":
        raise RuntimeError("bitwise_not is only supported for integer and boolean tensors")
    return apply(_BITWISE_NOT, input)


_ISNAN = _array_prim("isnan", np.isnan)


def isnan(input) -> Tensor:
    return apply(_ISNAN, input)


_ISINF = _array_prim("isinf", np.isinf)


def isinf(input) -> Tensor:
    return apply(_ISINF, input)


_ISFINITE = _array_prim("isfinite", np.isfinite)


def isfinite(input) -> Tensor:
    return apply(_ISFINITE, input)


_SIGNBIT = _array_prim("signbit", np.signbit)


def signbit(input) -> Tensor:
    return apply(_SIGNBIT, input)


_NAN_TO_NUM = Primitive(
    "nan_to_num", None, lambda x, nan, posinf, neginf: np.nan_to_num(x._data, nan=nan, posinf=posinf, neginf=neginf)
)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None) -> Tensor:
    bad = isnan(input) | isinf(input)
    fixed = apply(_NAN_TO_NUM, input, nan=nan, posinf=posinf, neginf=neginf)
    return where(bad, fixed, input)


# --------------------------------------------------------------------------- where / clamp
class Where(Node):
    __slots__ = ()
    saves_values = False

    def backward(self, g):
        cond, a, b = self.inputs
        zero = 0.0
        ga = sum_to(where(cond, g, zero), a) if _is_t(a) and a._requires_grad else None
        gb = sum_to(where(cond, zero, g), b) if _is_t(b) and b._requires_grad else None
        return None, ga, gb


def _where_impl(condition, a, b):
    cond = condition._data
    ad, bd, _ = _operands(a, b, "where")
    try:
        return np.where(cond, ad, bd)
    except ValueError:
        raise RuntimeError(
            f"where: shapes of condition {list(cond.shape)}, input {list(np.shape(ad))} and other "
            f"{list(np.shape(bd))} cannot be broadcast together"
        ) from None


_WHERE = Primitive("where", Where, _where_impl)


def where(condition, input=None, other=None) -> Tensor:
    """Elements of ``input`` where ``condition`` holds, else of ``other`` (broadcasting).

    With only ``condition``, returns ``nonzero(condition, as_tuple=True)``.
    """
    if input is None and other is None:
        from ember.ops.index import nonzero

        return nonzero(condition, as_tuple=True)
    if not isinstance(condition, Tensor):
        from ember.ops.creation import tensor

        like = input if isinstance(input, Tensor) else other
        condition = tensor(np.asarray(condition, dtype=bool), device=like.device if isinstance(like, Tensor) else None)
    if condition._data.dtype != np.bool_:
        raise RuntimeError(
            f"where expected condition to be a boolean tensor, but got a tensor with dtype {condition.dtype}"
        )
    return apply(_WHERE, condition, input, other)


class Clamp(Node):
    __slots__ = ("lo", "hi")

    def backward(self, g):
        x = self.inputs[0]
        mask = None
        if self.lo is not None:
            mask = x >= self.lo
        if self.hi is not None:
            mask = x <= self.hi if mask is None else mask & (x <= self.hi)
        return (g * mask,)


def _clamp_impl(input, lo, hi):
    d = input._data
    rt = _dtype.result_type(input, *(v for v in (lo, hi) if v is not None))
    if rt is _dtype.bool_:
        raise NotImplementedError("\"clamp_scalar_cpu\" not implemented for 'Bool'")
    if rt.np != d.dtype:
        d = d.astype(rt.np)
    if hi is not None and lo is not None and lo > hi:
        return np.full_like(d, hi)
    return np.clip(d, lo, hi).astype(d.dtype, copy=False)  # bfloat16 with a Python bound stays bfloat16


_CLAMP = Primitive("clamp", Clamp, _clamp_impl)


def clamp(input, min=None, max=None, *, out=None) -> Tensor:
    """Limit every element to ``[min, max]``; either bound may be None or a tensor."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        return _maybe_out(apply(_CLAMP_TENSOR, input, min, max), out)
    return _maybe_out(apply(_CLAMP, input, lo=min, hi=max), out)


clip = clamp


class ClampTensor(Node):
    """clamp with tensor bounds. ``input`` gets the gradient where ``min <= input <= max``; a bound
    gets it where it was selected (crossed bounds select ``max``), PyTorch's rule, which unlike
    ``minimum(maximum(...))`` does not split it at ties."""

    __slots__ = ()

    def backward(self, g):
        x, lo, hi = self.inputs
        zero = 0.0
        gx = glo = ghi = None
        if x._requires_grad:
            inside = None
            if lo is not None:
                inside = x >= lo
            if hi is not None:
                inside = x <= hi if inside is None else inside & (x <= hi)
            gx = sum_to(where(inside, g, zero), x)
        if _is_t(lo) and lo._requires_grad:
            chosen = lo > x
            if hi is not None:
                chosen = chosen & (lo < hi)
            glo = sum_to(where(chosen, g, zero), lo)
        if _is_t(hi) and hi._requires_grad:
            chosen = hi < x
            if lo is not None:
                chosen = chosen | (hi < lo)
            ghi = sum_to(where(chosen, g, zero), hi)
        return gx, glo, ghi


def _clamp_tensor_impl(input, lo, hi):
    rt = _dtype.result_type(input, *(v for v in (lo, hi) if v is not None))
    npd = rt.np
    d = input._data.astype(npd, copy=False)
    try:
        if lo is not None:
            d = np.maximum(d, lo._data.astype(npd, copy=False) if isinstance(lo, Tensor) else lo)
        if hi is not None:
            d = np.minimum(d, hi._data.astype(npd, copy=False) if isinstance(hi, Tensor) else hi)
    except ValueError:
        shapes = [list(np.shape(v._data if isinstance(v, Tensor) else v)) for v in (input, lo, hi) if v is not None]
        raise RuntimeError(f"clamp: shapes {shapes} cannot be broadcast together") from None
    return d.astype(npd, copy=False)


_CLAMP_TENSOR = Primitive("clamp_tensor", ClampTensor, _clamp_tensor_impl)


def clamp_min(input, min) -> Tensor:
    return clamp(input, min=min)


def clamp_max(input, max) -> Tensor:
    return clamp(input, max=max)


def lerp(input, end, weight) -> Tensor:
    return input + weight * (end - input)


def addcmul(input, tensor1, tensor2, *, value=1) -> Tensor:
    return input + value * tensor1 * tensor2


def addcdiv(input, tensor1, tensor2, *, value=1) -> Tensor:
    return input + value * tensor1 / tensor2


def _fw_attach(node, t) -> None:
    """Forward over reverse: the rebuilt output carries its tangents (``ember.autograd.forward_ad``)."""
    from ember.autograd.forward_ad import attach_out_tangents

    attach_out_tangents(node, t)
