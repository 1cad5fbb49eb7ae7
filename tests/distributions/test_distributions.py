"""ember.distributions against torch.distributions: log_prob, entropy, moments and their gradients,
shapes, validation errors, and sample statistics (draws come from different generators)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as td

import ember
import ember.distributions as ed

RNG = np.random.default_rng(0)


def _pos(*shape):
    return RNG.uniform(0.5, 3.0, size=shape).astype(np.float64)


def _real(*shape):
    return RNG.standard_normal(shape).astype(np.float64)


def _spd(batch, k):
    m = RNG.standard_normal(batch + (k, k))
    return m @ np.swapaxes(m, -1, -2) + k * np.eye(k)


def _probs(*shape):
    p = RNG.uniform(0.1, 1.0, size=shape)
    return p / p.sum(-1, keepdims=True)


# name -> (params as arrays, value arrays for log_prob, builder(lib_module, **tensors))
CASES = {
    "Normal": (dict(loc=_real(3), scale=_pos(3)), _real(4, 3), lambda D, **p: D.Normal(**p)),
    "Uniform": (
        dict(low=-_pos(3), high=_pos(3)),
        RNG.uniform(-0.4, 0.4, size=(4, 3)),
        lambda D, **p: D.Uniform(**p),
    ),
    "Bernoulli_probs": (
        dict(probs=RNG.uniform(0.1, 0.9, 3)),
        (RNG.random((4, 3)) > 0.5) * 1.0,
        lambda D, **p: D.Bernoulli(**p),
    ),
    "Bernoulli_logits": (dict(logits=_real(3)), (RNG.random((4, 3)) > 0.5) * 1.0, lambda D, **p: D.Bernoulli(**p)),
    "Categorical_probs": (dict(probs=_probs(2, 4)), RNG.integers(0, 4, (5, 2)), lambda D, **p: D.Categorical(**p)),
    "Categorical_logits": (dict(logits=_real(2, 4)), RNG.integers(0, 4, (5, 2)), lambda D, **p: D.Categorical(**p)),
    "OneHotCategorical": (
        dict(logits=_real(2, 4)),
        np.eye(4)[RNG.integers(0, 4, (5, 2))],
        lambda D, **p: D.OneHotCategorical(**p),
    ),
    "Gamma": (dict(concentration=_pos(3), rate=_pos(3)), _pos(4, 3), lambda D, **p: D.Gamma(**p)),
    "Beta": (
        dict(concentration1=_pos(3), concentration0=_pos(3)),
        RNG.uniform(0.05, 0.95, (4, 3)),
        lambda D, **p: D.Beta(**p),
    ),
    "Dirichlet": (dict(concentration=_pos(2, 3)), _probs(4, 2, 3), lambda D, **p: D.Dirichlet(**p)),
    "MVN_cov": (
        dict(loc=_real(2, 3), covariance_matrix=_spd((2,), 3)),
        _real(4, 2, 3),
        lambda D, **p: D.MultivariateNormal(**p),
    ),
    "MVN_tril": (
        dict(loc=_real(3), scale_tril=np.linalg.cholesky(_spd((2,), 3))),
        _real(4, 2, 3),
        lambda D, **p: D.MultivariateNormal(**p),
    ),
    "MVN_precision": (
        dict(loc=_real(3), precision_matrix=_spd((), 3)),
        _real(4, 3),
        lambda D, **p: D.MultivariateNormal(**p),
    ),
    "Independent": (
        dict(loc=_real(2, 3), scale=_pos(2, 3)),
        _real(4, 2, 3),
        lambda D, **p: D.Independent(D.Normal(**p), 1),
    ),
}


def _build(name):
    params, value, build = CASES[name]
    pe = {k: ember.tensor(v, requires_grad=True) for k, v in params.items()}
    pt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    return build(ed, **pe), build(td, **pt), pe, pt, value


def _close(e, t, tol=1e-7):
    assert tuple(e.shape) == tuple(t.shape), (e.shape, t.shape)
    np.testing.assert_allclose(e.detach().numpy(), t.detach().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_log_prob_entropy_moments_and_grads(name):
    de, dt, pe, pt, value = _build(name)
    assert tuple(de.batch_shape) == tuple(dt.batch_shape) and tuple(de.event_shape) == tuple(dt.event_shape)
    ve = ember.tensor(value)
    vt = torch.tensor(value)
    lpe, lpt = de.log_prob(ve), dt.log_prob(vt)
    _close(lpe, lpt)
    assert lpe.dtype == ember.float64
    he, ht = de.entropy(), dt.entropy()
    _close(he, ht)
    for stat in ("mean", "variance", "stddev"):
        se, st = getattr(de, stat), getattr(dt, stat)
        if torch.isnan(st).all():
            assert np.isnan(se.detach().numpy()).all()
        else:
            _close(se, st)
    w = RNG.standard_normal(tuple(lpt.shape))
    loss_e = (lpe * ember.tensor(w)).sum() + he.sum()
    loss_t = (lpt * torch.tensor(w)).sum() + ht.sum()
    if not torch.isnan(dt.variance).any():
        loss_e = loss_e + de.variance.sum() + de.mean.sum()
        loss_t = loss_t + dt.variance.sum() + dt.mean.sum()
    loss_e.backward()
    loss_t.backward()
    for k in pe:
        _close(pe[k].grad, pt[k].grad, 1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_shapes_dtypes_and_expand(name):
    de, dt, *_ = _build(name)
    for shape in ((), (5,), (2, 3)):
        se, st = de.sample(shape), dt.sample(shape)
        assert tuple(se.shape) == tuple(st.shape)
        assert str(se.dtype).split(".")[1] == str(st.dtype).split(".")[1]
        assert not se.requires_grad
    assert de.has_rsample == dt.has_rsample
    if dt.has_rsample:
        r = de.rsample((2,))
        assert r.requires_grad and tuple(r.shape) == tuple(dt.rsample((2,)).shape)
    else:
        with pytest.raises(NotImplementedError):
            de.rsample()
    new_batch = (4,) + tuple(dt.batch_shape)
    ee, et = de.expand(new_batch), dt.expand(new_batch)
    assert tuple(ee.batch_shape) == tuple(et.batch_shape) and tuple(ee.event_shape) == tuple(et.event_shape)
    _close(ee.entropy(), et.entropy())
    assert tuple(ee.sample().shape) == tuple(et.sample().shape)


STATS = {
    "Normal": ed.Normal(ember.tensor([1.0, -2.0]), ember.tensor([0.5, 2.0])),
    "Uniform": ed.Uniform(ember.tensor([0.0, -1.0]), ember.tensor([1.0, 3.0])),
    "Bernoulli": ed.Bernoulli(probs=ember.tensor([0.2, 0.7])),
    "Gamma": ed.Gamma(ember.tensor([0.5, 4.0]), ember.tensor([1.0, 2.0])),
    "Beta": ed.Beta(ember.tensor([0.5, 3.0]), ember.tensor([2.0, 1.5])),
    "Dirichlet": ed.Dirichlet(ember.tensor([0.5, 1.0, 3.0])),
    "MultivariateNormal": ed.MultivariateNormal(
        ember.tensor([1.0, -1.0]), covariance_matrix=ember.tensor([[2.0, 0.5], [0.5, 1.0]])
    ),
    "OneHotCategorical": ed.OneHotCategorical(probs=ember.tensor([0.2, 0.3, 0.5])),
}


@pytest.mark.parametrize("name", sorted(STATS))
def test_sample_statistics(name):
    d = STATS[name]
    n = 40000
    x = d.sample((n,)).double()
    mean, var = d.mean.double(), d.variance.double()
    se = (var / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se + 1e-9).all(), (x.mean(0), mean)
    assert ((x.var(0) - var).abs() / var < 0.06).all(), (x.var(0), var)
    if name == "MultivariateNormal":
        xc = x - x.mean(0)
        cov = (xc.T @ xc) / n
        np.testing.assert_allclose(cov.numpy(), d.covariance_matrix.double().numpy(), rtol=0.05, atol=0.03)


def test_categorical_sample_frequencies():
    probs = ember.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    x = ed.Categorical(probs=probs).sample((30000,))
    assert x.dtype == ember.int64 and tuple(x.shape) == (30000, 2)
    freq = np.stack([(x.numpy()[:, b, None] == np.arange(3)).mean(0) for b in range(2)])
    np.testing.assert_allclose(freq, probs.numpy(), atol=0.015)


def test_rsample_reparameterized_gradients():
    # Normal: x = loc + eps * scale, so dx/dscale = (x - loc) / scale for each draw.
    loc = ember.tensor([0.5, -1.0], requires_grad=True)
    scale = ember.tensor([2.0, 0.5], requires_grad=True)
    x = ed.Normal(loc, scale).rsample((3,))
    x.sum().backward()
    np.testing.assert_allclose(loc.grad.numpy(), [3.0, 3.0])
    np.testing.assert_allclose(
        scale.grad.numpy(), ((x.detach() - loc.detach()) / scale.detach()).sum(0).numpy(), rtol=1e-6
    )
    # MVN: x = loc + L eps; d(sum x)/dloc = number of draws.
    mloc = ember.zeros(2, requires_grad=True)
    ed.MultivariateNormal(mloc, scale_tril=ember.tensor([[1.0, 0.0], [0.3, 2.0]])).rsample((4,)).sum().backward()
    np.testing.assert_allclose(mloc.grad.numpy(), [4.0, 4.0])


def test_gamma_rsample_gradient_matches_torch_implicit_gradient():
    alpha = ember.tensor(np.repeat([0.3, 1.0, 2.5, 9.0, 40.0], 200), dtype=ember.float64, requires_grad=True)
    x = ed.Gamma(alpha, ember.ones(1000, dtype=ember.float64)).rsample()
    x.sum().backward()
    expected = torch._standard_gamma_grad(torch.tensor(alpha.detach().numpy()), torch.tensor(x.detach().numpy()))
    # torch's value is an approximation (about 1e-3 relative at worst); ours sums the exact series.
    np.testing.assert_allclose(alpha.grad.numpy(), expected.numpy(), rtol=5e-3, atol=1e-6)


@pytest.mark.parametrize("which", ["Gamma", "Beta", "Dirichlet"])
def test_gamma_family_rsample_gradient_is_unbiased(which):
    # d E[x] / d concentration from averaged pathwise gradients vs the closed form.
    n = 20000
    if which == "Gamma":
        a = ember.tensor([0.7, 3.0], dtype=ember.float64, requires_grad=True)
        x = ed.Gamma(a, ember.tensor([2.0, 2.0], dtype=ember.float64)).rsample((n,))
        x.sum().backward()
        expected = np.array([0.5, 0.5]) * n  # E[x] = a / rate
    elif which == "Beta":
        a = ember.tensor([0.8, 2.0], dtype=ember.float64, requires_grad=True)
        b = ember.tensor([1.5, 0.6], dtype=ember.float64)
        ed.Beta(a, b).rsample((n,)).sum().backward()
        av, bv = a.detach().numpy(), b.numpy()
        expected = bv / (av + bv) ** 2 * n  # d/da a / (a + b)
    else:
        a = ember.tensor([0.5, 1.0, 2.0], dtype=ember.float64, requires_grad=True)
        x = ed.Dirichlet(a).rsample((n,))
        (x[:, 0]).sum().backward()
        av = a.detach().numpy()
        s = av.sum()
        expected = np.array([(s - av[0]) / s**2, -av[0] / s**2, -av[0] / s**2]) * n
    np.testing.assert_allclose(a.grad.numpy(), expected, rtol=0.05, atol=0.02 * n)


def test_validation_errors_match_torch():
    for D, L in ((ed, ember), (td, torch)):
        with pytest.raises(ValueError, match="scale"):
            D.Normal(L.zeros(2), L.tensor([1.0, -1.0]))
        with pytest.raises(ValueError, match="parameter low .* LessThan"):
            D.Uniform(L.tensor([1.0]), L.tensor([0.0]))
        with pytest.raises(ValueError, match="Either `probs` or `logits`"):
            D.Categorical()
        with pytest.raises(ValueError, match="Either `probs` or `logits`"):
            D.Bernoulli(probs=L.tensor([0.5]), logits=L.tensor([0.0]))
        with pytest.raises(ValueError, match="at least one-dimensional"):
            D.Categorical(probs=L.tensor(0.5))
        with pytest.raises(ValueError, match="probs"):
            D.Bernoulli(probs=L.tensor([1.5]))
        with pytest.raises(ValueError, match="concentration"):
            D.Gamma(L.tensor([-1.0]), L.tensor([1.0]))
        with pytest.raises(ValueError, match="Exactly one of"):
            D.MultivariateNormal(L.zeros(2))
        with pytest.raises(ValueError, match="scale_tril"):
            D.MultivariateNormal(L.zeros(2), scale_tril=L.tensor([[1.0, 1.0], [0.0, 1.0]]))
        with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
            D.Independent(D.Normal(L.zeros(2), 1.0), 2)
        with pytest.raises(ValueError, match="support"):
            D.Gamma(L.ones(1), L.ones(1)).log_prob(L.tensor([-1.0]))
        with pytest.raises(ValueError, match="support"):
            D.Categorical(logits=L.zeros(3)).log_prob(L.tensor(3))
        with pytest.raises(ValueError, match="must be a Tensor"):
            D.Normal(0.0, 1.0).log_prob(0.5)
        with pytest.raises(ValueError, match="broadcastable"):
            D.Normal(L.zeros(3), 1.0).log_prob(L.zeros(2))
        # validate_args=False skips the checks, as in torch
        D.Normal(L.zeros(1), L.tensor([-1.0]), validate_args=False)


def test_scalar_parameters_and_repr():
    for D, L in ((ed, ember), (td, torch)):
        d = D.Normal(0.0, 1.0)
        assert tuple(d.batch_shape) == () and d.sample().dim() == 0 and d.mean.dtype == L.float32
        assert "Normal(loc: " in repr(d)
        assert tuple(D.Beta(2.0, 3.0).batch_shape) == ()
        b = D.Bernoulli(logits=L.zeros(2))
        assert tuple(b.enumerate_support().shape) == (2, 2)


KL_PAIRS = [
    ("Normal", "Normal"),
    ("Uniform", "Uniform"),
    ("Bernoulli_probs", "Bernoulli_logits"),
    ("Categorical_probs", "Categorical_logits"),
    ("OneHotCategorical", "OneHotCategorical"),
    ("Gamma", "Gamma"),
    ("Beta", "Beta"),
    ("Dirichlet", "Dirichlet"),
    ("MVN_cov", "MVN_tril"),
    ("MVN_precision", "MVN_cov"),
    ("Independent", "Independent"),
]


@pytest.mark.parametrize("p_name,q_name", KL_PAIRS)
def test_kl_divergence_values_and_grads(p_name, q_name):
    pe_d, pt_d, pe, pt, _ = _build(p_name)
    qe_d, qt_d, qe, qt, _ = _build(q_name)
    if q_name == p_name:  # a different q of the same type
        params = {k: v * 1.3 if k not in ("probs",) else v for k, v in CASES[q_name][0].items()}
        if "probs" in params:
            params["probs"] = _probs(*params["probs"].shape)
        qe = {k: ember.tensor(v, requires_grad=True) for k, v in params.items()}
        qt = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        qe_d, qt_d = CASES[q_name][2](ed, **qe), CASES[q_name][2](td, **qt)
    ke, kt = ed.kl_divergence(pe_d, qe_d), td.kl_divergence(pt_d, qt_d)
    _close(ke, kt, 1e-6)
    w = RNG.standard_normal(tuple(kt.shape))
    (ke * ember.tensor(w)).sum().backward()
    (kt * torch.tensor(w)).sum().backward()
    for e, t in [(pe[k], pt[k]) for k in pe] + [(qe[k], qt[k]) for k in qe]:
        _close(e.grad, t.grad, 1e-5)


def test_kl_cross_family_and_infinities():
    for p_args, q in (
        ((ember.tensor([0.2, -1.0]), ember.tensor([0.9, 2.0])), ("Normal", ([0.0, 1.0], [1.0, 3.0]))),
        ((ember.tensor([0.2, 0.5]), ember.tensor([0.9, 2.0])), ("Gamma", ([2.0, 1.0], [1.0, 3.0]))),
        ((ember.tensor([0.2, 0.1]), ember.tensor([0.9, 0.7])), ("Beta", ([2.0, 1.0], [1.0, 3.0]))),
        ((ember.tensor([-0.2, 0.1]), ember.tensor([0.9, 1.7])), ("Beta", ([2.0, 1.0], [1.0, 3.0]))),
    ):
        pe = ed.Uniform(*p_args)
        pt = td.Uniform(*(torch.tensor(a.numpy()) for a in p_args))
        qe = getattr(ed, q[0])(*(ember.tensor(a) for a in q[1]))
        qt = getattr(td, q[0])(*(torch.tensor(a) for a in q[1]))
        np.testing.assert_allclose(ed.kl_divergence(pe, qe).numpy(), td.kl_divergence(pt, qt).numpy(), rtol=1e-6)
    p = ed.Uniform(ember.tensor([0.0]), ember.tensor([2.0]))
    assert ed.kl_divergence(p, ed.Uniform(ember.tensor([0.5]), ember.tensor([1.0]))).item() == float("inf")
    zero = ed.Categorical(probs=ember.tensor([0.5, 0.5, 0.0]))
    assert ed.kl_divergence(zero, ed.Categorical(probs=ember.tensor([0.5, 0.25, 0.25]))).isfinite().all()
    assert ed.kl_divergence(ed.Categorical(probs=ember.tensor([0.3, 0.3, 0.4])), zero).item() == float("inf")


def test_register_kl_and_missing_pairs():
    with pytest.raises(NotImplementedError):
        ed.kl_divergence(ed.Normal(0.0, 1.0), ed.Gamma(1.0, 1.0))
    with pytest.raises(TypeError):
        ed.register_kl(int, ed.Normal)

    class Shifted(ed.Normal):
        pass

    # A subclass uses its parent's rule until it registers a nearer one.
    assert ed.kl_divergence(Shifted(0.0, 1.0), ed.Normal(0.0, 1.0)).item() == 0.0

    @ed.register_kl(Shifted, ed.Normal)
    def _kl(p, q):
        return ember.tensor(42.0)

    assert ed.kl_divergence(Shifted(0.0, 1.0), ed.Normal(0.0, 1.0)).item() == 42.0
    assert ed.kl_divergence(ed.Normal(0.0, 1.0), ed.Normal(0.0, 1.0)).item() == 0.0


def test_special_functions_against_torch():
    x = np.concatenate([np.linspace(0.05, 30, 60), [0.5, 1.0, 2.0, 100.0]])
    for fn in ("lgamma", "digamma"):
        xe, xt = ember.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        ye, yt = getattr(ember, fn)(xe), getattr(torch, fn)(xt)
        _close(ye, yt, 1e-9)
        ye.sum().backward()
        yt.sum().backward()
        _close(xe.grad, xt.grad, 1e-8)  # torch's trigamma is itself ~1e-9 accurate
    for n in (1, 2, 3):
        _close(ember.polygamma(n, ember.tensor(x)), torch.polygamma(n, torch.tensor(x)), 1e-8)
    assert ember.lgamma(ember.tensor([1.0, 2.0])).dtype == ember.float32
    assert ember.lgamma(ember.tensor([0.0, -1.0])).tolist() == [float("inf"), float("inf")]
    assert ember.digamma(ember.tensor(0.0)).item() == float("-inf")
    assert ember.autograd.gradgradcheck(
        ember.lgamma, (ember.tensor([0.7, 3.0], dtype=ember.float64, requires_grad=True),)
    )


def test_cholesky_and_solve_triangular_against_torch():
    a = _spd((2,), 3)
    b = _real(2, 3, 2)
    for L in (ember, torch):
        A, B = L.tensor(a, requires_grad=True), L.tensor(b, requires_grad=True)
        C = L.linalg.cholesky(A)
        X = L.linalg.solve_triangular(C, B, upper=False)
        Y = L.linalg.solve_triangular(C.mT, B, upper=True, left=True)
        (X.sum() + (Y * Y).sum() + C.sum()).backward()
        if L is ember:
            res = (C.detach().numpy(), X.detach().numpy(), A.grad.numpy(), B.grad.numpy())
        else:
            for mine, ref in zip(res, (C.detach(), X.detach(), A.grad, B.grad)):
                np.testing.assert_allclose(mine, ref.numpy(), rtol=1e-7, atol=1e-9)
    for L in (ember, torch):
        with pytest.raises(RuntimeError):
            L.linalg.cholesky(L.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_lazy_parameters_keep_their_graph_after_sampling():
    # probs is derived from logits on first use; a first use inside sample() (no_grad) must not cut it.
    for D, L in ((ed, ember), (td, torch)):
        logits = L.tensor([[0.2, -1.0, 0.5]], requires_grad=True)
        d = D.Categorical(logits=logits)
        d.sample()
        d.entropy().sum().backward()
        assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
