"""Correctness of the fast paths of fused primitives, against PyTorch.

The whole-sequence LSTM kernels (C step kernels, or gates in one exp call; weight gradients after
the time loop),
the stride-1 "shift and GEMM" convolution kernels (8-32 channels; taken without the C kernels), and the buffered index_add /
scatter_add used when indices do not repeat (with the repeat-handling fallbacks).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import ember
from ember.nn.functional import conv as conv_mod
from tests.helpers import check, rand


def _pair(shape, seed, scale=1.0, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


# --------------------------------------------------------------------------- recurrent sequences
def _copy_rnn(cls, args, kw, dtype):
    torch.manual_seed(0)
    tm = getattr(torch.nn, cls)(*args, **kw)
    em = getattr(ember.nn, cls)(*args, **kw)
    for tp, ep in zip(tm.parameters(), em.parameters()):
        ep.data = ember.tensor(tp.detach().numpy().astype(dtype))
        tp.data = tp.data.to(torch.float64 if dtype == np.float64 else torch.float32)
    return tm, em


@pytest.mark.parametrize("kernels", ["C", "NumPy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cls,kw",
    [
        ("LSTM", {"num_layers": 2, "batch_first": True}),
        ("LSTM", {"bidirectional": True, "bias": False}),
        ("GRU", {"num_layers": 2, "bidirectional": True}),
        ("RNN", {"nonlinearity": "relu", "num_layers": 2}),
    ],
)
def test_sequence_matches_torch(cls, kw, dtype, kernels, request):
    if kernels == "NumPy":
        request.getfixturevalue("no_kernels")
    tm, em = _copy_rnn(cls, (5, 6), kw, dtype)
    shape = (3, 7, 5) if kw.get("batch_first") else (7, 3, 5)
    xa = _pair(shape, 1, dtype=dtype)
    dirs = 2 if kw.get("bidirectional") else 1
    h0 = _pair((kw.get("num_layers", 1) * dirs, 3, 6), 2, dtype=dtype)
    c0 = _pair(h0.shape, 3, dtype=dtype)
    outs = []
    for lib, m in ((ember, em), (torch, tm)):
        x = lib.tensor(xa, requires_grad=True)
        h = lib.tensor(h0, requires_grad=True)
        c = lib.tensor(c0, requires_grad=True)
        out, hn = m(x, (h, c)) if cls == "LSTM" else m(x, h)
        hn = hn if isinstance(hn, tuple) else (hn,)
        loss = (out * out).sum() + sum((t * 3).sum() for t in hn)
        loss.backward()
        grads = [x.grad, h.grad] + ([c.grad] if cls == "LSTM" else []) + [p.grad for p in m.parameters()]
        outs.append([out.detach().numpy()] + [t.detach().numpy() for t in hn] + [g.numpy() for g in grads])
    tol = 1e-4 if dtype == np.float32 else 1e-9
    for e, t in zip(*outs):
        np.testing.assert_allclose(e, t, rtol=tol, atol=tol)


@pytest.mark.parametrize("kernels", ["C", "NumPy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_saturated_gates_no_overflow_warning(kernels, dtype, request):
    # Large pre-activations: exp(-x) overflows to inf, which must give sigmoid 0, not NaN or a warning.
    if kernels == "NumPy":
        request.getfixturevalue("no_kernels")
    tm, em = _copy_rnn("LSTM", (4, 3), {}, dtype)
    xa = _pair((6, 2, 4), 4, scale=500.0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eo = em(ember.tensor(xa))[0].detach().numpy()
    to = tm(torch.tensor(xa))[0].detach().numpy()
    assert np.isfinite(eo).all()
    np.testing.assert_allclose(eo, to, rtol=1e-4, atol=1e-5)


def test_lstm_sequence_double_backward_weights():
    tm, em = _copy_rnn("LSTM", (3, 4), {"num_layers": 2}, np.float64)
    xa = _pair((5, 2, 3), 5, dtype=np.float64)
    res = []
    for lib, m in ((ember, em), (torch, tm)):
        w = m.weight_hh_l0
        g = lib.autograd.grad((m(lib.tensor(xa))[0] ** 2).sum(), w, create_graph=True)[0]
        (g2,) = lib.autograd.grad((g * g).sum(), w)
        res.append((g.detach().numpy(), g2.numpy()))
    for e, t in zip(*res):
        np.testing.assert_allclose(e, t, rtol=1e-7, atol=1e-9)


def test_lstm_output_modified_in_place_is_refused():
    _, em = _copy_rnn("LSTM", (3, 4), {}, np.float32)
    out = em(ember.tensor(_pair((5, 2, 3), 6), requires_grad=True))[0]
    loss = out.sum()
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# --------------------------------------------------------------------------- stride-1 convolutions
SHIFT_CASES = [
    ((2, 8, 14, 15), (8, 8, 3, 3), {"padding": 1}),
    ((2, 12, 16, 16), (16, 12, 3, 3), {"padding": 1, "bias": True}),
    ((1, 8, 20, 18), (10, 8, 3, 2), {"padding": "same", "dilation": (2, 1)}),
    ((2, 16, 24, 26), (8, 16, 5, 5), {"padding": 2}),
    ((2, 8, 20, 20), (8, 8, 3, 3), {"padding": 0}),
]


@pytest.mark.parametrize("xs,ws,kw", SHIFT_CASES)
def test_conv2d_shift_path(xs, ws, kw, no_kernels):
    kw = dict(kw)
    geom_pad = kw.get("padding")
    bias = kw.pop("bias", False)
    dil = kw.get("dilation", 1)
    dil = (dil, dil) if isinstance(dil, int) else dil
    if isinstance(geom_pad, int):
        pads = (geom_pad,) * 4
    else:
        pads = conv_mod._same_padding(ws[2:], dil)
    geom = conv_mod._Geom((1, 1), pads, dil, 1)
    assert conv_mod._input_grad_path(xs, ws, geom, np.float32) == "shift", "case must take the shift path"
    inputs = [rand(*xs), rand(*ws, low=-0.5, high=0.5)] + ([rand(ws[0])] if bias else [])
    check(lambda lib, *a: lib.nn.functional.conv2d(*a, **kw), *inputs, atol=1e-4)


def test_conv2d_shift_double_backward(no_kernels):
    xa, wa = _pair((2, 8, 12, 12), 7, dtype=np.float64), _pair((8, 8, 3, 3), 8, dtype=np.float64)
    geom = conv_mod._Geom((1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert conv_mod._input_grad_path(xa.shape, wa.shape, geom, np.float64) == "shift"
    res = []
    for lib in (ember, torch):
        x, w = lib.tensor(xa, requires_grad=True), lib.tensor(wa, requires_grad=True)
        y = lib.nn.functional.conv2d(x, w, padding=1)
        gx, gw = lib.autograd.grad((y * y).sum(), (x, w), create_graph=True)
        (gx.sum() + (gw * gw).sum()).backward()
        res.append([gx.detach().numpy(), gw.detach().numpy(), x.grad.numpy(), w.grad.numpy()])
    for e, t in zip(*res):
        np.testing.assert_allclose(e, t, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- index_add / scatter_add
INDEX_CASES = {
    "unique": np.array([4, 0, 7, 2]),
    "all rows": np.array([3, 1, 0, 2, 7, 6, 5, 4]),
    "few repeats": np.array([1, 5, 1, 2, 5, 1, 0]),
    "many repeats": np.array([2] * 12 + [0]),
}


@pytest.mark.parametrize("name", list(INDEX_CASES))
@pytest.mark.parametrize("dim", [0, 1])
def test_index_add_paths(name, dim):
    idx = INDEX_CASES[name]
    shape = [8, 8, 3]
    src_shape = list(shape)
    src_shape[dim] = idx.size

    def fn(lib, x, s):
        return x.index_add(dim, lib.tensor(idx), s, alpha=2)

    check(fn, rand(*shape), rand(*src_shape))


@pytest.mark.parametrize("name", list(INDEX_CASES))
def test_index_add_inplace_recorded(name):
    idx = INDEX_CASES[name]

    def fn(lib, y):
        out = lib.zeros(8, 4)
        out.index_add_(0, lib.tensor(idx), y * 3)
        out.index_add_(0, lib.tensor(idx[::-1].copy()), y)
        return out

    check(fn, rand(idx.size, 4))


@pytest.mark.parametrize("name", list(INDEX_CASES))
def test_index_select_backward_repeats(name):
    idx = INDEX_CASES[name]
    check(lambda lib, x: x.index_select(0, lib.tensor(idx)) * 2, rand(8, 5))


@pytest.mark.parametrize(
    "index",
    [
        np.array([[0, 2], [1, 0], [2, 1]]),  # no repeats within a row
        np.array([[0, 0], [1, 2], [2, 2]]),  # repeats
        np.array([[3, 1], [3, 3], [0, 1]]),  # one row repeats, the others do not
    ],
)
def test_scatter_add_and_gather_paths(index):
    check(lambda lib, x, s: x.scatter_add(1, lib.tensor(index), s), rand(3, 4), rand(3, 2))
    check(lambda lib, x: x.gather(1, lib.tensor(index)) * 3, rand(3, 4))
    check(lambda lib, x, s: x.scatter_add(0, lib.tensor(index.T.copy()), s), rand(4, 3), rand(2, 3))
