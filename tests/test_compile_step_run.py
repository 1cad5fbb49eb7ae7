"""The fast call path of whole-step programs (``ember/compile/step_run.py``) and the fast guard
check (``effects.FastGuards``): output arrays reused only where nothing can see it, guards that
still catch every change (eager runs side by side as the oracle)."""

from __future__ import annotations

import os
import weakref

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.models import MLP

pytestmark = pytest.mark.skipif(
    __import__("ember.backends.ckernels", fromlist=["x"]).compiler() is None
    or os.environ.get("EMBER_CKERNELS") == "0"
    or os.environ.get("EMBER_STEP_PROGRAM") == "0"
    or os.environ.get("EMBER_PROGRAM") == "0",
    reason="whole-step programs need the C kernels and a compiler",
)


def _setup(compiled, weight_decay=0.0):
    ember.manual_seed(0)
    model = MLP(in_features=6, hidden=(8,), num_classes=3, dropout=0.0)
    opt = ember.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    x, y = ember.randn(4, 6), ember.randint(0, 3, (4,))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return (ember.compile(step) if compiled else step), model, opt


def _fast(fn):
    entry = list(fn.cache.values())[-1]
    return entry, entry.fast_step


def _same(m1, m2):
    for a, b in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_unheld_gradients_reuse_their_arrays_held_ones_keep_their_values():
    fn, m1, _ = _setup(True)
    ref, m2, _ = _setup(False)
    for _ in range(3):
        fn(), ref()
    entry, fast = _fast(fn)
    made = fast.new_arrays
    for _ in range(3):  # nothing holds the gradients but p.grad: the same arrays every step
        fn(), ref()
    assert fast.new_arrays == made + 3  # only the returned loss is new each call
    _same(m1, m2)

    p = next(iter(m1.parameters()))
    g, arr = p.grad, p.grad.numpy()
    old = arr.copy()
    fn(), ref()
    assert p.grad is not g  # eager sets a new gradient tensor; the one held keeps its values
    np.testing.assert_array_equal(g.numpy(), old)
    np.testing.assert_array_equal(arr, old)
    _same(m1, m2)
    del g, arr

    view = p.grad[0]  # a view holds the array: it must keep its values too
    kept = view.numpy().copy()
    fn(), ref()
    np.testing.assert_array_equal(view.numpy(), kept)
    _same(m1, m2)


def test_weak_references_and_attributes_see_eager_behaviour():
    fn, m1, _ = _setup(True)
    ref, m2, _ = _setup(False)
    for _ in range(3):
        fn(), ref()
    p = next(iter(m1.parameters()))
    r = weakref.ref(p.grad)
    fn(), ref()
    assert r() is None  # eager dropped the old gradient; so does the compiled step
    p.grad.note = "mine"  # an attribute on the gradient: that tensor is never reused
    g = weakref.ref(p.grad)
    fn(), ref()
    assert not hasattr(p.grad, "note") and g() is None
    _same(m1, m2)


def test_returned_losses_kept_across_calls_keep_their_values():
    fn, _, _ = _setup(True)
    ref, _, _ = _setup(False)
    got = [fn() for _ in range(5)]  # every loss held while later calls run
    want = [ref() for _ in range(5)]
    np.testing.assert_allclose([t.item() for t in got], [t.item() for t in want], rtol=1e-5)
    assert len({id(t) for t in got}) == 5


def test_gradients_set_to_none_between_calls_come_back_new():
    fn, m1, opt1 = _setup(True)
    ref, m2, opt2 = _setup(False)
    for _ in range(3):
        fn(), ref()
    opt1.zero_grad(), opt2.zero_grad()  # p.grad None: a guard on .grad sees it
    fn(), ref()
    _same(m1, m2)


def test_guard_failures_recompile_or_refill_and_stay_correct():
    fn, m1, opt1 = _setup(True)
    ref, m2, opt2 = _setup(False)
    for _ in range(3):
        fn(), ref()
    n = fn.recompiles
    # a parameter's array replaced (same shape): the same graph, its pointer set again
    for m in (m1, m2):
        w = next(iter(m.parameters()))
        w.data = w.data.clone() * 0.5
    fn(), ref()
    _same(m1, m2)
    assert fn.recompiles == n
    # an optimizer state tensor replaced: the graph read the old one, so a new graph
    for opt in (opt1, opt2):
        p = opt.param_groups[0]["params"][0]
        opt.state[p]["exp_avg"] = ember.zeros_like(opt.state[p]["exp_avg"])
    fn(), ref()
    _same(m1, m2)
    assert fn.recompiles == n + 1
    # a hyperparameter (baked into the update)
    for opt in (opt1, opt2):
        opt.param_groups[0]["lr"] = 3e-3
    fn(), ref()
    fn(), ref()
    _same(m1, m2)
    assert fn.recompiles == n + 2
    # requires_grad switched off: no gradient for that parameter
    for m in (m1, m2):
        next(iter(m.parameters())).requires_grad_(False)
    fn(), ref()
    fn(), ref()
    assert fn.recompiles > n + 2
    for a, b in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert (a.grad is None) == (b.grad is None)


def test_fast_guards_hold_while_nothing_changes_and_see_each_kind_of_change():
    from ember.compile.effects import FastGuards

    ember.manual_seed(0)
    m = MLP(in_features=3, hidden=(4,), num_classes=2, dropout=0.0)
    opt = ember.optim.Adam(m.parameters(), lr=0.1)
    m(ember.randn(2, 3)).sum().backward()
    opt.step()
    params = list(m.parameters())
    calls = []

    def full():
        calls.append(1)
        return True

    g = FastGuards(full, tensors=params, none=params, modules=[m], opts=[opt])
    assert g.check() and len(calls) == 1
    assert g.check() and len(calls) == 1  # nothing changed: no full check
    changes = [
        lambda: params[0].requires_grad_(False),
        lambda: setattr(params[1], "grad", None),
        lambda: m.eval(),
        lambda: opt.param_groups[0].__setitem__("lr", 0.5),
        lambda: opt.state[params[0]].__setitem__("exp_avg", ember.zeros(1)),
        lambda: setattr(params[2], "data", params[2].data.clone()),
    ]
    for k, change in enumerate(changes):
        change()
        assert g.check() and len(calls) == k + 2, k  # the full check ran again
        assert g.check() and len(calls) == k + 2, k


def test_calls_without_arguments_still_follow_grad_mode_and_autocast():
    w = ember.randn(3, requires_grad=True)

    @ember.compile
    def f():
        return (w * 2).sum()

    for _ in range(3):  # the third call takes the last-hit path
        out = f()
        assert out.requires_grad
    with ember.no_grad():
        out = f()
    assert not out.requires_grad  # another graph: grad mode is part of the key
    with ember.autocast("cpu", dtype=ember.bfloat16):
        f()
        assert f().dtype == ember.float32  # a sum stays float32 under autocast (own graph)
    assert f().requires_grad
    np.testing.assert_allclose(f().item(), (w.detach().numpy() * 2).sum(), rtol=1e-6)
    assert f.recompiles == 3


def test_overhead_breakdown_bench_reports_each_section():
    from bench.compiled_overhead import breakdown

    r = breakdown(ember, "mlp", calls=5, native=True)
    assert set(r) == {"guards", "outputs", "python", "rest", "bare"}
    assert 0 < r["guards"] < r["python"] and r["outputs"] > 0 and r["bare"] > 0
