"""Parameter sizes and dtypes are checked before any kernel runs (issue 13, items 2 and 6): the C
kernels' declared signatures refuse short, strided or mistyped buffers, and the layers raise
PyTorch's errors on both paths (C kernels and NumPy)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import ember
from ember.backends import ckernels
from ember.backends.ckernels import ops as ckops

PATHS = ["kernels", "numpy"]


@pytest.fixture(params=PATHS)
def path(request, kernel_state, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(ckernels, "compiler", lambda: None)
        ckernels.reset()
        ckops._fns.clear()
    elif os.environ.get("EMBER_CKERNELS") == "0":
        pytest.skip("C kernels disabled")
    return request.param


def _both(fn):
    """Run ``fn(lib)`` on torch and ember; return (torch error, ember error)."""
    errors = []
    for lib in (torch, ember):
        with pytest.raises(Exception) as info:
            fn(lib)
        errors.append(info.value)
    return errors


def _same_error(fn):
    t, e = _both(fn)
    assert type(e) is type(t), f"{type(e).__name__}: {e} (torch: {type(t).__name__}: {t})"
    assert str(e) == str(t)


@pytest.mark.parametrize("name", ["weight", "bias", "running_mean", "running_var"])
def test_batch_norm_wrong_parameter_size(path, name):
    def run(lib):
        x = lib.ones(4, 8, 3)
        args = {"running_mean": lib.zeros(8), "running_var": lib.ones(8), name: lib.ones(2)}
        return lib.nn.functional.batch_norm(x, args["running_mean"], args["running_var"],
                                            weight=args.get("weight"), bias=args.get("bias"), training=True)  # fmt: skip

    _same_error(run)


def test_batch_norm_wrong_weight_without_running_stats(path):
    _same_error(lambda lib: lib.nn.functional.batch_norm(lib.ones(4, 8), None, None, lib.ones(2), lib.zeros(2), True))


def test_lstm_wrong_bias_size(path):
    def run(lib):
        lib.manual_seed(0)
        lstm = lib.nn.LSTM(3, 4)
        lstm.bias_hh_l0 = lib.nn.Parameter(lib.zeros(5))
        return lstm(lib.ones(2, 1, 3))

    _same_error(run)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lib: lib.nn.functional.layer_norm(lib.ones(2, 3), (3,), lib.ones(3, dtype=lib.float64)),
        lambda lib: lib.nn.functional.layer_norm(lib.ones(2, 3, dtype=lib.float64), (3,), lib.ones(3)),
        lambda lib: lib.nn.functional.batch_norm(
            lib.ones(4, 8), None, None, lib.ones(8, dtype=lib.float64), None, True
        ),
        lambda lib: lib.nn.functional.batch_norm(
            lib.ones(4, 8), lib.zeros(8, dtype=lib.float64), lib.ones(8, dtype=lib.float64)
        ),
        lambda lib: lib.nn.functional.group_norm(lib.ones(2, 4, 3), 2, lib.ones(4, dtype=lib.float64)),
        lambda lib: lib.nn.functional.group_norm(lib.ones(2, 4, 3), 2, lib.ones(3)),
    ],
    ids=["ln-f64-weight", "ln-f64-input", "bn-f64-weight", "bn-f64-running", "gn-f64-weight", "gn-weight-size"],
)
def test_mixed_dtypes_and_sizes_raise_as_torch(path, fn):
    _same_error(fn)


def test_lstm_float64_h0_raises(path):
    lstm = ember.nn.LSTM(3, 4)
    h0 = ember.zeros(1, 1, 4, dtype=ember.float64)
    with pytest.raises(RuntimeError, match="same dtype, but got Double and Float"):
        lstm(ember.ones(2, 1, 3), (h0, ember.zeros(1, 1, 4)))
    with pytest.raises(RuntimeError, match="same dtype"):
        lstm(ember.ones(2, 1, 3), (ember.zeros(1, 1, 4), h0))


# ---------------------------------------------------------------- the kernel boundary itself
@pytest.fixture
def kernel():
    if os.environ.get("EMBER_CKERNELS") == "0" or ckernels.get() is None:
        pytest.skip("C kernels disabled")
    return lambda name, dtype=np.float32: ckops._fn(name, np.zeros(1, dtype))


def test_kernel_refuses_a_short_buffer(kernel):
    fn = kernel("batch_norm_fwd")
    x = np.ones((4, 8, 3), np.float32)
    y, stats = np.empty_like(x), [np.empty(8, np.float32) for _ in range(3)]
    with pytest.raises(RuntimeError, match="^weight should contain 8 elements not 2$"):
        fn(x, np.ones(2, np.float32), None, y, *stats, 4, 8, 3, 1e-5, np.empty(16), 1)
    with pytest.raises(RuntimeError, match="scratch should contain 16 elements not 4"):
        fn(x, None, None, y, *stats, 4, 8, 3, 1e-5, np.empty(4), 1)


def test_kernel_refuses_wrong_dtype_layout_and_readonly(kernel):
    fn = kernel("softmax_fwd")
    x = np.ones((3, 4), np.float32)
    with pytest.raises(RuntimeError, match="expected x to have dtype float32, but got float64"):
        fn(x.astype(np.float64), np.empty_like(x), 3, 4, 0, 1)
    with pytest.raises(RuntimeError, match="x must be contiguous"):
        fn(np.ones((4, 3), np.float32).T, np.empty_like(x), 3, 4, 0, 1)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(RuntimeError, match="y is read-only"):
        fn(x, ro, 3, 4, 0, 1)
    with pytest.raises(TypeError, match="must be a NumPy array"):
        fn([1.0] * 12, np.empty_like(x), 3, 4, 0, 1)
    with pytest.raises(RuntimeError, match="y must not be None"):
        fn(x, None, 3, 4, 0, 1)


def test_kernel_checks_offsets_and_scalar_conditions(kernel):
    fn = kernel("lstm_fwd_step")
    b, h = 2, 3
    act, out, tc = np.empty((b, 4 * h), np.float32), np.empty((b, 2 * h), np.float32), np.empty((b, h), np.float32)
    gates = np.zeros((b, 4 * h), np.float32)
    state = np.zeros((b, 2 * h), np.float32)
    fn(gates, None, gates, (state, h), 2 * h, act, out, tc, b, h)  # fits
    with pytest.raises(RuntimeError, match="c should contain at least 9 elements from offset 4"):
        fn(gates, None, gates, (state, h + 1), 2 * h, act, out, tc, b, h)
    with pytest.raises(RuntimeError, match="expected c_stride >= H"):
        fn(gates, None, gates, (state, h), 1, act, out, tc, b, h)


def test_every_kernel_symbol_is_declared():
    src = ckernels.source()
    for name in ckernels.SIGNATURES:
        assert f"K({name})(" in src
