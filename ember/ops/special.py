"""Gamma-family special functions as primitives: ``lgamma``, ``digamma``, ``polygamma``.

NumPy has none of them, so they are computed here on float64 arrays: ``lgamma`` by the Lanczos
approximation (g = 7, nine terms; about 1e-15 relative) with the reflection formula below 1/2,
and the polygamma family by the recurrence ``psi_n(x) = psi_n(x + 1) - (-1)^n n! / x^(n+1)``
up to x >= 10 followed by the asymptotic (Bernoulli-number) series. Each derivative is the next
function of the family (``lgamma' = digamma``, ``digamma' = polygamma(1, .)``, ...), written as
an op, so gradients of any order exist. The probability distributions are built on them.

Example:
    >>> import ember
    >>> x = ember.tensor([0.5, 1.0, 4.0], requires_grad=True)
    >>> y = ember.lgamma(x)
    >>> [round(v, 4) for v in y.tolist()]
    [0.5724, 0.0, 1.7918]
    >>> y.sum().backward()
    >>> [round(v, 4) for v in x.grad.tolist()]
    [-1.9635, -0.5772, 1.2561]
"""

from __future__ import annotations

import math

import numpy as np

from ember.autograd.node import Node
from ember.ops._base import Tensor, default_float_np
from ember.ops.dispatch import Primitive, apply

__all__ = ["lgamma", "digamma", "polygamma"]

_LANCZOS = (
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
)
# Bernoulli numbers B_2, B_4, ..., B_20 for the asymptotic series.
_B2K = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798, -174611 / 330)


def _lgamma_pos(x: np.ndarray) -> np.ndarray:
    """log|Gamma(x)| for x >= 0.5 (Lanczos)."""
    z = x - 1.0
    acc = np.full_like(z, _LANCZOS[0])
    for i in range(1, 9):
        acc = acc + _LANCZOS[i] / (z + i)
    t = z + 7.5
    return 0.5 * math.log(2 * math.pi) + (z + 0.5) * np.log(t) - t + np.log(acc)


def lgamma_array(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    big = x >= 0.5
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out[big] = _lgamma_pos(x[big])
        small = x[~big]
        # Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x); the poles (0, -1, ...) give +inf.
        sin = np.abs(np.sin(math.pi * small))
        refl = math.log(math.pi) - np.log(sin) - _lgamma_pos(1.0 - small)
        refl[(small == np.floor(small))] = np.inf
        out[~big] = refl
    out[np.isposinf(x)] = np.inf
    out[(x == 1.0) | (x == 2.0)] = 0.0  # exact, as Gamma(1) = Gamma(2) = 1 (Lanczos leaves ~1e-16)
    return out


def polygamma_array(n: int, x: np.ndarray) -> np.ndarray:
    """psi_n(x) = d^(n+1)/dx^(n+1) log Gamma(x); n = 0 is the digamma function."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    pole = (x <= 0) & (x == np.floor(x))
    if n == 0:
        neg = x < 0.5
        z = np.where(neg, 1.0 - x, x)  # reflection for the digamma: psi(x) = psi(1 - x) - pi / tan(pi x)
    else:
        neg = np.zeros_like(x, dtype=bool)
        z = x.copy()
    sign = -1.0 if n % 2 == 0 else 1.0  # (-1)^(n+1)
    fact = math.factorial(n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = np.where(pole | np.isnan(z), 10.0, z)
        while True:  # the recurrence lifts every argument to >= 10, where the series is accurate
            low = z < 10
            if not low.any():
                break
            if n == 0:
                out = out - np.where(low, 1.0 / z, 0.0)
            else:
                out = out + np.where(low, sign * fact / z ** (n + 1), 0.0)
            z = np.where(low, z + 1, z)
        inv = 1.0 / z
        if n == 0:
            series = np.log(z) - 0.5 * inv
            inv2, p = inv * inv, inv * inv
            for k, b in enumerate(_B2K, start=1):
                series = series - b / (2 * k) * p
                p = p * inv2
        else:
            series = math.factorial(n - 1) * inv**n + 0.5 * fact * inv ** (n + 1)
            p = inv ** (n + 2)
            for k, b in enumerate(_B2K, start=1):
                series = series + b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) * p
                p = p * inv * inv
            series = sign * series
        out = out + series
        if n == 0:
            out = np.where(neg, out - math.pi / np.tan(math.pi * x), out)
    # At 0 the limit from the right (psi: -inf, psi_n: (-1)^(n+1) inf); at the negative poles none.
    out = np.where(pole, np.where(x == 0, -np.inf if n == 0 else sign * np.inf, np.nan), out)
    if n == 0:
        out = np.where(np.isnan(x) | np.isneginf(x), np.nan, np.where(np.isposinf(x), np.inf, out))
    else:
        out = np.where(np.isnan(x), np.nan, np.where(np.isposinf(x), 0.0, out))
    return out


def _float_out(x: Tensor, arr: np.ndarray) -> np.ndarray:
    return arr.astype(x._data.dtype if x._data.dtype.kind in "fV" else default_float_np())


class Lgamma(Node):
    __slots__ = ()

    def backward(self, g):
        return (g * digamma(self.inputs[0]),)


class Polygamma(Node):
    __slots__ = ("n",)

    def backward(self, g):
        return (g * polygamma(self.n + 1, self.inputs[0]),)


def lgamma(input: Tensor) -> Tensor:
    """``log|Gamma(input)|`` elementwise (``+inf`` at the poles 0, -1, -2, ...)."""
    return apply(_LGAMMA, input)


def polygamma(n: int, input: Tensor) -> Tensor:
    """The ``n``-th derivative of the digamma function, elementwise (``n = 0`` is ``digamma``)."""
    if not isinstance(n, int) or n < 0:
        raise RuntimeError(f"polygamma(n, x) does not support negative n (got {n})")
    return apply(_POLYGAMMA, input, n=n)


def _float_meta(x, **params):
    """Shape and dtype only: the input's shape in its float dtype (integers: the default float)."""
    d = x._data
    return x._device.backend.xp.empty(d.shape, d.dtype if d.dtype.kind in "fV" else default_float_np())


_LGAMMA = Primitive("lgamma", Lgamma, lambda x: _float_out(x, lgamma_array(x._data)))
_LGAMMA.register("meta", _float_meta)
_POLYGAMMA = Primitive("polygamma", Polygamma, lambda x, n: _float_out(x, polygamma_array(n, x._data)))
_POLYGAMMA.register("meta", _float_meta)


def digamma(input: Tensor) -> Tensor:
    """``d/dx log Gamma(x)`` elementwise (``-inf`` at 0, as PyTorch; NaN at negative integers)."""
    return polygamma(0, input)
