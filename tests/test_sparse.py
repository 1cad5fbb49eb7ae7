"""Sparse COO tensors against PyTorch: construction, coalesce, to_dense/to_sparse, products, sums, grads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

IDX = np.array([[0, 1, 1, 0, 2], [2, 0, 2, 2, 1]])
VALS = np.array([3.0, 4.0, 5.0, 6.0, -1.0], np.float32)
SHAPE = (3, 3)


def _both(idx=IDX, vals=VALS, shape=SHAPE, grad=True):
    ev = ember.tensor(vals, requires_grad=grad)
    tv = torch.tensor(vals, requires_grad=grad)
    es = ember.sparse_coo_tensor(ember.tensor(idx), ev, shape)
    ts = torch.sparse_coo_tensor(torch.tensor(idx), tv, shape)
    return (ev, es), (tv, ts)


def test_construction_and_attributes():
    (_, es), (_, ts) = _both(grad=False)
    assert es.is_sparse and not ember.ones(2).is_sparse
    assert es.layout is ember.sparse_coo and ember.ones(2).layout is ember.strided
    assert repr(ember.sparse_coo) == "ember.sparse_coo"
    assert isinstance(es, ember.Tensor)
    assert tuple(es.shape) == tuple(ts.shape) and es.dtype == ember.float32 and es.dim() == 2
    assert es.sparse_dim() == ts.sparse_dim() and es.dense_dim() == ts.dense_dim() and es._nnz() == ts._nnz()
    assert es.is_coalesced() == ts.is_coalesced() is False
    assert_close(es._indices(), ts._indices())
    assert_close(es._values(), ts._values())
    with pytest.raises(RuntimeError, match="uncoalesced"):
        es.indices()
    with pytest.raises(RuntimeError, match="uncoalesced"):
        es.values()
    inferred = ember.sparse_coo_tensor(IDX, VALS)
    assert tuple(inferred.shape) == tuple(torch.sparse_coo_tensor(torch.tensor(IDX), torch.tensor(VALS)).shape)
    assert "layout=ember.sparse_coo" in repr(es) and "nnz=5" in repr(es)


def test_coalesce_and_to_dense_with_grads():
    (ev, es), (tv, ts) = _both()
    ec, tc = es.coalesce(), ts.coalesce()
    assert ec.is_coalesced() and tc.is_coalesced()
    assert_close(ec.indices(), tc.indices())
    assert_close(ec.values(), tc.values())
    g = np.arange(9, dtype=np.float32).reshape(3, 3)
    (ec.to_dense() * ember.tensor(g)).sum().backward()
    (tc.to_dense() * torch.tensor(g)).sum().backward()
    assert_close(ev.grad, tv.grad)
    (ev2, es2), (tv2, ts2) = _both()
    assert_close(es2.to_dense(), ts2.to_dense())
    es2.to_dense().pow(2).sum().backward()
    ts2.to_dense().pow(2).sum().backward()
    assert_close(ev2.grad, tv2.grad)


def test_hybrid_to_dense_and_to_sparse():
    vals = np.arange(10, dtype=np.float32).reshape(5, 2)
    es = ember.sparse_coo_tensor(IDX, vals, (3, 3, 2))
    ts = torch.sparse_coo_tensor(torch.tensor(IDX), torch.tensor(vals), (3, 3, 2))
    assert_close(es.to_dense(), ts.to_dense())
    x = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -3.0]], np.float32)
    ex, tx = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    e_sp, t_sp = ex.to_sparse(), tx.to_sparse()
    assert e_sp.is_coalesced() and t_sp.is_coalesced()
    assert_close(e_sp.indices(), t_sp.indices())
    assert_close(e_sp.values(), t_sp.values())
    e_sp.values().sum().backward()
    t_sp.values().sum().backward()
    assert_close(ex.grad, tx.grad)
    x3 = np.zeros((3, 2, 2), np.float32)
    x3[1, 0, 1] = 4.0
    e3, t3 = ember.tensor(x3).to_sparse(1), torch.tensor(x3).to_sparse(1)
    assert_close(e3.indices(), t3.indices())
    assert_close(e3.values(), t3.values())
    assert ember.ones(2).to_dense().layout is ember.strided


@pytest.mark.parametrize("fn", ["sparse.mm", "spmm", "mm", "matmul", "@", "method"])
def test_sparse_dense_product_grads(fn):
    (ev, es), (tv, ts) = _both()
    d = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    ed, td = ember.tensor(d, requires_grad=True), torch.tensor(d, requires_grad=True)
    ops = {
        "sparse.mm": lambda lib, s, x: lib.sparse.mm(s, x),
        "spmm": lambda lib, s, x: lib.spmm(s, x) if lib is ember else torch.sparse.mm(s, x),
        "mm": lambda lib, s, x: lib.mm(s, x),
        "matmul": lambda lib, s, x: lib.matmul(s, x),
        "@": lambda lib, s, x: s @ x,
        "method": lambda lib, s, x: s.mm(x),
    }
    eo, to = ops[fn](ember, es, ed), ops[fn](torch, ts, td)
    assert not eo.is_sparse
    assert_close(eo, to)
    g = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    eo.backward(ember.tensor(g))
    to.backward(torch.tensor(g))
    assert_close(ev.grad, tv.grad, what="grad of values")
    assert_close(ed.grad, td.grad, what="grad of dense")


def test_vector_dense_left_and_double_backward():
    (ev, es), (tv, ts) = _both()
    vec = np.array([1.0, -2.0, 0.5], np.float32)
    assert_close(es @ ember.tensor(vec), ts @ torch.tensor(vec))
    dense = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    assert_close(ember.tensor(dense) @ es, torch.tensor(dense) @ ts.to_dense())
    # Second order: d/d(dense) of |grad of values|^2 goes through the SparseMM gradient rule.
    # torch.sparse.mm's values gradient is not differentiable; the oracle is the dense product.
    ed, td = ember.tensor(dense.T.copy(), requires_grad=True), torch.tensor(dense.T.copy(), requires_grad=True)
    (gve,) = ember.autograd.grad((es @ ed).pow(2).sum(), ev, create_graph=True)
    lin = torch.tensor(IDX[0] * 3 + IDX[1])
    dense_a = torch.zeros(9).index_add(0, lin, tv).view(3, 3)
    (gvt,) = torch.autograd.grad((dense_a @ td).pow(2).sum(), tv, create_graph=True)
    assert_close(gve, gvt)
    gve.pow(2).sum().backward()
    gvt.pow(2).sum().backward()
    assert_close(ed.grad, td.grad, rtol=1e-4, atol=1e-4)


def test_sparse_sum_matches_torch():
    for dim in [None, 0, 1, (0, 1)]:
        (ev, es), (tv, ts) = _both()
        eo = ember.sparse.sum(es) if dim is None else ember.sparse.sum(es, dim)
        to = torch.sparse.sum(ts) if dim is None else torch.sparse.sum(ts, dim)
        assert eo.is_sparse == to.is_sparse
        if to.is_sparse:
            assert_close(eo.indices(), to.coalesce().indices())
            eo, to = eo.to_dense(), to.to_dense()
        assert_close(eo, to)
        (eo * ember.arange(1, eo.numel() + 1).reshape(eo.shape)).sum().backward()
        (to * torch.arange(1, to.numel() + 1).reshape(to.shape)).sum().backward()
        assert_close(ev.grad, tv.grad)


def test_leaf_sparse_requires_grad_and_scalar_ops():
    es = ember.sparse_coo_tensor(IDX, VALS, SHAPE, requires_grad=True)
    assert es.requires_grad and es.is_leaf
    d = np.ones((3, 2), np.float32)
    ember.sparse.mm(es, ember.tensor(d)).sum().backward()
    ts = torch.sparse_coo_tensor(torch.tensor(IDX), torch.tensor(VALS), SHAPE, requires_grad=True)
    torch.sparse.mm(ts, torch.tensor(d)).sum().backward()
    assert es.grad.is_sparse
    assert_close(es.grad.to_dense(), ts.grad.to_dense())
    assert_close((es * 2.0).to_dense(), (ts * 2.0).to_dense())
    assert_close((es / 4).to_dense(), (ts / 4).to_dense())
    assert_close(es.t().to_dense(), ts.t().to_dense())


def test_custom_function_with_sparse_like_pygat():
    """pyGAT's SpecialSpmmFunction: builds the sparse matrix in forward, reads _indices() in backward."""

    def make(lib):
        class SpecialSpmm(lib.autograd.Function):
            @staticmethod
            def forward(ctx, indices, values, shape, b):
                a = lib.sparse_coo_tensor(indices, values, shape)
                ctx.save_for_backward(a, b)
                ctx.N = shape[0]
                return lib.matmul(a, b)

            @staticmethod
            def backward(ctx, grad_output):
                a, b = ctx.saved_tensors
                grad_a_dense = grad_output.matmul(b.t())
                edge_idx = a._indices()[0, :] * ctx.N + a._indices()[1, :]
                grad_values = grad_a_dense.view(-1)[edge_idx]
                return None, grad_values, None, grad_output.new_zeros(b.shape) + a.t().matmul(grad_output)

        return SpecialSpmm

    res = []
    for lib in (ember, torch):
        v = lib.tensor(VALS, requires_grad=True)
        b = lib.tensor(np.arange(6, dtype=np.float32).reshape(3, 2), requires_grad=True)
        out = make(lib).apply(lib.tensor(IDX), v, lib.Size([3, 3]) if lib is torch else (3, 3), b)
        out.pow(2).sum().backward()
        res.append((out, v.grad, b.grad))
    for e, t in zip(*res):
        assert_close(e, t)


