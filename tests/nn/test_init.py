"""nn.init distributions (bounds and moments on large tensors), default layer init, clip_grad."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ember
import ember.nn  # noqa: F401 - makes ember.nn available until ember/__init__ imports it
from ember.nn import init
from tests.helpers import assert_close


def _vals(t) -> np.ndarray:
    return t.detach().numpy().astype(np.float64).ravel()


def test_calculate_gain_matches_torch():
    for name, param in [
        ("linear", None),
        ("conv2d", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("selu", None),
    ]:
        assert init.calculate_gain(name, param) == torch.nn.init.calculate_gain(name, param)
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


@pytest.mark.parametrize("shape", [(400, 300), (64, 32, 3, 3)])
def test_uniform_family_bounds_match_torch(shape):
    fan_in = shape[1] * int(np.prod(shape[2:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    cases = [
        (lambda w: init.uniform_(w, -0.3, 0.7), (-0.3, 0.7)),
        (lambda w: init.xavier_uniform_(w, gain=2.0), (-2.0 * math.sqrt(6 / (fan_in + fan_out)),) * 1),
        (lambda w: init.kaiming_uniform_(w, a=math.sqrt(5)), (-1 / math.sqrt(fan_in),)),
        (lambda w: init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"), (-math.sqrt(6 / fan_out),)),
    ]
    for fill, bounds in cases:
        lo, hi = (bounds[0], -bounds[0]) if len(bounds) == 1 else bounds
        v = _vals(fill(ember.empty(*shape)))
        assert v.min() >= lo and v.max() <= hi
        # A uniform sample of this size reaches within 1% of both ends and has the uniform's std.
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo)
        assert abs(v.std() - (hi - lo) / math.sqrt(12)) < 0.02 * (hi - lo)


@pytest.mark.parametrize("shape", [(400, 300), (64, 32, 3, 3)])
def test_normal_family_std(shape):
    fan_in = shape[1] * int(np.prod(shape[2:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    cases = [
        (lambda w: init.normal_(w, 0.5, 2.0), 0.5, 2.0),
        (lambda w: init.xavier_normal_(w), 0.0, math.sqrt(2 / (fan_in + fan_out))),
        (lambda w: init.kaiming_normal_(w, nonlinearity="relu"), 0.0, math.sqrt(2 / fan_in)),
        (lambda w: init.kaiming_normal_(w, mode="fan_out", a=0.1), 0.0, math.sqrt(2 / 1.01 / fan_out)),
    ]
    for fill, mean, std in cases:
        v = _vals(fill(ember.empty(*shape)))
        assert abs(v.mean() - mean) < 0.02 * std + 1e-9
        assert abs(v.std() / std - 1) < 0.02


def test_trunc_normal_bounds_and_moments():
    for a, b, std in [(-2.0, 2.0, 1.0), (-0.1, 0.3, 1.0)]:
        v = _vals(init.trunc_normal_(ember.empty(200, 200), 0.0, std, a, b))
        ref = _vals(torch.nn.init.trunc_normal_(torch.empty(200, 200), 0.0, std, a, b))
        assert v.min() >= a and v.max() <= b
        assert abs(v.mean() - ref.mean()) < 0.02 * (b - a)
        assert abs(v.std() - ref.std()) < 0.02 * (b - a)


def test_constant_ones_zeros_eye_dirac():
    w = ember.empty(3, 4)
    assert _vals(init.constant_(w, 0.25)).tolist() == [0.25] * 12
    assert _vals(init.ones_(w)).tolist() == [1.0] * 12
    assert _vals(init.zeros_(w)).tolist() == [0.0] * 12
    assert_close(init.eye_(w), torch.nn.init.eye_(torch.empty(3, 4)))
    assert_close(
        init.dirac_(ember.empty(4, 2, 3, 3), groups=2), torch.nn.init.dirac_(torch.empty(4, 2, 3, 3), groups=2)
    )


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 2, 3)])
def test_orthogonal(shape):
    w = init.orthogonal_(ember.empty(*shape), gain=2.0)
    m = w.detach().numpy().reshape(shape[0], -1).astype(np.float64)
    if m.shape[0] <= m.shape[1]:
        np.testing.assert_allclose(m @ m.T, 4 * np.eye(m.shape[0]), atol=1e-5)
    else:
        np.testing.assert_allclose(m.T @ m, 4 * np.eye(m.shape[1]), atol=1e-5)


def test_init_on_parameter_without_no_grad_and_seeded():
    p = ember.nn.Parameter(ember.empty(3, 3))
    init.kaiming_uniform_(p)  # works on a leaf that requires grad, as torch's
    assert p.requires_grad and p.is_leaf
    ember.manual_seed(5)
    a = _vals(init.normal_(ember.empty(5)))
    ember.manual_seed(5)
    b = _vals(init.normal_(ember.empty(5)))
    assert a.tolist() == b.tolist()
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(ember.empty(5))


def test_default_layer_init_distributions():
    lin = ember.nn.Linear(200, 300)
    bound = 1 / math.sqrt(200)
    for p in (lin.weight, lin.bias):
        v = _vals(p)
        assert v.min() >= -bound and v.max() <= bound and v.max() > 0.9 * bound
    emb = ember.nn.Embedding(1000, 50)
    assert abs(_vals(emb.weight).std() - 1) < 0.02


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2, 2, 2)]]
    res = []
    for lib in (ember, torch):
        ps = [lib.nn.Parameter(lib.zeros(*g.shape)) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = lib.tensor(g)
        total = lib.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
        res.append((total, [p.grad for p in ps]))
    assert_close(res[0][0], res[1][0])
    for e, t in zip(res[0][1], res[1][1]):
        assert_close(e, t)


def test_clip_grad_value_and_nonfinite():
    res = []
    for lib in (ember, torch):
        p = lib.nn.Parameter(lib.zeros(4))
        p.grad = lib.tensor([-3.0, 0.5, 2.0, -0.1])
        lib.nn.utils.clip_grad_value_([p], 1.0)
        res.append(p.grad)
    assert_close(res[0], res[1])
    p = ember.nn.Parameter(ember.zeros(2))
    p.grad = ember.tensor([float("inf"), 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        ember.nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def test_parameters_to_vector_round_trip():
    m = ember.nn.Linear(3, 2)
    v = ember.nn.utils.parameters_to_vector(m.parameters())
    assert v.shape == (8,)
    ember.nn.utils.vector_to_parameters(v * 0 + 1, m.parameters())
    assert _vals(m.weight).tolist() == [1.0] * 6
