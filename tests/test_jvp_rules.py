"""Every differentiable primitive has a forward-mode (JVP) rule, and every rule is right.

The registry walk fails when a primitive with a gradient rule (a ``node``) has no JVP rule. Each
rule is then checked on small float64 inputs against central finite differences and against the
reverse mode (``<u, J v> == <J^T u, v>``). Each case names the primitive it exercises, and the
test asserts that the rule of that very primitive ran.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.autograd import _jvp_rules
from ember.distributions._gamma_sampling import standard_gamma as _standard_gamma
from ember.func import jvp, vjp
from ember.nn.functional import rnn as _rnnf
from ember.ops.dispatch import REGISTRY
from ember.ops.index import getitem_raw

# Primitives with a gradient rule but genuinely no forward derivative. None so far: keep this
# list explicit (with a reason per entry) if one is ever needed.
EXEMPT: dict = {}


def _import_all() -> None:
    for m in pkgutil.walk_packages(ember.__path__, "ember."):
        if m.name.startswith(("ember.cli", "ember.distributed", "ember.backends.cuda")):
            continue
        try:
            importlib.import_module(m.name)
        except Exception:  # optional extras (onnx, mpi) may be missing: their ops register nothing
            pass


_import_all()
_jvp_rules._installed = False
_jvp_rules.install()

# Zero-derivative ops whose reverse mode refuses, as PyTorch's does ("the derivative for
# 'floor_divide' is not implemented"): checked against finite differences only.
NO_REVERSE = {"floor_divide"}
# A sample's derivative in its parameter by implicit reparameterization (as PyTorch's
# _standard_gamma_grad): not the derivative of NumPy's rejection sampler at a fixed seed, so
# finite differences do not apply; checked against the reverse mode only.
NO_FD = {"standard_gamma"}
# (step, tolerance) of the finite differences where the default (1e-6, 1e-5) does not fit: a
# round trip through float32 rounds at 1e-7.
_FD = {"to": (1e-2, 1e-4)}

rng = np.random.default_rng(0)


def _t(*shape, lo=-1.0, hi=1.0):
    return ember.tensor(rng.uniform(lo, hi, shape))


def _pos(*shape):
    return _t(*shape, lo=0.5, hi=1.5)


def _via_grad(forward, *fixed_shapes):
    """A function of ``g`` that runs ``forward``'s backward with create_graph (gradient prims)."""
    xs = [_t(*s).requires_grad_() for s in fixed_shapes]

    def fn(g):
        out = forward(*xs)
        return ember.autograd.grad(out, xs[0], g, create_graph=True)[0]

    return fn


def _spd():
    a = rng.uniform(-1, 1, (3, 3))
    return ember.tensor(a @ a.T + 3 * np.eye(3))


def _copy_slices(a, b):
    base = a * 1 + ember.zeros(4, 3, dtype=ember.float64, requires_grad=True)  # recorded writes
    view = base[1:3]
    view.mul_(b)
    return base * 2


_IDX = ember.tensor([0, 2, 1, 2])
_CE_W = _pos(5)
_SPARSE_IDX = np.array([[0, 1, 2, 2], [1, 0, 2, 0]])


def _sparse_mm(vals, dense):
    s = ember.sparse_coo_tensor(ember.tensor(_SPARSE_IDX), vals, (3, 3))
    return ember.sparse.mm(s, dense)


def _rnn(kind):
    def fn(gi_seq, h0, w_hh, b_hh):
        from ember.nn.functional.rnn import recurrent_sequence

        return recurrent_sequence(kind, gi_seq, h0, w_hh, b_hh)

    return fn


def _bn(x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True)


