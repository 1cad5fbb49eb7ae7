"""Factories, dtype inference, random ops and ``repr`` against PyTorch.

Deterministic factories are compared value for value; random ones by shape, dtype, range and
reproducibility under ``ember.manual_seed`` (Ember's streams differ from torch's by design).
``repr`` is compared with torch's string with ``torch.`` replaced by ``ember.``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close
from tests.test_ops_elementwise import check_all, check_or_raise

# --------------------------------------------------------------------------- tensor() inference
PY_DATA = [
    1,
    2.5,
    True,
    [1, 2, 3],
    [1.0, 2, 3],
    [True, False],
    [[1, 2], [3, 4]],
    [[1.5], [2.0]],
    [],
    [[]],
    [True, 2],
    [1, 2.5, True],
    (1, 2),
    np.float64(2.5),
    np.int32(3),
    np.array([1, 2], dtype=np.int32),
    np.array([1.0, 2.0]),
    np.array([1.0], dtype=np.float16),
    np.array([True]),
    np.array(3.0),
    [np.float64(1.0), 2.0],
]


def _eq(e, t):
    assert_close(e, t)
    assert str(e.dtype).replace("ember.", "") == str(t.dtype).replace("torch.", ""), (e.dtype, t.dtype)


@pytest.mark.parametrize("data", PY_DATA, ids=repr)
def test_tensor_dtype_inference(data):
    _eq(ember.tensor(data), torch.tensor(data))
    _eq(ember.as_tensor(data), torch.as_tensor(data))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64", "bool", "uint8", "int8", "int16"])
def test_tensor_explicit_dtype(dtype):
    data = [[0, 1.5], [-2, 3]] if dtype != "uint8" else [[0, 1.5], [2, 3]]
    _eq(ember.tensor(data, dtype=getattr(ember, dtype)), torch.tensor(data, dtype=getattr(torch, dtype)))
    assert repr(getattr(ember, dtype)) == repr(getattr(torch, dtype)).replace("torch.", "ember.")


def test_dtype_aliases_and_attributes():
    for name in ["float", "double", "half", "long", "int", "short", "bool"]:
        assert repr(getattr(ember, name)) == repr(getattr(torch, name)).replace("torch.", "ember.")
    for name in ["float16", "float32", "float64", "int32", "int64", "bool", "uint8"]:
        e, t = getattr(ember, name), getattr(torch, name)
        assert e.is_floating_point == t.is_floating_point
        assert e.is_signed == t.is_signed
        assert e.itemsize == t.itemsize


def test_tensor_errors():
    check_or_raise(lambda lib: lib.tensor([[1, 2], [3]]))
    check_or_raise(lambda lib: lib.tensor("abc"))
    check_or_raise(lambda lib: lib.tensor([1, "a"]))


def test_default_dtype():
    try:
        ember.set_default_dtype(ember.float64)
        assert ember.tensor([1.0]).dtype is ember.float64
        assert ember.zeros(2).dtype is ember.float64
        assert ember.arange(0.0, 1.0, 0.5).dtype is ember.float64
        assert (ember.tensor([1]) + 0.5).dtype is ember.float64
    finally:
        ember.set_default_dtype(ember.float32)
    assert ember.get_default_dtype() is ember.float32


# --------------------------------------------------------------------------- memory sharing
def test_from_numpy_shares_memory():
    a = np.arange(4.0)
    t = ember.from_numpy(a)
    a[0] = 10.0
    assert t[0].item() == 10.0
    t.add_(1)
    assert a[1] == 2.0
    assert t.dtype is ember.float64
    with pytest.raises(TypeError):
        ember.from_numpy([1, 2])


def test_as_tensor_sharing_rules():
    a = np.arange(3, dtype=np.float32)
    t = ember.as_tensor(a)
    a[0] = 5
    assert t[0].item() == 5  # same dtype: shared
    u = ember.as_tensor(a, dtype=ember.float64)
    a[1] = 7
    assert u[1].item() == 1  # converted: a copy
    x = ember.ones(2)
    assert ember.as_tensor(x) is x
    c = ember.tensor(a)
    a[2] = 9
    assert c[2].item() == 2  # tensor() always copies
    assert ember.tensor(x) is not x


# --------------------------------------------------------------------------- factories
FACTORIES = [
    ("zeros", lambda lib: lib.zeros(2, 3)),
    ("zeros_tuple", lambda lib: lib.zeros((2, 3), dtype=lib.int32)),
    ("zeros_list", lambda lib: lib.zeros([4])),
    ("zeros_0dim", lambda lib: lib.zeros(())),
    ("ones", lambda lib: lib.ones(3, dtype=lib.float64)),
    ("ones_bool", lambda lib: lib.ones(2, 2, dtype=lib.bool)),
    ("full_int", lambda lib: lib.full((2, 2), 7)),
    ("full_float", lambda lib: lib.full((2,), 1.5)),
    ("full_bool", lambda lib: lib.full((2,), True)),
    ("full_dtype", lambda lib: lib.full([3], 2, dtype=lib.float16)),
    ("empty_shape", lambda lib: lib.empty(2, 3).shape),
    ("empty_dtype", lambda lib: lib.empty(2, dtype=lib.int64).dtype == lib.int64),
    ("zeros_like", lambda lib: lib.zeros_like(lib.ones(2, 3, dtype=lib.int32))),
    ("ones_like", lambda lib: lib.ones_like(lib.zeros(2), dtype=lib.float64)),
    ("full_like", lambda lib: lib.full_like(lib.zeros(2, dtype=lib.int64), 2.7)),
    ("full_like_float", lambda lib: lib.full_like(lib.zeros(2), 2.7)),
    ("empty_like", lambda lib: lib.empty_like(lib.zeros(2, 5)).shape),
    ("arange", lambda lib: lib.arange(5)),
    ("arange_start", lambda lib: lib.arange(2, 7)),
    ("arange_step", lambda lib: lib.arange(1, 10, 3)),
    ("arange_neg_step", lambda lib: lib.arange(5, -3, -2)),
    ("arange_float", lambda lib: lib.arange(0, 1, 0.1)),
    ("arange_float_neg", lambda lib: lib.arange(1.0, -1.0, -0.25)),
    ("arange_float_end", lambda lib: lib.arange(2.5)),
    ("arange_dtype", lambda lib: lib.arange(4, dtype=lib.float64)),
    ("arange_int_dtype", lambda lib: lib.arange(0.0, 5.0, dtype=lib.int32)),
    ("arange_empty", lambda lib: lib.arange(3, 3)),
    ("linspace", lambda lib: lib.linspace(0, 1, 5)),
    ("linspace_neg", lambda lib: lib.linspace(2, -2, 7, dtype=lib.float64)),
    ("linspace_one", lambda lib: lib.linspace(3, 5, 1)),
    ("linspace_int_dtype", lambda lib: lib.linspace(0, 10, 4, dtype=lib.int64)),
    ("logspace", lambda lib: lib.logspace(0, 2, 3)),
    ("eye", lambda lib: lib.eye(3)),
    ("eye_rect", lambda lib: lib.eye(2, 4, dtype=lib.int64)),
    ("eye_bool", lambda lib: lib.eye(3, dtype=lib.bool)),
    ("Tensor_sizes", lambda lib: lib.Tensor(2, 3).shape),
    ("Tensor_data", lambda lib: lib.Tensor([1, 2])),
    ("requires_grad", lambda lib: lib.zeros(2, requires_grad=True).requires_grad),
]


@pytest.mark.parametrize("name,fn", FACTORIES, ids=[f[0] for f in FACTORIES])
def test_factories(name, fn):
    check_or_raise(fn, grad=False)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lib: lib.arange(0, 5, 0),
        lambda lib: lib.arange(5, 0, 1),
        lambda lib: lib.zeros(-1),
        lambda lib: lib.full((2,), 1, dtype=lib.bool).sum(5),
        lambda lib: lib.linspace(0, 1, -1),
    ],
)
def test_factory_errors(fn):
    check_or_raise(fn)


# --------------------------------------------------------------------------- random
RANDOM = [
    ("rand", lambda: ember.rand(3, 4), (3, 4), ember.float32, (0.0, 1.0)),
    ("rand_f64", lambda: ember.rand((2, 2), dtype=ember.float64), (2, 2), ember.float64, (0.0, 1.0)),
    ("rand_f16", lambda: ember.rand(5, dtype=ember.float16), (5,), ember.float16, (0.0, 1.0)),
    ("randn", lambda: ember.randn(200), (200,), ember.float32, (-8.0, 8.0)),
    ("randint", lambda: ember.randint(3, 7, (50,)), (50,), ember.int64, (3, 6)),
    ("randint_high", lambda: ember.randint(5, (2, 3)), (2, 3), ember.int64, (0, 4)),
    ("randint_dtype", lambda: ember.randint(0, 2, (4,), dtype=ember.int32), (4,), ember.int32, (0, 1)),
    ("randperm", lambda: ember.randperm(10), (10,), ember.int64, (0, 9)),
    ("normal", lambda: ember.normal(2.0, 0.5, (100,)), (100,), ember.float32, (-2.0, 6.0)),
    ("normal_t", lambda: ember.normal(ember.zeros(3, 2), ember.ones(2)), (3, 2), ember.float32, (-8.0, 8.0)),
    ("bernoulli", lambda: ember.bernoulli(ember.full((20,), 0.5)), (20,), ember.float32, (0.0, 1.0)),
    ("bernoulli_p", lambda: ember.bernoulli(ember.zeros(3, dtype=ember.float64), 1.0), (3,), ember.float64, (1, 1)),
    ("multinomial", lambda: ember.multinomial(ember.tensor([0.1, 0.0, 0.9]), 5, True), (5,), ember.int64, (0, 2)),
    ("multinomial_2d", lambda: ember.multinomial(ember.ones(2, 4), 4), (2, 4), ember.int64, (0, 3)),
    ("rand_like", lambda: ember.rand_like(ember.zeros(2, dtype=ember.float64)), (2,), ember.float64, (0.0, 1.0)),
    ("randn_like", lambda: ember.randn_like(ember.zeros(3)), (3,), ember.float32, (-8.0, 8.0)),
    ("randint_like", lambda: ember.randint_like(ember.zeros(3), 4), (3,), ember.float32, (0, 3)),
]


@pytest.mark.parametrize("name,fn,shape,dtype,bounds", RANDOM, ids=[r[0] for r in RANDOM])
def test_random(name, fn, shape, dtype, bounds):
    ember.manual_seed(123)
    a = fn()
    ember.manual_seed(123)
    b = fn()
    c = fn()
    assert a.shape == shape and a.dtype is dtype, (a.shape, a.dtype)
    assert a.tolist() == b.tolist(), "same seed must give the same values"
    if name not in ("bernoulli_p", "randperm", "multinomial_2d"):
        assert a.tolist() != c.tolist(), "the stream must advance"
    lo, hi = bounds
    assert a.min().item() >= lo and a.max().item() <= hi
    if name == "randperm":
        assert sorted(a.tolist()) == list(range(10))
    if name == "multinomial_2d":  # without replacement: each row is a permutation
        assert all(sorted(r) == [0, 1, 2, 3] for r in a.tolist())
    if name == "multinomial":
        assert 1 not in a.tolist()  # zero probability is never drawn
    if name in ("rand", "rand_f64", "rand_f16", "rand_like"):
        assert a.max().item() < 1.0


def test_random_statistics():
    ember.manual_seed(0)
    x = ember.randn(20000, dtype=ember.float64)
    assert abs(x.mean().item()) < 0.03 and abs(x.std().item() - 1) < 0.03
    u = ember.rand(20000, dtype=ember.float64)
    assert abs(u.mean().item() - 0.5) < 0.02
    m = ember.multinomial(ember.tensor([1.0, 3.0]), 4000, replacement=True)
    assert abs(m.double().mean().item() - 0.75) < 0.03


def test_generator_and_state():
    g = ember.Generator().manual_seed(7)
    a = ember.rand(3, generator=g)
    g.manual_seed(7)
    assert ember.rand(3, generator=g).tolist() == a.tolist()
    state = ember.get_rng_state()
    x = ember.randn(4)
    ember.set_rng_state(state)
    assert ember.randn(4).tolist() == x.tolist()
    assert ember.manual_seed(3).initial_seed() == 3


def test_random_errors():
    check_all(
        [
            ("randint", lambda: pytest.raises(RuntimeError, ember.randint, 5, 5, (2,))),
            ("normal std", lambda: pytest.raises(RuntimeError, ember.normal, 0.0, -1.0, (2,))),
            ("bernoulli p", lambda: pytest.raises(RuntimeError, ember.bernoulli, ember.full((2,), 1.5))),
            ("multinomial", lambda: pytest.raises(RuntimeError, ember.multinomial, ember.ones(3), 5)),
            ("multinomial neg", lambda: pytest.raises(RuntimeError, ember.multinomial, ember.tensor([-1.0, 2.0]), 1)),
        ]
    )


# --------------------------------------------------------------------------- repr
REPRS = [
    ("floats", lambda lib: lib.tensor([1.5, -2.25, 3.0])),
    ("whole_floats", lambda lib: lib.tensor([1.0, 2.0, -3.0])),
    ("ints", lambda lib: lib.tensor([1, 22, -333])),
    ("int32", lambda lib: lib.tensor([1, 2], dtype=lib.int32)),
    ("bools", lambda lib: lib.tensor([True, False, True])),
    ("all_true", lambda lib: lib.tensor([True, True])),
    ("scalar_float", lambda lib: lib.tensor(3.5)),
    ("scalar_int", lambda lib: lib.tensor(7)),
    ("scalar_whole", lambda lib: lib.tensor(2.0)),
    ("tiny", lambda lib: lib.tensor([1e-5, 2e-6])),
    ("huge", lambda lib: lib.tensor([1e9, 2.0])),
    ("wide_range", lambda lib: lib.tensor([1e-3, 10.0, 1234.5])),
    ("sci_whole", lambda lib: lib.tensor([1e10, 1.0])),
    ("matrix", lambda lib: lib.tensor([[1.0, 2.5], [-3.0, 4.0]])),
    ("int_matrix", lambda lib: lib.tensor([[1, 20], [300, -4]])),
    ("3d", lambda lib: lib.arange(8.0).reshape(2, 2, 2)),
    ("float64", lambda lib: lib.tensor([1.5, 2.0], dtype=lib.float64)),
    ("float16", lambda lib: lib.tensor([1.5, 2.0], dtype=lib.float16)),
    ("requires_grad", lambda lib: lib.tensor([1.0, 2.0], requires_grad=True)),
    ("grad_fn", lambda lib: lib.tensor([1.0, 2.0], requires_grad=True) * 2),
    ("grad_fn_f64", lambda lib: lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True) + 1),
    ("empty", lambda lib: lib.zeros(0)),
    ("empty_2d", lambda lib: lib.zeros(2, 0)),
    ("nan_inf", lambda lib: lib.tensor([float("nan"), float("inf"), -float("inf"), 1.5])),
    ("negative_zero", lambda lib: lib.tensor([-0.0, 1.0])),
    ("mixed_sign", lambda lib: lib.tensor([[-1.2345, 100.5], [0.001, -0.5]])),
    ("long_row", lambda lib: lib.arange(30.0)),
    ("summarized", lambda lib: lib.arange(2000)),
    ("summarized_2d", lambda lib: lib.arange(4000.0).reshape(40, 100)),
    ("uint8", lambda lib: lib.tensor([1, 2], dtype=lib.uint8)),
]


@pytest.mark.parametrize("name,fn", REPRS, ids=[r[0] for r in REPRS])
def test_repr_matches_torch(name, fn):
    expected = repr(fn(torch)).replace("torch.", "ember.")
    got = repr(fn(ember))
    assert got == expected, f"\nember: {got}\ntorch: {expected}"


def test_dtype_and_size_repr():
    assert repr(ember.zeros(2, 3).shape) == "ember.Size([2, 3])"
    assert repr(ember.zeros(2).dtype) == "ember.float32"
    assert str(ember.tensor([1.5])) == repr(ember.tensor([1.5]))
