"""conv1d/conv2d and pooling against PyTorch: values and gradients of input, weight and bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import ember
import ember.nn.functional as F
from tests.helpers import assert_close

RNG = np.random.default_rng(0)


def _pair(a, grad=True):
    return ember.tensor(a, requires_grad=grad), torch.tensor(a, requires_grad=grad)


def _run_both(efn, tfn, arrays):
    ep, tp = zip(*[_pair(a) for a in arrays])
    eo, to = efn(*ep), tfn(*tp)
    assert_close(eo, to)
    g = RNG.standard_normal(tuple(to.shape))
    eo.backward(ember.tensor(g))
    to.backward(torch.tensor(g))
    for i, (e, t) in enumerate(zip(ep, tp)):
        assert_close(e.grad, t.grad, what=f"grad {i}")


CONV2D = [
    ((2, 4, 7, 9), (6, 4, 3, 3), {}),
    ((2, 4, 7, 9), (6, 2, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1), "groups": 2}),
    ((2, 4, 8, 9), (4, 1, 3, 3), {"padding": "same", "dilation": 2, "groups": 4}),
    ((2, 4, 8, 9), (4, 4, 4, 2), {"padding": "same"}),
    ((4, 8, 9), (4, 4, 4, 2), {"padding": "valid", "stride": 3}),
    ((1, 3, 10, 10), (5, 3, 5, 5), {"stride": 2, "padding": 2}),
]


@pytest.mark.parametrize("xs, ws, kw", CONV2D)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d(xs, ws, kw, bias):
    arrays = [RNG.standard_normal(xs), RNG.standard_normal(ws)] + ([RNG.standard_normal(ws[0])] if bias else [])
    _run_both(lambda *a: F.conv2d(*a, **kw), lambda *a: TF.conv2d(*a, **kw), arrays)


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 11), (6, 2, 3), {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}),
        ((2, 4, 11), (6, 4, 4), {"padding": "same"}),
        ((4, 11), (3, 4, 3), {}),
    ],
)
def test_conv1d(xs, ws, kw):
    arrays = [RNG.standard_normal(xs), RNG.standard_normal(ws), RNG.standard_normal(ws[0])]
    _run_both(lambda *a: F.conv1d(*a, **kw), lambda *a: TF.conv1d(*a, **kw), arrays)


def test_conv2d_float32_and_errors():
    x, w = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32), RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    _run_both(lambda a, b: F.conv2d(a, b, padding=1), lambda a, b: TF.conv2d(a, b, padding=1), [x, w])
    with pytest.raises(RuntimeError, match="channels"):
        F.conv2d(ember.zeros(1, 2, 5, 5), ember.zeros(4, 3, 3, 3))
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(ember.zeros(1, 3, 5, 5), ember.zeros(4, 3, 3, 3), stride=2, padding="same")
    with pytest.raises(RuntimeError, match="should be the same"):
        F.conv2d(ember.zeros(1, 3, 5, 5), ember.zeros(4, 3, 3, 3, dtype=ember.float64))


def test_conv2d_double_backward():
    x, w = RNG.standard_normal((1, 2, 5, 5)), RNG.standard_normal((3, 2, 3, 3))
    ex, tx = _pair(x)
    ew, tw = _pair(w)
    eo, to = F.conv2d(ex, ew, stride=2, padding=1), TF.conv2d(tx, tw, stride=2, padding=1)
    egx, egw = ember.autograd.grad((eo**2).sum(), (ex, ew), create_graph=True)
    tgx, tgw = torch.autograd.grad((to**2).sum(), (tx, tw), create_graph=True)
    ((egx**2).sum() + (egw * egw).sum()).backward()
    ((tgx**2).sum() + (tgw * tgw).sum()).backward()
    assert_close(ex.grad, tx.grad)
    assert_close(ew.grad, tw.grad)


def test_conv_modules_state_dict():
    for tcls, ecls, shape in [
        (torch.nn.Conv2d, ember.nn.Conv2d, (2, 4, 8, 8)),
        (torch.nn.Conv1d, ember.nn.Conv1d, (2, 4, 9)),
    ]:
        tm = tcls(4, 6, 3, stride=1, padding="same", groups=2).double()
        em = ecls(4, 6, 3, stride=1, padding="same", groups=2).double()
        assert list(em.state_dict()) == list(tm.state_dict())
        assert em.weight.shape == tm.weight.shape
        bound = 1 / np.sqrt(2 * 3 ** (len(shape) - 2))
        assert np.abs(em.weight.detach().numpy()).max() <= bound
        em.load_state_dict({k: ember.tensor(v.numpy()) for k, v in tm.state_dict().items()})
        x = RNG.standard_normal(shape)
        assert_close(em(ember.tensor(x)), tm(torch.tensor(x)).detach())


POOLS = [
    ("max_pool2d", (2, 3, 7, 9), (3, 2, 1), {"ceil_mode": True}),
    ("max_pool2d", (2, 3, 8, 8), (2,), {}),
    ("max_pool2d", (3, 8, 9), ((3, 2), (2, 1), (1, 1)), {"dilation": (1, 2)}),
    ("avg_pool2d", (2, 3, 7, 9), (3, 2, 1), {"ceil_mode": True}),
    ("avg_pool2d", (2, 3, 7, 9), (3, 2, 1), {"ceil_mode": True, "count_include_pad": False}),
    ("avg_pool2d", (2, 3, 7, 9), ((3, 2), (2, 3), (1, 1)), {"divisor_override": 5}),
    ("avg_pool2d", (2, 3, 8, 8), (2,), {}),
    ("adaptive_avg_pool2d", (2, 3, 7, 9), ((3, 4),), {}),
    ("adaptive_avg_pool2d", (2, 3, 7, 9), (1,), {}),
    ("adaptive_avg_pool2d", (3, 7, 9), ((None, 4),), {}),
    ("adaptive_max_pool2d", (2, 3, 7, 9), ((3, 4),), {}),
    ("max_pool1d", (2, 3, 11), (3, 2, 1), {"ceil_mode": True}),
    ("avg_pool1d", (2, 3, 11), (3, 2, 1), {"ceil_mode": True, "count_include_pad": False}),
    ("adaptive_avg_pool1d", (2, 3, 11), (4,), {}),
]


@pytest.mark.parametrize("name, shape, args, kw", POOLS)
def test_pool(name, shape, args, kw):
    x = RNG.standard_normal(shape)
    _run_both(lambda a: getattr(F, name)(a, *args, **kw), lambda a: getattr(TF, name)(a, *args, **kw), [x])


def test_max_pool_indices_and_ties():
    x = RNG.standard_normal((2, 3, 7, 9))
    eo, ei = F.max_pool2d(ember.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    to, ti = TF.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    assert_close(eo, to)
    assert_close(ei, ti)
    ex, tx = ember.ones(1, 1, 4, 4, requires_grad=True), torch.ones(1, 1, 4, 4, requires_grad=True)
    F.max_pool2d(ex, 3, 1).sum().backward()
    TF.max_pool2d(tx, 3, 1).sum().backward()
    assert_close(ex.grad, tx.grad)


def test_pool_double_backward():
    x = RNG.standard_normal((1, 2, 6, 6))
    for name, kw in [("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1}), ("avg_pool2d", {"kernel_size": 2})]:
        ex, tx = _pair(x)
        eg = ember.autograd.grad((getattr(F, name)(ex, **kw) ** 3).sum(), ex, create_graph=True)[0]
        tg = torch.autograd.grad((getattr(TF, name)(tx, **kw) ** 3).sum(), tx, create_graph=True)[0]
        (eg * eg).sum().backward()
        (tg * tg).sum().backward()
        assert_close(ex.grad, tx.grad)


def test_pool_modules():
    x = RNG.standard_normal((2, 3, 9, 9))
    pairs = [
        (ember.nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
        (ember.nn.AvgPool2d(3, 2, 1, count_include_pad=False), torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
        (ember.nn.AdaptiveAvgPool2d((2, 3)), torch.nn.AdaptiveAvgPool2d((2, 3))),
    ]
    for em, tm in pairs:
        assert_close(em(ember.tensor(x)), tm(torch.tensor(x)))
