"""bfloat16 and float16 against PyTorch: promotion, conversion, limits, and a table of ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember

NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]
LOW = ["bfloat16", "float16"]


def E(name):
    return getattr(ember, name)


def T(name):
    return getattr(torch, name)


@pytest.mark.parametrize("a", NAMES)
@pytest.mark.parametrize("b", NAMES)
def test_promote_types_table(a, b):
    assert ember.promote_types(E(a), E(b)).name == str(torch.promote_types(T(a), T(b))).split(".")[1]


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize(
    "make",
    [
        lambda m, d: (m.ones(3, dtype=d), 2.5),
        lambda m, d: (m.ones(3, dtype=d), m.ones(3, dtype=m.int64)),
        lambda m, d: (m.ones(3, dtype=d), m.tensor(2.0, dtype=m.float64)),
        lambda m, d: (m.ones(3, dtype=m.int32), m.tensor(2.0, dtype=d)),
        lambda m, d: (m.ones(3, dtype=d), m.ones(3, dtype=m.float32)),
        lambda m, d: (m.ones(3, dtype=m.bfloat16), m.ones(3, dtype=m.float16)),
        lambda m, d: (m.tensor(1.0, dtype=d), m.ones(3, dtype=m.int8)),
    ],
)
def test_result_dtype_of_mixed_ops(low, make):
    ea, eb = make(ember, E(low))
    ta, tb = make(torch, T(low))
    for op in ("add", "mul", "div"):
        assert str(getattr(ember, op)(ea, eb).dtype)[6:] == str(getattr(torch, op)(ta, tb).dtype)[6:]


@pytest.mark.parametrize("low", LOW)
def test_conversion_methods_printing_and_element_size(low):
    x = ember.tensor([1.0, 2.5, -3.0])
    y = x.bfloat16() if low == "bfloat16" else x.half()
    assert y.dtype is E(low) and y.element_size() == 2 and y.dtype.itemsize == 2
    assert y.float().dtype is ember.float32 and y.to(ember.float64).dtype is ember.float64
    tx = torch.tensor([1.0, 2.5, -3.0]).to(T(low))
    assert repr(y).replace("ember", "torch") == repr(tx)
    assert repr(ember.tensor(1.5, dtype=E(low))).replace("ember", "torch") == repr(torch.tensor(1.5, dtype=T(low)))
    assert y.is_floating_point() and y.tolist() == tx.tolist()
    z = ember.tensor([1.0, 2.0], dtype=E(low), requires_grad=True)
    z.float().sum().backward()
    assert z.grad.dtype is E(low)
    assert y.type() == f"torch.{'BFloat16' if low == 'bfloat16' else 'Half'}Tensor"


def test_rounding_matches_torch():
    v = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 100
    for low in LOW:
        got = ember.tensor(v).to(E(low)).float().numpy()
        want = torch.tensor(v).to(T(low)).float().numpy()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64"])
def test_finfo_matches_torch(name):
    a, b = ember.finfo(E(name)), torch.finfo(T(name))
    for k in ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype"):
        assert getattr(a, k) == getattr(b, k), k
    assert ember.finfo().dtype == torch.finfo().dtype


@pytest.mark.parametrize("name", ["uint8", "int8", "int16", "int32", "int64"])
def test_iinfo_matches_torch(name):
    a, b = ember.iinfo(E(name)), torch.iinfo(T(name))
    assert (a.bits, a.min, a.max, a.dtype) == (b.bits, b.min, b.max, b.dtype)


def test_info_errors():
    with pytest.raises(TypeError, match="finfo"):
        ember.finfo(ember.int32)
    with pytest.raises(TypeError, match="iinfo"):
        ember.iinfo(ember.float32)
    with pytest.raises(TypeError):
        ember.iinfo(ember.bool)


# ----------------------------------------------------------------------------- ops table
def _lin(m, x, w, b):
    return m.nn.functional.linear(x, w, b)


# name -> (input shapes, function of (module, *tensors)); inputs are positive where a domain needs it.
OPS = {
    "add": ([(4, 5), (5,)], lambda m, a, b: a + b),
    "sub_scalar": ([(4, 5)], lambda m, a: a - 1.5),
    "mul": ([(4, 5), (4, 5)], lambda m, a, b: a * b),
    "div": ([(4, 5), (4, 5)], lambda m, a, b: a / (b.abs() + 1)),
    "exp": ([(4, 5)], lambda m, a: a.exp()),
    "log": ([(4, 5)], lambda m, a: (a.abs() + 0.5).log()),
    "tanh": ([(4, 5)], lambda m, a: a.tanh()),
    "sigmoid": ([(4, 5)], lambda m, a: a.sigmoid()),
    "sqrt": ([(4, 5)], lambda m, a: a.abs().sqrt()),
    "pow": ([(4, 5)], lambda m, a: a.abs() ** 1.5),
    "relu": ([(4, 5)], lambda m, a: m.relu(a)),
    "gelu": ([(4, 5)], lambda m, a: m.nn.functional.gelu(a)),
    "gelu_tanh": ([(4, 5)], lambda m, a: m.nn.functional.gelu(a, approximate="tanh")),
    "silu": ([(4, 5)], lambda m, a: m.nn.functional.silu(a)),
    "clamp": ([(4, 5)], lambda m, a: a.clamp(-0.5, 0.5)),
    "where": ([(4, 5), (4, 5)], lambda m, a, b: m.where(a > 0, a, b)),
    "maximum": ([(4, 5), (4, 5)], lambda m, a, b: m.maximum(a, b)),
    "sum": ([(4, 5)], lambda m, a: a.sum()),
    "sum_dim": ([(4, 5)], lambda m, a: a.sum(1)),
    "mean": ([(4, 5)], lambda m, a: a.mean(0)),
    "var": ([(4, 5)], lambda m, a: a.var(1)),
    "std": ([(4, 5)], lambda m, a: a.std()),
    "amax": ([(4, 5)], lambda m, a: a.amax(1)),
    "max_dim": ([(4, 5)], lambda m, a: a.max(1)[0]),
    "argmax": ([(4, 5)], lambda m, a: a.argmax(1)),
    "prod": ([(4, 5)], lambda m, a: (a.abs() + 0.5).prod(1)),
    "cumsum": ([(4, 5)], lambda m, a: a.cumsum(1)),
    "logsumexp": ([(4, 5)], lambda m, a: a.logsumexp(1)),
    "norm": ([(4, 5)], lambda m, a: a.norm()),
    "softmax": ([(4, 5)], lambda m, a: a.softmax(-1)),
    "log_softmax": ([(4, 5)], lambda m, a: a.log_softmax(-1)),
    "layer_norm": ([(4, 5), (5,), (5,)], lambda m, a, w, b: m.nn.functional.layer_norm(a, (5,), w, b)),
    "matmul": ([(4, 5), (5, 3)], lambda m, a, b: a @ b),
    "bmm": ([(2, 4, 5), (2, 5, 3)], lambda m, a, b: m.bmm(a, b)),
    "linear": ([(4, 5), (3, 5), (3,)], _lin),
    "conv2d": ([(2, 3, 6, 6), (4, 3, 3, 3), (4,)], lambda m, x, w, b: m.nn.functional.conv2d(x, w, b, padding=1)),
    "max_pool2d": ([(2, 3, 6, 6)], lambda m, x: m.nn.functional.max_pool2d(x, 2)),
    "avg_pool2d": ([(2, 3, 6, 6)], lambda m, x: m.nn.functional.avg_pool2d(x, 2)),
    "mse_loss": ([(4, 5), (4, 5)], lambda m, a, b: m.nn.functional.mse_loss(a, b)),
    "cross_entropy": ([(4, 5)], lambda m, a: m.nn.functional.cross_entropy(a, m.tensor([0, 1, 4, 2]))),
    "cat_transpose": ([(4, 5), (4, 5)], lambda m, a, b: m.cat([a, b], 0).t().reshape(5, 2, 4)),
    "embedding": ([(6, 3)], lambda m, w: m.nn.functional.embedding(m.tensor([[0, 5], [2, 2]]), w)),
    "sdpa": (
        [(1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8)],
        lambda m, q, k, v: m.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
    ),
}

# The dtype's own rounding, and a little for accumulations rounded twice.
TOL = {"bfloat16": 2e-2, "float16": 2e-3}


@pytest.mark.parametrize("low", LOW)
@pytest.mark.parametrize("op", sorted(OPS))
def test_op_in_low_precision_matches_torch(op, low):
    shapes, fn = OPS[op]
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    diff = op not in ("argmax",)
    ex = [ember.tensor(a).to(E(low)).requires_grad_(diff) for a in arrays]
    tx = [torch.tensor(a).to(T(low)).requires_grad_(diff) for a in arrays]
    eo, to = fn(ember, *ex), fn(torch, *tx)
    assert str(eo.dtype)[6:] == str(to.dtype)[6:]
    tol = TOL[low]
    np.testing.assert_allclose(eo.float().detach().numpy(), to.float().detach().numpy(), rtol=tol, atol=tol)
    if not diff:
        return
    g = rng.standard_normal(tuple(to.shape)).astype(np.float32)
    eo.backward(ember.tensor(g).to(E(low)))
    to.backward(torch.tensor(g).to(T(low)))
    for a, b in zip(ex, tx):
        assert str(a.grad.dtype)[6:] == str(b.grad.dtype)[6:]
        scale = max(1.0, float(b.grad.float().abs().max()))
        np.testing.assert_allclose(a.grad.float().numpy(), b.grad.float().numpy(), rtol=2 * tol, atol=2 * tol * scale)


@pytest.mark.parametrize("low", LOW)
def test_reductions_accumulate_in_float32(low):
    x, y = ember.ones(100000, dtype=E(low)), torch.ones(100000, dtype=T(low))
    for fn in (
        lambda v: v.sum(),
        lambda v: v.mean(),
        lambda v: v.reshape(100, 1000).sum(1),
        lambda v: v.cumsum(0)[-1],
        lambda v: v.norm(),
        lambda v: (v * 0.01).var(),
    ):
        a, b = fn(x), fn(y)
        assert str(a.dtype)[6:] == str(b.dtype)[6:]
        np.testing.assert_allclose(a.float().numpy(), b.float().numpy(), rtol=1e-2)


def _conv_lstm(m):
    nn = m.nn
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
    return conv, nn.LSTM(4, 6, batch_first=True)


@pytest.mark.parametrize("low", LOW)
def test_modules_in_low_precision_train_like_torch(low):
    """Whole modules converted with ``.to(dtype)``: conv, batch norm, pooling and an LSTM."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    seq = rng.standard_normal((2, 5, 4)).astype(np.float32)
    mods = {"torch": _conv_lstm(torch), "ember": _conv_lstm(ember)}
    for em, tm in zip(mods["ember"], mods["torch"]):  # the same initial weights in both
        em.load_state_dict({k: ember.tensor(v.detach().double().numpy()) for k, v in tm.state_dict().items()})
    outs = {}
    for m in (torch, ember):
        conv, lstm = mods[m.__name__]
        conv.to(getattr(m, low))
        lstm.to(getattr(m, low))
        xi = m.tensor(x).to(getattr(m, low)).requires_grad_(True)
        si = m.tensor(seq).to(getattr(m, low)).requires_grad_(True)
        y = conv(xi)
        h, _ = lstm(si)
        (y.float().pow(2).sum() + h.float().sum()).backward()
        outs[m.__name__] = (y, h, xi.grad, si.grad, conv[1].running_mean, conv[0].weight.grad)
    tol = TOL[low] * 3
    for a, b in zip(outs["ember"], outs["torch"]):
        assert str(a.dtype)[6:] == str(b.dtype)[6:]
        scale = max(1.0, float(b.float().abs().max()))
        np.testing.assert_allclose(a.float().detach().numpy(), b.float().detach().numpy(), rtol=tol, atol=tol * scale)


def test_save_load_round_trip(tmp_path):
    x = ember.tensor([1.5, -2.0, 3.25], dtype=ember.bfloat16)
    ember.save({"b": x, "h": x.half()}, tmp_path / "low.ckpt")
    got = ember.load(tmp_path / "low.ckpt")
    assert got["b"].dtype is ember.bfloat16 and got["h"].dtype is ember.float16
    assert got["b"].tolist() == x.tolist() == got["h"].tolist()


@pytest.mark.parametrize("low", LOW)
def test_factories_and_module_conversion(low):
    d = E(low)
    for make in (
        lambda: ember.randn(3, dtype=d),
        lambda: ember.rand(3, dtype=d),
        lambda: ember.zeros(2, dtype=d),
        lambda: ember.arange(0, 3, dtype=d),
        lambda: ember.full((2,), 1.5, dtype=d),
        lambda: ember.empty(2, dtype=d).uniform_(),
    ):
        assert make().dtype is d
    lin = ember.nn.Linear(2, 2)
    conv = getattr(lin, "bfloat16" if low == "bfloat16" else "half")()
    assert conv is lin and lin.weight.dtype is d and lin.bias.dtype is d
    assert lin(ember.ones(1, 2, dtype=d)).dtype is d