def test_errors():
    with pytest.raises(RuntimeError, match="same nnz"):
        ember.sparse_coo_tensor(IDX, VALS[:3], SHAPE)
    with pytest.raises(RuntimeError, match="len\\(size\\) == sparse_dim \\+ dense_dim"):
        ember.sparse_coo_tensor(IDX, VALS, (3, 3, 3))
    with pytest.raises(RuntimeError, match="size is inconsistent with indices"):
        ember.sparse_coo_tensor(IDX, VALS, (2, 3))
    with pytest.raises(RuntimeError, match="int64"):
        ember.sparse_coo_tensor(IDX.astype(np.float32), VALS, SHAPE)
    (_, es), (_, ts) = _both(grad=False)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        ember.sparse.mm(es, ember.ones(4, 2))
    with pytest.raises(RuntimeError):
        torch.sparse.mm(ts, torch.ones(4, 2))
    with pytest.raises(RuntimeError, match="float32 but found ember.float64"):
        ember.sparse.mm(es, ember.ones(3, 2, dtype=ember.float64))
    with pytest.raises(RuntimeError, match="add\\(sparse, dense\\) is not supported"):
        es + ember.ones(3, 3)
    with pytest.raises(RuntimeError):
        ts + torch.ones(3, 3)
    with pytest.raises(NotImplementedError, match="sparse COO"):
        es * ember.ones(3, 3)
    with pytest.raises(NotImplementedError, match="sparse COO"):
        es.view(9)
    with pytest.raises(NotImplementedError):
        ts.view(9)


