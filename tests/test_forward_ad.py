"""Forward-mode AD: tangents of each primitive against torch.func.jvp and finite differences."""

import numpy as np
import pytest
import torch

import ember
import ember.autograd.forward_ad as fwAD

rng = np.random.default_rng(0)


def _arr(*shape, positive=False, unit=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    if unit:
        a = np.tanh(a) * 0.9
    return a


# (name, function of the module (ember or torch), input arrays)
CASES = [
    ("exp", lambda m, x: m.exp(x), [_arr(3, 4)]),
    ("log", lambda m, x: m.log(x), [_arr(3, 4, positive=True)]),
    ("sqrt_rsqrt", lambda m, x: m.sqrt(x) + m.rsqrt(x), [_arr(5, positive=True)]),
    ("trig", lambda m, x: m.sin(x) * m.cos(x) + m.tan(x) * 0.1, [_arr(4, unit=True)]),
    ("hyper", lambda m, x: m.tanh(x) + m.sigmoid(x) + m.sinh(x) + m.cosh(x), [_arr(6)]),
    (
        "inverse_trig",
        lambda m, x: m.asin(x) + m.acos(x) * 2 + m.atan(x) + m.atanh(x) + m.asinh(x),
        [_arr(5, unit=True)],
    ),
    ("log1p_expm1_erf", lambda m, x: m.log1p(x.abs()) + m.expm1(x) + m.erf(x), [_arr(5)]),
    ("relu_abs_neg", lambda m, x: m.relu(x) - x.abs() + (-x), [_arr(7)]),
    ("reciprocal", lambda m, x: m.reciprocal(x), [_arr(4, positive=True)]),
    ("binary", lambda m, x, y: x * y + x / y - y + x**2 + x**y, [_arr(3, 4, positive=True), _arr(4, positive=True)]),
    ("pow_scalar_base", lambda m, x: 2.0**x, [_arr(4)]),
    ("maximum_minimum", lambda m, x, y: m.maximum(x, y) + m.minimum(x, y) * 2, [_arr(6), _arr(6)]),
    ("atan2", lambda m, x, y: m.atan2(x, y), [_arr(5), _arr(5, positive=True)]),
    ("where_clamp", lambda m, x, y: m.where(x > 0, x, y) + m.clamp(x, -0.5, 0.5), [_arr(8), _arr(8)]),
    ("sum_mean", lambda m, x: x.sum() + x.sum(1).mean() + x.mean(0, keepdim=True).sum(), [_arr(3, 4)]),
    ("max_min", lambda m, x: x.max() + x.amin(1).sum() + x.max(0)[0].sum(), [_arr(3, 4)]),
    ("logsumexp", lambda m, x: m.logsumexp(x, 1), [_arr(3, 4)]),
    ("var_std", lambda m, x: x.var(1) + x.std(), [_arr(3, 4)]),
    ("reshape_permute", lambda m, x: x.reshape(4, 3).permute(1, 0).transpose(0, 1).flatten(), [_arr(3, 4)]),
    ("expand_unsqueeze", lambda m, x: x.unsqueeze(0).expand(2, 3, 4) * 1.5, [_arr(3, 4)]),
    ("slicing", lambda m, x: x[1:, ::2] + x[0, 1], [_arr(3, 4)]),
    ("advanced_index", lambda m, x: x[m.tensor([0, 2, 2])], [_arr(3, 4)]),
    ("cat_stack", lambda m, x, y: m.cat([x, y], 0).sum(0) + m.stack([x, y], 1).sum(1).sum(0), [_arr(2, 3), _arr(2, 3)]),
    ("matmul", lambda m, x, y: x @ y, [_arr(2, 3, 4), _arr(4, 5)]),
    ("matvec", lambda m, x, y: x @ y, [_arr(3, 4), _arr(4)]),
    ("softmax", lambda m, x: m.softmax(x, -1) + m.log_softmax(x, 0), [_arr(3, 4)]),
    ("linear", lambda m, x, w, b: m.nn.functional.linear(x, w, b), [_arr(2, 3), _arr(4, 3), _arr(4)]),
    ("gelu", lambda m, x: m.nn.functional.gelu(x) + m.nn.functional.gelu(x, approximate="tanh"), [_arr(6)]),
    ("layer_norm", lambda m, x, w, b: m.nn.functional.layer_norm(x, (4,), w, b), [_arr(3, 4), _arr(4), _arr(4)]),
    ("logsigmoid", lambda m, x: m.nn.functional.logsigmoid(x), [_arr(5)]),
    ("remainder_fmod", lambda m, x, y: m.remainder(x, y) + m.fmod(x, y), [_arr(6) * 3, _arr(6, positive=True)]),
    ("clamp_tensor", lambda m, x, lo, hi: m.clamp(x, lo, hi - 10 * (hi < lo)), [_arr(8), _arr(8) - 1, _arr(8) + 1]),
    ("norm", lambda m, x: m.linalg.vector_norm(x) + x.norm(dim=1).sum(), [_arr(3, 4)]),
    ("einsum", lambda m, x, y: m.einsum("ij,jk->ik", x, y), [_arr(2, 3), _arr(3, 4)]),
    (
        "conv2d",
        lambda m, x, w, b: m.nn.functional.conv2d(x, w, b, padding=1),
        [_arr(2, 3, 5, 5), _arr(4, 3, 3, 3), _arr(4)],
    ),
    (
        "pad_avgpool",
        lambda m, x: m.nn.functional.avg_pool2d(m.nn.functional.pad(x, (1, 1, 0, 2), value=3.0), 2),
        [_arr(1, 2, 4, 4)],
    ),
    (
        "scatter_index_put",
        lambda m, x, y: x.scatter(0, m.tensor([[1, 0, 2]]), y[:1]).index_add(1, m.tensor([0, 0]), y[:, :2]),
        [_arr(3, 3), _arr(3, 3)],
    ),
    ("cumsum_flip", lambda m, x: m.cumsum(x, 1).flip(0), [_arr(3, 4)]),
]


def _ember_jvp(fn, arrays, tangents):
    with fwAD.dual_level():
        xs = [fwAD.make_dual(ember.tensor(a), ember.tensor(t)) for a, t in zip(arrays, tangents)]
        out = fn(ember, *xs)
        p, t = fwAD.unpack_dual(out)
        return p.numpy(), t.numpy()


@pytest.mark.parametrize("name,fn,arrays", CASES, ids=[c[0] for c in CASES])
def test_jvp_matches_torch_and_finite_differences(name, fn, arrays):
    tangents = [rng.standard_normal(a.shape) for a in arrays]
    p, t = _ember_jvp(fn, arrays, tangents)
    tp, tt = torch.func.jvp(
        lambda *xs: fn(torch, *xs),
        tuple(torch.tensor(a) for a in arrays),
        tuple(torch.tensor(v) for v in tangents),
    )
    np.testing.assert_allclose(p, tp.numpy(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(t, tt.numpy(), rtol=1e-5, atol=1e-7)
    # central differences in float64
    eps = 1e-6
    hi = fn(ember, *[ember.tensor(a + eps * v) for a, v in zip(arrays, tangents)]).numpy()
    lo = fn(ember, *[ember.tensor(a - eps * v) for a, v in zip(arrays, tangents)]).numpy()
    np.testing.assert_allclose(t, (hi - lo) / (2 * eps), rtol=1e-4, atol=1e-5)


def test_jvp_matches_reverse_mode_jacobian():
    # J v from forward mode equals (rows of J from reverse mode) . v
    a = _arr(3, 4)
    v = _arr(3, 4)
    w = ember.tensor(_arr(4, 2))

    def f(x):
        return (x.tanh() @ w).softmax(-1)

    _, jv = _ember_jvp(lambda m, x: f(x), [a], [v])
    x = ember.tensor(a, requires_grad=True)
    out = f(x)
    rows = []
    for i in range(out.numel()):
        e = ember.zeros(out.numel(), dtype=out.dtype)
        e[i] = 1.0
        (g,) = ember.autograd.grad(out, x, e.reshape(tuple(out.shape)), retain_graph=True)
        rows.append((g.numpy() * v).sum())
    np.testing.assert_allclose(jv.reshape(-1), np.array(rows), rtol=1e-6, atol=1e-9)


def test_unpack_dual_and_levels():
    x = ember.tensor([1.0, 2.0])
    with fwAD.dual_level():
        d = fwAD.make_dual(x, ember.tensor([1.0, 1.0]))
        u = fwAD.unpack_dual(d)
        assert u.primal.shape == x.shape and torch.equal(
            torch.tensor(u.tangent.numpy()), torch.ones(2, dtype=torch.float32)
        )
        assert fwAD.unpack_dual(x).tangent is None  # the original is not dual
        assert fwAD.unpack_dual(d > 1).tangent is None  # comparisons carry no tangent
        assert fwAD.unpack_dual(d.argmax()).tangent is None
        y = d * 3
    assert fwAD.unpack_dual(y).tangent is None  # the level is closed
    u = fwAD.unpack_dual(y)
    assert u.primal is y


def test_errors():
    with pytest.raises(RuntimeError, match="no level exists"):
        fwAD.make_dual(ember.ones(2), ember.ones(2))
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match="different size"):
            fwAD.make_dual(ember.ones(2), ember.ones(3))
        with pytest.raises(RuntimeError, match="Nested forward mode AD"):
            fwAD.enter_dual_level()
        d = fwAD.make_dual(ember.ones(2, 3), ember.ones(2, 3))
        with pytest.raises(NotImplementedError, match="forward AD not implemented for in-place op '_foreach_add_'"):
            ember._foreach_add_([d.clone()], [d])


def test_reverse_over_forward():
    # the tangent is built of Tensor ops, so reverse mode differentiates it (a Hessian-vector product)
    a = ember.tensor([0.3, -1.2, 2.0], dtype=ember.float64, requires_grad=True)
    v = ember.tensor([1.0, 0.5, -2.0], dtype=ember.float64)
    with fwAD.dual_level():
        y = (fwAD.make_dual(a, v).sin() ** 2).sum()
        (hv,) = ember.autograd.grad(fwAD.unpack_dual(y).tangent, a)
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    th = torch.autograd.functional.hvp(
        lambda x: (x.sin() ** 2).sum(), x, torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64)
    )[1]
    np.testing.assert_allclose(hv.numpy(), th.numpy(), rtol=1e-6)


@pytest.mark.parametrize("log", [False, True])
def test_forward_over_reverse_through_softmax(log):
    # autograd.grad(create_graph=True) inside a dual level: a Hessian-vector product
    a, v, w = _arr(2, 5), _arr(2, 5), _arr(2, 5)

    def f(m, x):
        s = m.log_softmax(x, -1) if log else m.softmax(x, -1)
        return (s * m.tensor(w)).sum()

    x = ember.tensor(a, requires_grad=True)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, ember.tensor(v))
        (g,) = ember.autograd.grad(f(ember, d), d, create_graph=True)
        hv = fwAD.unpack_dual(g).tangent
    ref = torch.autograd.functional.hvp(lambda t: f(torch, t), torch.tensor(a), torch.tensor(v))[1]
    np.testing.assert_allclose(hv.detach().numpy(), ref.numpy(), rtol=1e-6, atol=1e-9)
