"""``ember.cdist`` against ``torch.cdist``: values, gradients (first and second order), errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ember
from tests.helpers import check, rand


@pytest.mark.parametrize("p", [0.0, 1.0, 1.5, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("shapes", [((4, 3), (5, 3)), ((2, 4, 3), (2, 6, 3)), ((2, 1, 4, 3), (3, 5, 3))])
def test_cdist_matches_torch(p, shapes):
    a, b = rand(*shapes[0], dtype=np.float64), rand(*shapes[1], dtype=np.float64, low=-1.0, high=3.0)
    check(lambda lib, x, y: lib.cdist(x, y, p=p), a, b, grad=p != 0.0)


def test_cdist_float32_and_zero_distance_gradient():
    a = rand(3, 2)
    check(lambda lib, x, y: lib.cdist(x, y), a, a.copy(), grad=True)  # zero distances on the diagonal


def test_cdist_double_backward():
    x = ember.tensor(rand(3, 2, dtype=np.float64), requires_grad=True)
    y = ember.tensor(rand(4, 2, dtype=np.float64, low=1.0, high=2.0))
    assert ember.autograd.gradcheck(lambda t: ember.cdist(t, y, p=3.0), (x,))
    assert ember.autograd.gradgradcheck(lambda t: ember.cdist(t, y, p=3.0), (x,))


def test_cdist_meta_shape():
    x, y = ember.empty(2, 1, 7, 3, device="meta"), ember.empty(5, 9, 3, device="meta")
    assert ember.cdist(x, y).shape == torch.cdist(torch.empty(2, 1, 7, 3), torch.empty(5, 9, 3)).shape


@pytest.mark.parametrize(
    "a,b,kw",
    [((3,), (4, 3), {}), ((3, 2), (4, 3), {}), ((3, 2), (4, 2), {"p": -1.0})],
)
def test_cdist_errors_match_torch(a, b, kw):
    with pytest.raises(RuntimeError):
        torch.cdist(torch.zeros(a), torch.zeros(b), **kw)
    with pytest.raises(RuntimeError):
        ember.cdist(ember.zeros(*a), ember.zeros(*b), **kw)
