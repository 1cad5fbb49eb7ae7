"""The runtime-compiled C kernels (ember/backends/ckernels): agreement with PyTorch and with the
NumPy path (extreme magnitudes, -inf / +inf / NaN), the NumPy fallback without a compiler, the
on-disk cache (reuse, corrupt library, failed compile)."""

from __future__ import annotations

import ctypes
import os
import subprocess

import numpy as np
import pytest
import torch

import ember
from ember.backends import ckernels
from ember.backends.ckernels import ops
from tests.helpers import assert_close, check, rand

# These test the kernels themselves; EMBER_CKERNELS=0 (the NumPy paths, which the rest of the
# suite covers) turns them off.
pytestmark = pytest.mark.skipif(os.environ.get("EMBER_CKERNELS") == "0", reason="C kernels disabled")

F32_64 = [np.float32, np.float64]


def _data(n_rows, n_cols, dtype, scale, seed=0):
    return (np.random.default_rng(seed).standard_normal((n_rows, n_cols)) * scale).astype(dtype)


def test_library_builds_here():
    # The test machine has a C compiler, so the kernels must load (a silent fallback would hide bugs).
    assert ckernels.compiler() is not None
    assert ckernels.get() is not None
    assert ops.softmax(np.zeros((2, 3), np.float32), log=False) is not None


@pytest.mark.parametrize("dtype", F32_64)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 40.0])
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_matches_torch(fn, scale, dtype):
    x = _data(37, 130, dtype, scale)  # 130: a tail after the 16-lane blocks
    check(lambda lib, x: getattr(lib.nn.functional, fn)(x, dim=-1), x)
    check(lambda lib, x: getattr(lib.nn.functional, fn)(x.reshape(37, 2, 65), dim=-1), x)


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_special_values(fn):
    x = _data(6, 20, np.float32, 1.0)
    x[0, :5] = -np.inf  # masked entries (attention masks)
    x[1, :] = -np.inf  # a fully masked row: NaN, as torch
    x[2, 3] = np.nan  # NaN spreads over its row
    x[3, 4] = np.inf
    x[4, :] = 1e30
    x[5, 7] = -1e30
    check(lambda lib, x: getattr(lib.nn.functional, fn)(x, dim=-1), x, grad=False)
    y = getattr(ember.nn.functional, fn)(ember.tensor(x), dim=-1).numpy()
    assert np.isnan(y[2]).all() and not np.isnan(y[0]).any()


def test_softmax_noncontiguous_and_other_dims():
    x = _data(12, 10, np.float32, 3.0)
    check(lambda lib, x: lib.nn.functional.softmax(x.t(), dim=-1), x)  # made contiguous for C
    check(lambda lib, x: lib.nn.functional.log_softmax(x, dim=0), x)  # NumPy path
    check(lambda lib, x: lib.nn.functional.softmax(x[:, ::2], dim=1), x)


@pytest.mark.parametrize("dtype", F32_64)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layer_norm_matches_torch(affine, dtype):
    x = _data(33, 70, dtype, 5.0) + 3
    w, b = rand(70, dtype=dtype), rand(70, dtype=dtype)

    def fn(lib, x, w, b):
        return lib.nn.functional.layer_norm(
            x, (70,), w if affine in ("both", "weight") else None, b if affine in ("both", "bias") else None
        )

    check(fn, x, w, b)


def test_layer_norm_multi_dim_and_extremes():
    x = _data(4, 60, np.float32, 1e4).reshape(4, 3, 4, 5)
    w, b = rand(4, 5), rand(4, 5)
    check(lambda lib, x, w, b: lib.nn.functional.layer_norm(x, (4, 5), w, b), x, w, b)
    small = _data(5, 16, np.float32, 1e-4)
    check(lambda lib, x: lib.nn.functional.layer_norm(x, (16,), eps=1e-12), small, rtol=1e-3, atol=1e-4)
    nan = _data(3, 16, np.float32, 1.0)
    nan[1, 2] = np.nan
    check(lambda lib, x: lib.nn.functional.layer_norm(x, (16,)), nan, grad=False)


@pytest.mark.parametrize("dtype", F32_64)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(approximate, dtype):
    x = _data(50, 41, dtype, 4.0).ravel()
    x[:6] = [0.0, -0.0, 1e-30, -12.0, 9.0, 1e4]
    check(lambda lib, x: lib.nn.functional.gelu(x, approximate=approximate), x)
    # Special values against the mathematical result, not the local PyTorch build (with AVX-512,
    # PyTorch's float32 kernel returns nan for gelu(+inf)). -inf gives nan: x * Phi(x) = -inf * 0,
    # as PyTorch's reference formula evaluates it.
    special = np.array([np.nan, np.inf, -np.inf, 1e38, -1e38], dtype)
    out = ember.nn.functional.gelu(ember.tensor(special), approximate=approximate).numpy()
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([np.nan, np.inf, np.nan, 1e38, 0.0], dtype))


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 7), (3, 16, 5, 6), (2, 4, 3, 3, 2)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", F32_64)
def test_batch_norm_matches_torch(shape, affine, dtype):
    c = shape[1]
    x = (np.random.default_rng(1).standard_normal(shape) * 3 + 5).astype(dtype)  # mean far from 0
    params = [rand(c, dtype=dtype), rand(c, dtype=dtype)] if affine else []

    def bn(lib, x, *wb):
        rm, rv = lib.zeros(c, dtype=x.dtype), lib.ones(c, dtype=x.dtype)
        out = lib.nn.functional.batch_norm(x, rm, rv, *wb, training=True, momentum=0.3)
        return out, rm, rv

    check(bn, x, *params)


