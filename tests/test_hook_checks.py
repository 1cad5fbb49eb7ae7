"""What hooks and custom Functions hand back to autograd is checked, with PyTorch's errors
(issue 13, item 4)."""

from __future__ import annotations

import pytest
import torch

import ember

BAD = {
    "slice": lambda g: g[:1],
    "reshape": lambda g: g.reshape(3, 1),
    "sum": lambda g: g.sum(),
    "double": lambda g: g.double(),
    "int": lambda g: 5,
}


def _error(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def _same(t_fn, e_fn):
    t, e = _error(t_fn), _error(e_fn)
    assert type(e) is type(t), f"{type(e).__name__}: {e} (torch {type(t).__name__}: {t})"
    assert str(e) == str(t).replace("torch.", "ember.")


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("where", ["leaf", "intermediate"])
def test_tensor_hook_result_is_checked(bad, where):
    def run(lib):
        def h(g):
            return BAD[bad](g)

        p = lib.nn.Parameter(lib.ones(3))
        y = p * 2
        (p if where == "leaf" else y).register_hook(h)
        y.sum().backward()

    _same(lambda: run(torch), lambda: run(ember))


def test_good_hook_still_replaces_the_gradient():
    p = ember.nn.Parameter(ember.ones(3))
    p.register_hook(lambda g: g * 10)
    (p * 2).sum().backward()
    assert p.grad.tolist() == [20.0, 20.0, 20.0]


def _fn(lib, n_grads):
    class F(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return (g,) * n_grads if n_grads > 1 else g

    return F


def test_function_returning_too_many_gradients():
    def run(lib):
        _fn(lib, 2).apply(lib.ones(2, requires_grad=True)).sum().backward()

    _same(lambda: run(torch), lambda: run(ember))


def test_function_extra_none_gradients_are_allowed():
    class F(ember.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, None

    x = ember.ones(2, requires_grad=True)
    F.apply(x).sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_full_backward_hook_sees_and_replaces_grad_input():
    results = {}
    for lib in (torch, ember):
        lib.manual_seed(0)
        m = lib.nn.Linear(3, 2)
        seen = []

        def hook(mod, gi, go, seen=seen):
            seen.append((tuple(gi[0].shape), tuple(go[0].shape)))
            return (gi[0] * 3,)

        m.register_full_backward_hook(hook)
        x = lib.ones(4, 3, requires_grad=True)
        m(x).sum().backward()
        results[lib.__name__] = (seen, x.grad.sum().item() / m.weight.sum(0).sum().item())
    assert results["ember"][0] == results["torch"][0] == [((4, 3), (4, 2))]
    assert results["ember"][1] == pytest.approx(results["torch"][1], rel=1e-5)  # grad_input scaled by 3


@pytest.mark.parametrize(
    "ret",
    [lambda gi: (gi[0][:1],), lambda gi: (gi[0], gi[0]), lambda gi: (gi[0].double(),)],
    ids=["size", "count", "dtype"],
)
def test_full_backward_hook_result_is_checked(ret):
    def run(lib):
        m = lib.nn.Linear(3, 2)

        def hook(mod, gi, go):
            return ret(gi)

        m.register_full_backward_hook(hook)
        m(lib.ones(4, 3, requires_grad=True)).sum().backward()

    t, e = _error(lambda: run(torch)), _error(lambda: run(ember))
    assert type(e) is type(t)
    assert str(e).split("'")[0] == str(t).split("'")[0]  # torch names its own wrapper as the hook


def test_full_backward_hook_without_input_grad():
    m = ember.nn.Linear(3, 2)
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi, tuple(go[0].shape))))
    m(ember.ones(4, 3)).sum().backward()
    assert seen == [((None,), (4, 2))]
