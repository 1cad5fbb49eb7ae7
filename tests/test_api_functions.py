"""meshgrid, bucketize, searchsorted, histc, tensordot, kron, block_diag, cartesian_prod, combinations
and ``size=`` on factories, against torch: values, gradients, dtypes and error types."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember


def _pair(a, requires_grad=False):
    e = ember.tensor(a, requires_grad=requires_grad)
    t = torch.tensor(a, requires_grad=requires_grad)
    return e, t


def _same(e, t, rtol=1e-6):
    assert tuple(e.shape) == tuple(t.shape)
    assert str(e.dtype).split(".")[1] == str(t.dtype).split(".")[1]
    np.testing.assert_allclose(e.detach().numpy(), t.detach().numpy(), rtol=rtol, atol=1e-6)


def _grads_match(fn, *arrays):
    """fn(lib, *tensors) -> tensor; compare output and the gradient of a weighted sum of it."""
    pairs = [_pair(a, True) for a in arrays]
    out_e = fn(ember, *[p[0] for p in pairs])
    out_t = fn(torch, *[p[1] for p in pairs])
    _same(out_e, out_t)
    w = np.random.default_rng(0).standard_normal(tuple(out_t.shape)).astype(np.float32)
    (out_e * ember.tensor(w)).sum().backward()
    (out_t * torch.tensor(w)).sum().backward()
    for e, t in pairs:
        if t.grad is None:
            assert e.grad is None
        else:
            _same(e.grad, t.grad, rtol=1e-5)


@pytest.mark.parametrize("indexing", ["ij", "xy"])
def test_meshgrid_values_and_grads(indexing):
    a, b, c = np.arange(3.0, dtype=np.float32), np.arange(2.0, dtype=np.float32) + 5, np.ones(4, np.float32)
    for k in range(3):
        _grads_match(lambda L, x, y, z, k=k: L.meshgrid(x, y, z, indexing=indexing)[k], a, b, c)
    e = ember.meshgrid([ember.tensor(1.0), ember.arange(2.0)], indexing=indexing)
    t = torch.meshgrid([torch.tensor(1.0), torch.arange(2.0)], indexing=indexing)
    for x, y in zip(e, t):
        _same(x, y)


def test_meshgrid_warning_and_errors():
    for lib in (ember, torch):
        with pytest.warns(UserWarning, match="indexing argument"):
            out = lib.meshgrid(lib.arange(3), lib.arange(2))
        assert tuple(out[0].shape) == (3, 2)
        with pytest.raises(RuntimeError, match="indexing must be one of"):
            lib.meshgrid(lib.arange(3), indexing="foo")
        with pytest.raises(RuntimeError, match="0D or 1D"):
            lib.meshgrid(lib.ones(3, 1), indexing="ij")
        with pytest.raises(RuntimeError, match="same dtype"):
            lib.meshgrid(lib.arange(3), lib.arange(2.0), indexing="ij")
        with pytest.raises(RuntimeError, match="non-empty"):
            lib.meshgrid(indexing="ij")


def test_searchsorted_and_bucketize():
    s = [1.0, 3.0, 5.0, 7.0]
    v = [[3.0, 6.0], [9.0, 0.0]]
    (se, st), (ve, vt) = _pair(s), _pair(v)
    for kw in ({}, {"right": True}, {"side": "right"}, {"side": "left"}, {"out_int32": True}):
        _same(ember.searchsorted(se, ve, **kw), torch.searchsorted(st, vt, **kw))
        _same(ember.searchsorted(se, ve.long(), **kw), torch.searchsorted(st, vt.long(), **kw))
    _same(ember.searchsorted(se, 4.0), torch.searchsorted(st, 4.0))
    ue, ut = _pair([7.0, 1.0, 5.0, 3.0])
    _same(ember.searchsorted(ue, ve, sorter=ember.argsort(ue)), torch.searchsorted(ut, vt, sorter=torch.argsort(ut)))
    Se, St = _pair([[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]])
    Ve, Vt = _pair([[2.0, 5.0, 6.0, 0.0], [1.0, 7.0, 4.0, 4.0]])
    _same(ember.searchsorted(Se, Ve), torch.searchsorted(St, Vt))
    _same(ember.searchsorted(Se, Ve, right=True), torch.searchsorted(St, Vt, right=True))
    for kw in ({}, {"right": True}, {"out_int32": True}):
        _same(ember.bucketize(ve, se, **kw), torch.bucketize(vt, st, **kw))
    _same(ember.bucketize(3, se), torch.bucketize(3, st))


def _searchsorted_error_cases(lib) -> list:
    s, v = lib.tensor([1.0, 3.0, 5.0, 7.0]), lib.tensor([[3.0, 6.0]])
    return [
        (lambda: lib.searchsorted(lib.ones(2, 3), lib.ones(2)), "boundaries tensor should be 1 dimension"),
        (lambda: lib.searchsorted(s, v, side="left", right=True), "can't be set to opposites"),
        (lambda: lib.searchsorted(s, v, side="middle"), "side can only be"),
        (lambda: lib.searchsorted(s, v, sorter=lib.tensor([0, 1, 2])), "must have the same size"),
        (lambda: lib.searchsorted(s, v, sorter=lib.tensor([0.0, 1, 2, 3])), "sorter must be a tensor of long"),
        (lambda: lib.searchsorted(lib.tensor(1.0), v), "positive dimension"),
        (lambda: lib.bucketize(v, lib.ones(2, 2)), "boundaries tensor must be 1 dimension"),
    ]


def test_searchsorted_errors():
    for lib in (ember, torch):
        for fn, msg in _searchsorted_error_cases(lib):
            with pytest.raises(RuntimeError, match=msg):
                fn()


def test_histc():
    cases = [
        ([1.0, 2.0, 1.0, 4.0], dict(bins=4, min=0, max=3)),
        ([1.0, 2.0, 1.0, 4.0], dict(bins=4)),
        ([1.0, 1.0], dict(bins=4)),
        ([], dict(bins=3)),
        ([0.1, 0.5, 0.99, 1.0, -3.0, 0.0], dict(bins=5, min=0, max=1)),
    ]
    for data, kw in cases:
        (e, t) = _pair(data)
        _same(ember.histc(e, **kw), torch.histc(t, **kw))
    edges = np.linspace(0, 1, 11).astype(np.float32)  # values on the bin edges land as in torch
    _same(
        ember.histc(ember.tensor(edges), bins=10, min=0, max=1), torch.histc(torch.tensor(edges), bins=10, min=0, max=1)
    )
    x = np.random.default_rng(1).standard_normal(1000)
    _same(
        ember.histc(ember.tensor(x), bins=17, min=-2, max=2.5), torch.histc(torch.tensor(x), bins=17, min=-2, max=2.5)
    )
    for lib in (ember, torch):
        with pytest.raises(NotImplementedError):
            lib.histc(lib.tensor([1, 2]), bins=4)
        with pytest.raises(RuntimeError, match="bins must be > 0"):
            lib.histc(lib.tensor([1.0, 2.0]), bins=-1)
        with pytest.raises(RuntimeError, match="max must be larger than min"):
            lib.histc(lib.tensor([1.0, 2.0]), bins=3, min=3, max=1)
        with pytest.raises(RuntimeError, match="not finite"):
            lib.histc(lib.tensor([1.0, float("inf")]), bins=3)


def test_tensordot():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.standard_normal((3, 4, 5)).astype(np.float32)
    for dims in (2, ([1, 2], [0, 1]), ([-1], [1]), [[2, 1], [1, 0]]):
        _grads_match(lambda L, x, y, dims=dims: L.tensordot(x, y, dims=dims), a, b)
    _grads_match(lambda L, x, y: L.tensordot(x, y, dims=0), a[0, 0], b[0, 0])
    _same(
        ember.tensordot(ember.tensor(a), ember.tensor(b), dims=ember.tensor([[1, 2], [0, 1]])),
        torch.tensordot(torch.tensor(a), torch.tensor(b), dims=torch.tensor([[1, 2], [0, 1]])),
    )
    for lib in (ember, torch):
        with pytest.raises(RuntimeError, match="contracted dimensions need to match"):
            lib.tensordot(lib.ones(2, 3), lib.ones(4, 5), dims=1)
        with pytest.raises(RuntimeError, match="dims >= 0"):
            lib.tensordot(lib.ones(2, 3), lib.ones(3, 5), dims=-1)
        with pytest.raises(RuntimeError, match="same dtype"):
            lib.tensordot(lib.ones(2, 3), lib.ones(3, 5).long(), dims=1)
        with pytest.raises(RuntimeError, match="same length"):
            lib.tensordot(lib.ones(2, 3), lib.ones(3, 5), dims=([1], [0, 1]))


def test_kron():
    rng = np.random.default_rng(3)
    for sa, sb in (((2, 2), (3,)), ((2, 1, 2), (2, 3)), ((3,), (2,)), ((2, 3), (4, 1))):
        a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
        _grads_match(lambda L, x, y: L.kron(x, y), a, b)
    _same(ember.kron(ember.tensor([1, 2]), ember.tensor([1.5])), torch.kron(torch.tensor([1, 2]), torch.tensor([1.5])))


def test_block_diag():
    rng = np.random.default_rng(4)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((2, 2), (3,), (1, 3)))
    _grads_match(lambda L, x, y, z: L.block_diag(x, y, z, L.ones(0, 2), L.tensor(7.0)), a, b, c)
    for args in (([1, 2],), ([[1, 2]], [3.5])):
        _same(ember.block_diag(*map(ember.tensor, args)), torch.block_diag(*map(torch.tensor, args)))
    _same(ember.block_diag(ember.ones(2, 0), ember.ones(1, 1)), torch.block_diag(torch.ones(2, 0), torch.ones(1, 1)))
    _same(ember.block_diag(), torch.block_diag())
    for lib in (ember, torch):
        with pytest.raises(RuntimeError, match="2 or fewer dimensions"):
            lib.block_diag(lib.ones(2, 2, 2))


def test_cartesian_prod_and_combinations():
    a, b = np.arange(3.0, dtype=np.float32), np.array([5.0, 6.0], np.float32)
    _grads_match(lambda L, x, y: L.cartesian_prod(x, y, x), a, b)
    _grads_match(lambda L, x: L.cartesian_prod(x), a)
    _same(ember.combinations(ember.tensor(a), r=0), torch.combinations(torch.tensor(a), r=0))
    for r in (1, 2, 3, 4):
        for rep in (False, True):
            _grads_match(lambda L, x, r=r, rep=rep: L.combinations(x, r=r, with_replacement=rep) * 1.0, a)
    _same(ember.combinations(ember.arange(4)), torch.combinations(torch.arange(4)))
    for lib in (ember, torch):
        with pytest.raises(RuntimeError, match="1D vector"):
            lib.combinations(lib.ones(3, 1))
        with pytest.raises(RuntimeError, match="non-negative"):
            lib.combinations(lib.ones(3), r=-1)
        with pytest.raises(RuntimeError, match="1D vector"):
            lib.cartesian_prod(lib.ones(3, 1))


def test_factories_accept_size_keyword():
    for lib in (ember, torch):
        for name in ("zeros", "ones", "empty", "rand", "randn"):
            fn = getattr(lib, name)
            assert tuple(fn(size=(2, 3)).shape) == (2, 3)
            assert tuple(fn(size=[4]).shape) == (4,)
            assert fn(size=(2,), dtype=lib.float64).dtype == lib.float64
            with pytest.raises(TypeError):
                fn(2, size=(3,))
            with pytest.raises(TypeError):
                fn(size=3)
        assert lib.full(size=(2,), fill_value=3).dtype == lib.int64
        assert tuple(lib.randint(0, 5, size=(3,)).shape) == (3,)
        assert tuple(lib.randint(high=5, size=(3, 1)).shape) == (3, 1)
        assert lib.randint(low=2, high=3, size=(4,)).tolist() == [2, 2, 2, 2]
