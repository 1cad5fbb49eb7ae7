"""Views and movement ops against PyTorch: values, gradients, and real memory sharing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import NonContig, check, rand

MOVEMENT = {
    "view": (lambda L, x: x.view(3, 8) * 2, [rand(2, 3, 4)]),
    "view_infer": (lambda L, x: x.view(-1, 4).sin(), [rand(2, 3, 4)]),
    "reshape": (lambda L, x: x.reshape(4, 6).exp(), [rand(2, 3, 4)]),
    "reshape_noncontig": (lambda L, x: x.reshape(-1) * 3, [NonContig(rand(3, 4))]),
    "reshape_tuple": (lambda L, x: L.reshape(x, (6, 4)), [rand(2, 3, 4)]),
    "permute": (lambda L, x: x.permute(2, 0, 1) * x.permute(2, 0, 1), [rand(2, 3, 4)]),
    "permute_neg": (lambda L, x: x.permute(-1, 0, -2).cos(), [rand(2, 3, 4)]),
    "transpose": (lambda L, x: x.transpose(0, 2).tanh(), [rand(2, 3, 4)]),
    "t": (lambda L, x: x.t() @ x, [rand(3, 4)]),
    "t_1d": (lambda L, x: x.t() * 2, [rand(5)]),
    "T": (lambda L, x: x.T.exp(), [rand(3, 4)]),
    "mT": (lambda L, x: x.mT @ x, [rand(2, 3, 4)]),
    "unsqueeze": (lambda L, x: x.unsqueeze(1) * x.unsqueeze(-1), [rand(3, 4)]),
    "squeeze_all": (lambda L, x: x.squeeze().sin(), [rand(1, 3, 1, 4)]),
    "squeeze_dim": (lambda L, x: x.squeeze(2).sin(), [rand(1, 3, 1, 4)]),
    "squeeze_dims": (lambda L, x: x.squeeze((0, 2)).sin(), [rand(1, 3, 1, 4)]),
    "squeeze_noop": (lambda L, x: x.squeeze(1).sin(), [rand(1, 3, 1, 4)]),
    "expand": (lambda L, x: x.expand(2, 3, 4) * 2, [rand(3, 1)]),
    "expand_neg1": (lambda L, x: x.expand(5, -1, 4).exp(), [rand(3, 1)]),
    "expand_as": (lambda L, x, y: x.expand_as(y) * y, [rand(1, 4), rand(3, 4)]),
    "flatten": (lambda L, x: x.flatten().cos(), [rand(2, 3, 4)]),
    "flatten_range": (lambda L, x: x.flatten(1, 2).cos(), [rand(2, 3, 4, 5)]),
    "flatten_noncontig": (lambda L, x: x.flatten() * 2, [NonContig(rand(3, 4))]),
    "unflatten": (lambda L, x: x.unflatten(1, (2, -1)).exp(), [rand(3, 8)]),
    "split_int": (lambda L, x: [p * (i + 1) for i, p in enumerate(x.split(2, 1))], [rand(3, 7)]),
    "split_list": (lambda L, x: [p.exp() for p in L.split(x, [1, 4, 2], dim=1)], [rand(3, 7)]),
    "chunk": (lambda L, x: [p.sin() for p in x.chunk(3, 0)], [rand(7, 2)]),
    "narrow": (lambda L, x: x.narrow(1, 1, 3).exp(), [rand(3, 6)]),
    "narrow_neg": (lambda L, x: L.narrow(x, -1, -4, 2).exp(), [rand(3, 6)]),
    "unbind": (lambda L, x: [p * p for p in x.unbind(1)], [rand(3, 4)]),
    "repeat": (lambda L, x: x.repeat(2, 1, 3).sin(), [rand(3, 2)]),
    "repeat_noncontig": (lambda L, x: x.repeat(2, 2) * 1.5, [NonContig(rand(3, 2))]),
    "flip": (lambda L, x: x.flip(0, 1), [rand(3, 4)]),
    "flip_kw": (lambda L, x: L.flip(x, dims=(1,)) * x, [rand(3, 4)]),
    "flip_list": (lambda L, x: L.flip(x, [1]) * x, [rand(3, 4)]),
    "roll": (lambda L, x: x.roll(1, 0).exp(), [rand(3, 4)]),
    "roll_multi": (lambda L, x: L.roll(x, (1, -2), (0, 1)) * 2, [rand(3, 4)]),
    "roll_flat": (lambda L, x: x.roll(5) * 2, [rand(3, 4)]),
    "cat": (lambda L, a, b: L.cat([a, b, a], 1), [rand(2, 3), rand(2, 5)]),
    "cat_neg": (lambda L, a, b: L.cat((a, b), -2).sin(), [rand(2, 3), rand(4, 3)]),
    "stack": (lambda L, a, b: L.stack([a, b], 1).exp(), [rand(2, 3), rand(2, 3)]),
    "stack_last": (lambda L, a, b: L.stack([a, b], -1).exp(), [rand(2, 3), rand(2, 3)]),
    "movedim": (lambda L, x: x.movedim(0, -1).exp(), [rand(2, 3, 4)]),
    "movedim_multi": (lambda L, x: L.movedim(x, (0, 1), (2, 0)).exp(), [rand(2, 3, 4)]),
    "tril": (lambda L, x: x.tril().exp(), [rand(4, 5)]),
    "tril_k": (lambda L, x: L.tril(x, -1).exp(), [rand(2, 4, 5)]),
    "triu": (lambda L, x: x.triu(1).exp(), [rand(4, 5)]),
    "diagonal": (lambda L, x: x.diagonal().exp(), [rand(4, 5)]),
    "diagonal_offset": (lambda L, x: x.diagonal(1).exp(), [rand(4, 5)]),
    "diagonal_neg_offset": (lambda L, x: x.diagonal(-2).exp(), [rand(4, 5)]),
    "diagonal_dims": (lambda L, x: L.diagonal(x, 0, 0, 2).exp(), [rand(3, 2, 4)]),
    "diagonal_dims_last": (lambda L, x: L.diagonal(x, 1, -2, -1).exp(), [rand(2, 3, 4)]),
    "tile": (lambda L, x: x.tile((2, 2)).sin(), [rand(2, 3)]),
    "tile_short": (lambda L, x: x.tile((2,)).sin(), [rand(2, 3)]),
    "tile_varargs": (lambda L, x: x.tile(2, 1, 2).sin(), [rand(2, 3)]),
    "repeat_interleave": (lambda L, x: x.repeat_interleave(2).sin(), [rand(2, 3)]),
    "repeat_interleave_dim": (lambda L, x: x.repeat_interleave(3, dim=1).sin(), [rand(2, 3)]),
    "swapaxes": (lambda L, x: x.swapaxes(0, 1).exp(), [rand(2, 3)]),
    "contiguous": (lambda L, x: x.contiguous() * 2, [NonContig(rand(3, 4))]),
    "select": (lambda L, x: x.select(1, -1) * 2, [rand(3, 4)]),
}


@pytest.mark.parametrize("name", list(MOVEMENT))
def test_movement_matches_torch(name):
    fn, inputs = MOVEMENT[name]
    check(fn, *inputs)


def test_repeat_interleave_tensor_repeats():
    check(lambda L, x: x.repeat_interleave(L.tensor([1, 0, 2]), dim=0).exp(), rand(3, 2))


def test_view_chain_of_noncontig_inputs():
    check(lambda L, x: x.t().unsqueeze(0).expand(2, 4, 3).sum(0), NonContig(rand(3, 4)))


# --------------------------------------------------------------------------- memory sharing
VIEW_OPS = {
    "view": lambda x: x.view(12),
    "reshape": lambda x: x.reshape(2, 6),
    "permute": lambda x: x.permute(1, 0),
    "transpose": lambda x: x.transpose(0, 1),
    "t": lambda x: x.t(),
    "T": lambda x: x.T,
    "unsqueeze": lambda x: x.unsqueeze(0),
    "squeeze": lambda x: x.unsqueeze(1).squeeze(1),
    "expand": lambda x: x[:1].expand(5, 4),
    "flatten": lambda x: x.flatten(),
    "unflatten": lambda x: x.unflatten(1, (2, 2)),
    "narrow": lambda x: x.narrow(1, 1, 2),
    "split": lambda x: x.split(2, 1)[1],
    "chunk": lambda x: x.chunk(2, 0)[0],
    "unbind": lambda x: x.unbind(0)[2],
    "movedim": lambda x: x.movedim(0, 1),
    "select": lambda x: x.select(0, 1),
    "slice": lambda x: x[1:, ::2],
    "detach": lambda x: x.detach(),
}


@pytest.mark.parametrize("name", list(VIEW_OPS))
def test_view_shares_memory(name):
    """Writing through a view changes the base, and the other way round, as in torch."""
    fn = VIEW_OPS[name]
    results = []
    for L in (ember, torch):
        base = L.arange(12.0).reshape(3, 4).clone()
        v = fn(base)
        if name == "expand":
            base[0, 0] = -1.0  # an expanded view can't be written to; read the base's change through it
        else:
            v.add_(100)  # view -> base
        base.mul_(2)  # base -> view
        results.append((base.numpy().copy(), v.numpy().copy()))
    (eb, ev), (tb, tv) = results
    np.testing.assert_array_equal(eb, tb)
    np.testing.assert_array_equal(ev, tv)


@pytest.mark.parametrize("name", ["flip", "roll", "repeat", "tril", "cat", "clone", "diagonal_copy"])
def test_copying_ops_do_not_share(name):
    """Ops that copy in torch must not alias their input."""
    fns = {
        "flip": lambda L, x: x.flip([0]),
        "roll": lambda L, x: x.roll(1, 0),
        "repeat": lambda L, x: x.repeat(1, 1),
        "tril": lambda L, x: x.tril(),
        "cat": lambda L, x: L.cat([x]),
        "clone": lambda L, x: x.clone(),
        "diagonal_copy": lambda L, x: x.diagonal().clone(),
    }
    x = ember.arange(9.0).reshape(3, 3).clone()
    y = fns[name](ember, x)
    y.add_(1)
    np.testing.assert_array_equal(x.numpy(), np.arange(9.0).reshape(3, 3))


def test_diagonal_is_a_view():
    for L in (ember, torch):
        x = L.zeros(3, 3)
        x.diagonal().fill_(1.0)
        np.testing.assert_array_equal(x.numpy(), np.eye(3))


def test_view_incompatible_layout_raises_reshape_copies():
    for L in (ember, torch):
        x = L.arange(12.0).reshape(3, 4).t()
        with pytest.raises(RuntimeError, match="view size is not compatible"):
            x.view(12)
        y = x.reshape(12)
        y[0] = 100.0
        assert x[0, 0].item() == 0.0  # reshape copied: the base is untouched
        assert not x.is_contiguous()


def test_view_after_transpose_on_compatible_dims():
    """A transposed tensor can still be viewed when the merged dims are contiguous together."""
    check(lambda L, x: x.permute(1, 0, 2).view(3, 2, 2, 2) * 2, rand(2, 3, 4), grad=True)


def test_strides_match_torch():
    for shape, fn in [
        ((2, 3, 4), lambda x: x.permute(2, 0, 1)),
        ((2, 3, 4), lambda x: x[:, ::2, 1:]),
        ((3, 1), lambda x: x.expand(3, 5)),
        ((2, 3), lambda x: x.unsqueeze(1)),
    ]:
        e = fn(ember.zeros(*shape))
        t = fn(torch.zeros(*shape))
        assert e.shape == tuple(t.shape)
        assert e.stride() == t.stride(), (e.stride(), t.stride())
        assert e.is_contiguous() == t.is_contiguous()


def test_split_chunk_sizes_match_torch():
    for args in [(3,), ([2, 5],), (10,)]:
        e = ember.zeros(7, 2).split(*args)
        t = torch.zeros(7, 2).split(*args)
        assert [tuple(p.shape) for p in e] == [tuple(p.shape) for p in t]
    for n in (1, 3, 4, 7, 9):
        e = ember.zeros(7).chunk(n)
        t = torch.zeros(7).chunk(n)
        assert [tuple(p.shape) for p in e] == [tuple(p.shape) for p in t]


def test_movement_shape_errors():
    x = ember.zeros(2, 3)
    with pytest.raises(RuntimeError, match="invalid for input of size 6"):
        x.reshape(4, 2)
    with pytest.raises(RuntimeError, match="expanded size"):
        x.expand(4, 3, 4)
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.transpose(0, 2)
    with pytest.raises(RuntimeError, match="only one dimension can be inferred"):
        x.view(-1, -1)
    with pytest.raises(RuntimeError, match="duplicate"):
        x.permute(0, 0)
    with pytest.raises(RuntimeError, match="split_with_sizes"):
        x.split([1, 1], 1)


def test_write_into_expanded_view_raises():
    for L in (ember, torch):
        x = L.zeros(3, 1).expand(3, 4)
        with pytest.raises(RuntimeError, match="single memory location"):
            x.add_(1)


def test_stack_cat_dtype_promotion():
    check(lambda L, a, b: L.cat([a, b]), rand(2, 3), rand(2, 3, dtype=np.int64), grad=False)
    check(lambda L, a, b: L.stack([a, b]), rand(3), rand(3), grad=False)
