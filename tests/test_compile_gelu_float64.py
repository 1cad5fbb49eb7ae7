"""float64 gelu under capture: its exact erf (``ops/elementwise._erf_array``) infers shapes on
meta arrays without reading values, so a float64 training step with gelu is one step graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
import ember.nn.functional as F
from ember.compile.step import StepEntry


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_erf_and_gelu_infer_shapes_on_meta(dtype):
    dt = getattr(ember, dtype)
    x = ember.empty(2, 3, dtype=dt, device="meta", requires_grad=dtype != "float16")
    for fn in (ember.erf, F.gelu, lambda t: F.gelu(t, approximate="tanh")):
        y = fn(x)
        assert y.shape == (2, 3) and y.dtype == dt and y.device.type == "meta"
        if x.requires_grad:
            (g,) = ember.autograd.grad(y.sum(), x)
            assert g.shape == (2, 3) and g.dtype == dt
    assert ember.erf(ember.empty((), dtype=dt, device="meta")).shape == ()


def test_erf_values_match_torch():
    vals = [-3.0, -1.0, -1e-8, 0.0, 0.5, 2.0, 6.0, float("inf"), float("-inf")]
    for dtype in ("float64", "float32"):
        got = ember.erf(ember.tensor(vals, dtype=getattr(ember, dtype))).numpy()
        want = torch.erf(torch.tensor(vals, dtype=getattr(torch, dtype))).numpy()
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-15, atol=0)
    assert np.isnan(ember.erf(ember.tensor(float("nan"), dtype=ember.float64)).item())
    zero_d = ember.erf(ember.tensor(0.5, dtype=ember.float64))
    assert zero_d.shape == () and zero_d.item() == pytest.approx(torch.erf(torch.tensor(0.5)).item(), rel=1e-7)
    assert ember.erf(ember.empty(0, 4, dtype=ember.float64)).shape == (0, 4)


def _model():
    ember.manual_seed(0)
    l1, l2 = ember.nn.Linear(6, 8).double(), ember.nn.Linear(8, 3).double()
    return l1, l2, ember.optim.SGD([*l1.parameters(), *l2.parameters()], lr=0.1, momentum=0.9)


def _step_fn(l1, l2, opt, approximate):
    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(l2(F.gelu(l1(x), approximate=approximate)), y)
        loss.backward()
        opt.step()
        return loss

    return step


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_float64_gelu_step_is_one_graph(approximate):
    eager_parts, compiled_parts = _model(), _model()
    eager = _step_fn(*eager_parts, approximate)
    fn = ember.compile(_step_fn(*compiled_parts, approximate))
    x = ember.randn(4, 6, dtype=ember.float64)
    y = ember.randint(0, 3, (4,))
    for _ in range(4):
        want, got = eager(x, y), fn(x, y)
        assert got.dtype == ember.float64
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-12)
    assert not fn.breaks and fn.segments_run == 0
    assert all(isinstance(e, StepEntry) for e in fn.cache.values())
    counts = list(fn.cache.values())[-1].graph.counts()
    assert counts["gelu"] == 1 and counts["gelu_backward"] == 1
    for a, b in zip(eager_parts[0].parameters(), compiled_parts[0].parameters()):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), rtol=1e-12, atol=1e-14)
