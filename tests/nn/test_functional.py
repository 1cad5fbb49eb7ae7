"""nn.functional against torch.nn.functional, including second-order gradients of the fused ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
import ember.nn  # noqa: F401 - makes ember.nn available until ember/__init__ imports it
from tests.helpers import NonContig, assert_close, check, rand


def F(lib):
    return lib.nn.functional


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "softmin"])
def test_softmax_family(op, dim):
    check(lambda lib, x: getattr(F(lib), op)(x, dim=dim), rand(3, 4, 5))


def test_softmax_stable_and_dtype():
    x = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    check(lambda lib, x: F(lib).softmax(x, dim=1), x)
    check(lambda lib, x: F(lib).log_softmax(x, dim=1), x)
    check(lambda lib, x: F(lib).softmax(x, dim=-1, dtype=lib.float64), rand(2, 3))
    check(lambda lib, x: F(lib).log_softmax(x, 0), NonContig(rand(4, 3)))


def test_softmax_implicit_dim_warns():
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = F(ember).softmax(ember.ones(2, 3))
    assert y.shape == (2, 3) and float(y[0].sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    check(lambda lib, x: F(lib).gelu(x, approximate=approximate), rand(4, 6, low=-4, high=4))
    check(lambda lib, x: F(lib).gelu(x, approximate=approximate), rand(5, dtype=np.float64))


def _second_order(fn, x_np):
    """d/dx of sum(grad(fn(x)) * v) in both libraries."""
    out = []
    for lib in (ember, torch):
        x = lib.tensor(x_np, requires_grad=True)
        y = fn(lib, x)
        v = lib.tensor(np.linspace(-1, 1, y.numel()).reshape(tuple(y.shape)).astype(x_np.dtype))
        (g,) = lib.autograd.grad((y * v).sum(), x, create_graph=True)
        (gg,) = lib.autograd.grad((g * g).sum(), x)
        out.append((g, gg))
    assert_close(out[0][0], out[1][0], what="first order")
    assert_close(out[0][1], out[1][1], what="second order")


@pytest.mark.parametrize(
    "fn",
    [
        lambda lib, x: F(lib).softmax(x, -1),
        lambda lib, x: F(lib).log_softmax(x, 0),
        lambda lib, x: F(lib).gelu(x),
        lambda lib, x: F(lib).gelu(x, approximate="tanh"),
        lambda lib, x: F(lib).layer_norm(x, (4,)),
        lambda lib, x: F(lib).cross_entropy(x, lib.tensor([0, 3, 1])),
        lambda lib, x: F(lib).cross_entropy(x, lib.tensor([0, 3, 1]), reduction="none", label_smoothing=0.2),
        lambda lib, x: F(lib).nll_loss(F(lib).log_softmax(x, 1), lib.tensor([0, 3, 1]), reduction="sum"),
    ],
    ids=["softmax", "log_softmax", "gelu", "gelu_tanh", "layer_norm", "cross_entropy", "ce_smooth", "nll"],
)
def test_fused_double_backward(fn):
    _second_order(fn, rand(3, 4, dtype=np.float64))


def test_layer_norm_weight_bias_grads_and_double_backward():
    w, b = rand(2, 5, dtype=np.float64) + 1, rand(2, 5, dtype=np.float64, low=0)
    check(lambda lib, x, w, b: F(lib).layer_norm(x, (2, 5), w, b, eps=1e-3), rand(3, 2, 5, dtype=np.float64), w, b)
    for lib_out in [None]:
        del lib_out
    res = []
    for lib in (ember, torch):
        x = lib.tensor(rand(3, 5, dtype=np.float64), requires_grad=True)
        wt = lib.tensor(w[0], requires_grad=True)
        y = F(lib).layer_norm(x, (5,), wt, None)
        (gx,) = lib.autograd.grad((y * y * y).sum(), x, create_graph=True)
        gx.sum().backward()
        res.append((x.grad, wt.grad))
    assert_close(res[0][0], res[1][0])
    assert_close(res[0][1], res[1][1])


def test_in_place_edit_of_saved_output_is_detected():
    x = ember.randn(3, 4, requires_grad=True)
    y = F(ember).softmax(x, -1)
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace"):
        y.sum().backward()


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("relu", {}),
        ("relu6", {}),
        ("leaky_relu", {"negative_slope": 0.3}),
        ("elu", {"alpha": 0.7}),
        ("selu", {}),
        ("celu", {"alpha": 2.0}),
        ("silu", {}),
        ("mish", {}),
        ("softplus", {"beta": 2, "threshold": 3}),
        ("hardtanh", {"min_val": -0.5, "max_val": 1.5}),
        ("sigmoid", {}),
        ("tanh", {}),
        ("hardsigmoid", {}),
        ("hardswish", {}),
        ("logsigmoid", {}),
        ("softsign", {}),
        ("tanhshrink", {}),
        ("glu", {"dim": 0}),
    ],
)
def test_activations(name, kwargs):
    check(lambda lib, x: getattr(F(lib), name)(x, **kwargs), rand(4, 6, low=-5, high=5))


def test_linear_and_bilinear():
    check(lambda lib, x, w, b: F(lib).linear(x, w, b), rand(2, 3, 4), rand(5, 4), rand(5))
    check(lambda lib, x, w: F(lib).linear(x, w), rand(4), rand(5, 4))
    check(lambda lib, a, b, w: F(lib).bilinear(a, b, w), rand(3, 2), rand(3, 4), rand(5, 2, 4))
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        F(ember).linear(ember.ones(2, 3), ember.ones(4, 5))


def test_embedding_functional():
    idx = np.array([[0, 2], [2, 1]])
    check(lambda lib, w: F(lib).embedding(lib.tensor(idx), w, padding_idx=2), rand(4, 3))
    check(lambda lib, w: F(lib).embedding(lib.tensor(idx), w, scale_grad_by_freq=True), rand(4, 3))


def test_embedding_double_backward_through_weight():
    res = []
    for lib in (ember, torch):
        w = lib.tensor(rand(4, 3, dtype=np.float64), requires_grad=True)
        y = F(lib).embedding(lib.tensor([1, 1, 3]), w, padding_idx=3)
        (g,) = lib.autograd.grad((y * y).sum(), w, create_graph=True)
        g.pow(2).sum().backward()
        res.append(w.grad)
    assert_close(res[0], res[1])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pad,shape", [((1, 2), (2, 3, 5)), ((2, 1, 1, 0), (2, 3, 4, 5)), ((0, 1, 2, 2), (3, 4, 5))])
def test_pad_modes(mode, pad, shape):
    check(lambda lib, x: F(lib).pad(x, pad, mode=mode), rand(*shape))


def test_pad_constant_value_and_negative():
    check(lambda lib, x: F(lib).pad(x, (1, -1, -2, 3), value=2.5), rand(2, 4, 5))
    check(lambda lib, x: F(lib).pad(x, (-1, -1)), rand(3, 4))
    with pytest.raises(RuntimeError, match="divisible by 2"):
        F(ember).pad(ember.ones(2, 2), (1,))
    with pytest.raises(RuntimeError, match="Padding size should be less"):
        F(ember).pad(ember.ones(1, 2, 3), (3, 3), mode="reflect")


def test_one_hot():
    for nc in (-1, 6):
        e = F(ember).one_hot(ember.tensor([[0, 3], [2, 1]]), nc)
        t = torch.nn.functional.one_hot(torch.tensor([[0, 3], [2, 1]]), nc)
        assert_close(e, t)
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        F(ember).one_hot(ember.tensor([3]), 3)
    with pytest.raises(RuntimeError):
        F(ember).one_hot(ember.tensor([1.0]))


def test_normalize_cosine_pairwise():
    check(lambda lib, x: F(lib).normalize(x), rand(3, 4))
    check(lambda lib, x: F(lib).normalize(x, p=1.0, dim=0), rand(3, 4))
    check(lambda lib, a, b: F(lib).cosine_similarity(a, b), rand(3, 4), rand(3, 4) + 0.5)
    check(lambda lib, a, b: F(lib).cosine_similarity(a, b, dim=-1), rand(2, 3, 4), rand(3, 4))
    check(lambda lib, a, b: F(lib).pairwise_distance(a, b), rand(3, 4), rand(3, 4) + 0.5)


def test_group_norm_rms_norm_batch_norm_functional():
    check(lambda lib, x, w, b: F(lib).group_norm(x, 2, w, b), rand(2, 4, 3), rand(4), rand(4))
    check(lambda lib, x, w: F(lib).rms_norm(x, (4,), w), rand(3, 4), rand(4))
    check(lambda lib, x: F(lib).rms_norm(x, [4], eps=0.1), rand(3, 4))
    rm, rv = rand(3), rand(3, positive=True)
    check(
        lambda lib, x, w, b: F(lib).batch_norm(x, lib.tensor(rm), lib.tensor(rv), w, b, training=False),
        rand(4, 3, 2),
        rand(3),
        rand(3),
    )
    check(lambda lib, x: F(lib).instance_norm(x), rand(2, 3, 5))


def test_dropout_functional_eval_and_feature():
    x = ember.ones(3, 4)
    assert F(ember).dropout(x, 0.5, training=False) is x
    # As in PyTorch: a 2-D input to dropout2d is deprecated (a warning), not an error.
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        F(ember).dropout2d(ember.ones(2, 2), 0.5)
