"""Gradients by table: first order against finite differences (``ember.autograd.gradcheck``),
second order as Hessian-vector products against PyTorch, and ``gradgradcheck`` on a few ops.

Every gradient rule is Tensor code, so differentiating it again must work and agree with torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, rand

F64 = np.float64


def _leaf(lib, a):
    return lib.tensor(a, requires_grad=True)


# (name, fn(lib, *xs), input arrays): fn returns a tensor of any shape.
FIRST_ORDER = [
    ("add", lambda lib, a, b: a + b, [rand(2, 3, dtype=F64), rand(3, dtype=F64)]),
    ("sub", lambda lib, a, b: a - b * 2, [rand(2, 3, dtype=F64), rand(2, 1, dtype=F64)]),
    ("mul", lambda lib, a, b: a * b, [rand(2, 3, dtype=F64), rand(2, 3, dtype=F64)]),
    ("div", lambda lib, a, b: a / b, [rand(2, 3, dtype=F64), rand(3, dtype=F64, positive=True)]),
    ("pow_tt", lambda lib, a, b: a**b, [rand(2, 3, dtype=F64, positive=True), rand(2, 3, dtype=F64)]),
    ("pow_ts", lambda lib, a: a**3, [rand(4, dtype=F64)]),
    ("pow_st", lambda lib, b: 1.7**b, [rand(4, dtype=F64)]),
    ("maximum", lambda lib, a, b: lib.maximum(a, b), [rand(5, dtype=F64), rand(5, dtype=F64) + 0.05]),
    ("atan2", lambda lib, a, b: lib.atan2(a, b), [rand(4, dtype=F64), rand(4, dtype=F64, positive=True)]),
    ("remainder", lambda lib, a, b: lib.remainder(a, b), [rand(4, dtype=F64) + 0.01, np.array([0.7, 0.9, 1.1, 1.3])]),
    ("fmod", lambda lib, a, b: lib.fmod(a, b), [rand(4, dtype=F64) + 0.01, np.array([0.7, 0.9, 1.1, 1.3])]),
    ("where", lambda lib, a, b: lib.where(a > 0, a, b), [rand(2, 3, dtype=F64), rand(3, dtype=F64)]),
    ("clamp", lambda lib, a: lib.clamp(a, -0.5, 0.7), [rand(6, dtype=F64) + 0.013]),
    ("clamp_t", lambda lib, a, lo: lib.clamp(a, min=lo), [rand(6, dtype=F64), rand(6, dtype=F64) + 0.01]),
    ("lerp", lambda lib, a, b, w: lib.lerp(a, b, w), [rand(3, dtype=F64), rand(3, dtype=F64), rand(3, dtype=F64)]),
    (
        "addcdiv",
        lambda lib, a, b, c: lib.addcdiv(a, b, c, value=0.5),
        [rand(3, dtype=F64)] * 2 + [rand(3, dtype=F64, positive=True)],
    ),
    ("exp_log", lambda lib, a: lib.log(lib.exp(a) + 1), [rand(5, dtype=F64)]),
    ("trig", lambda lib, a: lib.sin(a) * lib.cos(a) + lib.tan(a * 0.3), [rand(5, dtype=F64)]),
    ("inv_trig", lambda lib, a: lib.asin(a * 0.4) + lib.acos(a * 0.4) * lib.atan(a), [rand(5, dtype=F64)]),
    ("hyper", lambda lib, a: lib.sinh(a) + lib.cosh(a) * lib.tanh(a), [rand(5, dtype=F64)]),
    ("inv_hyper", lambda lib, a: lib.asinh(a) + lib.atanh(a * 0.4) + lib.acosh(a.abs() + 1.5), [rand(5, dtype=F64)]),
    ("roots", lambda lib, a: lib.sqrt(a) + lib.rsqrt(a) + lib.reciprocal(a), [rand(5, dtype=F64, positive=True)]),
    (
        "logs",
        lambda lib, a: lib.log1p(a) + lib.log2(a) + lib.log10(a) + lib.expm1(a),
        [rand(5, dtype=F64, positive=True)],
    ),
    ("erf_sigmoid", lambda lib, a: lib.erf(a) * lib.sigmoid(a) + lib.exp2(a), [rand(5, dtype=F64)]),
    ("relu_abs", lambda lib, a: lib.relu(a) + lib.abs(a) + lib.square(a), [rand(5, dtype=F64) + 0.01]),
    ("sum_mean", lambda lib, a: a.sum(1) + a.mean(0).sum(), [rand(3, 4, dtype=F64)]),
    ("var_std", lambda lib, a: a.var(1) + a.std(0).sum(), [rand(3, 4, dtype=F64)]),
    ("prod", lambda lib, a: a.prod(1), [rand(3, 4, dtype=F64)]),
    ("prod_zero", lambda lib, a: a.prod(), [np.array([0.5, 0.0, 2.0, -1.5])]),
    ("amax", lambda lib, a: a.amax(1), [rand(3, 4, dtype=F64)]),
    ("max_dim", lambda lib, a: a.max(0).values, [rand(3, 4, dtype=F64)]),
    ("logsumexp", lambda lib, a: lib.logsumexp(a, 1), [rand(3, 4, dtype=F64)]),
    ("norm", lambda lib, a: a.norm() + a.norm(p=1, dim=0).sum() + a.norm(p=3), [rand(3, 4, dtype=F64)]),
    ("cumsum", lambda lib, a: a.cumsum(1), [rand(3, 4, dtype=F64)]),
    ("cumprod", lambda lib, a: a.cumprod(1), [rand(3, 4, dtype=F64)]),
    ("cumprod_zero", lambda lib, a: a.cumprod(0), [np.array([0.5, 0.0, 2.0, -1.5, 0.0, 1.2])]),
    ("matmul", lambda lib, a, b: a @ b, [rand(2, 3, dtype=F64), rand(3, 4, dtype=F64)]),
    ("matmul_vec", lambda lib, a, b: a @ b, [rand(3, dtype=F64), rand(2, 3, 4, dtype=F64)]),
    ("einsum_diag", lambda lib, a, b: lib.einsum("ii,ij->j", a, b), [rand(3, 3, dtype=F64), rand(3, 2, dtype=F64)]),
    ("tensordot", lambda lib, a, b: lib.tensordot(a, b, 1), [rand(2, 3, dtype=F64), rand(3, 2, dtype=F64)]),
]


@pytest.mark.parametrize("name,fn,arrays", FIRST_ORDER, ids=[f[0] for f in FIRST_ORDER])
def test_gradcheck(name, fn, arrays):
    xs = [_leaf(ember, a) for a in arrays]
    assert ember.autograd.gradcheck(lambda *t: fn(ember, *t), xs)


# Scalar-valued composites for Hessian-vector products.
SECOND_ORDER = [
    ("sin_cube", lambda lib, x: (lib.sin(x) * x**3).sum(), (5,)),
    ("logsumexp", lambda lib, x: lib.logsumexp(x, 0).sum(), (3, 4)),
    ("matmul_chain", lambda lib, x: ((x @ x.T) @ x).tanh().sum(), (3, 3)),
    ("softplus", lambda lib, x: lib.log(1 + lib.exp(x)).sum() + lib.sigmoid(x).pow(2).sum(), (6,)),
    ("norm", lambda lib, x: x.norm() ** 3 + x.norm(dim=1).sum(), (3, 4)),
    ("prod", lambda lib, x: x.prod(1).sum() + x.prod(), (2, 3)),
    ("division", lambda lib, x: (x / (x * x + 1)).sum() + (1 / (x.abs() + 0.5)).sum(), (5,)),
    ("pow_tensor_exp", lambda lib, x: (x.abs() + 0.5).pow(x).sum(), (5,)),
    ("var_std", lambda lib, x: x.var() * x.std(0).sum(), (3, 4)),
    ("amax_mean", lambda lib, x: (x.amax(0) * x.mean(0)).sum(), (3, 4)),
    ("cumsum_cumprod", lambda lib, x: (x.cumsum(0) * x.cumprod(0)).sum(), (5,)),
    ("exp_log_sqrt", lambda lib, x: (lib.exp(x) * lib.sqrt(x) + lib.log(x)).sum(), (4,)),
    ("erf_atan", lambda lib, x: (lib.erf(x) * lib.atan(x)).sum(), (4,)),
    ("einsum", lambda lib, x: lib.einsum("ij,jk,ki->", x, x, x), (3, 3)),
    ("where_clamp", lambda lib, x: (lib.where(x > 0, x**2, x**3) + x.clamp(-0.5, 0.5) * x).sum(), (6,)),
    ("max_values", lambda lib, x: (x.max(1).values ** 2).sum(), (3, 4)),
]


def _hvp(lib, fn, x_np, v_np, create=True):
    x = lib.tensor(x_np, requires_grad=True)
    y = fn(lib, x)
    (g,) = lib.autograd.grad(y, x, create_graph=True)
    (hv,) = lib.autograd.grad((g * lib.tensor(v_np)).sum(), x)
    return g.detach(), hv


@pytest.mark.parametrize("name,fn,shape", SECOND_ORDER, ids=[s[0] for s in SECOND_ORDER])
def test_hessian_vector_product(name, fn, shape):
    positive = name in ("exp_log_sqrt",)
    x = rand(*shape, dtype=F64, positive=positive)
    v = np.random.default_rng(3).standard_normal(shape)
    eg, ehv = _hvp(ember, fn, x, v)
    tg, thv = _hvp(torch, fn, x, v)
    assert_close(eg, tg, what="gradient")
    assert_close(ehv, thv, rtol=1e-6, atol=1e-8, what="Hessian-vector product")
    _, t_hvp = torch.autograd.functional.hvp(lambda t: fn(torch, t), torch.tensor(x), torch.tensor(v))
    assert_close(ehv, t_hvp, rtol=1e-6, atol=1e-8, what="hvp vs torch.autograd.functional.hvp")


GRADGRAD = [
    ("mul_div", lambda a, b: a * b / (b * b + 1), [rand(2, 3, dtype=F64), rand(2, 3, dtype=F64)]),
    ("tanh_matmul", lambda a, b: (a @ b).tanh(), [rand(2, 3, dtype=F64), rand(3, 2, dtype=F64)]),
    ("logsumexp", lambda a: ember.logsumexp(a, 1), [rand(2, 3, dtype=F64)]),
    ("norm", lambda a: a.norm(dim=1), [rand(2, 3, dtype=F64)]),
    ("prod_zero", lambda a: a.prod(1), [np.array([[0.5, 0.0, 2.0], [1.5, -1.0, 0.7]])]),
    ("std", lambda a: a.std(0), [rand(3, 2, dtype=F64)]),
    ("pow", lambda a, b: a**b, [rand(3, dtype=F64, positive=True), rand(3, dtype=F64)]),
    ("cumprod_zero", lambda a: a.cumprod(0), [np.array([0.5, 0.0, 2.0, -1.5])]),
]


@pytest.mark.parametrize("name,fn,arrays", GRADGRAD, ids=[g[0] for g in GRADGRAD])
def test_gradgradcheck(name, fn, arrays):
    ember.manual_seed(0)
    xs = [_leaf(ember, a) for a in arrays]
    assert ember.autograd.gradgradcheck(fn, xs)
