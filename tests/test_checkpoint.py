"""ember.utils.checkpoint: gradients equal to no checkpointing, PyTorch's argument rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from ember.utils.checkpoint import checkpoint, checkpoint_sequential


def _net(seed=0):
    ember.manual_seed(seed)
    return ember.nn.Sequential(
        ember.nn.Linear(6, 16),
        ember.nn.GELU(),
        ember.nn.Dropout(0.3),
        ember.nn.Linear(16, 16),
        ember.nn.Tanh(),
        ember.nn.Linear(16, 3),
    )


def _grads(net, x):
    return [p.grad.numpy().copy() for p in net.parameters()] + [x.grad.numpy().copy()]


@pytest.mark.parametrize("reentrant", [True, False])
def test_gradients_equal_no_checkpointing_with_dropout(reentrant):
    net = _net()
    xa = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    x = ember.tensor(xa, requires_grad=True)
    ember.manual_seed(1)
    net(x).pow(2).sum().backward()
    want = _grads(net, x)
    net.zero_grad()
    x2 = ember.tensor(xa, requires_grad=True)
    ember.manual_seed(1)
    y = checkpoint(lambda t: net[3](net[2](net[1](net[0](t)))), x2, use_reentrant=reentrant)
    net[5](net[4](y)).pow(2).sum().backward()
    for a, b in zip(_grads(net, x2), want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpoint_sequential_matches(reentrant):
    net = _net()
    net.eval()
    xa = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    x = ember.tensor(xa, requires_grad=True)
    net(x).sum().backward()
    want = _grads(net, x)
    net.zero_grad()
    x2 = ember.tensor(xa, requires_grad=True)
    out = checkpoint_sequential(net, 3, x2, use_reentrant=reentrant)
    out.sum().backward()
    for a, b in zip(_grads(net, x2), want):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_non_reentrant_autograd_grad_kwargs_and_multiple_outputs():
    w = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)

    def f(a, k=1.0):
        return (a * w * k).sin(), a.exp()

    y1, y2 = checkpoint(f, x, use_reentrant=False, k=2.0)
    gw, gx = ember.autograd.grad((y1.sum() + y2.sum()), [w, x])
    tw = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    tx = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    t1, t2 = torch.utils.checkpoint.checkpoint(
        lambda a, k=1.0: ((a * tw * k).sin(), a.exp()), tx, use_reentrant=False, k=2.0
    )
    ew, ex = torch.autograd.grad(t1.sum() + t2.sum(), [tw, tx])
    np.testing.assert_allclose(gw.numpy(), ew.numpy(), rtol=1e-6)
    np.testing.assert_allclose(gx.numpy(), ex.numpy(), rtol=1e-6)
    # only parameters require grad: non-reentrant still reaches them
    xd = ember.tensor([0.5, -1.0, 2.0])
    y = checkpoint(lambda a: (a * w).sum(), xd, use_reentrant=False)
    assert y.requires_grad


def test_reentrant_rules_match_torch():
    w = ember.tensor([1.0, 2.0], requires_grad=True)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        y = checkpoint(lambda a: a * w, ember.ones(2), use_reentrant=True)
    assert not y.requires_grad  # PyTorch's reentrant variant: inputs decide
    with pytest.raises(ValueError, match="Unexpected keyword arguments: foo"):
        checkpoint(lambda a: a, ember.ones(2, requires_grad=True), use_reentrant=True, foo=1)
    with pytest.warns(UserWarning, match="use_reentrant"):
        checkpoint(lambda a: a * 2, ember.ones(2, requires_grad=True))


def test_preserved_rng_replays_dropout_mask():
    x = ember.ones(200, requires_grad=True)
    drop = ember.nn.Dropout(0.5)
    y = checkpoint(drop, x, use_reentrant=False, preserve_rng_state=True)
    y.backward(ember.ones(200))
    np.testing.assert_array_equal(x.grad.numpy() != 0, y.detach().numpy() != 0)


def test_gpt_config_checkpoint_gives_the_same_gradients():
    from ember.models.gpt import GPT, GPTConfig

    cfg = dict(vocab_size=11, n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.1)
    idx = ember.randint(0, 11, (2, 8))
    grads = []
    for ck in (False, True):
        ember.manual_seed(0)
        model = GPT(GPTConfig(**cfg, checkpoint=ck))
        ember.manual_seed(1)  # the same dropout masks
        _, loss = model(idx, idx)
        loss.backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_early_stop_skips_the_tail_and_keeps_gradients():
    # As PyTorch's non-reentrant checkpoint: the recomputation stops once everything backward
    # reads is rebuilt; the last linear (its rule reads its input and weight, not its output) and
    # the residual add get their nodes but no kernel call.
    import numpy as np

    from ember.nn.functional.linear import _LINEAR
    from ember.utils.checkpoint import set_checkpoint_early_stop

    ember.manual_seed(0)
    fc, proj = ember.nn.Linear(8, 16), ember.nn.Linear(16, 8)

    def block(x):
        return x + proj(ember.nn.functional.gelu(fc(x)))

    x0 = ember.randn(4, 8)
    calls = []
    impl = _LINEAR.cpu

    def counting(*a, **k):
        calls.append(1)
        return impl(*a, **k)

    results = []
    for stop in (True, False):
        x = x0.detach().requires_grad_()
        with set_checkpoint_early_stop(stop):
            y = checkpoint(block, x, use_reentrant=False)
        calls.clear()
        _LINEAR.cpu = counting
        try:
            y.sum().backward()
        finally:
            _LINEAR.cpu = impl
        results.append((len(calls), x.grad.numpy(), fc.weight.grad.numpy(), proj.weight.grad.numpy()))
        fc.zero_grad()
        proj.zero_grad()
    (n_stop, *g_stop), (n_full, *g_full) = results
    assert (n_stop, n_full) == (1, 2)  # the recomputation ran fc only, or fc and proj
    for a, b in zip(g_stop, g_full):
        np.testing.assert_array_equal(a, b)


def test_early_stop_when_the_recomputation_takes_another_path():
    import numpy as np
    import pytest

    from ember.utils.checkpoint import set_checkpoint_early_stop

    def make(second):
        runs = []

        def seg(x):
            runs.append(1)
            y = x * 2
            return y + 1 if len(runs) == 1 else second(y)

        return seg

    # another path in the replayed tail: the values it would read were never computed
    x = ember.randn(3, requires_grad=True)
    y = checkpoint(make(lambda y: y.exp()), x, use_reentrant=False)
    with pytest.raises(RuntimeError, match="recomputation took another path"):
        y.sum().backward()
    # without early stop the same segment recomputes everything
    with set_checkpoint_early_stop(False):
        y = checkpoint(make(lambda y: y.exp()), x, use_reentrant=False)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * x.detach().numpy()), rtol=1e-6)
