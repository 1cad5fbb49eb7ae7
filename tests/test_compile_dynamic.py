"""Dynamic shapes: a dimension that changes between calls is served by one graph (dynamic=None
marks it on the recompile; dynamic=True from the start; dynamic=False always specializes)."""

import os

import numpy as np
import pytest

import ember
from ember.models import GPT, MLP, GPTConfig

_NEEDS_C = pytest.mark.skipif(
    os.environ.get("EMBER_CKERNELS") == "0", reason="needs the C kernels and compiler (EMBER_CKERNELS=0)"
)  # counts of graphs and fused groups


def _f(x):
    return (x * 2 + 1).relu().reshape(-1, 2).sum(1) * 3


def _check(cf, fn, xs):
    for x in xs:
        np.testing.assert_allclose(np.asarray(cf(x).detach()), np.asarray(fn(x).detach()), rtol=1e-5, atol=1e-6)


def test_a_changing_dim_becomes_dynamic_on_the_recompile():
    cf = ember.compile(_f)
    _check(cf, _f, [ember.randn(n, 2) for n in (4, 6, 9, 12, 3, 6)])
    assert cf.recompiles == 2 and cf.dyn_dims == [(0, 0)]
    entry = cf.cache[next(iter(k for k in cf.cache if k[1][0][0] == (None, 2)))]
    assert entry.template is not None and entry.template.verified >= {(3,), (4,), (6,), (9,), (12,)}
    _check(cf, _f, [ember.randn(5, 4)])  # another dim changed: marked too, no wrong result
    assert cf.recompiles == 3


def test_dynamic_false_specializes_every_size_and_true_marks_all_dims():
    cf = ember.compile(_f, dynamic=False)
    _check(cf, _f, [ember.randn(n, 2) for n in (4, 6, 9)])
    assert cf.recompiles == 3 and not cf.dyn_dims
    cf = ember.compile(_f, dynamic=True)
    _check(cf, _f, [ember.randn(n, 2) for n in (4, 6, 9)])
    assert cf.dyn_dims == [(0, 0), (0, 1)] and cf.recompiles == 2


def test_python_that_branches_on_a_size_is_caught_by_the_check():
    def g(x):
        return x * 2 if x.shape[0] < 8 else x.exp()

    cf = ember.compile(g)
    _check(cf, g, [ember.randn(n, 3) for n in (2, 3, 4, 9, 10, 5)])
    assert cf.recompiles == 4  # each size >= 8 gets its own graph (the check refuses the template)


def test_size_dependent_parameters_are_symbolic():
    def g(x):
        n = x.shape[0]
        return x.reshape(n * 2, -1).t().reshape(-1)[: n + 1] * 2

    cf = ember.compile(g)
    _check(cf, g, [ember.randn(n, 4) for n in (2, 3, 5, 8)])
    assert cf.recompiles == 2


@pytest.mark.parametrize("train", [False, True])
def test_mlp_batch_size_is_dynamic_with_and_without_gradients(train):
    m = MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0)
    cm = ember.compile(m)
    for b in (2, 5, 7, 4):
        x = ember.randn(b, 6)
        got = cm(x)
        np.testing.assert_allclose(got.detach().numpy(), m(x).detach().numpy(), rtol=1e-5, atol=1e-6)
        if train:
            got.sum().backward()
            g = [p.grad.numpy().copy() for p in m.parameters()]
            m.zero_grad()
            m(x).sum().backward()
            for a, p in zip(g, m.parameters()):
                np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-5, atol=1e-6)
            m.zero_grad()
    assert cm._compiled.recompiles == 2


def test_fused_gemm_row_and_col_groups_follow_the_sizes_in_training():
    """A template over GEMM epilogues, softmax's row loops, a column sum's loop and the memory
    plan: each size re-derives rows/cols and the arena (a larger size after a smaller one would
    overrun it); gelu's saved value is recomputed, so its capture fits too."""
    import ember.nn.functional as F

    ember.manual_seed(0)
    w = ember.randn(8, 16, requires_grad=True)
    b = ember.randn(8, requires_grad=True)

    def f(x):
        h = F.gelu(F.linear(x, w, b))
        # a column loop; (a mean's 1/n would be baked into the C: that graph specializes)
        return (F.softmax(h * 2, -1) * h).sum(0) + (x[:, :8] * 2).exp().sum(0)

    cf = ember.compile(f)
    for n in (4, 6, 9, 33, 4, 100):
        x, g = ember.randn(n, 16), ember.randn(8)
        (f(x) * g).sum().backward()
        want = [w.grad.numpy().copy(), b.grad.numpy().copy()]
        w.grad = b.grad = None
        got = cf(x)
        np.testing.assert_allclose(got.detach().numpy(), f(x).detach().numpy(), rtol=1e-5, atol=1e-6)
        (got * g).sum().backward()
        for p, e in zip((w, b), want):
            np.testing.assert_allclose(p.grad.numpy(), e, rtol=1e-4, atol=1e-5)
        w.grad = b.grad = None
    assert cf.recompiles == 2
    (entry,) = [e for e in cf.cache.values() if getattr(e, "template", None) is not None]
    kinds = {g.kind for k, g in list(entry.steps) + list(entry.bwd_base) if k == "group"}
    assert kinds >= {"gemm", "row", "col"}, kinds


def test_gpt_sequence_length_never_gives_wrong_results():
    ember.manual_seed(0)
    m = GPT(GPTConfig(block_size=16, vocab_size=20, n_layer=1, n_head=2, n_embd=8, dropout=0.0)).eval()
    cm = ember.compile(m)
    with ember.no_grad():
        for t in (4, 6, 9, 5, 12):
            idx = ember.randint(0, 20, (2, t))
            a, b = cm(idx), m(idx)
            a = a[0] if isinstance(a, tuple) else a
            b = b[0] if isinstance(b, tuple) else b
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    # attention's causal mask is a (T, T) array parameter: no expression of T, so it specializes
    assert cm._compiled.recompiles == 5


@_NEEDS_C
def test_training_step_with_varying_batch_size_is_one_template():
    import ember.nn.functional as F

    def run(compiled):
        ember.manual_seed(0)
        m = MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0)
        opt = ember.optim.AdamW(m.parameters(), lr=1e-2)

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            return loss

        fn = ember.compile(step) if compiled else step
        ember.manual_seed(1)
        data = [(ember.randn(b, 6), ember.randint(0, 3, (b,))) for b in (4, 4, 5, 7, 3, 9, 4, 6)]
        return [fn(x, y).item() for x, y in data], fn, [p.detach().numpy().copy() for p in m.parameters()]

    got, fn, wa = run(True)
    want, _, wb = run(False)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for a, b in zip(wa, wb):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the first step (it creates the optimizer state), the steady step, then one template
    assert fn.recompiles == 3 and fn.dyn_dims == [(0, 0), (1, 0)]
