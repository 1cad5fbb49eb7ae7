"""MoE: dense reference equality, capacity dropping, the auxiliary loss, and gradients (no torch analogue)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ember
from ember.nn import MoE


def _gelu(v):
    return 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))


def _dense_reference(moe: MoE, x: np.ndarray) -> np.ndarray:
    """Loop over tokens: softmax router, top-k, renormalized gates, sum of gated expert MLPs."""
    wr = moe.router.weight.detach().numpy()
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        logits = wr @ x[t]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.argsort(-p, kind="stable")[: moe.top_k]
        gates = p[top] / p[top].sum()
        for e, g in zip(top, gates):
            ex = moe.experts.experts[int(e)]
            h = _gelu(ex.fc1.weight.detach().numpy() @ x[t] + ex.fc1.bias.detach().numpy())
            out[t] += g * (ex.fc2.weight.detach().numpy() @ h + ex.fc2.bias.detach().numpy())
    return out


def test_matches_dense_reference_unlimited_capacity():
    moe = MoE(6, 10, 4, top_k=2, capacity_factor=None).double()
    x = ember.randn(3, 5, 6, dtype=ember.float64)
    y = moe(x)
    assert y.shape == x.shape
    ref = _dense_reference(moe, x.numpy().reshape(-1, 6))
    np.testing.assert_allclose(y.detach().numpy().reshape(-1, 6), ref, rtol=1e-10, atol=1e-12)
    assert moe.dropped_tokens == 0
    assert int(moe.tokens_per_expert.sum()) == 15 * 2


def test_capacity_drops_and_counts():
    moe = MoE(6, 10, 4, top_k=2, capacity_factor=0.5).double()
    x = ember.randn(16, 6, dtype=ember.float64)
    y = moe(x)
    cap = math.ceil(0.5 * 16 * 2 / 4)
    assert moe.last_plan.capacity == cap
    kept = moe.tokens_per_expert.numpy()
    requested = moe.last_plan.requested_per_expert
    assert (kept <= cap).all()
    np.testing.assert_array_equal(kept, np.minimum(requested, cap))
    assert moe.dropped_tokens == int(requested.sum() - kept.sum()) > 0
    # A dropped assignment contributes nothing: rebuild the output from the kept plan only.
    plan = moe.last_plan
    xs = x.numpy()
    ref = np.zeros_like(xs)
    for e, rows in plan.token_index.items():
        ex = moe.experts.experts[e]
        with ember.no_grad():
            out = ex(ember.tensor(xs[rows])).numpy() * plan.gate[e].detach().numpy()[:, None]
        np.add.at(ref, rows, out)
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    # First choices are served before second choices.
    assert moe.capacity(16) == cap


def test_aux_loss_formula_and_uniform():
    moe = MoE(4, 8, 4, top_k=2).double()
    x = ember.randn(10, 4, dtype=ember.float64)
    moe(x)
    with ember.no_grad():
        probs = ember.nn.functional.softmax(moe.router(x), dim=-1).numpy()
    top = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    f = np.bincount(top.ravel(), minlength=4) / top.size
    expected = 4 * np.sum(f * probs.mean(0))
    np.testing.assert_allclose(float(moe.aux_loss), expected, rtol=1e-12)
    assert moe.aux_loss.requires_grad
    np.testing.assert_allclose(float(moe.weighted_aux_loss()), 0.01 * expected, rtol=1e-12)
    # Uniform router probabilities: the loss is exactly 1.
    with ember.no_grad():
        moe.router.weight.zero_()
    moe(x)
    np.testing.assert_allclose(float(moe.aux_loss), 1.0, rtol=1e-12)


def test_gradients_flow_and_gradcheck():
    ember.manual_seed(3)
    moe = MoE(3, 4, 3, top_k=2, capacity_factor=None).double()
    x = ember.randn(5, 3, dtype=ember.float64, requires_grad=True)

    def loss_fn():
        y = moe(x)
        return (y * y).sum() + moe.aux_loss

    loss_fn().backward()
    params = list(moe.named_parameters())
    assert all(p.grad is not None for _, p in params)
    # Central differences on every parameter and the input (routing is fixed for small eps).
    eps = 1e-6
    for name, t in params + [("x", x)]:
        data = t._data
        flat = data.reshape(-1)
        num = np.zeros(flat.size)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            with ember.no_grad():
                hi = float(loss_fn())
            flat[i] = old - eps
            with ember.no_grad():
                lo = float(loss_fn())
            flat[i] = old
            num[i] = (hi - lo) / (2 * eps)
        np.testing.assert_allclose(t.grad.numpy().reshape(-1), num, rtol=1e-5, atol=1e-7, err_msg=name)


def test_gradcheck_input():
    ember.manual_seed(4)
    moe = MoE(3, 4, 3, top_k=2, capacity_factor=None).double()
    x = ember.randn(4, 3, dtype=ember.float64, requires_grad=True)
    assert ember.autograd.gradcheck(lambda a: moe(a), (x,), eps=1e-6, atol=1e-5)


def test_local_expert_subset():
    moe = MoE(4, 8, 4, top_k=1, capacity_factor=None, expert_ids=[1, 3])
    assert len(moe.experts.experts) == 2
    y = moe(ember.randn(6, 4))
    assert y.shape == (6, 4)
    assert set(moe.last_plan.token_index) == {1, 3}


def test_capture_records_the_routing_as_primitives():
    """Under capture (meta tracers, nothing computed) the whole forward and backward are ops."""
    import warnings

    from ember.ops.capture import capture

    with ember.device("meta"):
        moe = MoE(8, 16, 4, top_k=2, capacity_factor=0.5)
        x = ember.randn(2, 5, 8, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with capture() as g:
            y = moe(x)
            (y.sum() + moe.aux_loss).backward()
    counts = g.counts()
    for op in ("topk_indices", "cumsum", "scatter", "index_select", "index_select_backward", "cat"):
        assert counts[op] >= 1, op
    assert y.shape == x.shape and x.grad.shape == x.shape and moe.aux_loss.shape == ()
    assert moe.last_plan.sizes == [3] * 4  # every expert's batch has its capacity ceil(0.5 * 10 * 2 / 4)
    assert moe.tokens_per_expert.shape == (4,) and moe.tokens_per_expert.dtype == ember.int64
    assert all(p.grad is not None for p in moe.parameters())


def test_expert_without_tokens_gets_zero_gradients():
    """Every expert runs, on an empty batch too, so its gradient is zeros (not None), as in a graph."""
    moe = MoE(4, 8, 4, top_k=1, capacity_factor=None)
    with ember.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2, 0] = 1.0  # every token with x[:, 0] > 0 picks expert 2 ...
    x = ember.randn(6, 4).abs()  # ... which is all of them
    moe(x).sum().backward()
    assert moe.tokens_per_expert.tolist() == [0, 0, 6, 0]
    for e in (0, 1, 3):
        fc1 = moe.experts.experts[e].fc1
        assert fc1.weight.grad is not None and not fc1.weight.grad.numpy().any()
    assert moe.experts.experts[2].fc1.weight.grad.numpy().any()


def test_statistics_after_a_compiled_call_say_so():
    moe = MoE(8, 16, 4)
    x = ember.randn(10, 8)
    with ember.no_grad():
        want = moe(x)
        got = ember.compile(moe)(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="meta tensors.*ember.compile"):
        moe.dropped_tokens
    moe(x)  # an eager call routes again
    assert moe.dropped_tokens >= 0
