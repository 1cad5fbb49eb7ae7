"""bernoulli, poisson, multinomial, one_hot, the alpha_dropout mask and CopySlices' backward mask
are primitives run through apply: capture sees them, meta gives their shapes and dtypes, and
their values, gradients and errors match PyTorch."""

import numpy as np
import pytest
import torch

import ember
import ember.nn.functional as F
from ember.ops.capture import capture


def _meta(*shape, dtype=ember.float32):
    return ember.empty(*shape, dtype=dtype, device="meta")


CASES = [
    # name, ember on a meta input, the same op in torch on a CPU input
    ("bernoulli", lambda: ember.bernoulli(_meta(2, 3)), lambda: torch.bernoulli(torch.rand(2, 3))),
    (
        "bernoulli",
        lambda: ember.bernoulli(_meta(4, dtype=ember.float64), 0.3),
        lambda: torch.bernoulli(torch.rand(4, dtype=torch.float64), 0.3),
    ),
    (
        "poisson",
        lambda: ember.poisson(_meta(2, 3, dtype=ember.float64)),
        lambda: torch.poisson(torch.rand(2, 3, dtype=torch.float64)),
    ),
    ("multinomial", lambda: ember.multinomial(_meta(2, 5), 3), lambda: torch.multinomial(torch.rand(2, 5), 3)),
    ("multinomial", lambda: ember.multinomial(_meta(5), 7, True), lambda: torch.multinomial(torch.rand(5), 7, True)),
    (
        "one_hot",
        lambda: F.one_hot(_meta(2, 3, dtype=ember.int64), 4),
        lambda: torch.nn.functional.one_hot(torch.randint(0, 4, (2, 3)), 4),
    ),
    (
        "alpha_dropout_mask",
        lambda: F.alpha_dropout(_meta(3, 2), 0.5, training=True),
        lambda: torch.nn.functional.alpha_dropout(torch.rand(3, 2), 0.5, training=True),
    ),
]


@pytest.mark.parametrize("name,run_ember,run_torch", CASES)
def test_meta_shape_dtype_and_capture(name, run_ember, run_torch):
    out, ref = run_ember(), run_torch()
    assert out.device.type == "meta"
    assert tuple(out.shape) == tuple(ref.shape) and str(out.dtype).split(".")[1] == str(ref.dtype).split(".")[1]
    with capture() as graph:
        run_ember()
    assert graph.counts()[name] == 1


def test_copy_slices_mask_is_an_op_of_the_backward():
    with ember.device("meta"):
        x = ember.randn(3, 4, requires_grad=True)
        v = ember.randn(2, 2, requires_grad=True)
    with capture() as graph:
        y = x * 1.0
        y[1:, ::2].copy_(v)
        y.sum().backward()
    recs = [r for r in graph.ops if r.op == "copy_slices_mask"]
    assert len(recs) == 1 and recs[0].phase == "backward"
    assert graph.value(recs[0].outputs[0]).shape == (3, 4)
    assert x.grad.shape == (3, 4) and v.grad.shape == (2, 2)


def test_copy_slices_gradients_match_torch():
    xn, vn, wn = np.random.rand(3, 4), np.random.rand(2, 2), np.random.rand(3, 4)
    grads = []
    for lib in (ember, torch):
        x = lib.tensor(xn, requires_grad=True)
        v = lib.tensor(vn, requires_grad=True)
        y = x * 2.0
        y[1:, ::2].copy_(v)
        (y * lib.tensor(wn)).sum().backward()
        grads.append((x.grad.numpy(), v.grad.numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0])
    np.testing.assert_allclose(grads[0][1], grads[1][1])


def test_deterministic_values_match_torch():
    probs = [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert ember.bernoulli(ember.tensor(probs)).tolist() == torch.bernoulli(torch.tensor(probs)).tolist()
    assert ember.bernoulli(ember.zeros(3), 1.0).tolist() == torch.bernoulli(torch.zeros(3), 1.0).tolist()
    assert ember.poisson(ember.zeros(2, 2)).tolist() == torch.poisson(torch.zeros(2, 2)).tolist()
    w = [[0.0, 0.0, 5.0], [2.0, 0.0, 0.0]]
    e, t = ember.multinomial(ember.tensor(w), 4, True), torch.multinomial(torch.tensor(w), 4, True)
    assert e.tolist() == t.tolist() and e.dtype == ember.int64
    perm = ember.multinomial(ember.tensor([1.0, 0.0, 2.0, 3.0]), 3)
    assert sorted(perm.tolist()) == sorted(torch.multinomial(torch.tensor([1.0, 0.0, 2.0, 3.0]), 3).tolist())
    idx = [[0, 3], [2, 1]]
    for nc in (-1, 5):
        e, t = F.one_hot(ember.tensor(idx), nc), torch.nn.functional.one_hot(torch.tensor(idx), nc)
        assert e.tolist() == t.tolist() and str(e.dtype).split(".")[1] == str(t.dtype).split(".")[1]


def test_alpha_dropout_values_are_torchs_two_levels():
    x = np.random.rand(200).astype(np.float32)
    p = 0.3
    out = F.alpha_dropout(ember.tensor(x), p, training=True).numpy()
    ref = torch.nn.functional.alpha_dropout(torch.tensor(x), p, training=True).numpy()
    # Each element is the kept value a*x+b or the dropped one a*alpha'+b, with torch's constants.
    alpha_p = -1.0507009873554805 * 1.6732632423543772
    a = ((1 - p) * (1 + p * alpha_p**2)) ** -0.5
    b = -a * alpha_p * p
    for y in (out, ref):
        kept, drop = np.isclose(y, a * x + b, atol=1e-5), np.isclose(y, a * alpha_p + b, atol=1e-5)
        assert (kept | drop).all() and kept.any() and drop.any()


ERRORS = [
    ("bernoulli", lambda lib: lib.bernoulli(lib.full((2,), 1.5))),
    ("bernoulli p", lambda lib: lib.bernoulli(lib.zeros(2), 1.5)),
    ("poisson", lambda lib: lib.poisson(lib.tensor([-1.0]))),
    ("multinomial n", lambda lib: lib.multinomial(lib.ones(3), 5)),
    ("multinomial neg", lambda lib: lib.multinomial(lib.tensor([-1.0, 2.0]), 1)),
    ("multinomial sum", lambda lib: lib.multinomial(lib.zeros(1, 2), 1)),
    ("multinomial dim", lambda lib: lib.multinomial(lib.ones(2, 2, 2), 1)),
    ("one_hot big", lambda lib: lib.nn.functional.one_hot(lib.tensor([3]), 2)),
    ("one_hot neg", lambda lib: lib.nn.functional.one_hot(lib.tensor([-1]))),
    ("one_hot float", lambda lib: lib.nn.functional.one_hot(lib.tensor([1.0]))),
]


@pytest.mark.parametrize("name,fn", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_match_torch(name, fn):
    with pytest.raises(Exception) as t_err:
        fn(torch)
    with pytest.raises(type(t_err.value)):
        fn(ember)