def test_addition_dense_plus_sparse_and_sparse_plus_sparse():
    (ev, es), (tv, ts) = _both()
    base = np.arange(9, dtype=np.float32).reshape(3, 3)
    eo, to = ember.tensor(base) + es, torch.tensor(base) + ts
    assert not eo.is_sparse and not to.is_sparse
    assert_close(eo, to)
    eo.sum().backward()
    to.sum().backward()
    assert_close(ev.grad, tv.grad)
    e2, t2 = es + es, ts + ts
    assert e2.is_sparse and t2.is_sparse
    assert_close(e2.to_dense(), t2.to_dense())
    # The example GCN's int64 adjacency plus float self-loops: promoted to float32 as in torch.
    ei = ember.sparse_coo_tensor(IDX, ember.ones(5), SHAPE, dtype=ember.int64)
    ti = torch.sparse_coo_tensor(torch.tensor(IDX), torch.ones(5), SHAPE, dtype=torch.int64)
    assert_close(ember.eye(3) + ei, torch.eye(3) + ti)


def test_legacy_constructors_and_addmm_like_pygcn():
    # pygcn's sparse_mx_to_torch_sparse_tensor: torch.sparse.FloatTensor(indices, values, shape).
    with pytest.warns(UserWarning, match="is deprecated"):
        e = ember.sparse.FloatTensor(ember.tensor(IDX), ember.tensor(VALS.astype(np.float64)), ember.Size(SHAPE))
    with pytest.warns(UserWarning, match="is deprecated"):
        t = torch.sparse.FloatTensor(torch.tensor(IDX), torch.tensor(VALS), torch.Size(SHAPE))
    assert e.dtype == ember.float32 and e.is_sparse
    assert_close(e.to_dense(), t.to_dense())
    assert tuple(ember.sparse.FloatTensor(2, 3).shape) == (2, 3) and ember.sparse.FloatTensor(2, 3)._nnz() == 0
    mat, d = rand_pair((3, 2)), rand_pair((3, 2))
    eo = ember.sparse.addmm(mat[0], e, d[0], beta=0.5, alpha=2.0)
    to = torch.sparse.addmm(mat[1], t, d[1], beta=0.5, alpha=2.0)
    assert_close(eo, to)


def rand_pair(shape):
    a = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    return ember.tensor(a), torch.tensor(a)
