"""Sampling from tensors of probabilities or rates: ``bernoulli``, ``poisson``, ``multinomial``.

Each is a primitive run through ``apply`` (so capture and the profiler see it), with a ``meta``
implementation that gives the output's shape and dtype without drawing anything. Value checks
(probabilities in [0, 1], non-negative rates) read the data, so they run in the ``cpu``
implementation; shape checks run before ``apply``, on every device.

Example:
    >>> import ember
    >>> ember.bernoulli(ember.ones(3))
    tensor([1., 1., 1.])
"""

from __future__ import annotations

import numpy as np

from ember.ops._base import Tensor, check_tensor
from ember.ops.dispatch import Primitive, apply
from ember.random import numpy_generator

__all__ = ["bernoulli", "poisson", "multinomial"]


def _empty_like_meta(x, **params):
    return x._device.backend.xp.empty(x._data.shape, x._data.dtype)


def _bernoulli_impl(x, p, generator):
    probs = x._data if p is None else np.full(x._data.shape, p)
    if p is None and ((probs < 0).any() or (probs > 1).any()):
        raise RuntimeError("bernoulli: all probabilities must be in [0, 1]")
    return (numpy_generator(generator).random(probs.shape) < probs).astype(x._data.dtype)


_BERNOULLI = Primitive("bernoulli", None, cpu=_bernoulli_impl)
_BERNOULLI.register("meta", _empty_like_meta)


def bernoulli(input: Tensor, p: float | None = None, *, generator=None) -> Tensor:
    """Samples 1 with probability ``input`` (or ``p``), else 0, in input's dtype.

    Example:
        >>> import ember
        >>> ember.bernoulli(ember.tensor([0.0, 1.0]))
        tensor([0., 1.])
    """
    check_tensor(input, "bernoulli")
    if p is not None and not 0.0 <= p <= 1.0:
        raise RuntimeError(f"bernoulli_ expects p to be in [0, 1], but got p={p}")
    return apply(_BERNOULLI, input, p=p, generator=generator)


def _poisson_impl(x, generator):
    rates = x._data
    if (rates < 0).any():
        raise RuntimeError("poisson: invalid Poisson rate, expected rate to be non-negative")
    return numpy_generator(generator).poisson(rates).astype(rates.dtype)


_POISSON = Primitive("poisson", None, cpu=_poisson_impl)
_POISSON.register("meta", _empty_like_meta)


def poisson(input: Tensor, generator=None) -> Tensor:
    """Poisson samples with the rates in ``input``, in input's dtype.

    Example:
        >>> import ember
        >>> ember.poisson(ember.zeros(2))
        tensor([0., 0.])
    """
    check_tensor(input, "poisson")
    return apply(_POISSON, input, generator=generator)


def _multinomial_impl(x, num_samples, replacement, generator):
    p = x._data.astype(np.float64)
    if (p < 0).any() or not np.isfinite(p).all():
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    rows = p.reshape(-1, p.shape[-1])
    sums = rows.sum(-1)
    if (sums <= 0).any():
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    g = numpy_generator(generator)
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for r, (row, s) in enumerate(zip(rows, sums)):
        if replacement:
            cdf = np.cumsum(row / s)
            cdf[-1] = 1.0
            out[r] = np.searchsorted(cdf, g.random(num_samples), side="right")
        else:
            # Gumbel top-k: sampling without replacement in one vectorized step.
            with np.errstate(divide="ignore"):
                keys = np.log(row) - np.log(-np.log(g.random(row.shape[0])))
            out[r] = np.argsort(-keys, kind="stable")[:num_samples]
    return out.reshape(p.shape[:-1] + (num_samples,))


def _multinomial_meta(x, num_samples, replacement, generator):
    return x._device.backend.xp.empty(x._data.shape[:-1] + (num_samples,), np.int64)


_MULTINOMIAL = Primitive("multinomial", None, cpu=_multinomial_impl)
_MULTINOMIAL.register("meta", _multinomial_meta)


def multinomial(input: Tensor, num_samples: int, replacement: bool = False, *, generator=None) -> Tensor:
    """Sample category indices (int64) from rows of non-negative weights (1-D or 2-D input).

    Example:
        >>> import ember
        >>> ember.multinomial(ember.tensor([0.0, 1.0]), 2, replacement=True)
        tensor([1, 1])
    """
    check_tensor(input, "multinomial")
    ndim = input._data.ndim
    if ndim not in (1, 2):
        raise RuntimeError(f"prob_dist must be 1 or 2 dim, got {ndim}")
    n_cat = input._data.shape[-1]
    if not replacement and num_samples > n_cat:
        raise RuntimeError(
            f"multinomial: cannot sample n_sample > prob_dist.size(-1) samples without replacement "
            f"({num_samples} > {n_cat})"
        )
    return apply(_MULTINOMIAL, input, num_samples=int(num_samples), replacement=bool(replacement), generator=generator)
