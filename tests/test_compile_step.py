"""ember.compile of a whole training step: forward, ``loss.backward()``, ``optimizer.zero_grad()``
and ``optimizer.step()`` captured as one graph, against the same steps run eagerly."""

import os
import warnings

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.compile.step import StepEntry
from ember.models import GPT, MLP, GPTConfig, LSTMLanguageModel, MoEGPT, ResNet

_NEEDS_C = pytest.mark.skipif(
    os.environ.get("EMBER_CKERNELS") == "0", reason="needs the C kernels and compiler (EMBER_CKERNELS=0)"
)  # counts of graphs and fused groups


def _gpt():
    return GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0))


def _moe_gpt():
    # no biases: the key bias gets only rounding noise as gradient, which AdamW scales up to lr
    cfg = GPTConfig(
        block_size=8, vocab_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False, moe_num_experts=4
    )
    return MoEGPT(cfg)


def _lm_batch(vocab):
    idx = ember.randint(0, vocab, (2, 8))
    return idx, ember.randint(0, vocab, (2, 8))


def _lm_loss(model, x, y):
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


_WORKLOADS = {
    "mlp": (
        lambda: MLP(in_features=12, hidden=(16, 8), num_classes=3, dropout=0.0),
        lambda: (ember.randn(5, 12), ember.randint(0, 3, (5,))),
        lambda m, x, y: F.cross_entropy(m(x), y),
    ),
    "gpt": (_gpt, lambda: _lm_batch(16), _lm_loss),
    "moe-gpt": (_moe_gpt, lambda: _lm_batch(16), lambda m, x, y: m(x, y)[1]),  # with the aux losses
    "lstm": (
        lambda: LSTMLanguageModel(vocab_size=12, embed_dim=8, hidden_size=8, num_layers=2, dropout=0.0),
        lambda: _lm_batch(12),
        _lm_loss,
    ),
    "resnet": (
        lambda: ResNet(depth=8, in_channels=1, num_classes=4, widths=(4, 8, 8)),
        lambda: (ember.randn(2, 1, 8, 8), ember.randint(0, 4, (2,))),
        lambda m, x, y: F.cross_entropy(m(x), y),
    ),
}

_OPTIMIZERS = {
    "adamw": lambda ps: ember.optim.AdamW(ps, lr=1e-2),
    "sgd-momentum": lambda ps: ember.optim.SGD(ps, lr=0.05, momentum=0.9),
    "sgd-forloop": lambda ps: ember.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False),
    "adam-foreach": lambda ps: ember.optim.Adam(ps, lr=1e-2, foreach=True),
}


def _train(name, make_opt, compiled, steps, set_to_none=True):
    make_model, make_batch, loss_fn = _WORKLOADS[name]
    ember.manual_seed(0)
    model = make_model()
    opt = make_opt(model.parameters())
    batches = [make_batch() for _ in range(steps)]

    def step(x, y):
        opt.zero_grad(set_to_none=set_to_none)
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        return loss

    fn = ember.compile(step) if compiled else step
    losses = [fn(x, y).item() for x, y in batches]
    return losses, model, opt, fn


def _check_same(name, make_opt, steps, param_atol=1e-5, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to eager
        got, m1, o1, fn = _train(name, make_opt, True, steps, **kw)
    want, m2, o2, _ = _train(name, make_opt, False, steps, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        a, b = a.numpy().copy(), b.numpy().copy()
        noise = _zero_gradient_entries(m1, k, a.shape)
        if noise is not None:
            # Entries whose gradient is zero in exact arithmetic (attention's key bias: softmax
            # ignores a constant added to every score of a row) get rounding noise (~1e-9) as their
            # gradient, which Adam scales by 1/eps; the native kernels (whole-step program) round
            # differently from the eager ones, so those entries follow different noise. Both stay
            # near zero; every other entry must match.
            assert np.abs(a[noise]).max() < 1e-3 and np.abs(b[noise]).max() < 1e-3, k
            a[noise] = b[noise] = 0.0
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=param_atol, err_msg=k)
    for s1, s2 in zip(o1.state.values(), o2.state.values()):
        for k in s2:
            _close_to_scale(np.asarray(s1[k]), np.asarray(s2[k]), k)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert (p1.grad is None) == (p2.grad is None)
        if p2.grad is not None:
            _close_to_scale(p1.grad.numpy(), p2.grad.numpy(), "grad")
    return fn


def _close_to_scale(a, b, what):
    """Gradients (and momentum, their running sum) are sums whose terms cancel (batch norm's
    backward most): an entry's rounding error follows the size of the terms, not of the entry,
    so small entries are compared at 1e-4 of the tensor's largest entry (native and eager
    kernels round differently)."""
    scale = float(np.abs(b).max()) if b.size else 0.0
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=max(1e-6, 1e-4 * scale), err_msg=what)


