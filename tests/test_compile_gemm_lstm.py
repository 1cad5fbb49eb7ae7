"""Compiled code runs eager's GEMMs and LSTM loops: gemm.c's tiles through ``codegen/blas.py``'s
dispatcher (OpenBLAS where the tiles are not built or do not pay), and the LSTM's time loops as
external kernel calls inside a program (``codegen/lowerings_rnn.py``), both against eager."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import ember
from bench import wl_train
from ember.compile.codegen import blas, lowerings_rnn

F = ember.nn.functional
pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0"
    or blas.gemm_table() is None,
    reason="no C compiler, the C kernels are off (EMBER_CKERNELS=0), or no BLAS",
)
_TILES = pytest.mark.skipif(not blas.tiles_active(), reason="gemm.c's tiles need an AVX-512 build of the kernels")


def _entry(cf):
    (entry,) = cf.cache.values()
    return entry


def _mlp():
    ember.manual_seed(0)
    w1, b1 = ember.randn(192, 160) * 0.1, ember.randn(192)
    w2 = ember.randn(96, 192) * 0.1
    x = ember.randn(2, 96, 160)  # 192 rows: 192 x 192 x 160 = 5.9M multiply-adds (tiles from 2M)

    def f(x):
        h = F.linear(x, w1, b1)  # a lowered linear (with bias) ...
        return F.linear(h.relu(), w2).tanh()  # ... and a fused GEMM group with its epilogue

    return f, x


def test_program_gemms_match_eager_on_both_paths():
    f, x = _mlp()
    want = f(x).numpy()
    with blas.tiles(False):
        blas_out = ember.compile(f)(x).numpy()
    cf = ember.compile(f)
    got = cf(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blas_out, want, rtol=1e-5, atol=1e-5)
    with blas.tiles(False):  # a built program follows the switch (read per call)
        np.testing.assert_allclose(cf(x).numpy(), want, rtol=1e-5, atol=1e-5)
    assert _entry(cf).steps.spec.eager_nodes == []


@_TILES
def test_program_linear_is_eager_linear_bit_for_bit():
    """Where the tiles run, a program's linear is the eager kernel's arithmetic exactly (same
    tiles, same strides); OpenBLAS sums in another order."""
    threads = ember.get_num_threads()
    ember.set_num_threads(2)  # the path eager takes depends on the threads (many cores: OpenBLAS)
    try:
        _linear_tiles_and_blas()
    finally:
        ember.set_num_threads(threads)


def _linear_tiles_and_blas():
    ember.manual_seed(0)
    w, b = ember.randn(256, 128), ember.randn(256)
    x = ember.randn(128, 128)  # 4M multiply-adds: the tiles, on one thread (2 cores split 8M+)
    f = ember.compile(lambda x: F.linear(x, w, b))
    want = F.linear(x, w, b).numpy()
    np.testing.assert_array_equal(f(x).numpy(), want)
    with blas.tiles(False):
        other = f(x).numpy()
    np.testing.assert_allclose(other, want, rtol=1e-5, atol=1e-4)
    assert not np.array_equal(other, want)  # the switch reached the built program


def test_gradients_through_programs_on_both_paths():
    ember.manual_seed(0)
    w = ember.randn(160, 128, requires_grad=True)
    x = ember.randn(256, 128, requires_grad=True)

    def f(x):
        return F.gelu(F.linear(x, w)).sum()

    f(x).backward()
    want = (x.grad.numpy().copy(), w.grad.numpy().copy())
    for on in (True, False):
        x.grad = w.grad = None
        with blas.tiles(on):
            ember.compile(f)(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), want[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(w.grad.numpy(), want[1], rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- LSTM
def _lstm_step(bidirectional=False, bias=True, state_grad=False):
    ember.manual_seed(0)
    nn = ember.nn
    lstm = nn.LSTM(8, 12, num_layers=2, bias=bias, bidirectional=bidirectional)
    head = nn.Linear(12 * (2 if bidirectional else 1), 5)
    params = list(lstm.parameters()) + list(head.parameters())
    dirs = 2 if bidirectional else 1
    h0 = ember.zeros(2 * dirs, 3, 12).requires_grad_(state_grad)
    c0 = (ember.randn(2 * dirs, 3, 12) * 0.1).requires_grad_(state_grad)
    if state_grad:
        params += [h0, c0]
    opt = ember.optim.Adam(params, lr=1e-2)
    x, y = ember.randn(6, 3, 8), ember.randint(0, 5, (6 * 3,))

    def step():
        opt.zero_grad()
        out, _ = lstm(x, (h0, c0))
        loss = F.cross_entropy(head(out).reshape(-1, 5), y)
        loss.backward()
        opt.step()
        return loss

    return step, params


@pytest.mark.parametrize("packed", [True, False], ids=["whole-sequence-kernels", "step-loop"])
@pytest.mark.parametrize("variant", ["plain", "bidirectional-nobias", "state-grad"])
def test_lstm_step_is_one_native_segment_and_matches_eager(variant, packed, monkeypatch):
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")
    if packed and not lowerings_rnn.packed_loops("float32"):
        pytest.skip("gemm.c's LSTM loops need an AVX-512 build of the kernels")
    if not packed:  # the path of machines without AVX-512: per step one BLAS GEMM and the step kernel
        monkeypatch.setattr(lowerings_rnn, "packed_loops", lambda dt: False)
    kw = {"plain": {}, "bidirectional-nobias": {"bidirectional": True, "bias": False}, "state-grad": {}}[variant]
    kw["state_grad"] = variant == "state-grad"
    eager_step, pe = _lstm_step(**kw)
    step, pc = _lstm_step(**kw)
    cs = ember.compile(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to eager
        got = [float(cs()) for _ in range(6)]
    want = [float(eager_step()) for _ in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    prog = list(cs.cache.values())[-1].program
    assert prog.spec.eager_nodes == [] and sum(fn is not None for fn, _ in prog.plan) == 1
    ops = " ".join(n.op for n in list(cs.cache.values())[-1].graph.nodes if n.kind == "call")
    assert "recurrent_sequence_backward" in ops
    for a, b in zip(pe, pc):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_lstm_workload_twenty_steps_as_one_program(monkeypatch):
    """The bench's LSTM step (tiny): one native call per step, the losses of eager's."""
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")
    ember.manual_seed(0)
    eager_step = wl_train.lstm.impls["ember"](ember, tiny=True)
    ember.manual_seed(0)
    step = wl_train.lstm.impls["ember"](ember, tiny=True)
    parts = dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))
    model, x, y = parts["model"], parts["x"], parts["y"]

    cs = ember.compile(step)
    got = []
    for _ in range(20):
        cs()
        with ember.no_grad():
            out = model(x)
            got.append(float(F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))))
    eparts = dict(zip(eager_step.__code__.co_freevars, [c.cell_contents for c in eager_step.__closure__]))
    want = []
    for _ in range(20):
        eager_step()
        with ember.no_grad():
            out = eparts["model"](eparts["x"])
            want.append(float(F.cross_entropy(out.reshape(-1, out.shape[-1]), eparts["y"].reshape(-1))))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got[-1] < got[0]
    prog = list(cs.cache.values())[-1].program
    assert prog.spec.eager_nodes == [] and sum(fn is not None for fn, _ in prog.plan) == 1


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "recomputed"])
def test_gpt_step_gradient_ops_read_kept_or_recomputed_values(keep, monkeypatch):
    """A step program's attention and layer_norm gradients read what their lowered forward kept
    (probabilities, statistics), or recompute it where nothing was kept: both give eager's."""
    from ember.compile.codegen import program

    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")
    if not keep:
        monkeypatch.setattr(program._Ctx, "node_readers", lambda self, node: [])

    def make():
        ember.manual_seed(0)
        step = wl_train.gpt.impls["ember"](ember, tiny=True)
        return step, dict(zip(step.__code__.co_freevars, [c.cell_contents for c in step.__closure__]))

    eager_step, pe = make()
    step, pc = make()
    cs = ember.compile(step)
    for _ in range(3):
        eager_step()
        cs()
    prog = list(cs.cache.values())[-1].program
    assert prog.spec.eager_nodes == []
    assert ("*probs = " in prog.spec.source) == keep and ("*mean = (float *)" in prog.spec.source) == keep
    for (k, a), b in zip(pe["model"].named_parameters(), pc["model"].parameters()):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("packed", [True, False], ids=["whole-sequence-kernels", "step-loop"])
