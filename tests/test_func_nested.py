"""Nested forward mode and forward over reverse, against torch.func.

``jvp`` of ``jvp``, ``jacfwd(jacfwd(f))``, ``hessian`` (``jacfwd(jacrev(f))``, as PyTorch
composes it), ``jacrev(jacfwd(f))`` and the forward-over-reverse Hessian-vector product
``jvp(grad(f), (x,), (v,))``: values equal to torch.func's, results detached.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.func as tf

import ember
from ember.func import grad, hessian, jacfwd, jacrev, jvp

rng = np.random.default_rng(0)
X = rng.standard_normal(4)
V = rng.standard_normal(4)
W = rng.standard_normal((3, 4)) * 0.5


def _scalar(m):
    w = m.tensor(W)

    def f(x):
        h = m.tanh(w @ x)
        return (m.softmax(h, 0) * h.exp()).sum() + (x**3).sum() * x.sin().prod() + m.logsumexp(x, 0)

    return f


def _vector(m):
    return lambda x: x.sin() * x.sum() + m.nn.functional.gelu(x) * x.exp()


def _layer_norm(m, h):
    if m is ember:
        return m.nn.functional.layer_norm(h, (3,))
    # The torch oracle normalizes by hand: torch's own jvp of jvp through its fused layer_norm
    # disagrees with finite differences (test_layer_norm_jvp_of_jvp_by_finite_differences).
    hc = h - h.mean(-1, keepdim=True)
    return hc * ((hc * hc).mean(-1, keepdim=True) + 1e-5).rsqrt()


def _mlp_loss(m):
    F = m.nn.functional
    w1, w2 = m.tensor(W), m.tensor(W[:2, :3])
    y = m.tensor([1])

    def f(x):
        h = _layer_norm(m, F.linear(x, w1).relu() + F.linear(x, w1).sigmoid())
        return F.cross_entropy(F.linear(h, w2).unsqueeze(0), y)

    return f


def _close(a, b):
    assert not a.requires_grad
    np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


FUNCS = {"scalar": _scalar, "mlp_loss": _mlp_loss}


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_jvp_of_jvp(name):
    fe, ft = FUNCS[name](ember), FUNCS[name](torch)
    ve, vt = ember.tensor(V), torch.tensor(V)
    u = rng.standard_normal(4)
    ue, ut = ember.tensor(u), torch.tensor(u)
    got = jvp(lambda x: jvp(fe, (x,), (ve,))[1], (ember.tensor(X),), (ue,))[1]
    want = tf.jvp(lambda x: tf.jvp(ft, (x,), (vt,))[1], (torch.tensor(X),), (ut,))[1]
    _close(got, want)


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_hessians(name):
    fe, ft = FUNCS[name](ember), FUNCS[name](torch)
    xe, xt = ember.tensor(X), torch.tensor(X)
    want = tf.hessian(ft)(xt)
    _close(hessian(fe)(xe), want)
    _close(jacfwd(jacfwd(fe))(xe), want)
    _close(jacfwd(jacrev(fe))(xe), want)
    _close(jacrev(jacfwd(fe))(xe), want)


def test_layer_norm_jvp_of_jvp_by_finite_differences():
    ve, ue = ember.tensor(V), ember.tensor(rng.standard_normal(4))
    inner = lambda x: jvp(lambda y: ember.nn.functional.layer_norm(y, (4,)), (x,), (ve,))[1]  # noqa: E731
    got = jvp(inner, (ember.tensor(X),), (ue,))[1]
    eps = 1e-6
    fd = (inner(ember.tensor(X) + eps * ue) - inner(ember.tensor(X) - eps * ue)) / (2 * eps)
    np.testing.assert_allclose(got.numpy(), fd.numpy(), rtol=1e-6, atol=1e-8)


def test_jacfwd_of_jacfwd_vector_output():
    xe, xt = ember.tensor(X), torch.tensor(X)
    _close(jacfwd(jacfwd(_vector(ember)))(xe), tf.jacfwd(tf.jacfwd(_vector(torch)))(xt))


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_forward_over_reverse_hvp(name):
    fe, ft = FUNCS[name](ember), FUNCS[name](torch)
    got = jvp(grad(fe), (ember.tensor(X),), (ember.tensor(V),))[1]
    want = tf.jvp(tf.grad(ft), (torch.tensor(X),), (torch.tensor(V),))[1]
    _close(got, want)


def test_nested_jvp_perturbations_stay_apart():
    # d/dx [x * d/dy (x * y)] = d/dx [x * x] = 2x: the inner jvp must not see the outer tangent
    x = ember.tensor(3.0, dtype=ember.float64)
    one = ember.ones((), dtype=ember.float64)

    def inner(x):
        return jvp(lambda y: x * y, (ember.tensor(5.0, dtype=ember.float64),), (one,))[1]

    got = jvp(lambda x: x * inner(x), (x,), (ember.ones((), dtype=ember.float64),))[1]
    assert got.item() == 6.0


def test_dual_level_still_does_not_nest():
    import ember.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match="Nested forward mode AD is not supported"):
            fwAD.enter_dual_level()
        # but the transforms nest inside it
        d = fwAD.make_dual(ember.tensor([1.0, 2.0]), ember.tensor([1.0, 0.0]))
        _, t = jvp(lambda x: x * d, (ember.tensor([3.0, 4.0]),), (ember.ones(2),))
        assert fwAD.unpack_dual(t).tangent.tolist() == [1.0, 0.0]
