"""The index_add fast paths (sorted indices, permutations) against PyTorch, on every axis."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import check, rand

INDEX = {
    "sorted_repeats": np.array([0, 0, 1, 3, 3, 3, 4]),
    "sorted_gaps": np.array([1, 1, 4]),
    "permutation": np.array([3, 0, 4, 1, 2]),
    "identity": np.arange(5),
    "partial_unique": np.array([4, 0, 2]),
    "unsorted_repeats": np.array([2, 0, 2, 4, 0, 0]),
}


@pytest.mark.parametrize("kind", sorted(INDEX))
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_index_add_and_index_select_grad_match_torch(kind, axis):
    idx = INDEX[kind]
    shape = [5, 5, 5]
    src_shape = list(shape)
    src_shape[axis] = idx.size

    def fn(lib, x, src):
        return x.index_add(axis, lib.tensor(idx), src)

    check(fn, rand(*shape), rand(*src_shape))
    # index_select's gradient is the same index_add.
    check(lambda lib, x: x.index_select(axis, lib.tensor(idx)) * 2.0, rand(*shape))
