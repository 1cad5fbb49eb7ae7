"""The fast paths for small ops (issue 8's dispatch overhead) give PyTorch's results.

Each fast path sits beside a general one: ``max(dim)`` as one primitive, the one-int / one-slice
``getitem``, ``transpose``/``t`` without ``permute``'s checks, 2-D ``matmul`` through ``np.dot``,
``sigmoid`` in float64 for float32, ``relu`` with a 0-d zero, the 0-d ``expand`` of a full sum's
gradient, ``view`` without ``reshape(copy=False)``, the backward engine's merged leaf release, and
the one-pass in-place kernels of the for-loop optimizers. PyTorch is the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import check, rand


@pytest.mark.parametrize("which", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False), (-2, True)])
def test_max_min_dim_values_indices_and_grad(which, dim, keepdim):
    x = rand(3, 4)
    x[1, 2] = x[1, 0]  # a tie: the first index wins, and only it gets the gradient
    check(lambda lib, t: getattr(t, which)(dim, keepdim=keepdim)[0] * 1.5, x)
    e = getattr(ember.tensor(x), which)(dim, keepdim=keepdim)
    t = getattr(torch.tensor(x), which)(dim, keepdim=keepdim)
    assert e.indices.tolist() == t.indices.tolist() and e.indices.dtype == ember.int64


def test_max_dim_nan_int_bool_and_names():
    x = np.array([[1.0, np.nan, 2.0], [5.0, 0.0, 5.0]], np.float32)
    e, t = ember.tensor(x).max(1), torch.tensor(x).max(1)
    np.testing.assert_array_equal(e.values.numpy(), t.values.numpy())
    assert e.indices.tolist() == t.indices.tolist()
    for arr in (np.array([[3, 1], [2, 7]]), np.array([[True, False], [False, False]])):
        e, t = ember.tensor(arr).min(0), torch.tensor(arr).min(0)
        assert e.values.tolist() == t.values.tolist() and e.indices.tolist() == t.indices.tolist()
    w = ember.ones(2, 3, requires_grad=True)
    assert w.max(1).values.grad_fn.name() == "MaxBackward0"
    assert w.min(1).values.grad_fn.name() == "MinBackward0"
    with pytest.raises(IndexError, match="max"):
        ember.ones(2, 0).max(1)


def test_max_dim_second_order_and_forward_ad():
    x = ember.tensor(rand(3, 4), requires_grad=True)
    (g,) = ember.autograd.grad((x.max(1).values ** 2).sum(), x, create_graph=True)
    xt = torch.tensor(x.detach().numpy(), requires_grad=True)
    (gt,) = torch.autograd.grad((xt.max(1).values ** 2).sum(), xt, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), gt.detach().numpy(), rtol=1e-6)
    g.sum().backward()
    gt.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("key", [1, -4, 0, slice(1, 3), slice(None, -1), slice(2, None), slice(-3, -1)])
def test_getitem_fast_keys_are_views_with_grads(key):
    check(lambda lib, t: t[key] * 2.0, rand(4, 3))
    x = ember.arange(12.0).reshape(4, 3)
    v = x[key]
    v.add_(100.0)  # a view: the write shows in the base
    ref = torch.arange(12.0).reshape(4, 3)
    ref[key].add_(100.0)
    np.testing.assert_array_equal(x.numpy(), ref.numpy())


def test_getitem_fast_path_errors_as_pytorch():
    x = ember.ones(4, 3)
    with pytest.raises(IndexError, match="out of bounds"):
        x[4]
    with pytest.raises(IndexError):
        ember.tensor(1.0)[0]
    with pytest.raises(IndexError):
        ember.tensor(1.0)[0:1]
    assert x[True].shape == torch.ones(4, 3)[True].shape  # a bool is no int here


@pytest.mark.parametrize("shape,dims", [((3, 4), (0, 1)), ((2, 3, 4), (-1, 0)), ((2, 3), (1, 1))])
def test_transpose_and_t(shape, dims):
    check(lambda lib, t: t.transpose(*dims) * 1.0, rand(*shape))
    if len(shape) == 2:
        check(lambda lib, t: t.t() * 1.0, rand(*shape))
    for n in (0, 1):
        check(lambda lib, t: t.t() * 1.0, rand(*(3,) * n))
    with pytest.raises(RuntimeError, match="t\\(\\) expects"):
        ember.ones(2, 2, 2).t()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_2d_fast_path(dtype):
    check(lambda lib, a, b: a @ b, rand(4, 5, dtype=dtype), rand(5, 3, dtype=dtype))
    check(lambda lib, a, b: a.t() @ b, rand(5, 4, dtype=dtype), rand(5, 3, dtype=dtype))  # non-contiguous
    with pytest.raises(RuntimeError, match="cannot be multiplied|shapes"):
        ember.ones(2, 3) @ ember.ones(2, 3)


def test_sigmoid_float32_special_values_and_accuracy():
    x = np.array([-np.inf, -1000, -104, -100, -88.8, -20, -1, -1e-8, 0, 1e-8, 1, 20, 100, np.inf, np.nan], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no warning on the way
        got = ember.tensor(x).sigmoid().numpy()
    with np.errstate(over="ignore"):  # exp(inf) in the reference: 1 / (1 + inf) is the exact 0
        exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(got, exact.astype(np.float32), rtol=2e-7, atol=0)
    assert got[0] == 0 and got[-2] == 1 and np.isnan(got[-1])
    big = rand(1000, low=-30, high=30)
    check(lambda lib, t: t.sigmoid(), big, rtol=1e-6)
    check(lambda lib, t: t.sigmoid(), rand(50, dtype=np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32, np.float16])
def test_relu_dtypes(dtype):
    x = (rand(20) * 3).astype(dtype)
    e, t = ember.tensor(x).relu(), torch.tensor(x).relu()
    assert str(e.dtype).split(".")[1] == str(t.dtype).split(".")[1]
    np.testing.assert_array_equal(e.numpy(), t.numpy())
    with pytest.raises(RuntimeError, match="Boolean inputs not supported for relu"):
        ember.tensor([True]).relu()


def test_relu_nan():
    assert np.isnan(ember.tensor([np.nan, -1.0]).relu().numpy()[0])


def test_expand_of_0d_is_a_read_only_view():
    g = ember.tensor(2.5)
    e = g.expand(3, 4)
    assert e.shape == (3, 4) and e.stride() == (0, 0)
    assert (e.numpy() == 2.5).all()
    assert np.shares_memory(e.numpy(), g.numpy())
    with pytest.raises(RuntimeError):
        e.add_(1.0)  # more than one element refers to one memory location, as in PyTorch
    check(lambda lib, t: t.sum(), rand(3, 4))
    check(lambda lib, t: t.mean(), rand(2, 5))


def test_view_refuses_incompatible_strides():
    x = ember.arange(12.0).reshape(3, 4)
    assert x.t().reshape(12).shape == (12,)  # reshape copies
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        x.t().view(12)
    assert x[:, :2].view(3, 2, 1).shape == (3, 2, 1)
    v = x.view(4, 3)
    v.add_(1.0)
    assert x[0, 0].item() == 1.0


def test_mean_no_grad_scales_a_fresh_array():
    x = ember.tensor(rand(3, 4))
    before = x.numpy().copy()
    np.testing.assert_allclose(x.mean().numpy(), torch.tensor(before).mean().numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.mean(1).numpy(), torch.tensor(before).mean(1).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(x.numpy(), before)


def test_leaves_never_share_a_grad_array():
    # a + b sends one gradient object to both leaves; accumulating into one must not change the other
    a, b = ember.randn(3, requires_grad=True), ember.randn(3, requires_grad=True)
    seed = ember.ones(3)
    (a + b).backward(seed)
    (a * 2 + b).backward(ember.ones(3))
    assert a.grad.tolist() == [3.0] * 3 and b.grad.tolist() == [2.0] * 3
    assert seed.tolist() == [1.0] * 3  # the caller's gradient is copied, not adopted
    x = ember.randn(3, requires_grad=True)
    x.backward(seed)
    x.grad.add_(1.0)
    assert seed.tolist() == [1.0] * 3


@pytest.mark.parametrize("n", [100, 5000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inplace_addcmul_addcdiv_lerp_match_pytorch_bits(n, dtype):
    # 5000 elements take the one-pass C kernels (where compiled): bit-equal to PyTorch's FMA kernels
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dtype=getattr(torch, dtype), generator=gen)
    a, b = torch.randn(n, dtype=x.dtype, generator=gen), torch.rand(n, dtype=x.dtype, generator=gen) + 0.5
    ex, ea, eb = (ember.tensor(t.numpy()) for t in (x, a, b))
    from ember.backends.ckernels import optim as ck_optim

    exact = n > 1000 and dtype == "float32" and ck_optim.available()
    if exact:
        cmp = np.testing.assert_array_equal
    else:  # NumPy's unfused arithmetic: within rounding
        cmp = lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)  # noqa: E731
    for op, kw in (("addcmul_", {"value": -0.3}), ("addcdiv_", {"value": 0.7}), ("addcmul_", {})):
        cmp(getattr(ex.clone(), op)(ea, eb, **kw).numpy(), getattr(x.clone(), op)(a, b, **kw).numpy())
    for w in (0.1, 0.7, -0.6, 0.0, 1.0):
        cmp(ex.clone().lerp_(ea, w).numpy(), x.clone().lerp_(a, w).numpy())
    # an operand that is the written tensor itself
    y, yt = ex.clone(), x.clone()
    cmp(y.addcmul_(y, y, value=0.5).numpy(), yt.addcmul_(yt, yt, value=0.5).numpy())


def test_inplace_kernels_decline_what_they_cannot_do():
    from ember.backends.ckernels import optim as ck_optim

    x = np.zeros(8192, np.float32)
    ones = np.ones(8192, np.float32)
    assert not ck_optim.addc_inplace(x[1:], x[:-1], ones[1:], 1.0, False)  # overlapping operand
    assert not ck_optim.addc_inplace(x, ones.astype(np.float64), ones, 1.0, False)  # mixed dtypes
    assert not ck_optim.addc_inplace(x[::2], ones[::2], ones[::2], 1.0, False)  # strided
    assert not ck_optim.lerp_inplace(x[:100], ones[:100], 0.5)  # small: NumPy's three passes cost less
    if ck_optim.available():
        assert ck_optim.addc_inplace(x, ones, ones, 2.0, False) and (x == 2).all()
        assert ck_optim.lerp_inplace(x, ones, 0.25) and np.allclose(x, 1.75)
