"""The GEMM tiles of ember/backends/ckernels/gemm.c and what runs on them: strided and transposed
operands, partial tiles, accumulation and threads against NumPy; the LSTM time loops and linear
against PyTorch and against the paths without them.

Ember uses the tiles only where the kernel library is built for AVX-512. The tests force that flag
on (``tiles`` fixture), so on an AVX2 machine the same C code runs (slower, but the same sums)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ember
from ember._threads import _state as threads
from ember.backends import ckernels
from ember.backends.ckernels import ops as ckops
from tests.helpers import check

pytestmark = pytest.mark.skipif(os.environ.get("EMBER_CKERNELS") == "0", reason="C kernels disabled")

RNG = np.random.default_rng(5)


@pytest.fixture
def tiles(kernel_state):
    """The kernels loaded, with the GEMM tiles in use whatever the CPU."""
    if ckernels.get() is None:
        pytest.skip("no C compiler")
    ckernels._state["avx512"] = True


@pytest.fixture
def no_tiles(kernel_state):
    if ckernels.get() is None:
        pytest.skip("no C compiler")
    ckernels._state["avx512"] = False


SHAPES = [(1, 1, 1), (7, 3, 5), (16, 256, 1024), (33, 300, 70), (9, 517, 33), (64, 40, 31)]


@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["cc", "fc", "cf", "ff"])
def test_matmul_matches_numpy(tiles, m, k, n, dtype, layout):
    a = RNG.standard_normal((m, k)).astype(dtype)
    b = RNG.standard_normal((k, n)).astype(dtype)
    ref = a.astype(np.float64) @ b
    a = np.asfortranarray(a) if layout[0] == "f" else a  # a transposed view on the C side
    b = np.asfortranarray(b) if layout[1] == "f" else b
    out = ckops.matmul(a, b, minimum=0)
    assert out.dtype == dtype and out.shape == (m, n)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * np.sqrt(k))


def test_matmul_views_accumulate_and_declines(tiles):
    base = RNG.standard_normal((50, 2, 64)).astype(np.float32)
    b = base.reshape(100, 64)[:, 10:42]  # rows of stride 64 inside a contiguous array: no copy
    a = RNG.standard_normal((100, 37)).astype(np.float32).T  # (37, 100), transposed
    out = RNG.standard_normal((37, 32)).astype(np.float32)
    want = out + a.astype(np.float64) @ b
    assert ckops.matmul(a, b, out, accumulate=True, minimum=0) is out
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
    c = RNG.standard_normal((20, 30)).astype(np.float32)[::2, ::3]  # no unit stride: copied first
    np.testing.assert_allclose(ckops.matmul(c, c.T, minimum=0), c @ c.T, rtol=1e-5, atol=1e-5)
    assert ckops.matmul(a, b) is None  # below GEMM_MIN multiply-adds: BLAS is cheaper
    assert ckops.matmul(a.astype(np.float16), b.astype(np.float16), minimum=0) is None
    assert ckops.matmul(a, b.astype(np.float64), minimum=0) is None
    assert ckops.matmul(a, b[:5], minimum=0) is None  # shapes that do not multiply


def test_kernel_checks_buffers(tiles):
    fn = ckops._fn("gemm", np.zeros(1, np.float32))
    a, b = np.zeros((4, 8), np.float32), np.zeros((8, 4), np.float32)
    with pytest.raises(RuntimeError, match="should contain at least"):
        fn(
            a,
            8,
            1,
            b,
            4,
            1,
            np.zeros(15, np.float32),
            4,
            4,
            4,
            8,
            0,
            np.zeros(512, np.float32),
            np.zeros(1024, np.float32),
            1,
        )
    with pytest.raises(RuntimeError, match="expected ldc >= N"):
        fn(
            a,
            8,
            1,
            b,
            4,
            1,
            np.zeros(16, np.float32),
            3,
            4,
            4,
            8,
            0,
            np.zeros(512, np.float32),
            np.zeros(1024, np.float32),
            1,
        )


def test_threads_give_bitwise_same_result(tiles):
    """The kernel's column panels shared between threads give the same sums; ``matmul`` itself
    leaves multi-threaded products to BLAS's threads."""
    a = RNG.standard_normal((300, 700)).astype(np.float32)
    b = RNG.standard_normal((700, 600)).astype(np.float32)
    fn = ckops._fn("gemm", a)
    outs = []
    for nt in (1, 3):
        out = np.empty((300, 600), np.float32)
        fn(a, 700, 1, b, 600, 1, out, 600, 300, 600, 700, 0, np.empty(608 * 256, np.float32),
           np.empty(128 * 256, np.float32), nt)  # fmt: skip
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_allclose(outs[0], a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
    old = threads["n"]
    try:
        ember.set_num_threads(2)
        many = ckops.matmul(a, b) if ckernels.uses_openmp() else None
    finally:
        threads["n"] = old
    assert many is None


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_loops_match_torch(tiles, monkeypatch, bidirectional, bias):
    calls = []
    for name in ("lstm_sequence_forward", "lstm_sequence_backward"):
        real = getattr(ckops, name)
        monkeypatch.setattr(ckops, name, lambda *a, _real=real, _n=name, **k: calls.append(_n) or _real(*a, **k))
    kw = {"num_layers": 2, "bias": bias, "batch_first": True, "bidirectional": bidirectional}
    torch.manual_seed(0)
    t_net, e_net = torch.nn.LSTM(12, 24, **kw), ember.nn.LSTM(12, 24, **kw)
    with ember.no_grad():
        for e, t in zip(e_net.parameters(), t_net.parameters()):
            e.copy_(ember.tensor(t.detach().numpy()))
    x = RNG.standard_normal((5, 7, 12)).astype(np.float32)
    g = RNG.standard_normal((5, 7, 48 if bidirectional else 24)).astype(np.float32)
    tx, ex = torch.tensor(x, requires_grad=True), ember.tensor(x, requires_grad=True)
    t_out, (t_h, t_c) = t_net(tx)
    e_out, (e_h, e_c) = e_net(ex)
    ((t_out * torch.tensor(g)).sum() + t_h.sum() + (2 * t_c).sum()).backward()
    ((e_out * ember.tensor(g)).sum() + e_h.sum() + (2 * e_c).sum()).backward()
    for e, t in [(e_out, t_out), (e_h, t_h), (e_c, t_c), (ex.grad, tx.grad)] + [
        (e.grad, t.grad) for e, t in zip(e_net.parameters(), t_net.parameters())
    ]:
        np.testing.assert_allclose(e.detach().numpy(), t.detach().numpy(), rtol=1e-4, atol=1e-5)
    dirs = 2 if bidirectional else 1
    assert calls.count("lstm_sequence_forward") == 2 * dirs and calls.count("lstm_sequence_backward") == 2 * dirs


def test_lstm_loops_agree_with_step_kernels(kernel_state):
    """The one-call loops give what the per-step kernels with NumPy's GEMM give."""
    if ckernels.get() is None:
        pytest.skip("no C compiler")
    xd = RNG.standard_normal((3, 9, 16)).astype(np.float32)
    results = []
    for flag in (True, False):
        ckernels._state["avx512"] = flag
        ember.manual_seed(1)
        net = ember.nn.LSTM(16, 32, batch_first=True)
        x = ember.tensor(xd, requires_grad=True)
        out, (h, c) = net(x)
        (out.square().sum() + c.sum()).backward()
        results.append([out.detach().numpy(), x.grad.numpy()] + [p.grad.numpy() for p in net.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 256), (4, 32, 256)])
def test_linear_on_tiles_matches_torch(tiles, shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    w = RNG.standard_normal((160, 256)).astype(np.float32) / 16
    b = RNG.standard_normal(160).astype(np.float32)
    assert ckops.linear(x.reshape(-1, 256), w, b) is not None  # large enough for the tiles
    check(lambda lib, x, w, b: lib.nn.functional.linear(x, w, b), x, w, b, atol=1e-4)
    check(lambda lib, x, w: lib.nn.functional.linear(x, w), x, w, atol=1e-4)


def test_linear_without_tiles_unchanged(no_tiles):
    x = RNG.standard_normal((64, 256)).astype(np.float32)
    w = RNG.standard_normal((160, 256)).astype(np.float32)
    assert ckops.linear(x, w, None) is None
    check(lambda lib, x, w: lib.nn.functional.linear(x, w), x, w, atol=1e-3)