def test_lstm_forward_program_in_float64(packed, monkeypatch):
    if packed and not lowerings_rnn.packed_loops("float64"):
        pytest.skip("gemm.c's LSTM loops need an AVX-512 build of the kernels")
    if not packed:
        monkeypatch.setattr(lowerings_rnn, "packed_loops", lambda dt: False)
    ember.manual_seed(0)
    lstm = ember.nn.LSTM(5, 7, num_layers=2, bidirectional=True).double()
    x = ember.randn(4, 3, 5, dtype=ember.float64)
    cm = ember.compile(lstm)
    with ember.no_grad():
        want = lstm(x)
        got = cm(x)
    np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), rtol=1e-12, atol=1e-13)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-13)
    (entry,) = cm._compiled.cache.values()
    assert entry.steps.spec.eager_nodes == []


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_gru_and_rnn_steps_are_one_native_segment(kind, monkeypatch):
    """GRU/RNN sequences and their gradients lower too (codegen/lowerings_gru.py): the whole
    step, time-major and two layers deep, is native."""
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")

    def make():
        ember.manual_seed(0)
        rnn, head = getattr(ember.nn, kind)(8, 12, num_layers=2), ember.nn.Linear(12, 5)
        opt = ember.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-2)
        x, y = ember.randn(6, 3, 8), ember.randint(0, 5, (18,))

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(head(rnn(x)[0]).reshape(-1, 5), y)
            loss.backward()
            opt.step()
            return loss

        return step

    eager_step, cs = make(), ember.compile(make())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = [float(cs()) for _ in range(4)]
    np.testing.assert_allclose(got, [float(eager_step()) for _ in range(4)], rtol=1e-5)
    prog = list(cs.cache.values())[-1].program
    assert prog.spec.eager_nodes == [] and sum(1 for fn, _ in prog.plan if fn is not None) == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("small", [True, False], ids=["gemm_small", "blas"])