def test_batch_norm_saves_no_normalized_copy():
    x = ember.tensor(_data(8, 6, np.float32, 1.0), requires_grad=True)
    out = ember.nn.functional.batch_norm(x, None, None, training=True)
    node = out.grad_fn
    assert node.xhat is None and node.xc is x._data  # the input itself, not a copy


def test_kernels_agree_with_numpy_path(kernel_state, monkeypatch):
    x = _data(64, 96, np.float32, 6.0)
    w, b = rand(96), rand(96)
    F = ember.nn.functional
    cases = [
        lambda x, w, b: F.softmax(x, -1),
        lambda x, w, b: F.log_softmax(x, -1),
        lambda x, w, b: F.layer_norm(x, (96,), w, b),
        lambda x, w, b: F.gelu(x),
        lambda x, w, b: F.gelu(x, approximate="tanh"),
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        lambda x, w, b: F.batch_norm(x.reshape(4, 16, 6, 16).permute(0, 3, 1, 2), None, None, w[:16], None, True),
    ]

    def run(fn):
        ts = [ember.tensor(a, requires_grad=True) for a in (x, w, b)]
        out = fn(*ts)
        out.backward(ember.tensor(np.cos(np.arange(out.numel(), dtype=np.float32)).reshape(out.shape)))
        return [out] + [t.grad for t in ts if t.grad is not None]

    with_c = [run(fn) for fn in cases]
    monkeypatch.setattr(ckernels, "compiler", lambda: None)
    ckernels.reset()
    ops._fns.clear()
    assert ckernels.get() is None
    for fn, c_results in zip(cases, with_c):
        for c, n in zip(c_results, run(fn), strict=True):
            np.testing.assert_allclose(c.detach().numpy(), n.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_fallback_without_compiler(no_kernels):
    assert ckernels.get() is None and ops.gelu(np.ones(3, np.float32), "none") is None
    x, w, b = _data(9, 24, np.float32, 2.0), rand(24), rand(24)
    check(lambda lib, x: lib.nn.functional.softmax(x, dim=-1), x)
    check(lambda lib, x: lib.nn.functional.log_softmax(x, dim=-1), x)
    check(lambda lib, x, w, b: lib.nn.functional.layer_norm(x, (24,), w, b), x, w, b)
    check(lambda lib, x: lib.nn.functional.gelu(x), x)


def test_create_graph_double_backward():
    x, w, b = _data(5, 18, np.float64, 1.5), rand(18, dtype=np.float64), rand(18, dtype=np.float64)

    def gradgrad(lib, x, w, b):
        F = lib.nn.functional
        out = F.layer_norm(x, (18,), w, b).sin() + F.softmax(x, -1) * F.gelu(x) + F.log_softmax(x, -1).cos()
        (gx,) = lib.autograd.grad(out.sum(), x, create_graph=True)
        return (gx * gx).sum()

    check(gradgrad, x, w, b)


def test_mixed_dtypes_and_inplace_checks():
    # float32 input with a float64 weight: PyTorch's error, before any kernel is chosen.
    x = ember.tensor(_data(4, 8, np.float32, 1.0), requires_grad=True)
    w = ember.tensor(rand(8, dtype=np.float64), requires_grad=True)
    with pytest.raises(RuntimeError, match="mixed dtype"):
        ember.nn.functional.layer_norm(x, (8,), w)
    # the saved softmax output is still guarded against in-place edits
    y = ember.nn.functional.softmax(ember.tensor(_data(3, 5, np.float32, 1.0), requires_grad=True), -1)
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_openmp_threads_give_same_result(kernel_state, monkeypatch):
    from ember._threads import _state as threads

    monkeypatch.setattr(ops, "ROW_PARALLEL_MIN", ops.PARALLEL_MIN)  # the row kernels go parallel too

    old = threads["n"]
    x = _data(1100, 128, np.float32, 3.0)  # above ops.PARALLEL_MIN elements
    g = _data(1100, 128, np.float32, 1.0, seed=1)
    w = rand(128)
    try:
        ember.set_num_threads(1)
        one = [ops.softmax(x, False), ops.gelu(x, "none"), ops.layer_norm(x, w, w, 1, 1e-5)[0]]
        ln = ops.layer_norm(x, w, w, 1, 1e-5)
        one_b = ops.layer_norm_backward(ln[1], w, g, ln[2], ln[3], (128,), True, True, True)
        x4 = x.reshape(11, 100, 128)  # batch norm: 100 channels of 11 x 128 values
        bn1 = ops.batch_norm(x4, None, None, 1e-5)
        bn1_b = ops.batch_norm_backward(x4, None, g.reshape(x4.shape), bn1[2], bn1[4], True, True, True)
        ember.set_num_threads(2)
        assert ckernels.uses_openmp() is False or ops._threads(x.size) == 2
        two = [ops.softmax(x, False), ops.gelu(x, "none"), ops.layer_norm(x, w, w, 1, 1e-5)[0]]
        two_b = ops.layer_norm_backward(ln[1], w, g, ln[2], ln[3], (128,), True, True, True)
        bn2 = ops.batch_norm(x4, None, None, 1e-5)
        bn2_b = ops.batch_norm_backward(x4, None, g.reshape(x4.shape), bn2[2], bn2[4], True, True, True)
    finally:
        threads["n"] = old
    for a, b in zip([*one, *bn1, *bn1_b], [*two, *bn2, *bn2_b]):
        np.testing.assert_array_equal(a, b)  # rows (channels) are independent: bitwise equal
    for a, b in zip(one_b, two_b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)  # gw/gb: partial sums regrouped
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.layer_norm(tx, (128,), tw, tw.detach())
    ref = torch.autograd.grad(ty, (tx, tw), torch.tensor(g))
    for a, r in zip(two_b, ref):
        assert_close(ember.tensor(a), r, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- loader and cache
TINY = "int ember_twice(int x) { return 2 * x; }\n"
TINY_SIG = {"ember_twice": [ctypes.c_int]}


def _tiny(tmp_path, monkeypatch, src=TINY):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    return ckernels.load(src, "tiny", TINY_SIG, flag_sets=(["-O1", "-fPIC", "-shared"],))


def test_cache_is_reused(tmp_path, monkeypatch):
    lib = _tiny(tmp_path, monkeypatch)
    lib.ember_twice.restype = ctypes.c_int
    assert lib.ember_twice(21) == 42
    (so,) = tmp_path.glob("tiny-*.so")
    mtime = so.stat().st_mtime_ns

    def no_compiler(*args, **kwargs):
        raise AssertionError("compiled again instead of using the cache")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert _tiny(tmp_path, monkeypatch) is not None
    assert so.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [so.name]  # no temporary files left behind


def _corrupt(path, data: bytes) -> None:
    """Replace ``path`` by a new file (never rewrite a library in place: it may be mapped)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    flags = (["-O1", "-fPIC", "-shared"],)
    src = TINY + "/* corrupt test */\n"
    path = ckernels.library_path(src, "tiny", ckernels.compiler(), flags)
    _corrupt(path, b"\x7fELF this is not a library")
    lib = ckernels.load(src, "tiny", TINY_SIG, flag_sets=flags)  # load fails -> removed, rebuilt, loaded
    assert lib is not None
    lib.ember_twice.restype = ctypes.c_int
    assert lib.ember_twice(4) == 8
    # a corrupt library and no compiler: None (the caller falls back), not a crash
    src = TINY + "/* corrupt test 2 */\n"
    path = ckernels.library_path(src, "tiny", ckernels.compiler(), flags)
    _corrupt(path, b"garbage")
    monkeypatch.setattr(ckernels, "compiler", lambda: None)
    assert ckernels.load(src, "tiny", TINY_SIG, flag_sets=flags) is None


def test_missing_symbol_and_failed_compile(tmp_path, monkeypatch):
    # a library without the declared symbols counts as unusable
    assert _tiny(tmp_path, monkeypatch, src="int other(void) { return 1; }\n") is None
    assert _tiny(tmp_path, monkeypatch, src="this is not C\n") is None
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert _tiny(tmp_path, monkeypatch, src=TINY + "/* new key */\n") is None
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.delenv("CC")
    monkeypatch.setenv("EMBER_CACHE_DIR", str(not_a_dir / "kernels"))
    assert ckernels.load(TINY, "tiny", TINY_SIG) is None  # cache not writable: None, no exception


def test_disabled_by_environment(kernel_state, monkeypatch):
    monkeypatch.setenv("EMBER_CKERNELS", "0")
    ckernels.reset()
    ops._fns.clear()
    assert ckernels.get() is None
    out = ember.nn.functional.softmax(ember.tensor([[1.0, 2.0]]), -1)
    np.testing.assert_allclose(out.numpy(), [[0.26894142, 0.73105858]], rtol=1e-6)


def test_not_compiled_at_import():
    code = (
        "import ember, ember.nn.functional as F\n"
        "from ember.backends import ckernels\n"
        "assert not ckernels._state['tried']\n"
        "F.relu(ember.ones(2))\n"
        "assert not ckernels._state['tried']\n"
    )
    subprocess.run([__import__("sys").executable, "-c", code], check=True, timeout=60)


def test_default_threads_follow_omp_num_threads(monkeypatch):
    from ember._threads import _state as threads

    monkeypatch.setitem(threads, "n", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert ember.get_num_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert ember.get_num_threads() >= 1  # the usable cores, as in PyTorch
    monkeypatch.setitem(threads, "n", 1)
    assert ember.get_num_threads() == 1 and ops._threads(1 << 24) == 1
