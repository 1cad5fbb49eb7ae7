"""Index tensors are bounds-checked per op as PyTorch does: negative indices raise, never wrap
(issue 13, item 5)."""

from __future__ import annotations

import pytest
import torch

import ember

OPS = {
    "gather": lambda lib, x, i, v: lib.gather(x, 1, i),
    "scatter_": lambda lib, x, i, v: x.clone().scatter_(1, i, lib.ones(2, 2)),
    "scatter_value": lambda lib, x, i, v: x.clone().scatter_(1, i, 2.0),
    "scatter_add_": lambda lib, x, i, v: x.clone().scatter_add_(1, i, lib.ones(2, 2)),
    "scatter": lambda lib, x, i, v: lib.scatter(x, 1, i, lib.ones(2, 2)),
    "scatter_add": lambda lib, x, i, v: lib.scatter_add(x, 1, i, lib.ones(2, 2)),
    "index_select": lambda lib, x, i, v: lib.index_select(x, 1, v),
    "index_add": lambda lib, x, i, v: x.index_add(1, v, lib.ones(2, 2)),
}


@pytest.mark.parametrize("bad", [-1, 3, -4])
@pytest.mark.parametrize("op", list(OPS))
def test_out_of_range_index_raises_as_torch(op, bad):
    errors = []
    for lib in (torch, ember):
        x = lib.arange(6.0).reshape(2, 3)
        i = lib.tensor([[0, bad], [1, 0]])
        v = lib.tensor([0, bad])
        with pytest.raises(Exception) as info:
            OPS[op](lib, x, i, v)
        errors.append(info.value)
    t, e = errors
    assert type(e) is type(t) and str(e) == str(t), f"{type(e).__name__}: {e} vs {type(t).__name__}: {t}"


def test_in_range_indices_still_work():
    x = ember.arange(6.0).reshape(2, 3)
    assert ember.gather(x, 1, ember.tensor([[2, 0], [1, 1]])).tolist() == [[2.0, 0.0], [4.0, 4.0]]
    assert ember.index_select(x, 1, ember.tensor([2])).tolist() == [[2.0], [5.0]]
