"""Loss functions and modules against torch: values and input gradients for every option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
import ember.nn  # noqa: F401 - makes ember.nn available until ember/__init__ imports it
from tests.helpers import check, rand

TARGETS_2D = np.array([0, 3, 1, 3, 2])
TARGETS_ND = np.array([[[0, 2], [1, 1], [2, 0]], [[1, -100], [0, 2], [2, 2]]])  # (N=2, d1=3, d2=2)
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0], dtype=np.float32)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [-100, 3])
def test_cross_entropy_class_indices(reduction, ls, weighted, ignore):
    w = WEIGHT if weighted else None

    def fn(lib, x):
        wt = lib.tensor(w) if w is not None else None
        return lib.nn.functional.cross_entropy(
            x, lib.tensor(TARGETS_2D), weight=wt, ignore_index=ignore, reduction=reduction, label_smoothing=ls
        )

    check(fn, rand(5, 4))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cross_entropy_extra_dims(reduction, ls):
    def fn(lib, x):
        return lib.nn.CrossEntropyLoss(weight=lib.tensor(WEIGHT[:3]), reduction=reduction, label_smoothing=ls)(
            x, lib.tensor(TARGETS_ND)
        )

    check(fn, rand(2, 3, 3, 2))


def test_cross_entropy_unbatched_and_float64():
    check(lambda lib, x: lib.nn.functional.cross_entropy(x, lib.tensor(2)), rand(4))
    check(lambda lib, x: lib.nn.functional.cross_entropy(x, lib.tensor(TARGETS_2D)), rand(5, 4, dtype=np.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ls", [0.0, 0.3])
def test_cross_entropy_probability_targets(reduction, ls):
    p = np.random.default_rng(0).dirichlet(np.ones(4), size=5).astype(np.float32)

    def fn(lib, x, t):
        return lib.nn.functional.cross_entropy(x, t, weight=lib.tensor(WEIGHT), reduction=reduction, label_smoothing=ls)

    check(fn, rand(5, 4), p)


def test_cross_entropy_all_ignored_is_nan_like_torch():
    def fn(lib, x):
        return lib.nn.functional.cross_entropy(x, lib.tensor([-100, -100]))

    check(fn, rand(2, 3), grad=False)


def test_cross_entropy_errors():
    F = ember.nn.functional
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(ember.zeros(2, 3), ember.tensor([0, 3]))
    with pytest.raises(ValueError, match="batch_size"):
        F.cross_entropy(ember.zeros(2, 3), ember.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.cross_entropy(ember.zeros(2, 3), ember.tensor([0, 1]), reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss(reduction):
    def fn(lib, x):
        return lib.nn.NLLLoss(weight=lib.tensor(WEIGHT), ignore_index=1, reduction=reduction)(x, lib.tensor(TARGETS_2D))

    check(fn, rand(5, 4))
    check(lambda lib, x: lib.nn.functional.nll_loss(x, lib.tensor(TARGETS_ND)), rand(2, 3, 3, 2))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss"])
def test_regression_losses(name, reduction):
    check(lambda lib, x, y: getattr(lib.nn, name)(reduction=reduction)(x, y), rand(3, 4), rand(3, 4) * 0.7)


def test_smooth_l1_huber_params_and_broadcast_warning():
    check(lambda lib, x, y: lib.nn.functional.smooth_l1_loss(x, y, beta=0.5), rand(3, 4), rand(3, 4))
    check(lambda lib, x, y: lib.nn.functional.huber_loss(x, y, delta=0.3), rand(3, 4), rand(3, 4))
    with pytest.warns(UserWarning, match="target size"):
        ember.nn.functional.mse_loss(ember.zeros(3, 1), ember.zeros(3))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
def test_kl_div(reduction):
    p = np.random.default_rng(1).dirichlet(np.ones(4), size=3).astype(np.float32)
    check(lambda lib, x, t: lib.nn.functional.kl_div(x, t, reduction=reduction), rand(3, 4, high=0.0), p)
    check(lambda lib, x, t: lib.nn.KLDivLoss(reduction="sum", log_target=True)(x, t), rand(3, 4), rand(3, 4))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce(reduction, weighted):
    probs = np.random.default_rng(2).uniform(0.02, 0.98, size=(4, 3)).astype(np.float32)
    target = (np.arange(12).reshape(4, 3) % 2).astype(np.float32)

    def fn(lib, x, t):
        w = lib.tensor(rand(4, 3, positive=True)) if weighted else None
        return lib.nn.BCELoss(weight=w, reduction=reduction)(x, t)

    check(fn, probs, target)


def test_bce_clamps_log_at_minus_100():
    x = np.array([0.0, 1.0, 0.5], dtype=np.float32)
    t = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    check(lambda lib, x, t: lib.nn.functional.binary_cross_entropy(x, t, reduction="none"), x, t, grad=False)
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        ember.nn.functional.binary_cross_entropy(ember.tensor([1.5]), ember.tensor([1.0]))
    with pytest.raises(ValueError, match="target size"):
        ember.nn.functional.binary_cross_entropy(ember.tensor([0.5]), ember.tensor([[1.0]]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pos_weight", [False, True])
def test_bce_with_logits(reduction, pos_weight):
    target = np.random.default_rng(3).uniform(0, 1, size=(4, 3)).astype(np.float32)

    def fn(lib, x, t):
        pw = lib.tensor(np.array([1.0, 2.0, 0.5], dtype=np.float32)) if pos_weight else None
        w = lib.tensor(rand(3, positive=True))
        return lib.nn.BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)(x, t)

    check(fn, rand(4, 3, low=-30, high=30), target)


def test_bce_with_logits_extreme_logits_are_finite():
    x = np.array([-200.0, 200.0, 0.0], dtype=np.float32)
    t = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    check(lambda lib, x, t: lib.nn.functional.binary_cross_entropy_with_logits(x, t), x, t)


def test_loss_modules_repr_and_weight_buffer():
    for name in ["CrossEntropyLoss", "NLLLoss", "BCELoss", "MSELoss", "BCEWithLogitsLoss", "L1Loss"]:
        assert repr(getattr(ember.nn, name)()) == repr(getattr(torch.nn, name)())
    e = ember.nn.CrossEntropyLoss(weight=ember.tensor(WEIGHT))
    t = torch.nn.CrossEntropyLoss(weight=torch.tensor(WEIGHT))
    assert list(e.state_dict()) == list(t.state_dict()) == ["weight"]
    e2 = ember.nn.BCEWithLogitsLoss(pos_weight=ember.ones(3))
    assert list(e2.state_dict()) == ["pos_weight"]


def test_legacy_size_average_reduce():
    with pytest.warns(UserWarning):
        m = ember.nn.MSELoss(size_average=False)
    assert m.reduction == "sum"
