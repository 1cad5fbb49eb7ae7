"""``Gamma``, ``Beta`` and ``Dirichlet``: the gamma family, reparameterized through Gamma draws.

``rsample`` gradients come from implicit reparameterization of the Gamma draw (see
``_gamma_sampling.py``). Dirichlet draws are normalized Gamma draws and Beta draws are
two-component Dirichlet draws, so their gradients are the pathwise gradients of that
construction: unbiased like PyTorch's, though per draw they differ from PyTorch's
(``_dirichlet_grad`` differentiates the Beta marginal CDF instead).
"""

from __future__ import annotations

from numbers import Number

from ember.distributions import constraints
from ember.distributions._gamma_sampling import standard_gamma
from ember.distributions.distribution import Distribution
from ember.distributions.utils import broadcast_all, xlogy
from ember.ops.movement import stack
from ember.ops.special import digamma, lgamma
from ember.tensor import Size, Tensor

__all__ = ["Gamma", "Beta", "Dirichlet"]


class Gamma(Distribution):
    """Gamma with shape ``concentration`` and inverse scale ``rate`` (mean ``concentration / rate``).

    Example:
        >>> import ember
        >>> d = ember.distributions.Gamma(ember.tensor([2.0]), ember.tensor([1.0]))
        >>> round(d.log_prob(ember.tensor([1.0])).item(), 4), d.mean.item()
        (-1.0, 2.0)
    """

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, concentration, rate, validate_args: bool | None = None):
        self.concentration, self.rate = broadcast_all(concentration, rate)
        scalar = isinstance(concentration, Number) and isinstance(rate, Number)
        super().__init__(Size() if scalar else self.concentration.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = Size(batch_shape)
        params = {"concentration": self.concentration.expand(shape), "rate": self.rate.expand(shape)}
        return self._expanded(shape, params)

    @property
    def mean(self) -> Tensor:
        return self.concentration / self.rate

    @property
    def mode(self) -> Tensor:
        return ((self.concentration - 1) / self.rate).clamp(min=0)

    @property
    def variance(self) -> Tensor:
        return self.concentration / self.rate.pow(2)

    def rsample(self, sample_shape=()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        return standard_gamma(self.concentration.expand(shape)) / self.rate.expand(shape)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        c, r = self.concentration, self.rate
        return xlogy(c, r) + xlogy(c - 1, value) - r * value - lgamma(c)

    def entropy(self) -> Tensor:
        c = self.concentration
        return c - self.rate.log() + lgamma(c) + (1.0 - c) * digamma(c)


class Dirichlet(Distribution):
    """Dirichlet over the probability simplex, with positive ``concentration`` (..., K).

    Example:
        >>> import ember
        >>> d = ember.distributions.Dirichlet(ember.tensor([1.0, 1.0, 1.0]))
        >>> round(d.log_prob(ember.tensor([0.2, 0.3, 0.5])).item(), 4), d.sample().shape
        (0.6931, ember.Size([3]))
    """

    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration: Tensor, validate_args: bool | None = None):
        if concentration.dim() < 1:
            raise ValueError("`concentration` parameter must be at least one-dimensional.")
        self.concentration = concentration
        super().__init__(concentration.shape[:-1], concentration.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = Size(batch_shape)
        return self._expanded(
            shape, {"concentration": self.concentration.expand(tuple(shape) + tuple(self.event_shape))}
        )

    def rsample(self, sample_shape=()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        g = standard_gamma(self.concentration.expand(shape))
        return g / g.sum(-1, keepdim=True)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        c = self.concentration
        return xlogy(c - 1.0, value).sum(-1) + lgamma(c.sum(-1)) - lgamma(c).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self) -> Tensor:
        c = (self.concentration - 1).clamp(min=0.0)
        return c / c.sum(-1, keepdim=True)

    @property
    def variance(self) -> Tensor:
        c0 = self.concentration.sum(-1, keepdim=True)
        return self.concentration * (c0 - self.concentration) / (c0.pow(2) * (c0 + 1))

    def entropy(self) -> Tensor:
        c = self.concentration
        k = c.shape[-1]
        a0 = c.sum(-1)
        return lgamma(c).sum(-1) - lgamma(a0) - (k - a0) * digamma(a0) - ((c - 1.0) * digamma(c)).sum(-1)


class Beta(Distribution):
    """Beta on [0, 1] with ``concentration1`` (alpha) and ``concentration0`` (beta).

    Example:
        >>> import ember
        >>> d = ember.distributions.Beta(ember.tensor([2.0]), ember.tensor([2.0]))
        >>> round(d.log_prob(ember.tensor([0.5])).exp().item(), 4), d.mean.item()
        (1.5, 0.5)
    """

    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, concentration1, concentration0, validate_args: bool | None = None):
        if isinstance(concentration1, Number) and isinstance(concentration0, Number):
            c1, c0 = broadcast_all(float(concentration1), float(concentration0))
            batch = Size()
        else:
            c1, c0 = broadcast_all(concentration1, concentration0)
            batch = c1.shape
        self._dirichlet = Dirichlet(stack([c1, c0], -1), validate_args=validate_args)
        super().__init__(batch, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = type(self).__new__(type(self))
        new._dirichlet = self._dirichlet.expand(batch_shape)
        Distribution.__init__(new, Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def concentration1(self) -> Tensor:
        return self._dirichlet.concentration[..., 0]

    @property
    def concentration0(self) -> Tensor:
        return self._dirichlet.concentration[..., 1]

    @property
    def mean(self) -> Tensor:
        return self.concentration1 / (self.concentration1 + self.concentration0)

    @property
    def mode(self) -> Tensor:
        return self._dirichlet.mode[..., 0]

    @property
    def variance(self) -> Tensor:
        total = self.concentration1 + self.concentration0
        return self.concentration1 * self.concentration0 / (total.pow(2) * (total + 1))

    def rsample(self, sample_shape=()) -> Tensor:
        return self._dirichlet.rsample(sample_shape).select(-1, 0)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._dirichlet.log_prob(stack([value, 1.0 - value], -1))

    def entropy(self) -> Tensor:
        return self._dirichlet.entropy()

    def __repr__(self) -> str:
        c1, c0 = self.concentration1, self.concentration0
        fmt = lambda t: t if t.numel() == 1 else t.size()  # noqa: E731
        return f"Beta(concentration1: {fmt(c1)}, concentration0: {fmt(c0)})"
