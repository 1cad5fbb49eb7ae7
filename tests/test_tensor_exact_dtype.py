"""``ember.tensor(python_floats, dtype=...)`` rounds once, to the requested dtype (as torch), not
through the default float32 first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember


@pytest.mark.parametrize("data", [[0.1, 1e-8, 1 / 3], 0.1, [[0.1], [2.0000001]], [1, 2**12 + 1]])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int64", "bool"])
def test_tensor_with_dtype_matches_torch(data, dtype):
    got = ember.tensor(data, dtype=getattr(ember, dtype))
    want = torch.tensor(data, dtype=getattr(torch, dtype))
    assert got.dtype == getattr(ember, dtype)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_float64_keeps_every_bit():
    assert ember.tensor(0.1, dtype=ember.float64).item() == 0.1
    assert ember.tensor([1e-8], dtype=ember.float64).tolist() == [1e-8]
    assert ember.tensor([0.1]).dtype == ember.float32  # no dtype: the default float, as before
