"""A compiled in-place write of a value that requires grad into a tensor that does not
(``p.add_(x)``): ``p`` gets eager's autograd history, and backward through it reaches ``x``
(PyTorch's semantics, checked against torch)."""

import warnings

import numpy as np
import pytest
import torch

import ember
from ember.compile.api import _Entry


def _leaf(fw, p, x):
    p.add_(x)
    return (p * 2).sum()


def _chain(fw, p, x):
    p.mul_(2).add_(x * 3)


def _view(fw, b, x):
    v = b[1:4]  # a view of a base that does not require grad
    v.mul_(x)
    return (b * b).sum()


def _run(fw, fn, compiled, shape=(3,)):
    p = fw.zeros(5) + 0.5 if fn is _view else fw.zeros(*shape) + 0.5
    x = fw.tensor([1.0, 2.0, 3.0], requires_grad=True)

    def f(p, x):
        return fn(fw, p, x)

    if compiled:
        f = ember.compile(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        out = f(p, x)
    state = (p.requires_grad, p.grad_fn is not None, p.is_leaf)
    loss = (p * p).sum()
    if out is not None:
        loss = loss + out
    loss.backward()
    return p.detach().numpy().copy(), x.grad.numpy().copy(), state, f


@pytest.mark.parametrize("fn", [_leaf, _chain, _view])
def test_the_written_tensor_gets_eager_history(fn):
    want = _run(torch, fn, False)
    eager = _run(ember, fn, False)
    got = _run(ember, fn, True)
    for r in (eager, got):
        np.testing.assert_allclose(r[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(r[1], want[1], rtol=1e-6)
        assert r[2] == want[2] == (True, True, False)


def test_without_gradients_the_graph_still_runs():
    f = ember.compile(lambda p, x: _leaf(ember, p, x))
    p, x = ember.zeros(3), ember.ones(3, requires_grad=True)
    with ember.no_grad():
        out = f(p, x)
    assert isinstance(next(iter(f.cache.values())), _Entry) and p.grad_fn is None
    np.testing.assert_allclose(p.numpy(), np.ones(3))
    assert out.item() == 6.0
    f(ember.zeros(3), ember.ones(3))  # x not requiring grad: compiled as well
    assert all(isinstance(e, _Entry) for e in f.cache.values())


def test_a_non_leaf_that_requires_grad_gets_the_write_in_its_history():
    """``p = w * 1`` already has history: the write replaces it (AddBackward), so a backward
    through ``p`` reaches ``x`` as well as ``w``."""

    def f(p, x):
        p.add_(x)
        return p.sum()

    grads = []
    for compiled in (False, True):
        w, x = ember.ones(3, requires_grad=True), ember.ones(3, requires_grad=True)
        p = w * 1
        (ember.compile(f) if compiled else f)(p, x)
        (p * 3).sum().backward()
        grads.append((w.grad.numpy(), x.grad.numpy()))
    tw, tx = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    tp = tw * 1
    f(tp, tx)
    (tp * 3).sum().backward()
    for gw, gx in grads:
        np.testing.assert_allclose(gw, tw.grad.numpy())
        np.testing.assert_allclose(gx, tx.grad.numpy())
