"""The PyTorch oracle: run the same inputs through Ember and torch, compare values and gradients.

``check(fn, *inputs)`` calls ``fn(lib, *tensors)`` once with ``lib=ember`` and once with
``lib=torch`` on tensors made from the same NumPy arrays, then compares outputs (values, shapes,
dtypes) and, when ``grad=True``, the gradients of every float input under the same random
upstream gradient. Inputs may be marked non-contiguous: both sides then see a transposed view.

Ember's side runs on ``$EMBER_TEST_DEVICE`` (default ``cpu``): with ``EMBER_TEST_DEVICE=cuda`` the
whole oracle suite checks the CUDA backend against PyTorch on CPU (``scripts/gpu_check.sh``; on a
machine without a GPU, with ``EMBER_TEST_STRICT_CUPY=1``, see tests/strict_cupy.py).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

import ember

RTOL = {np.float16: 1e-2, np.float32: 1e-4, np.float64: 1e-7}
ATOL = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-9}


DEVICE = os.environ.get("EMBER_TEST_DEVICE", "cpu")


class NonContig:
    """Wrap an array to have ``check`` pass it as a non-contiguous (transposed) view."""

    def __init__(self, array: np.ndarray):
        self.array = array


def rand(*shape, dtype=np.float32, low=-2.0, high=2.0, positive=False) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(shape)) % (2**32))
    if np.dtype(dtype).kind == "f":
        a = rng.uniform(0.1 if positive else low, high, size=shape)
    elif np.dtype(dtype).kind == "b":
        a = rng.random(size=shape) > 0.5
    else:
        a = rng.integers(0 if positive else -5, 6, size=shape)
    return np.asarray(a).astype(dtype)


def _make(lib, x, requires_grad: bool):
    dev = {"device": DEVICE} if lib is ember and DEVICE != "cpu" else {}
    if isinstance(x, NonContig):
        base = np.ascontiguousarray(np.swapaxes(x.array, 0, -1)) if x.array.ndim > 1 else x.array[::-1].copy()
        t = lib.tensor(base, requires_grad=requires_grad and base.dtype.kind == "f", **dev)
        view = t.transpose(0, -1) if x.array.ndim > 1 else t.flip(0)
        return t, view
    if isinstance(x, np.ndarray):
        t = lib.tensor(x, requires_grad=requires_grad and x.dtype.kind == "f", **dev)
        return t, t
    return None, x


def on_device():
    """Ember's factories inside an op function make tensors on the test device."""
    return ember.device(DEVICE) if DEVICE != "cpu" else contextlib.nullcontext()


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    if isinstance(x, ember.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _flatten(out):
    if isinstance(out, (tuple, list)):
        res = []
        for o in out:
            res.extend(_flatten(o))
        return res
    return [out]


def assert_close(e, t, rtol=None, atol=None, what="output", check_dtype=True):
    en, tn = _np(e), _np(t)
    assert en.shape == tn.shape, f"{what}: shape {en.shape} (ember) != {tn.shape} (torch)"
    if check_dtype:
        assert str(en.dtype) == str(tn.dtype), f"{what}: dtype {en.dtype} (ember) != {tn.dtype} (torch)"
    if en.dtype.kind in "biu":
        np.testing.assert_array_equal(en, tn, err_msg=what)
        return
    kind = en.dtype.type if en.dtype.type in RTOL else np.float64
    np.testing.assert_allclose(
        en.astype(np.float64),
        tn.astype(np.float64),
        rtol=rtol if rtol is not None else RTOL[kind],
        atol=atol if atol is not None else ATOL[kind],
        equal_nan=True,
        err_msg=what,
    )


def check(fn, *inputs, grad: bool = True, rtol=None, atol=None, check_dtype: bool = True):
    """Compare ``fn(ember, *xs)`` with ``fn(torch, *xs)``; returns the Ember output."""
    e_pairs = [_make(ember, x, grad) for x in inputs]
    t_pairs = [_make(torch, x, grad) for x in inputs]
    with on_device():
        e_out = fn(ember, *[v for _, v in e_pairs])
    t_out = fn(torch, *[v for _, v in t_pairs])
    e_flat, t_flat = _flatten(e_out), _flatten(t_out)
    assert len(e_flat) == len(t_flat), "different number of outputs"
    for i, (e, t) in enumerate(zip(e_flat, t_flat)):
        if isinstance(t, torch.Tensor):
            assert isinstance(e, ember.Tensor), f"output {i}: expected a Tensor, got {type(e).__name__}"
            assert_close(e, t, rtol, atol, f"output {i}", check_dtype)
        else:
            assert e == t or np.allclose(e, t), f"output {i}: {e} != {t}"
    if not grad:
        return e_out
    e_diff = [e for e in e_flat if isinstance(e, ember.Tensor) and e.requires_grad]
    t_diff = [t for t in t_flat if isinstance(t, torch.Tensor) and t.requires_grad]
    assert len(e_diff) == len(t_diff), "requires_grad differs between outputs"
    if not t_diff:
        return e_out
    rng = np.random.default_rng(1)
    upstream = [rng.standard_normal(t.shape).astype(_np(t).dtype) for t in t_diff]
    torch.autograd.backward(t_diff, [torch.tensor(u) for u in upstream])
    ember.autograd.backward(e_diff, [ember.tensor(u, device=e.device) for u, e in zip(upstream, e_diff)])
    for i, ((e_leaf, _), (t_leaf, _)) in enumerate(zip(e_pairs, t_pairs)):
        if t_leaf is None or not t_leaf.requires_grad:
            continue
        if t_leaf.grad is None:
            assert e_leaf.grad is None or not np.any(_np(e_leaf.grad)), f"input {i}: ember has a gradient, torch none"
            continue
        assert e_leaf.grad is not None, f"input {i}: no gradient in ember"
        assert_close(e_leaf.grad, t_leaf.grad, rtol, atol, f"grad of input {i}", check_dtype)
    return e_out
