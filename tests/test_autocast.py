"""ember.autocast against torch.autocast on CPU: output dtypes, values, gradients, state."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

import ember


def _pair(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    return [ember.tensor(a, requires_grad=True) for a in arrays], [torch.tensor(a, requires_grad=True) for a in arrays]


TGT = [0, 1, 2, 3]

# op -> (input shapes, fn(module, *tensors)); all inputs start as float32 (or bfloat16 via .to)
OPS = {
    "mm": ([(4, 8), (8, 6)], lambda m, a, b: m.mm(a, b)),
    "matmul": ([(2, 4, 8), (8, 6)], lambda m, a, b: a @ b),
    "bmm": ([(2, 4, 8), (2, 8, 6)], lambda m, a, b: m.bmm(a, b)),
    "addmm": ([(6,), (4, 8), (8, 6)], lambda m, c, a, b: m.addmm(c, a, b)),
    "baddbmm": ([(2, 4, 6), (2, 4, 8), (2, 8, 6)], lambda m, c, a, b: m.baddbmm(c, a, b)),
    "linear": ([(4, 8), (6, 8), (6,)], lambda m, x, w, b: m.nn.functional.linear(x, w, b)),
    "conv2d": ([(2, 3, 6, 6), (4, 3, 3, 3), (4,)], lambda m, x, w, b: m.nn.functional.conv2d(x, w, b, padding=1)),
    "conv1d": ([(2, 3, 7), (4, 3, 3)], lambda m, x, w: m.nn.functional.conv1d(x, w)),
    "einsum": ([(4, 8), (8, 6)], lambda m, a, b: m.einsum("ij,jk->ik", a, b)),
    "sdpa": ([(1, 2, 4, 8)] * 3, lambda m, q, k, v: m.nn.functional.scaled_dot_product_attention(q, k, v)),
    "dot_not_cast": ([(8,), (8,)], lambda m, a, b: m.dot(a, b)),
    "mv_not_cast": ([(4, 8), (8,)], lambda m, a, b: m.mv(a, b)),
    "softmax_follows_input": ([(4, 8)], lambda m, a: a.to(m.bfloat16).softmax(-1)),
    "layer_norm_follows_input": ([(4, 8)], lambda m, a: m.nn.functional.layer_norm(a.to(m.bfloat16), (8,))),
    "sum_follows_input": ([(4, 8)], lambda m, a: a.to(m.bfloat16).sum()),
    "cross_entropy_fp32": ([(4, 8)], lambda m, a: m.nn.functional.cross_entropy(a.to(m.bfloat16), m.tensor(TGT))),
    "mse_fp32": ([(4, 8), (4, 8)], lambda m, a, b: m.nn.functional.mse_loss(a.to(m.bfloat16), b)),
    "l1_fp32": ([(4, 8), (4, 8)], lambda m, a, b: m.nn.functional.l1_loss(a.to(m.bfloat16), b.to(m.bfloat16))),
    "nll_fp32": ([(4, 8)], lambda m, a: m.nn.functional.nll_loss(a.to(m.bfloat16), m.tensor(TGT))),
    "bce_logits_fp32": (
        [(4, 8), (4, 8)],
        lambda m, a, b: m.nn.functional.binary_cross_entropy_with_logits(a.to(m.bfloat16), b.sigmoid()),
    ),
    "prod_fp32": ([(4, 8)], lambda m, a: (a.to(m.bfloat16) * 0.1 + 1).prod()),
    "cat_promote": ([(4, 8), (4, 8)], lambda m, a, b: m.cat([a.to(m.bfloat16), b], 0)),
    "stack_promote": ([(4, 8), (4, 8)], lambda m, a, b: m.stack([a.to(m.bfloat16), b.to(m.bfloat16)])),
    "mlp_chain": (
        [(4, 8), (16, 8), (3, 16)],
        lambda m, x, w1, w2: m.nn.functional.cross_entropy(m.relu(x @ w1.t()) @ w2.t(), m.tensor([0, 1, 2, 0])),
    ),
}


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_autocast_op_matches_torch(name, low):
    if low == "float16" and name.endswith("promote"):
        pytest.skip("torch raises for bfloat16 inputs to cat under float16 autocast")
    shapes, fn = OPS[name]
    ex, tx = _pair(*shapes)
    with ember.autocast("cpu", dtype=getattr(ember, low)):
        eo = fn(ember, *ex)
    with torch.autocast("cpu", dtype=getattr(torch, low)):
        to = fn(torch, *tx)
    assert str(eo.dtype)[6:] == str(to.dtype)[6:], name
    tol = 3e-2 if "bfloat16" in (low, str(to.dtype)) or "follows" in name else 3e-3
    np.testing.assert_allclose(eo.float().detach().numpy(), to.float().detach().numpy(), rtol=tol, atol=tol)
    eo.float().sum().backward()
    to.float().sum().backward()
    for a, b in zip(ex, tx):  # leaves (parameters) stay float32 and get float32 gradients
        assert a.dtype is ember.float32 and a.grad.dtype is ember.float32
        scale = max(1.0, float(b.grad.abs().max()))
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=3 * tol, atol=3 * tol * scale)


def test_module_parameters_stay_float32_and_cache_one_cast():
    lin = ember.nn.Linear(8, 8)
    x = ember.randn(2, 8)
    with ember.autocast("cpu"):
        y = lin(lin(x))
        assert y.dtype is ember.bfloat16
        assert len(ember.amp.state.local.cache) == 2  # weight and bias, each cast once
    assert not ember.amp.state.local.cache  # cleared when the region ends
    y.float().sum().backward()
    assert lin.weight.dtype is ember.float32 and lin.weight.grad.dtype is ember.float32


def test_state_nesting_and_decorator():
    assert not ember.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cpu")
    assert ember.amp.get_autocast_dtype("cpu") is ember.bfloat16
    with ember.autocast("cpu", dtype=ember.float16):
        assert ember.is_autocast_enabled("cpu") and not ember.is_autocast_enabled()
        assert ember.amp.get_autocast_dtype("cpu") is ember.float16
        with ember.autocast("cpu", enabled=False):
            assert not ember.is_autocast_enabled("cpu")
            assert (ember.ones(2, 2) @ ember.ones(2, 2)).dtype is ember.float32
        assert (ember.ones(2, 2) @ ember.ones(2, 2)).dtype is ember.float16
    assert ember.amp.get_autocast_dtype("cpu") is ember.bfloat16

    @ember.autocast("cpu")
    def f(a):
        return a @ a

    assert f(ember.ones(2, 2)).dtype is ember.bfloat16
    assert (ember.ones(2, 2) @ ember.ones(2, 2)).dtype is ember.float32


def test_state_is_thread_local():
    seen = []

    def other():
        seen.append((ember.is_autocast_enabled("cpu"), (ember.ones(2, 2) @ ember.ones(2, 2)).dtype))

    with ember.autocast("cpu"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert seen == [(False, ember.float32)]


def test_backward_inside_region_and_float64_untouched():
    w = ember.randn(3, 3, requires_grad=True)
    with ember.autocast("cpu"):
        (w @ w).float().sum().backward()
        d = ember.ones(2, 2, dtype=ember.float64)
        assert (d @ d).dtype is ember.float64
    assert w.grad.dtype is ember.float32


def test_spellings_and_warnings():
    with pytest.warns(FutureWarning, match="ember.amp.autocast"):
        ctx = ember.cpu.amp.autocast()
    with ctx:
        assert (ember.ones(2, 2) @ ember.ones(2, 2)).dtype is ember.bfloat16
    with ember.amp.autocast("cpu"):
        assert ember.is_autocast_enabled("cpu")
    with pytest.warns(UserWarning, match="not supported"):
        ember.autocast("cpu", dtype=ember.float32)
    with pytest.raises(RuntimeError, match="device_type"):
        ember.autocast("tpu")
    if not ember.cuda.is_available():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ctx = ember.cuda.amp.autocast()
        assert any("deprecated" in str(x.message) for x in w) and not ctx._enabled