def _zero_gradient_entries(model, key, shape):
    """A mask of the entries of state-dict ``key`` whose gradient is zero in exact arithmetic, or None."""
    if not isinstance(model, GPT) or not key.endswith("attn.c_attn.bias"):
        return None
    mask = np.zeros(shape, bool)
    n = shape[0] // 3
    mask[n : 2 * n] = True  # the key third of the q, k, v projection's bias
    return mask


@_NEEDS_C
@pytest.mark.parametrize("name", ["mlp", "gpt", "moe-gpt", "lstm"])
def test_twenty_compiled_steps_match_eager(name):
    # Adam divides each gradient entry by its running RMS, so an entry whose gradient is small
    # moves by up to lr (1e-2) per step in whichever direction rounding sent it: GPT's parameters
    # (whole-step program, native kernels) agree with eager's within 1% of lr after 20 steps
    # (measured: 2e-5), its losses within 2e-7 relative. MoE: the graph's experts run on
    # capacity-sized batches, eager's on the kept rows only, so BLAS rounds differently too.
    fn = _check_same(name, _OPTIMIZERS["adamw"], 20, param_atol=1e-4 if name in ("gpt", "moe-gpt") else 1e-5)
    # one graph for the first step (it creates the optimizer state), one for every later step
    assert fn.recompiles == 2 and all(isinstance(e, StepEntry) for e in fn.cache.values())
    (entry,) = fn.cache.values()
    ops = entry.graph.counts()  # the update from primitives (passes/updates.py), no hand kernel
    assert not [k for k in ops if k.startswith(("_fused_", "_foreach_"))] and ops["expm1"] > 0


@pytest.mark.parametrize("opt", ["sgd-momentum", "sgd-forloop"])
def test_other_optimizers_and_zeroing_in_place(opt):
    _check_same("mlp", _OPTIMIZERS[opt], 6, set_to_none=False)


@pytest.mark.slow
def test_resnet_steps():
    _check_same("resnet", _OPTIMIZERS["sgd-momentum"], 20)


def test_moe_step_is_one_graph_with_its_routing():
    fn = _check_same("moe-gpt", _OPTIMIZERS["sgd-momentum"], 3)
    assert all(isinstance(e, StepEntry) for e in fn.cache.values()) and not fn.breaks
    counts = list(fn.cache.values())[-1].graph.counts()
    assert counts["topk_indices"] == 2 and counts["scatter"] == 2 and counts["cumsum"] == 2  # two MoE layers


@_NEEDS_C
def test_step_graph_holds_backward_and_update_and_returns_loss():
    ember.manual_seed(0)
    w = ember.randn(4, 3, requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)

    @ember.compile
    def step(x):
        opt.zero_grad()
        loss = (x @ w).tanh().sum()
        loss.backward()
        opt.step()
        return loss

    x = ember.randn(2, 4)
    w0 = w.detach().numpy().copy()
    loss = step(x)
    (entry,) = step.cache.values()
    phases = {n.phase for n in entry.graph.nodes if n.kind == "call"}
    ops = entry.graph.counts()  # SGD's update from primitives (passes/updates.py)
    assert phases == {"forward", "backward"} and "_fused_sgd_" not in ops and ops["copy_"] == 1
    assert not loss.requires_grad
    t = np.tanh(x.numpy() @ w0)
    np.testing.assert_allclose(loss.item(), t.sum(), rtol=1e-5)
    g = x.numpy().T @ (1 - t**2)
    np.testing.assert_allclose(w.grad.numpy(), g, rtol=1e-5)
    # w0 - 0.1 * g cancels to ~1e-4 in some entries: compare at float32 rounding of the operands
    np.testing.assert_allclose(w.detach().numpy(), w0 - 0.1 * g, rtol=1e-5, atol=1e-6)