# name -> (function of float64 tensors, inputs)
CASES = {
    "abs": (ember.abs, [_pos(5)]),
    "acos": (ember.acos, [_t(5, lo=-0.8, hi=0.8)]),
    "acosh": (ember.acosh, [_t(5, lo=1.5, hi=3)]),
    "add": (lambda a, b: a + b, [_t(3, 2), _t(2)]),
    "amax": (lambda x: x.amax(1), [_t(3, 4)]),
    "amin": (lambda x: x.amin(0), [_t(3, 4)]),
    "asin": (ember.asin, [_t(5, lo=-0.8, hi=0.8)]),
    "asinh": (ember.asinh, [_t(5)]),
    "atan": (ember.atan, [_t(5)]),
    "atan2": (ember.atan2, [_t(5), _pos(5)]),
    "atanh": (ember.atanh, [_t(5, lo=-0.8, hi=0.8)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, 1, 1), [_t(1, 2, 4, 4)]),
    "avg_pool2d_backward": (_via_grad(lambda x: F.avg_pool2d(x, 2, 1), (1, 2, 4, 4)), [_t(1, 2, 3, 3)]),
    "batch_norm": (_bn, [_t(4, 3, 2), _pos(3), _t(3)]),
    "cat": (lambda a, b: ember.cat([a, b], 1), [_t(2, 3), _t(2, 2)]),
    "cdist": (lambda a, b: ember.cdist(a, b) + ember.cdist(a, b, p=1.5), [_t(3, 4), _t(2, 4)]),
    "ceil": (lambda x: ember.ceil(x) * x, [_t(5)]),
    "cholesky": (lambda a: ember.linalg.cholesky(a @ a.mT + 3 * ember.eye(3, dtype=a.dtype)), [_t(3, 3)]),
    "clamp": (lambda x: x.clamp(-0.5, 0.5), [_t(8)]),
    "clamp_tensor": (lambda x, lo: x.clamp(lo, lo + 1.0), [_t(8), _t(8, lo=-1.5, hi=-0.1)]),
    "clone": (lambda x: x.clone(), [_t(4)]),
    "constant_pad": (lambda x: F.pad(x, (1, 2), value=3.0), [_t(2, 3)]),
    "contiguous": (lambda x: x.t().contiguous(), [_t(2, 3)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, padding=1), [_t(1, 2, 4, 4), _t(3, 2, 3, 3), _t(3)]),
    "conv2d_input_grad": (lambda g, w: _conv_grads(g, w)[0], [_t(1, 3, 2, 2), _t(3, 2, 3, 3)]),
    "conv2d_weight_grad": (lambda g, w: _conv_grads(g, w)[1], [_t(1, 3, 2, 2), _t(3, 2, 3, 3)]),
    "copy_slices": (_copy_slices, [_t(4, 3), _t(2, 3)]),
    "cos": (ember.cos, [_t(5)]),
    "cosh": (ember.cosh, [_t(5)]),
    "cross_entropy": (
        lambda x: F.cross_entropy(x, ember.tensor([0, 2, 1, 4]), weight=_CE_W, label_smoothing=0.1),
        [_t(4, 5)],
    ),
    "cumprod": (lambda x: x.cumprod(1) + (x * ember.tensor([1.0, 0.0, 1.0, 1.0])).cumprod(1), [_t(2, 4)]),
    "cumsum": (lambda x: x.cumsum(0), [_t(3, 2)]),
    "diagonal": (lambda x: x.diagonal(), [_t(3, 3)]),
    "div": (lambda a, b: a / b, [_t(4), _pos(4)]),
    "div_floor": (lambda a, b: ember.div(a, b, rounding_mode="floor") * a, [_t(4), _pos(4)]),
    "div_trunc": (lambda a, b: ember.div(a, b, rounding_mode="trunc") * a, [_t(4), _pos(4)]),
    "einsum": (lambda a, b: ember.einsum("ij,jk->ik", a, b), [_t(2, 3), _t(3, 2)]),
    "embedding": (lambda w: F.embedding(ember.tensor([[0, 2], [1, 0]]), w), [_t(3, 4)]),
    "erf": (ember.erf, [_t(5)]),
    "exp": (ember.exp, [_t(5)]),
    "expand": (lambda x: x.expand(3, 4), [_t(1, 4)]),
    "expm1": (ember.expm1, [_t(5)]),
    "flip": (lambda x: x.flip(0), [_t(3, 2)]),
    "floor": (lambda x: ember.floor(x) * x, [_t(5)]),
    "floor_divide": (lambda a, b: ember.floor_divide(a, b) * a, [_t(4), _pos(4)]),
    "fmod": (ember.fmod, [_t(6, lo=-3, hi=3), _pos(6)]),
    "gather": (lambda x: x.gather(1, ember.tensor([[0, 0], [1, 0], [2, 1]])), [_t(3, 3)]),
    "gelu": (lambda x: F.gelu(x) + F.gelu(x, approximate="tanh"), [_t(6)]),
    "getitem": (lambda x: x[1:, ::2], [_t(3, 4)]),
    "gru_step": (lambda gi, h, w, b: _rnnf.gru_step(gi, h, w, b), [_t(2, 9), _t(2, 3), _t(9, 3), _t(9)]),
    "index": (lambda x: getitem_raw(x, (np.array([0, 2, 2]),)), [_t(3, 2)]),
    "index_add": (lambda x, s: x.index_add(0, ember.tensor([0, 2, 0]), s), [_t(3, 2), _t(3, 2)]),
    "index_put": (lambda x, v: x.index_put((ember.tensor([0, 2]),), v), [_t(3, 2), _t(2, 2)]),
    "index_put_zeros": (_via_grad(lambda x: x[ember.tensor([0, 2, 2])], (3, 2)), [_t(3, 2)]),
    "index_select": (lambda x: x.index_select(0, _IDX), [_t(3, 2)]),
    "index_select_backward": (_via_grad(lambda x: x.index_select(0, _IDX), (3, 2)), [_t(4, 2)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b), [_t(3, 4), _pos(4), _t(4)]),
    "lgamma": (ember.lgamma, [_pos(5)]),
    "linear": (F.linear, [_t(2, 3), _t(4, 3), _t(4)]),
    "log": (ember.log, [_pos(5)]),
    "log1p": (ember.log1p, [_pos(5)]),
    "log_softmax": (lambda x: F.log_softmax(x, 1), [_t(3, 4)]),
    "logsigmoid": (F.logsigmoid, [_t(5)]),
    "logsumexp": (lambda x: x.logsumexp(1), [_t(3, 4)]),
    "lstm_step": (lambda gi, hc, w, b: _rnnf.lstm_step(gi, hc, w, b), [_t(2, 12), _t(2, 6), _t(12, 3), _t(12)]),
    "matmul": (lambda a, b: a @ b, [_t(2, 3), _t(3, 2)]),
    "max_dim": (lambda x: x.max(1).values, [_t(3, 4)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2, 1), [_t(1, 2, 4, 4)]),
    "max_pool2d_backward": (_via_grad(lambda x: F.max_pool2d(x, 2, 1), (1, 2, 4, 4)), [_t(1, 2, 3, 3)]),
    "max_pool2d_gather": (lambda gg: _maxpool_gg(gg), [_t(1, 2, 4, 4)]),
    "maximum": (ember.maximum, [_t(6), _t(6)]),
    "min_dim": (lambda x: x.min(0, keepdim=True).values, [_t(3, 4)]),
    "minimum": (ember.minimum, [_t(6), _t(6)]),
    "mul": (lambda a, b: a * b, [_t(3, 2), _t(2)]),
    "neg": (lambda x: -x, [_t(4)]),
    "nll_loss": (lambda x: F.nll_loss(x, ember.tensor([0, 2, 1]), reduction="sum"), [_t(3, 4)]),
    "norm0": (lambda x: ember.linalg.vector_norm(x, 0) * x, [_t(4)]),
    "norm2": (lambda x: x.norm(dim=1), [_t(3, 4)]),
    "permute": (lambda x: x.permute(2, 0, 1), [_t(2, 3, 2)]),
    "polygamma": (lambda x: ember.polygamma(1, x), [_pos(5)]),
    "pow": (lambda a, b: a**b, [_pos(4), _t(4)]),
    "prod": (lambda x: x.prod(1) + (x * ember.tensor([1.0, 0.0, 1.0])).prod(), [_t(2, 3)]),
    "reciprocal": (ember.reciprocal, [_pos(5)]),
    "recurrent_sequence": (_rnn("GRU"), [_t(3, 2, 6), _t(2, 2), _t(6, 2), _t(6)]),
    "relu": (ember.relu, [_t(6)]),
    "remainder": (ember.remainder, [_t(6, lo=-3, hi=3), _pos(6)]),
    "reshape": (lambda x: x.t().reshape(6), [_t(2, 3)]),
    "rnn_step": (lambda gi, h, w, b: _rnnf.rnn_step(gi, h, w, b), [_t(2, 3), _t(2, 3), _t(3, 3), _t(3)]),
    "roll": (lambda x: x.roll(1, 0), [_t(3, 2)]),
    "round": (lambda x: ember.round(x) * x, [_t(5)]),
    "rsqrt": (ember.rsqrt, [_pos(5)]),
    "scaled_dot_product_attention": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [_t(1, 2, 3, 4), _t(1, 2, 3, 4), _t(1, 2, 3, 4)],
    ),
    "scatter": (lambda x, s: x.scatter(0, ember.tensor([[0, 1], [2, 0]]), s), [_t(3, 2), _t(2, 2)]),
    "scatter_add": (lambda x, s: x.scatter_add(0, ember.tensor([[0, 1], [0, 0]]), s), [_t(3, 2), _t(2, 2)]),
    "sigmoid": (ember.sigmoid, [_t(5)]),
    "sign": (lambda x: ember.sign(x) * x, [_t(5)]),
    "sin": (ember.sin, [_t(5)]),
    "sinh": (ember.sinh, [_t(5)]),
    "softmax": (lambda x: F.softmax(x, 0), [_t(3, 4)]),
    "solve_triangular": (
        lambda a, b: ember.linalg.solve_triangular(a + 3 * ember.eye(3, dtype=a.dtype), b, upper=False),
        [_t(3, 3), _t(3, 2)],
    ),
    "sparse_mm": (_sparse_mm, [_t(4), _t(3, 2)]),
    "sqrt": (ember.sqrt, [_pos(5)]),
    "standard_gamma": (lambda a: _seeded(_standard_gamma, a), [_pos(4) + 1]),
    "sub": (lambda a, b: a - b, [_t(3, 2), _t(2)]),
    "sum": (lambda x: x.sum(0), [_t(3, 2)]),
    "tan": (ember.tan, [_t(5)]),
    "tanh": (ember.tanh, [_t(5)]),
    "to": (lambda x: x.to(ember.float32).to(ember.float64), [_t(4)]),
    "tri_mask": (lambda x: x.tril(), [_t(3, 3)]),
    "trunc": (lambda x: ember.trunc(x) * x, [_t(5)]),
    "var_std": (lambda x: x.var(1) + x.std(1), [_t(3, 4)]),
    "view": (lambda x: x.view(6), [_t(2, 3)]),
    "where": (lambda a, b: ember.where(a > 0, a, b), [_t(6), _t(6)]),
}