def test_attention_heads_on_small_gemms_match_eager(dtype, small, monkeypatch):
    """Attention heads whose sizes fill 64-byte vectors (S, E multiples of 16 floats / 8 doubles)
    run their products on gemm.c's ``gemm_small`` in a step program, forward and backward (with
    kept probabilities), against eager; ``blas.tiles(False)`` renders them through BLAS instead."""
    monkeypatch.setenv("EMBER_STEP_PROGRAM", "1")
    if small and not blas.tiles_active():
        pytest.skip("gemm.c's small GEMMs run where the tiles do (an AVX-512 build of the kernels)")
    dt = getattr(ember, dtype)

    def make():
        ember.manual_seed(0)
        q, k, v = (ember.randn(2, 3, 32, 16, dtype=dt, requires_grad=True) for _ in range(3))
        w = ember.randn(16, 16, dtype=dt, requires_grad=True)
        opt = ember.optim.Adam([q, k, v, w], lr=1e-3)  # lowered (a fused SGD step is not)

        def step():
            opt.zero_grad()
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            b = F.scaled_dot_product_attention(F.linear(a, w), k, v)
            loss = (b * b).mean()
            loss.backward()
            opt.step()
            return loss

        return step, [q, k, v, w]

    eager_step, pe = make()
    step, pc = make()
    with blas.tiles(small):
        cs = ember.compile(step)
        got = [float(cs()) for _ in range(3)]
    want = [float(eager_step()) for _ in range(3)]
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol)
    prog = list(cs.cache.values())[-1].program
    assert prog.spec.eager_nodes == []
    assert ("ember_gemm_small_" in prog.spec.source) == small
    for a, b in zip(pe, pc):
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=tol * 10, atol=tol)
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=tol, atol=tol)
