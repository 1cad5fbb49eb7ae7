"""Gamma draws with a reparameterized gradient (implicit reparameterization).

A draw ``x ~ Gamma(alpha, 1)`` is a function of ``alpha`` through its CDF: holding ``u = P(alpha, x)``
fixed, ``dx/dalpha = -(dP/dalpha) / p(x; alpha)`` (Figurnov et al., 2018; PyTorch's
``_standard_gamma_grad`` computes the same quantity with fitted approximations). Here ``dP/dalpha``
is evaluated exactly, in float64, by differentiating the series of the regularized lower
incomplete gamma function term by term:

    P(a, x) = sum_n t_n,  t_n = x^(a+n) e^-x / Gamma(a+n+1),
    dP/da   = sum_n t_n (log x - digamma(a+n+1)),

with ``digamma(a+n+1) = digamma(a+n) + 1/(a+n)``, summed until the terms are negligible.
"""

from __future__ import annotations

import numpy as np

from ember.autograd.node import Node
from ember.ops._base import Tensor
from ember.ops.dispatch import Primitive, apply
from ember.ops.special import lgamma_array, polygamma_array
from ember.random import numpy_generator

__all__ = ["standard_gamma", "standard_gamma_grad"]

_MAX_TERMS = 100_000


def standard_gamma_grad(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``dx/dalpha`` of a Gamma(alpha, 1) draw ``x`` with its uniform level held fixed."""
    x64 = np.maximum(np.asarray(x, dtype=np.float64), np.finfo(np.float64).tiny)
    a = np.broadcast_to(np.asarray(alpha, dtype=np.float64), x64.shape)
    log_x = np.log(x64)
    log_t = a * log_x - x64 - lgamma_array(a + 1)  # log t_0
    psi = polygamma_array(0, a + 1)
    total = np.exp(log_t) * (log_x - psi)
    scale = np.abs(total) + np.exp(log_t)
    active = np.ones(x64.shape, dtype=bool)
    for n in range(1, _MAX_TERMS):
        log_t = log_t + log_x - np.log(a + n)
        psi = psi + 1.0 / (a + n)
        term = np.exp(log_t)
        total = total + np.where(active, term * (log_x - psi), 0.0)
        scale = np.maximum(scale, term)
        # A term decreasing geometrically (n > x - a) and below 1e-17 of the largest one ends it.
        active = active & ~((a + n > x64) & (term < 1e-17 * scale))
        if not active.any():
            break
    log_pdf = (a - 1) * log_x - x64 - lgamma_array(a)
    return -total / np.exp(log_pdf)


class StandardGamma(Node):
    __slots__ = ("out",)

    def backward(self, g):
        (alpha,) = self.inputs
        grad = standard_gamma_grad(self.out, alpha._data).astype(alpha._data.dtype)
        return (g * Tensor._from(grad, alpha),)


def standard_gamma(alpha: Tensor) -> Tensor:
    """One Gamma(alpha, 1) draw per element of ``alpha``, differentiable in ``alpha``."""
    return apply(_STANDARD_GAMMA, alpha)


def _standard_gamma_impl(alpha):
    a = alpha._data
    x = numpy_generator(None).standard_gamma(a.astype(np.float64)).astype(a.dtype)
    x = np.maximum(x, np.finfo(a.dtype).tiny)  # never exactly 0: log_prob and the gradient need x > 0
    return x, {"out": x}  # the node keeps the sample: the gradient rule reads it


_STANDARD_GAMMA = Primitive("standard_gamma", StandardGamma, cpu=_standard_gamma_impl, extras=True)
_STANDARD_GAMMA.register(
    "meta", lambda alpha: (alpha._device.backend.xp.empty(alpha._data.shape, alpha._data.dtype), {"out": None})
)
