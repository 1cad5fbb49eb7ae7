"""ember.autograd.functional and ember.func against torch.autograd.functional and torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.functional as TAF
import torch.func as TF

import ember
import ember.autograd.functional as EAF
import ember.func as EF


def _t(mod, a, rg=False):
    return mod.tensor(np.asarray(a, dtype=np.float32), requires_grad=rg)


def _close(a, b, tol=1e-5):
    if isinstance(b, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, tol)
    elif isinstance(b, dict):
        assert a.keys() == b.keys()
        for k in b:
            _close(a[k], b[k], tol)
    else:
        assert tuple(a.shape) == tuple(b.shape)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=tol, atol=tol)


X = [0.5, -1.2, 2.0]
Y = [[0.3, 0.1], [-0.4, 0.9]]


def f_vec(m):
    return lambda x: m.sin(x) * x.exp()


def f_scalar(m):
    return lambda x: (x**3).sum() + (x.tanh() * x).sum()


def f_two(m):
    return lambda x, y: ((x[:2] * y.sum(0)).sum() + (y**2).sum(), x * 2)


def f_two_scalar(m):
    return lambda x, y: (x[:2] @ y @ x[:2]) + (x**2).sum() * y.sum()


# ----------------------------------------------------------------------------- autograd.functional
@pytest.mark.parametrize("create_graph", [False, True])
def test_vjp_jvp_tensor_and_tuple(create_graph):
    v = [1.0, 2.0, -1.0]
    for mod_f, args, vv in [(f_vec, (X,), (v,)), (f_two, (X, Y), None)]:
        e_in = tuple(_t(ember, a) for a in args)
        t_in = tuple(_t(torch, a) for a in args)
        single = len(args) == 1
        if vv is None:  # f_two: outputs (scalar, vector)
            ev = (_t(ember, 1.5), _t(ember, v))
            tv = (_t(torch, 1.5), _t(torch, v))
        else:
            ev, tv = _t(ember, vv[0]), _t(torch, vv[0])
        eo, eg = EAF.vjp(mod_f(ember), e_in[0] if single else e_in, ev, create_graph=create_graph)
        to, tg = TAF.vjp(mod_f(torch), t_in[0] if single else t_in, tv, create_graph=create_graph)
        _close(eo, to)
        _close(eg, tg)
        jv_e = _t(ember, v) if single else (_t(ember, v), _t(ember, Y) * 0.5)
        jv_t = _t(torch, v) if single else (_t(torch, v), _t(torch, Y) * 0.5)
        eo, ej = EAF.jvp(mod_f(ember), e_in[0] if single else e_in, jv_e, create_graph=create_graph)
        to, tj = TAF.jvp(mod_f(torch), t_in[0] if single else t_in, jv_t, create_graph=create_graph)
        _close(eo, to)
        _close(ej, tj)


@pytest.mark.parametrize("fn, args", [(f_vec, (X,)), (f_two, (X, Y))])
def test_jacobian_matches(fn, args):
    e_in = tuple(_t(ember, a) for a in args)
    t_in = tuple(_t(torch, a) for a in args)
    if len(args) == 1:
        e_in, t_in = e_in[0], t_in[0]
    _close(EAF.jacobian(fn(ember), e_in), TAF.jacobian(fn(torch), t_in))
    _close(EAF.jacobian(fn(ember), e_in, vectorize=True), TAF.jacobian(fn(torch), t_in, vectorize=True))


@pytest.mark.parametrize("fn, args", [(f_scalar, (X,)), (f_two_scalar, (X, Y))])
def test_hessian_vhp_hvp_match(fn, args):
    e_in = tuple(_t(ember, a) for a in args)
    t_in = tuple(_t(torch, a) for a in args)
    ev = tuple(_t(ember, a) * 0.7 + 0.1 for a in args)
    tv = tuple(_t(torch, a) * 0.7 + 0.1 for a in args)
    if len(args) == 1:
        e_in, t_in, ev, tv = e_in[0], t_in[0], ev[0], tv[0]
    _close(EAF.hessian(fn(ember), e_in), TAF.hessian(fn(torch), t_in))
    for name in ("vhp", "hvp"):
        _close(getattr(EAF, name)(fn(ember), e_in, ev), getattr(TAF, name)(fn(torch), t_in, tv))


def test_create_graph_results_are_differentiable():
    x_e, x_t = _t(ember, X, True), _t(torch, X, True)
    _, he = EAF.hvp(f_scalar(ember), x_e, _t(ember, [1.0, 0.0, 1.0]), create_graph=True)
    _, ht = TAF.hvp(f_scalar(torch), x_t, _t(torch, [1.0, 0.0, 1.0]), create_graph=True)
    he.sum().backward()
    ht.sum().backward()
    _close(x_e.grad, x_t.grad)
    j = EAF.jacobian(f_vec(ember), _t(ember, X), create_graph=False)
    assert not j.requires_grad


def test_strict_and_errors_match_torch():
    def indep(m):
        return lambda x, y: x * 2

    for mod, F in ((ember, EAF), (torch, TAF)):
        x, y = _t(mod, X), _t(mod, X)
        with pytest.raises(RuntimeError, match="independent of input 1"):
            F.vjp(indep(mod), (x, y), _t(mod, X), strict=True)
        with pytest.raises(RuntimeError, match="independent of input 1"):
            F.jacobian(indep(mod), (x, y), strict=True)
        with pytest.raises(RuntimeError, match="does not require gradients"):
            F.jacobian(lambda a, m=mod: m.ones(2), x, strict=True)
        with pytest.raises(RuntimeError, match="v can only be None"):
            F.vjp(f_vec(mod), x)
        with pytest.raises(RuntimeError, match="invalid size"):
            F.vjp(f_vec(mod), x, mod.ones(2))
        with pytest.raises(TypeError, match="must be either a Tensor or a tuple of Tensors"):
            F.jacobian(f_vec(mod), [x])
        with pytest.raises(RuntimeError, match="single element"):
            F.hessian(f_vec(mod), x)
        # non-strict: zeros where independent
        _, g = F.vjp(indep(mod), (x, y), _t(mod, X))
        assert float(g[1].abs().sum()) == 0.0


# ----------------------------------------------------------------------------- ember.func
def test_grad_argnums_has_aux_and_value():
    def f(m):
        return lambda x, y: ((m.sin(x) * y[:3]).sum(), {"n": x.norm()})

    ex, ey = _t(ember, X), _t(ember, [1.0, 2.0, 3.0, 4.0])
    tx, ty = _t(torch, X), _t(torch, [1.0, 2.0, 3.0, 4.0])
    _close(
        EF.grad(f(ember), argnums=(0, 1), has_aux=True)(ex, ey), TF.grad(f(torch), argnums=(0, 1), has_aux=True)(tx, ty)
    )
    _close(
        EF.grad_and_value(f(ember), argnums=1, has_aux=True)(ex, ey),
        TF.grad_and_value(f(torch), argnums=1, has_aux=True)(tx, ty),
    )
    _close(EF.grad(lambda x, y: f(ember)(x, y)[0])(ex, ey), TF.grad(lambda x, y: f(torch)(x, y)[0])(tx, ty))


def test_grad_of_pytree_and_nesting():
    def loss(m):
        return lambda p, x: ((x @ p["w"]).tanh() + p["b"]).pow(2).sum()

    rng = np.random.default_rng(0)
    w, b, x = rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((4, 3))
    ep = {"w": _t(ember, w), "b": _t(ember, b)}
    tp = {"w": _t(torch, w), "b": _t(torch, b)}
    _close(EF.grad(loss(ember))(ep, _t(ember, x)), TF.grad(loss(torch))(tp, _t(torch, x)))
    # second derivative by nesting, and grad of grad of sin
    _close(
        EF.grad(EF.grad(lambda s: s.sin() * s**3))(_t(ember, 0.7)),
        TF.grad(TF.grad(lambda s: s.sin() * s**3))(_t(torch, 0.7)),
    )


def test_grad_errors_match_torch():
    for mod, F in ((ember, EF), (torch, TF)):
        with pytest.raises(RuntimeError, match="scalar Tensor"):
            F.grad(lambda x: x * 2)(_t(mod, X))
        with pytest.raises(RuntimeError, match="argnum"):
            F.grad(lambda x: x.sum(), argnums=3)(_t(mod, X))
        with pytest.raises(RuntimeError, match="output of function f should be a tuple"):
            F.grad(lambda x: x.sum(), has_aux=True)(_t(mod, X))


def test_grad_result_connects_to_outer_graph():
    xe, xt = _t(ember, X, True), _t(torch, X, True)
    EF.grad(f_scalar(ember))(xe).sum().backward()
    TF.grad(f_scalar(torch))(xt).sum().backward()
    _close(xe.grad, xt.grad)
    assert not EF.grad(f_scalar(ember))(_t(ember, X)).requires_grad


def test_vjp_transform():
    eo, efn = EF.vjp(f_two(ember), _t(ember, X), _t(ember, Y))
    to, tfn = TF.vjp(f_two(torch), _t(torch, X), _t(torch, Y))
    _close(eo, to)
    ce = (_t(ember, 2.0), _t(ember, [1.0, -1.0, 0.5]))
    ct = (_t(torch, 2.0), _t(torch, [1.0, -1.0, 0.5]))
    _close(efn(ce), tfn(ct))
    _close(efn(ce), tfn(ct))  # callable again
    eo, efn, eaux = EF.vjp(lambda x: (x.exp(), x.sum()), _t(ember, X), has_aux=True)
    to, tfn, taux = TF.vjp(lambda x: (x.exp(), x.sum()), _t(torch, X), has_aux=True)
    _close(efn(_t(ember, X)), tfn(_t(torch, X)))
    _close(eaux, taux)


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_jacrev_and_hessian(argnums):
    _close(
        EF.jacrev(f_two(ember), argnums)(_t(ember, X), _t(ember, Y)),
        TF.jacrev(f_two(torch), argnums)(_t(torch, X), _t(torch, Y)),
    )
    _close(
        EF.hessian(f_two_scalar(ember), argnums)(_t(ember, X), _t(ember, Y)),
        TF.hessian(f_two_scalar(torch), argnums)(_t(torch, X), _t(torch, Y)),
    )


def _pair_modules():
    tm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    em = ember.nn.Sequential(ember.nn.Linear(3, 4), ember.nn.BatchNorm1d(4), ember.nn.Linear(4, 3))
    em.load_state_dict({k: ember.tensor(v.detach().numpy().copy()) for k, v in tm.state_dict().items()})
    return em, tm


def test_functional_call_params_buffers_and_grad():
    em, tm = _pair_modules()
    em.eval()
    tm.eval()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3))
    new = {"0.weight": rng.standard_normal((4, 3)), "1.running_mean": rng.standard_normal(4)}
    en = {k: _t(ember, v) for k, v in new.items()}
    tn = {k: _t(torch, v) for k, v in new.items()}
    _close(EF.functional_call(em, en, (_t(ember, x),)), TF.functional_call(tm, tn, (_t(torch, x),)))
    _close(em(_t(ember, x)), tm(_t(torch, x)))  # module unchanged afterwards
    # gradients of a loss with respect to the given parameters, through grad
    ep = {k: v.detach() for k, v in em.named_parameters()}
    tp = {k: v.detach() for k, v in tm.named_parameters()}
    eg = EF.grad(lambda p: EF.functional_call(em, p, _t(ember, x)).pow(2).sum())(ep)
    tg = TF.grad(lambda p: TF.functional_call(tm, p, _t(torch, x)).pow(2).sum())(tp)
    _close(eg, tg, 1e-4)
    # a tuple of dicts
    _close(
        EF.functional_call(em, ({"0.weight": en["0.weight"]}, {"1.running_mean": en["1.running_mean"]}), _t(ember, x)),
        TF.functional_call(tm, ({"0.weight": tn["0.weight"]}, {"1.running_mean": tn["1.running_mean"]}), _t(torch, x)),
    )


def test_functional_call_strict_and_tied_weights():
    for mod, F in ((ember, EF), (torch, TF)):
        lin = mod.nn.Linear(2, 2)
        with pytest.raises(RuntimeError, match="Missing key"):
            F.functional_call(lin, {"weight": mod.ones(2, 2)}, (mod.ones(1, 2),), strict=True)
        with pytest.raises(RuntimeError, match="Unexpected key"):
            F.functional_call(
                lin, {"weight": mod.ones(2, 2), "bias": mod.ones(2), "foo": mod.ones(1)}, (mod.ones(1, 2),), strict=True
            )
        with pytest.raises(ValueError, match="multiple dictionaries"):
            F.functional_call(lin, ({"weight": mod.ones(2, 2)}, {"weight": mod.ones(2, 2)}), (mod.ones(1, 2),))

        class Tied(mod.nn.Module):
            def __init__(self, nn=mod.nn):
                super().__init__()
                self.a = nn.Linear(2, 2, bias=False)
                self.b = nn.Linear(2, 2, bias=False)
                self.b.weight = self.a.weight

            def forward(self, x):
                return self.b(self.a(x))

        m = Tied()
        w = mod.tensor([[1.0, 2.0], [3.0, 4.0]])
        x = mod.ones(1, 2)
        tied = F.functional_call(m, {"a.weight": w}, (x,))
        untied = F.functional_call(m, {"a.weight": w}, (x,), tie_weights=False)
        assert tied.tolist() == [[17.0, 37.0]]
        assert untied.tolist() != tied.tolist()
        with pytest.raises(ValueError, match="tied"):
            F.functional_call(m, {"a.weight": w, "b.weight": w * 2}, (x,))
