"""F.bilinear and nn.Bilinear against PyTorch: values, gradients, batch shapes, repr, init, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, check, rand


@pytest.mark.parametrize("lead", [(4,), (2, 3), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_bilinear_matches_torch(lead, bias):
    args = [rand(*lead, 3), rand(*lead, 5), rand(4, 3, 5)] + ([rand(4)] if bias else [])
    check(lambda lib, *a: lib.nn.functional.bilinear(*a), *args)


def test_bilinear_module_matches_torch():
    tm, em = torch.nn.Bilinear(3, 5, 4), ember.nn.Bilinear(3, 5, 4)
    assert repr(em) == repr(tm)
    em.load_state_dict({k: ember.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})
    a, b = rand(6, 3), rand(6, 5)
    assert_close(em(ember.tensor(a), ember.tensor(b)), tm(torch.tensor(a), torch.tensor(b)))
    w = ember.nn.Bilinear(16, 2, 3).weight.detach().numpy()
    assert np.abs(w).max() <= 1 / np.sqrt(16)


@pytest.mark.parametrize(
    "shapes",
    [((2, 3), (2, 4), (5, 3, 5)), ((2, 3), (3, 5), (5, 3, 5)), ((2, 3), (2, 5), (5, 3, 5), (4,))],
)
def test_bilinear_errors(shapes):
    with pytest.raises(RuntimeError):
        torch.nn.functional.bilinear(*[torch.ones(s) for s in shapes])
    with pytest.raises(RuntimeError, match="bilinear"):
        ember.nn.functional.bilinear(*[ember.ones(s) for s in shapes])
