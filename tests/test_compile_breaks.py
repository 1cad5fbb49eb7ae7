"""Graph breaks: data-dependent Python splits a compiled function into graph segments and
Python; results, autograd and side effects stay eager's on every call."""

import logging

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.compile import CompileError


def _same(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "body,what",
    [
        (lambda x: x * 2 if (x.sum() > 0).item() else x - 1, "Tensor.item()"),
        (lambda x: x * 2 if x.sum() > 0 else x - 1, "bool(tensor)"),
        (lambda x: ember.tensor(x.exp().tolist()) * 2, "Tensor.tolist()"),
        (lambda x: ember.tensor(x.exp().numpy() + 1) * 2, "Tensor.numpy()"),
        (lambda x: float(x.sum()) * x, "Tensor.item()"),
        (lambda x: ember.tensor(np.asarray(x * 3)) + 1, "np.asarray(tensor)"),
    ],
)
def test_each_break_kind_gives_eager_results_without_warning(body, what, recwarn):
    cf = ember.compile(body)
    for _ in range(3):
        for x in (ember.randn(4), -ember.rand(4), ember.rand(4)):
            _same(cf(x), body(x))
    assert not [w for w in recwarn if "ember.compile" in str(w.message)]
    assert len(cf.breaks) == 1 and what in cf.breaks[0] and "test_compile_breaks.py" in cf.breaks[0]
    assert cf.segments_run > 0


def test_print_happens_on_every_call(capsys):
    @ember.compile
    def f(x):
        y = x.exp() * 2
        print("y:", y)
        return y + 1

    x = ember.zeros(2)
    for _ in range(3):
        _same(f(x), [3.0, 3.0])
    out = capsys.readouterr().out
    assert out.count("y: tensor([2., 2.])") == 3


def test_segments_keep_autograd_and_grad_accumulation():
    w = ember.randn(3, requires_grad=True)

    def f(x):
        h = (x * w).tanh()
        scale = 2.0 if h.sum().item() > 0 else -1.0
        return (h * scale).sum()

    cf = ember.compile(f)
    x = ember.randn(3)
    cf(x).backward()
    cf(x).backward()
    g = w.grad.numpy().copy()
    w.grad = None
    f(x).backward()
    f(x).backward()
    _same(g, w.grad.numpy())


def test_backward_and_optimizer_with_a_break_inside_the_step():
    def run(compiled):
        ember.manual_seed(0)
        model = ember.nn.Sequential(ember.nn.Linear(4, 8), ember.nn.ReLU(), ember.nn.Linear(8, 3))
        opt = ember.optim.Adam(model.parameters(), lr=1e-2, foreach=True)  # reads its step counts
        logged = []

        def step(x, y):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            logged.append(loss.item())  # a break between backward and the update
            opt.step()
            return loss

        fn = ember.compile(step) if compiled else step
        ember.manual_seed(1)
        data = [(ember.randn(6, 4), ember.randint(0, 3, (6,))) for _ in range(5)]
        losses = [fn(x, y).item() for x, y in data]
        return losses, logged, [p.detach().numpy().copy() for p in model.parameters()], fn

    got, got_log, got_w, fn = run(True)
    want, want_log, want_w, _ = run(False)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_log, want_log, rtol=1e-5)
    for a, b in zip(got_w, want_w):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert fn.breaks and "item" in fn.breaks[0]


def test_value_dependent_shapes_run_that_op_eagerly():
    def f(x):
        idx = (x > 0).nonzero()
        return x[idx[:, 0]].exp().sum() + 1

    cf = ember.compile(f)
    for x in (ember.randn(6), ember.randn(9)):
        _same(cf(x), f(x))


def test_fullgraph_raises_for_every_break_kind():
    with pytest.raises(CompileError, match=r"bool\(tensor\).*test_compile_breaks.py:\d+"):
        ember.compile(lambda x: x if x.sum() > 0 else -x, fullgraph=True)(ember.randn(3))
    with pytest.raises(CompileError, match=r"printing a tensor"):
        ember.compile(lambda x: print(x) or x, fullgraph=True)(ember.randn(3))


def test_break_reason_is_logged(caplog, capsys):
    cf = ember.compile(lambda x: x * x.sum().item(), options={"explain": True})
    with caplog.at_level(logging.INFO, logger="ember.compile"):
        cf(ember.ones(2))
    assert any("graph break" in r.getMessage() and "item" in r.getMessage() for r in caplog.records)
    assert "graph break" in capsys.readouterr().err


def test_an_error_in_the_function_runs_the_ops_before_it():
    buf = ember.zeros(3)

    def f(x):
        buf.add_(x)
        if x.sum() > 100:
            pass
        raise ValueError("user error")

    cf = ember.compile(f)
    for _ in range(2):
        with pytest.raises(ValueError, match="user error"):
            cf(ember.ones(3))
    _same(buf, [2.0, 2.0, 2.0])  # once per call (the capture attempt wrote nothing)


def test_pure_segments_are_fused_and_cached_by_signature():
    def f(x):
        y = ((x * 2).exp() + 1).tanh()
        if y.sum() > 0:  # the segment before the break: three elementwise ops and a sum
            return y * 3
        return y

    cf = ember.compile(f)
    x = ember.randn(64)
    for _ in range(3):
        _same(cf(x), f(x))
    assert len(cf.segment_cache) == 2  # the segment before the break, and the one after it
    graph, steps, kernels = next(iter(cf.segment_cache.values()))
    assert any(kind == "group" for kind, _ in steps) and kernels
    runs = cf.segments_run
    cf(x)
    assert cf.segments_run == runs + 2 and len(cf.segment_cache) == 2