def _seeded(fn, *args):
    ember.manual_seed(5)  # the same draw on every evaluation (finite differences, reverse mode)
    return fn(*args)


_CONV_X = _t(1, 2, 4, 4)


def _tracked(w):
    """``w`` (a dual tensor, say) made to require grad without losing its tangent."""
    return w + ember.zeros(tuple(w.shape), dtype=w.dtype, requires_grad=True)


def _conv_grads(g, w):
    """(grad input, grad weight) of conv2d under create_graph: the gradient primitives."""
    x = _CONV_X.detach().requires_grad_()
    w = _tracked(w)
    out = F.conv2d(x, w, stride=2, padding=1)
    return ember.autograd.grad(out, [x, w], g, create_graph=True)


def _maxpool_gg(gg):
    """The gradient of max_pool2d's gradient with respect to its incoming gradient: a gather."""
    x = _MP_X.detach().requires_grad_()
    g = ember.ones(1, 2, 3, 3, dtype=ember.float64, requires_grad=True)
    gx = ember.autograd.grad(F.max_pool2d(x, 2, 1), x, g, create_graph=True)[0]
    return ember.autograd.grad(gx, g, gg, create_graph=True)[0]


_MP_X = _t(1, 2, 4, 4)


def _counting(name):
    prim = REGISTRY[name]
    rule = prim.jvp
    calls = []

    def wrapped(*a, **k):
        calls.append(1)
        return rule(*a, **k)

    return prim, rule, wrapped, calls


