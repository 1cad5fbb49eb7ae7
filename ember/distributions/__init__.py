"""``ember.distributions``: probability distributions with PyTorch's API.

``Normal``, ``Uniform``, ``Bernoulli``, ``Categorical``, ``OneHotCategorical``, ``Gamma``,
``Beta``, ``Dirichlet``, ``MultivariateNormal`` and ``Independent``, each with ``sample``,
``log_prob``, ``entropy``, ``mean``/``variance``/``stddev`` and ``expand``; the continuous ones
also ``rsample`` (reparameterized draws that carry gradients to the parameters). ``kl_divergence``
dispatches to closed forms registered with ``register_kl``. Draws come from Ember's generator:
seeded runs repeat within Ember but differ from PyTorch's draws.

Example (REINFORCE's core):
    >>> import ember
    >>> from ember.distributions import Categorical
    >>> logits = ember.zeros(2, 3, requires_grad=True)
    >>> dist = Categorical(logits=logits)
    >>> action = dist.sample()
    >>> (-dist.log_prob(action).sum()).backward()
    >>> logits.grad.shape
    ember.Size([2, 3])
"""

from __future__ import annotations

from ember.distributions import constraints
from ember.distributions.discrete import Bernoulli, Categorical, OneHotCategorical
from ember.distributions.distribution import Distribution
from ember.distributions.gamma import Beta, Dirichlet, Gamma
from ember.distributions.independent import Independent
from ember.distributions.kl import kl_divergence, register_kl
from ember.distributions.multivariate_normal import MultivariateNormal
from ember.distributions.normal import Normal, Uniform

__all__ = [
    "Bernoulli",
    "Beta",
    "Categorical",
    "Dirichlet",
    "Distribution",
    "Gamma",
    "Independent",
    "MultivariateNormal",
    "Normal",
    "OneHotCategorical",
    "Uniform",
    "constraints",
    "kl_divergence",
    "register_kl",
]
