"""conv_transpose1d/2d and ConvTranspose1d/2d against PyTorch: values, gradients, modules, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
from tests.helpers import assert_close, check, rand

CASES_2D = [
    ((2, 4, 5, 6), (4, 3, 3, 3), {}),
    ((2, 4, 5, 6), (4, 3, 3, 2), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((2, 4, 5, 5), (4, 2, 3, 3), {"stride": (2, 3), "padding": (0, 2), "output_padding": (1, 2), "groups": 2}),
    ((1, 4, 4, 4), (4, 2, 3, 3), {"stride": 1, "dilation": 2, "output_padding": 1}),
    ((4, 5, 5), (4, 3, 4, 4), {"stride": 2, "padding": 1}),
    ((2, 6, 3, 4), (6, 1, 2, 2), {"stride": 2, "groups": 6, "dilation": (1, 2)}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, ws, kw", CASES_2D)
def test_conv_transpose2d_matches_torch(xs, ws, kw, dtype):
    groups = kw.get("groups", 1)
    b = rand(ws[1] * groups, dtype=dtype)
    check(
        lambda lib, x, w, b: lib.nn.functional.conv_transpose2d(x, w, b, **kw),
        rand(*xs, dtype=dtype),
        rand(*ws, dtype=dtype),
        b,
    )


@pytest.mark.parametrize(
    "xs, ws, kw",
    [
        ((2, 4, 7), (4, 3, 3), {}),
        ((2, 4, 7), (4, 2, 3), {"stride": 3, "padding": 1, "output_padding": 2, "groups": 2}),
        ((4, 7), (4, 2, 2), {"stride": 2, "dilation": 3}),
    ],
)
def test_conv_transpose1d_matches_torch(xs, ws, kw):
    check(lambda lib, x, w: lib.nn.functional.conv_transpose1d(x, w, **kw), rand(*xs), rand(*ws))


def test_conv_transpose2d_double_backward():
    x, w = rand(1, 2, 3, 3), rand(2, 3, 2, 2)

    def fn(lib, x, w):
        y = lib.nn.functional.conv_transpose2d(x, w, stride=2)
        (gx,) = lib.autograd.grad((y * y).sum(), x, create_graph=True)
        return gx

    check(fn, x, w)


def _copy(em, tm):
    em.load_state_dict({k: ember.tensor(v.detach().numpy()) for k, v in tm.state_dict().items()})


@pytest.mark.parametrize(
    "cls, args, kw, xs",
    [
        ("ConvTranspose2d", (4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}, (2, 4, 5, 5)),
        ("ConvTranspose2d", (4, 6, (2, 3)), {"bias": False, "dilation": 2}, (2, 4, 5, 5)),
        ("ConvTranspose1d", (4, 6, 3), {"stride": 2}, (2, 4, 5)),
    ],
)
def test_modules_match_torch(cls, args, kw, xs):
    tm = getattr(torch.nn, cls)(*args, **kw)
    em = getattr(ember.nn, cls)(*args, **kw)
    assert repr(em) == repr(tm)
    assert {k: tuple(v.shape) for k, v in em.state_dict().items()} == {
        k: tuple(v.shape) for k, v in tm.state_dict().items()
    }
    _copy(em, tm)
    x = rand(*xs)
    assert_close(em(ember.tensor(x)), tm(torch.tensor(x)))


def test_init_bounds_match_torch():
    em = ember.nn.ConvTranspose2d(8, 4, 3)
    # fan_in = (C_out / groups) * kh * kw = 36; kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    bound = 1 / np.sqrt(36)
    assert np.abs(em.weight.detach().numpy()).max() <= bound
    assert np.abs(em.bias.detach().numpy()).max() <= bound
    assert em.weight.detach().numpy().std() > bound / 3


def test_output_size():
    tm = torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)
    em = ember.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1)
    _copy(em, tm)
    x = rand(1, 4, 5, 5)
    for size in ([10, 10], [9, 10], [1, 2, 10, 9]):
        assert_close(em(ember.tensor(x), output_size=size), tm(torch.tensor(x), output_size=size))
    with pytest.raises(ValueError, match="valid sizes range from"):
        em(ember.tensor(x), output_size=[20, 20])
    with pytest.raises(ValueError):
        tm(torch.tensor(x), output_size=[20, 20])


@pytest.mark.parametrize(
    "xs, ws, kw, match",
    [
        ((1, 4, 5, 5), (4, 2, 3, 3), {"output_padding": 2}, "output padding must be smaller"),
        ((1, 4, 5, 5), (4, 2, 3, 3), {"padding": 5}, "Output size is too small"),
        ((1, 4, 5, 5), (4, 2, 3, 3), {"groups": 3}, "divisible by 3"),
        ((1, 3, 5, 5), (4, 2, 3, 3), {}, "channels"),
        ((1, 4, 5), (4, 2, 3, 3), {}, "input"),
    ],
)
def test_errors_match_torch_types(xs, ws, kw, match):
    with pytest.raises(RuntimeError):
        torch.nn.functional.conv_transpose2d(torch.zeros(xs), torch.zeros(ws), **kw)
    with pytest.raises(RuntimeError, match=match):
        ember.nn.functional.conv_transpose2d(ember.zeros(xs), ember.zeros(ws), **kw)


def test_dtype_mismatch_and_padding_mode():
    with pytest.raises(RuntimeError, match="conv_transpose2d"):
        ember.nn.functional.conv_transpose2d(ember.zeros(1, 4, 3, 3), ember.zeros(4, 2, 3, 3, dtype=ember.float64))
    with pytest.raises(ValueError, match="zeros"):
        ember.nn.ConvTranspose2d(4, 2, 3, padding_mode="reflect")


@pytest.mark.parametrize("xs, ws, kw", CASES_2D[:4])
def test_conv_transpose2d_numpy_paths(xs, ws, kw, no_kernels):
    check(lambda lib, x, w: lib.nn.functional.conv_transpose2d(x, w, **kw), rand(*xs), rand(*ws))