def test_every_differentiable_primitive_has_a_jvp_rule():
    missing = [n for n, p in REGISTRY.items() if p.node is not None and p.jvp is None and n not in EXEMPT]
    assert not missing, f"differentiable primitives without a JVP rule: {missing}"


def test_every_differentiable_primitive_has_a_check():
    unchecked = sorted(n for n, p in REGISTRY.items() if p.node is not None and n not in CASES and n not in EXEMPT)
    assert not unchecked, f"JVP rules without a case in CASES: {unchecked}"


def _dot(a, b) -> float:
    return float((a.detach() * b.detach()).sum())


@pytest.mark.parametrize("name", sorted(CASES))
def test_jvp_rule_against_finite_differences_and_reverse_mode(name):
    fn, inputs = CASES[name]
    inputs = [x.detach() for x in inputs]
    tangents = [ember.tensor(rng.uniform(-1, 1, tuple(x.shape))) for x in inputs]
    prim, rule, wrapped, calls = _counting(name)
    prim.jvp = wrapped
    try:
        out, jv = jvp(fn, tuple(inputs), tuple(tangents))
    finally:
        prim.jvp = rule
    assert calls, f"the case for {name!r} did not run its JVP rule"
    assert jv.dtype == out.dtype and tuple(jv.shape) == tuple(out.shape)
    if name not in NO_FD:  # central finite differences
        eps, rtol = _FD.get(name, (1e-6, 1e-5))
        plus = fn(*[x + eps * t for x, t in zip(inputs, tangents)])
        minus = fn(*[x - eps * t for x, t in zip(inputs, tangents)])
        fd = (plus.detach() - minus.detach()) / (2 * eps)
        np.testing.assert_allclose(jv.detach().numpy(), fd.numpy(), rtol=rtol, atol=rtol / 10, err_msg=name)
    if name in NO_REVERSE:
        return
    # reverse mode: <u, J v> == <J^T u, v>
    u = ember.tensor(rng.uniform(-1, 1, tuple(out.shape)))
    _, vjp_fn = vjp(fn, *inputs)
    grads = vjp_fn(u)
    lhs = _dot(u, jv)
    rhs = sum(_dot(g, t) for g, t in zip(grads, tangents))
    tol = 1e-6 if name == "to" else 1e-8  # "to" rounds through float32
    assert abs(lhs - rhs) <= tol * max(1.0, abs(lhs)), (name, lhs, rhs)


