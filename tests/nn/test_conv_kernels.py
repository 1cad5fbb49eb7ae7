"""The direct C convolution kernels (ember/backends/ckernels/conv.c) against PyTorch and against
the NumPy paths (im2col, shift-and-GEMM): forward, input, weight and bias gradients, double
backward, threads, and the shapes where their packing has edge cases (channel counts that are
not a multiple of the vector block, strides, dilations, asymmetric and oversized padding).
Then the max-pooling kernels, with ties and NaN."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ember
from ember._threads import _state as threads
from ember.backends.ckernels import ops as ckops
from ember.nn.functional import conv as conv_mod
from tests.helpers import check

# These test the kernels themselves; EMBER_CKERNELS=0 (the NumPy paths, which the rest of the
# suite covers) turns them off.
pytestmark = pytest.mark.skipif(os.environ.get("EMBER_CKERNELS") == "0", reason="C kernels disabled")

RNG = np.random.default_rng(3)

# (input shape, weight shape, conv2d keyword arguments)
CASES = [
    ((2, 16, 12, 12), (16, 16, 3, 3), {"padding": 1}),  # the benchmark's layer, small
    ((2, 3, 9, 11), (5, 3, 3, 3), {"padding": 1}),  # channels below one block
    ((2, 17, 7, 6), (33, 17, 2, 2), {"stride": 2, "padding": 1}),  # one past a block, both sides
    ((2, 16, 9, 9), (32, 16, 3, 3), {"stride": 2, "padding": 1}),  # ResNet downsampling
    ((2, 16, 9, 10), (32, 16, 1, 1), {"stride": 2}),  # ResNet shortcut: subsampled 1x1
    ((1, 5, 12, 13), (7, 5, 3, 2), {"padding": 2, "dilation": 2}),
    ((2, 4, 12, 13), (6, 4, 5, 5), {"stride": 3, "padding": 2}),
    ((2, 3, 11, 10), (4, 3, 3, 3), {"stride": (2, 3), "padding": (0, 1), "dilation": (2, 1)}),
    ((1, 2, 9, 9), (3, 2, 1, 1), {"stride": 2, "padding": 1}),  # a stride phase that no tap reaches
    ((1, 2, 9, 9), (3, 2, 2, 2), {"stride": 4}),  # stride wider than the kernel: pixels with no gradient
    ((1, 2, 4, 4), (1, 2, 3, 3), {"padding": 3}),  # padding wider than the kernel reaches
    ((2, 6, 8, 9), (4, 6, 4, 2), {"padding": "same"}),  # asymmetric padding
    ((2, 6, 7, 7), (8, 6, 3, 3), {"padding": (0, 2)}),
    ((6, 10, 11), (9, 6, 3, 3), {"padding": 1}),  # unbatched
    ((2, 1, 10, 10), (40, 1, 3, 3), {"padding": 1}),  # a stem: one input channel, many outputs
]


@pytest.mark.parametrize("xs, ws, kw", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_conv_matches_torch(xs, ws, kw, dtype):
    # The direct kernels here (test_direct_path_is_taken checks that); the NumPy paths under
    # EMBER_CKERNELS=0.
    x, w, b = (RNG.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    check(
        lambda lib, x, w, b: lib.nn.functional.conv2d(x, w, b, **kw),
        x,
        w,
        b,
        atol=1e-4 if dtype == np.float32 else None,
    )
    check(lambda lib, x, w: lib.nn.functional.conv2d(x, w, **kw), x, w, atol=1e-4 if dtype == np.float32 else None)


def test_direct_path_is_taken():
    geom = conv_mod._Geom((1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert conv_mod._input_grad_path((32, 16, 28, 28), (16, 16, 3, 3), geom, np.float32, ckops) == "direct"
    strided = conv_mod._Geom((2, 2), (1, 1, 1, 1), (1, 1), 1)  # input gradient by stride phases
    assert conv_mod._input_grad_path((32, 16, 28, 28), (32, 16, 3, 3), strided, np.float32, ckops) == "direct"
    grouped = conv_mod._Geom((1, 1), (1, 1, 1, 1), (1, 1), 2)
    assert conv_mod._input_grad_path((2, 16, 8, 8), (16, 8, 3, 3), grouped, np.float32, ckops) != "direct"


def _grads(x, w, b, kw):
    xt, wt, bt = (ember.tensor(a, requires_grad=True) for a in (x, w, b))
    y = ember.nn.functional.conv2d(xt, wt, bt, **kw)
    y.backward(ember.tensor(np.cos(np.arange(y.numel())).reshape(y.shape).astype(x.dtype)))
    return [y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()]


@pytest.mark.parametrize("xs, ws, kw", CASES[:6])
def test_direct_agrees_with_numpy_paths(xs, ws, kw, no_kernels, monkeypatch):
    x, w, b = RNG.standard_normal(xs), RNG.standard_normal(ws), RNG.standard_normal(ws[0])
    numpy_path = _grads(x, w, b, kw)
    monkeypatch.undo()  # the C kernels again
    ember.backends.ckernels.reset()
    ckops._fns.clear()
    assert ckops.has_conv(np.float64)
    for c, n in zip(_grads(x, w, b, kw), numpy_path, strict=True):
        np.testing.assert_allclose(c, n, rtol=1e-10, atol=1e-10)


def test_direct_double_backward():
    # Conv2dInputGrad / Conv2dWeightGrad run on the C kernels too: second derivatives against torch.
    x, w = RNG.standard_normal((2, 5, 7, 8)), RNG.standard_normal((6, 5, 3, 3))

    def gradgrad(lib, x, w):
        y = lib.nn.functional.conv2d(x, w, padding=1, stride=1)
        gx, gw = lib.autograd.grad((y * y).sum(), (x, w), create_graph=True)
        return (gx * gx).sum() + (gw.sin()).sum()

    check(gradgrad, x, w)


def test_direct_gradgradcheck():
    x = ember.tensor(RNG.standard_normal((1, 3, 5, 5)), requires_grad=True)
    w = ember.tensor(RNG.standard_normal((4, 3, 3, 3)), requires_grad=True)
    fn = lambda x, w: ember.nn.functional.conv2d(x, w, padding=1, dilation=(1, 2))  # noqa: E731
    assert ember.autograd.gradcheck(fn, (x, w))
    assert ember.autograd.gradgradcheck(fn, (x, w))


def test_noncontiguous_and_views():
    base = RNG.standard_normal((2, 10, 9, 16)).astype(np.float32)
    check(
        lambda lib, x, w: lib.nn.functional.conv2d(x.permute(0, 3, 1, 2)[:, ::2], w, padding=1),
        base,
        RNG.standard_normal((4, 8, 3, 3)).astype(np.float32),
        atol=1e-4,
    )


def test_openmp_threads_give_same_result(kernel_state):
    x = RNG.standard_normal((8, 16, 20, 20)).astype(np.float32)
    w = RNG.standard_normal((24, 16, 3, 3)).astype(np.float32)
    geom = ((1, 1), (1, 1, 1, 1), (1, 1))
    old = threads["n"]
    try:
        results = []
        for n in (1, 2):
            ember.set_num_threads(n)
            y = ckops.conv2d(x, w, None, geom)
            g = np.cos(y)
            results.append(
                [y, ckops.conv2d_input_grad(g, w, x.shape, geom), ckops.conv2d_weight_grad(x, g, w.shape, geom)]
            )
    finally:
        threads["n"] = old
    (y1, gx1, gw1), (y2, gx2, gw2) = results
    np.testing.assert_array_equal(y1, y2)  # pixels are independent: bitwise equal
    np.testing.assert_array_equal(gx1, gx2)
    np.testing.assert_allclose(gw1, gw2, rtol=1e-4, atol=1e-3)  # partial sums regrouped
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.nn.functional.conv2d(tx, tw, padding=1).backward(torch.tensor(np.cos(y1)))
    np.testing.assert_allclose(gw2, tw.grad.numpy(), rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- max pooling
POOLS = [
    ((2, 3, 8, 9), {"kernel_size": 2}),
    ((2, 3, 9, 9), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ((1, 2, 11, 10), {"kernel_size": (3, 2), "stride": (2, 1), "dilation": (2, 1), "ceil_mode": True}),
    ((3, 7, 7), {"kernel_size": 3, "stride": 3, "padding": 1, "ceil_mode": True}),  # unbatched
]


@pytest.mark.parametrize("xs, kw", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool2d_matches_torch(xs, kw, dtype):
    x = RNG.standard_normal(xs).astype(dtype)
    x.reshape(-1)[::7] = x.reshape(-1)[1]  # ties: the first maximum wins in both
    check(lambda lib, x: lib.nn.functional.max_pool2d(x, return_indices=True, **kw), x)


def test_max_pool2d_nan_and_numpy_path_agree(no_kernels, monkeypatch):
    x = RNG.standard_normal((2, 3, 9, 8))
    x[0, 1, 2, 3] = x[1, 2, 5, 5] = np.nan
    x[0, 0, :4, :4] = np.inf
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}

    def run():
        t = ember.tensor(x, requires_grad=True)
        out, idx = ember.nn.functional.max_pool2d(t, return_indices=True, **kw)
        out.backward(ember.ones_like(out))
        return out.detach().numpy(), idx.numpy(), t.grad.numpy()

    numpy_path = run()
    monkeypatch.undo()
    ember.backends.ckernels.reset()
    ckops._fns.clear()
    for c, n in zip(run(), numpy_path, strict=True):
        np.testing.assert_array_equal(c, n)
    check(lambda lib, x: lib.nn.functional.max_pool2d(x, return_indices=True, **kw), x)


@pytest.mark.parametrize("wide", [True, False])
@pytest.mark.parametrize("xs, ws, kw", [CASES[3], CASES[2], ((2, 32, 6, 7), (64, 32, 3, 3), {"padding": 1})])
def test_both_block_widths(kernel_state, xs, ws, kw, wide):
    """Blocks of 2*OB output channels (taken with AVX-512 where the count is a multiple of them)
    and of OB, forced either way so both kernels run on any CPU."""
    from ember.backends import ckernels

    if ckernels.get() is None:
        pytest.skip("no C compiler")
    ckernels._state["avx512"] = wide
    assert ckops._ob(np.float32, 64) == (32 if wide else 16)
    x = RNG.standard_normal(xs).astype(np.float32)
    w = RNG.standard_normal(ws).astype(np.float32)
    check(lambda lib, x, w: lib.nn.functional.conv2d(x, w, **kw), x, w, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, dst, offset",
    [
        ((2, 16, 5, 28), (7, 30, 16), (1, 1)),  # 28 columns: a block of 16 and an overlapping one
        ((2, 3, 4, 40), (6, 42, 16), (1, 1)),  # channels below one block, padded with zeros
        ((1, 20, 3, 37), (3, 33, 32), (0, -2)),  # columns cut off on both sides
        ((2, 33, 3, 19), (5, 21, 48), (1, 1)),
        ((1, 1, 6, 28), (8, 30, 1), (1, 1)),  # the stem: one channel, no blocks
    ],
)
def test_pack_channels_last(shape, dst, offset, dtype):
    """The channels-last packing (transposed in registers where the blocks fit) against NumPy."""
    x = RNG.standard_normal(shape).astype(dtype)
    (hd, wd, cd), (oy, ox) = dst, offset
    want = np.zeros((shape[0], hd, wd, cd), dtype)
    src = x.transpose(0, 2, 3, 1)
    ys, xs = slice(max(0, -oy), min(shape[2], hd - oy)), slice(max(0, -ox), min(shape[3], wd - ox))
    want[:, ys.start + oy : ys.stop + oy, xs.start + ox : xs.stop + ox, : shape[1]] = src[:, ys, xs]
    np.testing.assert_array_equal(ckops._pack(x, hd, wd, cd, oy, ox), want)