def test_changed_learning_rate_recompiles():
    w = ember.ones(3, requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)

    @ember.compile
    def step():
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()

    step()
    opt.param_groups[0]["lr"] = 0.5  # baked into the update op: the guard must see it
    step()
    np.testing.assert_allclose(w.detach().numpy(), np.full(3, 0.8 * 0.0))
    assert step.recompiles == 2


def test_grad_guard_none_versus_existing():
    w = ember.ones(2, requires_grad=True)

    @ember.compile
    def f(x):
        (w * x).sum().backward()

    x = ember.tensor([1.0, 2.0])
    f(x)
    f(x)  # accumulates: a new graph reads the existing .grad
    w.grad = None
    f(x)  # the first graph again (no new compile)
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 2.0])
    w.grad = ember.tensor([10.0, 10.0])  # a new .grad object is read by the accumulating graph
    f(x)
    np.testing.assert_allclose(w.grad.numpy(), [11.0, 12.0])
    assert f.recompiles == 2


def _gpt_dropout_run(compiled, clip):
    ember.manual_seed(0)
    m = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    opt = ember.optim.AdamW(m.parameters(), lr=1e-2)

    def step(x, y):
        logits, loss = m(x, y)
        loss.backward()
        if clip:
            ember.nn.utils.clip_grad_norm_(m.parameters(), 1.0)  # NumPy on .grad: a graph break
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    fn = ember.compile(step) if compiled else step
    ember.manual_seed(1)
    data = [_lm_batch(16) for _ in range(4)]
    ember.manual_seed(2)
    return [fn(x, y).item() for x, y in data], fn


@pytest.mark.parametrize("clip", [False, True])
def test_dropout_draws_follow_eager_random_stream(clip):
    # attention's dropout mask is drawn in Python: never fixed into a graph, drawn in order
    got, fn = _gpt_dropout_run(True, clip)
    want, _ = _gpt_dropout_run(False, clip)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert fn.breaks


def test_dropout_ops_in_a_step_graph_match_eager():
    def run(compiled):
        ember.manual_seed(0)
        m = MLP(in_features=12, hidden=(16,), num_classes=3, dropout=0.3)
        opt = ember.optim.SGD(m.parameters(), lr=0.1)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss

        fn = ember.compile(step) if compiled else step
        x, y = ember.randn(5, 12), ember.randint(0, 3, (5,))
        ember.manual_seed(3)
        return [fn(x, y).item() for _ in range(4)], fn

    got, fn = run(True)
    want, _ = run(False)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not fn.breaks and all(isinstance(e, StepEntry) for e in fn.cache.values())


def test_train_eval_switches_are_replayed_and_guarded():
    ember.manual_seed(0)
    m = MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.5)

    @ember.compile
    def evaluate(x):
        m.eval()  # a Python side effect: set again after every compiled call
        with ember.no_grad():
            out = m(x)
        m.train()
        return out

    x = ember.randn(4, 6)
    for _ in range(3):
        got = evaluate(x)
        assert m.training
    m.eval()
    assert not got.requires_grad
    np.testing.assert_allclose(got.numpy(), m(x).detach().numpy(), rtol=1e-6)

    @ember.compile
    def forward(x):
        return m(x)

    m.eval()
    a = forward(x)
    m.train()  # the guard on the module called inside sees the switch: dropout draws again
    ember.manual_seed(5)
    b = forward(x)
    ember.manual_seed(5)
    np.testing.assert_allclose(b.detach().numpy(), m(x).detach().numpy(), rtol=1e-6)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())