def _inplace_cases(m):
    return {
        "addcmul_": lambda x, a: x.addcmul_(a, a, value=0.5),
        "addcdiv_": lambda x, a: x.addcdiv_(a, a.abs() + 1, value=2.0),
        "lerp_": lambda x, a: x.lerp_(a, 0.3),
        "lerp_tensor_weight": lambda x, a: x.lerp_(a, a.sigmoid()),
        "sqrt_": lambda x, a: x.abs_().sqrt_(),
        "index_add_": lambda x, a: x.index_add_(0, m.tensor([0, 2]), a[:2], alpha=2.0),
        "setitem_": lambda x, a: x.__setitem__((slice(0, 2),), a[1:3] * 2) or x,
        "mul_add_": lambda x, a: x.mul_(a).add_(a, alpha=2.0),
        "copy_": lambda x, a: x.copy_(a * 3),
        "fill_": lambda x, a: x.fill_(2.0) * a,
    }


@pytest.mark.parametrize("name", sorted(_inplace_cases(ember)))
def test_inplace_ops_under_forward_ad_as_torch(name):
    import torch
    import torch.autograd.forward_ad as tAD

    import ember.autograd.forward_ad as eAD

    arrays = [rng.standard_normal((3, 4)) for _ in range(4)]
    got = []
    for m, AD in ((ember, eAD), (torch, tAD)):
        x0, tx, a0, ta = (m.tensor(v) for v in arrays)
        with AD.dual_level():
            x = AD.make_dual(x0, tx).clone()
            a = AD.make_dual(a0, ta)
            got.append(AD.unpack_dual(_inplace_cases(m)[name](x, a)).tangent.numpy())
    np.testing.assert_allclose(got[0], got[1], rtol=1e-12, atol=1e-12)


def test_random_fill_under_forward_ad_has_zero_tangent():
    import ember.autograd.forward_ad as eAD

    with eAD.dual_level():
        x = eAD.make_dual(ember.zeros(3), ember.ones(3)).clone()
        assert eAD.unpack_dual(x.normal_()).tangent.tolist() == [0.0, 0.0, 0.0]
