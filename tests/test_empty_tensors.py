"""Empty tensors get PyTorch's result or PyTorch's error (issue 13, item 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import check


def _same_error(fn):
    errors = []
    for lib in (torch, ember):
        with pytest.raises(Exception) as info:
            fn(lib)
        errors.append(info.value)
    t, e = errors
    assert type(e) is type(t) and str(e) == str(t).replace("torch.", "ember."), f"{e} vs {t}"


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_empty_batch_forward_and_backward(groups):
    x = np.zeros((0, 4, 5, 5), np.float32)
    w = np.random.default_rng(0).standard_normal((6, 4 // groups, 3, 3)).astype(np.float32)
    check(lambda lib, x, w: lib.nn.functional.conv2d(x, w, groups=groups, padding=1), x, w)


def test_conv2d_zero_output_channels():
    _same_error(lambda lib: lib.nn.functional.conv2d(lib.ones(2, 3, 5, 5), lib.ones(0, 3, 3, 3)))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_over_an_empty_dim(fn):
    check(lambda lib, x: getattr(lib.nn.functional, fn)(x, -1), np.ones((3, 0), np.float32))
    check(lambda lib, x: getattr(lib.nn.functional, fn)(x, 0), np.ones((0, 4), np.float32))


@pytest.mark.parametrize("nq,nk", [(0, 3), (3, 0), (0, 0)])
def test_sdpa_without_queries_or_keys(nq, nk):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 2, nq, 4)).astype(np.float32)
    k = rng.standard_normal((2, 2, nk, 4)).astype(np.float32)
    v = rng.standard_normal((2, 2, nk, 5)).astype(np.float32)
    check(lambda lib, q, k, v: lib.nn.functional.scaled_dot_product_attention(q, k, v), q, k, v)


def test_lstm_with_sequence_length_zero():
    def run(lib):
        lib.manual_seed(0)
        return lib.nn.LSTM(3, 4)(lib.ones(0, 2, 3))

    _same_error(run)


def test_batch_norm_training_with_an_empty_batch():
    x = np.ones((0, 4, 3), np.float32)
    w, b = np.ones(4, np.float32) * 2, np.zeros(4, np.float32)

    def bn(lib, x, w, b):
        rm, rv = lib.zeros(4), lib.ones(4)
        out = lib.nn.functional.batch_norm(x, rm, rv, w, b, training=True)
        return out, rm, rv

    check(bn, x, w, b)
    assert ember.nn.BatchNorm2d(3)(ember.ones(0, 3, 2, 2)).shape == (0, 3, 2, 2)


def test_batch_norm_training_with_one_value_per_channel_still_raises():
    _same_error(lambda lib: lib.nn.functional.batch_norm(lib.ones(1, 4), None, None, training=True))


def test_group_norm_with_an_empty_batch():
    x = np.ones((0, 4, 3), np.float32)
    check(
        lambda lib, x, w, b: lib.nn.functional.group_norm(x, 2, w, b),
        x,
        np.ones(4, np.float32),
        np.zeros(4, np.float32),
    )
