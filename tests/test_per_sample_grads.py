"""Per-sample gradients, as in PyTorch's tutorial: ``vmap(grad(loss), in_dims=(None, 0, 0))``
with ``functional_call`` over a small MLP and a small conv net, equal to a Python loop of ``grad``
and to torch.func; and vmap's ``randomness=`` modes and ``chunk_size``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.func as tf

import ember
from ember.func import functional_call, grad, jacrev, vjp, vmap

rng = np.random.default_rng(0)


def _mlp(m):
    return m.nn.Sequential(m.nn.Linear(6, 8), m.nn.Tanh(), m.nn.Linear(8, 8), m.nn.ReLU(), m.nn.Linear(8, 3))


def _convnet(m):
    return m.nn.Sequential(
        m.nn.Conv2d(2, 4, 3, padding=1),
        m.nn.ReLU(),
        m.nn.MaxPool2d(2),
        m.nn.Conv2d(4, 3, 2),
        m.nn.Flatten(),
        m.nn.Linear(3 * 2 * 2, 5),
    )


def _pair(build):
    me, mt = build(ember), build(torch)
    for pe, pt in zip(me.parameters(), mt.parameters()):
        pe.data = ember.tensor(pt.detach().numpy().copy())
    return me, mt


def _loss(m, model):
    F = m.nn.functional

    def loss(params, x, y):
        out = (functional_call if m is ember else tf.functional_call)(model, params, (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    return loss


CASES = {"mlp": (_mlp, (6,), 3), "convnet": (_convnet, (2, 6, 6), 5)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_sample_gradients_match_torch_and_a_loop(name):
    build, shape, classes = CASES[name]
    me, mt = _pair(build)
    n = 5
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = rng.integers(0, classes, n)
    pe = {k: v.detach() for k, v in me.named_parameters()}
    pt = {k: v.detach() for k, v in mt.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # batching rules all the way: no per-sample loop fallback
        got = vmap(grad(_loss(ember, me)), in_dims=(None, 0, 0))(pe, ember.tensor(x), ember.tensor(y))
    want = tf.vmap(tf.grad(_loss(torch, mt)), in_dims=(None, 0, 0))(pt, torch.tensor(x), torch.tensor(y))
    loop = [grad(_loss(ember, me))(pe, ember.tensor(x[i]), ember.tensor(y[i])) for i in range(n)]
    assert set(got) == set(pe)
    for k in pe:
        assert tuple(got[k].shape) == (n,) + tuple(pe[k].shape)
        assert not got[k].requires_grad
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(got[k].numpy(), np.stack([g[k].numpy() for g in loop]), rtol=1e-5, atol=1e-6)


def test_per_sample_gradients_with_buffers_and_chunks():
    me, mt = _pair(_mlp)
    x = rng.standard_normal((7, 6)).astype(np.float32)
    y = rng.integers(0, 3, 7)

    def loss(m, model):
        def f(params, buffers, x, y):
            fc = functional_call if m is ember else tf.functional_call
            out = fc(model, (params, buffers), (x.unsqueeze(0),))
            return m.nn.functional.cross_entropy(out, y.unsqueeze(0))

        return f

    pe = {k: v.detach() for k, v in me.named_parameters()}
    pt = {k: v.detach() for k, v in mt.named_parameters()}
    got = vmap(grad(loss(ember, me)), in_dims=(None, None, 0, 0), chunk_size=3)(
        pe, {}, ember.tensor(x), ember.tensor(y)
    )
    want = tf.vmap(tf.grad(loss(torch, mt)), in_dims=(None, None, 0, 0))(pt, {}, torch.tensor(x), torch.tensor(y))
    for k in pe:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-4, atol=1e-6)


def test_vmap_of_vjp_and_jacrev():
    x = rng.standard_normal((4, 3))
    u = rng.standard_normal((4, 3))
    f_e = lambda v: v.sin() * v.sum()  # noqa: E731
    f_t = lambda v: v.sin() * v.sum()  # noqa: E731
    got = vmap(lambda v, c: vjp(f_e, v)[1](c)[0])(ember.tensor(x), ember.tensor(u))
    want = tf.vmap(lambda v, c: tf.vjp(f_t, v)[1](c)[0])(torch.tensor(x), torch.tensor(u))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)
    got = vmap(jacrev(f_e))(ember.tensor(x))
    want = tf.vmap(tf.jacrev(f_t))(torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)
    # per-sample Hessians by reverse over reverse
    got = vmap(jacrev(jacrev(lambda v: (v**3).sum())))(ember.tensor(x))
    want = tf.vmap(tf.hessian(lambda v: (v**3).sum()))(torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


def test_inplace_on_a_tracked_batched_tensor():
    # mean() scales its sum in place: inside vmap(grad) the batched sum has history
    x = rng.standard_normal((3, 4))
    got = vmap(grad(lambda v: (v * v).mean() * v.sum()))(ember.tensor(x))
    want = tf.vmap(tf.grad(lambda v: (v * v).mean() * v.sum()))(torch.tensor(x))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


def _random_fns(m):
    F = m.nn.functional
    return {
        "rand": lambda x: x + m.rand(6),
        "randn": lambda x: x + m.randn(6),
        "dropout": lambda x: F.dropout(x, 0.5),
        "normal_": lambda x: x.clone().normal_(),
        "bernoulli": lambda x: m.bernoulli(x * 0.5),
    }


@pytest.mark.parametrize("fn", sorted(_random_fns(torch)))
@pytest.mark.parametrize("randomness", ["error", "same", "different"])
def test_randomness_modes_as_torch(fn, randomness):
    xe, xt = ember.ones(4, 6), torch.ones(4, 6)

    def outcome(m, V, x):
        try:
            out = V(_random_fns(m)[fn], randomness=randomness)(x)
        except RuntimeError as e:
            return "error: " + str(e)
        return "same" if bool((out == out[0]).all()) else "different"

    assert outcome(ember, vmap, xe) == outcome(torch, tf.vmap, xt)


def test_different_randomness_on_an_unbatched_inplace_fill_raises():
    y = ember.zeros(6)
    with pytest.raises(RuntimeError, match="Cannot ask for different inplace randomness on an unbatched tensor"):
        vmap(lambda x: y.normal_() + x, randomness="different")(ember.ones(4, 6))


def test_chunk_size():
    x = rng.standard_normal((7, 3))
    f = lambda v: (v.exp() * v).sum()  # noqa: E731
    whole = vmap(grad(f))(ember.tensor(x))
    for chunk in (1, 2, 3, 7, 10):
        np.testing.assert_allclose(vmap(grad(f), chunk_size=chunk)(ember.tensor(x)).numpy(), whole.numpy())
    with pytest.raises(ValueError, match="chunk_size should be None or greater than 0"):
        vmap(f, chunk_size=0)
