"""ember.func jvp and jacfwd against torch.func."""

import numpy as np
import pytest
import torch

import ember
from ember.func._jvp import jacfwd, jvp

rng = np.random.default_rng(1)


def _pair(*shape):
    a = rng.standard_normal(shape)
    return ember.tensor(a), torch.tensor(a)


def _close(e, t, tol=1e-6):
    np.testing.assert_allclose(e.numpy(), t.detach().numpy(), rtol=tol, atol=1e-8)


def test_jvp_values_and_pytree_outputs():
    (xe, xt), (ve, vt) = _pair(3, 4), _pair(3, 4)
    (we, wt), (ue, ut) = _pair(4), _pair(4)

    def f(m):
        return lambda x, w: {"a": (x * w).tanh().sum(1), "b": [x @ w, m.exp(w)]}

    oe, je = jvp(f(ember), (xe, we), (ve, ue))
    ot, jt = torch.func.jvp(f(torch), (xt, wt), (vt, ut))
    _close(oe["a"], ot["a"])
    _close(je["a"], jt["a"])
    for i in range(2):
        _close(oe["b"][i], ot["b"][i])
        _close(je["b"][i], jt["b"][i])


def test_jvp_has_aux_and_constant_output():
    (xe, xt), (ve, vt) = _pair(3), _pair(3)
    out, jv, aux = jvp(lambda x: (x.sin(), x.cos()), (xe,), (ve,), has_aux=True)
    _close(jv, vt * xt.cos())
    _close(aux, xt.cos())
    # an output that does not depend on the input has a zero tangent
    _, jv0 = jvp(lambda x: ember.ones(2), (xe,), (ve,))
    assert jv0.numpy().tolist() == [0.0, 0.0]


def test_jvp_errors():
    x = ember.ones(2)
    with pytest.raises(RuntimeError, match="Expected primals to be a tuple"):
        jvp(ember.sin, x, (x,))
    with pytest.raises(RuntimeError, match="same shape"):
        jvp(ember.sin, (x,), (ember.ones(3),))
    with pytest.raises(RuntimeError, match="same python structure"):
        jvp(lambda a, b: a + b, (x, x), (x,))


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_jacfwd_matches_torch(argnums):
    (xe, xt), (we, wt) = _pair(2, 3), _pair(3, 4)

    def f(m):
        return lambda x, w: m.softmax(x @ w, -1).log() * 2

    je = jacfwd(f(ember), argnums=argnums)(xe, we)
    jt = torch.func.jacfwd(f(torch), argnums=argnums)(xt, wt)
    if isinstance(argnums, tuple):
        assert isinstance(je, tuple) and len(je) == 2
        for a, b in zip(je, jt):
            assert tuple(a.shape) == tuple(b.shape)
            _close(a, b)
    else:
        assert tuple(je.shape) == tuple(jt.shape)
        _close(je, jt)


def test_jacfwd_tuple_outputs_and_aux():
    xe, xt = _pair(3)

    def f(m):
        return lambda x: ((x**2, x.sum()), x.max())

    (je, aux) = jacfwd(f(ember), has_aux=True)(xe)
    (jt, auxt) = torch.func.jacfwd(f(torch), has_aux=True)(xt)
    _close(je[0], jt[0])
    _close(je[1], jt[1])
    _close(aux, auxt)


def test_jacfwd_equals_reverse_mode_jacobian():
    xe, xt = _pair(4)
    w = ember.tensor(rng.standard_normal((4, 4)))
    jf = jacfwd(lambda x: (w @ x).tanh())(xe)
    jr = torch.autograd.functional.jacobian(lambda x: (torch.tensor(w.numpy()) @ x).tanh(), xt)
    _close(jf, jr)
