"""The fused optimizers' caches (kernel partition, size and pointer arrays) against torch.optim.

The fused path reuses what it built for a step while the parameter, gradient and state arrays
are the same objects. Each test changes something between steps that must miss the cache
(``.data`` replaced, new parameters, a loaded state dict, new gradient arrays, fp64 and fp32
parameters mixed) and compares every step with torch's fused optimizer, or checks that a hit
reuses the cached arrays and a changed list is checked again.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ember
import ember.optim
from ember.backends.ckernels import optim as kernels
from ember.ops import fused

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the fused C kernels are not built")

SHAPES = [(3, 4), (5,), (2, 3)]
CASES = [
    ("Adam", {"lr": 0.1}),
    ("Adam", {"lr": 0.1, "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    ("AdamW", {"lr": 0.1, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1, "maximize": True}),
    ("SGD", {"lr": 0.1}),
]


def _values(shapes, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, s).astype(dtype) for s in shapes]


def _pair(values):
    e = [ember.tensor(v, requires_grad=True) for v in values]
    t = [torch.tensor(v, requires_grad=True) for v in values]
    return e, t


def _grads(e, t, seed):
    for pe, pt, g in zip(e, t, _values([tuple(p.shape) for p in t], seed, np.float64)):
        g = g.astype(pt.detach().numpy().dtype)
        pe.grad = ember.tensor(g)
        pt.grad = torch.tensor(g)


def _close(e, t):
    for pe, pt in zip(e, t):
        np.testing.assert_allclose(pe.detach().numpy(), pt.detach().numpy(), rtol=1e-5, atol=1e-6)


def _opts(name, kw, e, t):
    return getattr(ember.optim, name)(e, fused=True, **kw), getattr(torch.optim, name)(t, fused=True, **kw)


@pytest.mark.parametrize("name,kw", CASES)
def test_data_replaced_between_steps(name, kw):
    e, t = _pair(_values(SHAPES, 0))
    oe, ot = _opts(name, kw, e, t)
    for step in range(4):
        _grads(e, t, 10 + step)
        oe.step()
        ot.step()
        _close(e, t)
        new = _values([SHAPES[step % 3]], 20 + step)[0]
        e[step % 3].data = ember.tensor(new)
        t[step % 3].data = torch.tensor(new)


@pytest.mark.parametrize("name,kw", CASES)
def test_same_grad_tensors_written_in_place(name, kw):
    e, t = _pair(_values(SHAPES, 1))
    oe, ot = _opts(name, kw, e, t)
    _grads(e, t, 2)
    for step in range(3):
        for pe, pt, g in zip(e, t, _values(SHAPES, 30 + step)):
            pe.grad.copy_(ember.tensor(g))  # same arrays: the cache hits, the values are new
            pt.grad.copy_(torch.tensor(g))
        oe.step()
        ot.step()
        _close(e, t)


@pytest.mark.parametrize("name,kw", CASES[:4])
def test_param_group_added_and_state_loaded(name, kw):
    e, t = _pair(_values(SHAPES, 3))
    oe, ot = _opts(name, kw, e, t)
    _grads(e, t, 4)
    oe.step()
    ot.step()
    e2, t2 = _pair(_values([(4, 2)], 5))
    oe.add_param_group({"params": e2})
    ot.add_param_group({"params": t2})
    for step in range(2):
        _grads(e + e2, t + t2, 6 + step)
        oe.step()
        ot.step()
        _close(e + e2, t + t2)
    # A second optimizer that has stepped (its own arrays cached) loads the first one's state.
    saved_e, saved_t = oe.state_dict(), ot.state_dict()
    oe2, ot2 = _opts(name, kw, e, t)
    oe2.add_param_group({"params": e2})
    ot2.add_param_group({"params": t2})
    _grads(e + e2, t + t2, 8)
    oe2.step()
    ot2.step()
    oe2.load_state_dict(saved_e)
    ot2.load_state_dict(saved_t)
    for step in range(2):
        _grads(e + e2, t + t2, 9 + step)
        oe2.step()
        ot2.step()
        _close(e + e2, t + t2)


def test_mixed_dtypes_take_one_group_each():
    values = _values(SHAPES, 4)
    values[1] = values[1].astype(np.float32)
    e, t = _pair(values)
    oe, ot = _opts("Adam", {"lr": 0.1}, e, t)
    for step in range(3):
        _grads(e, t, 40 + step)
        oe.step()
        ot.step()
        _close(e, t)
    assert [len(i) for i in fused._PLANS["adam"][1]] == [2, 1]


def test_cache_hits_reuse_the_arrays_and_misses_rebuild():
    e, _ = _pair(_values(SHAPES, 5))
    opt = ember.optim.Adam(e, lr=0.1, fused=True)
    for p in e:
        p.grad = ember.ones(p.shape, dtype=p.dtype)
    opt.step()
    ptrs = kernels._last[("fused_adam", "exp_avgs")][1]
    opt.step()
    assert kernels._last[("fused_adam", "exp_avgs")][1] is ptrs  # same state arrays: reused
    opt.load_state_dict(opt.state_dict() | {"state": {}})
    opt.step()
    assert kernels._last[("fused_adam", "exp_avgs")][1] is not ptrs  # new state arrays: rebuilt


def test_kernel_checks_a_changed_list_against_the_cached_sizes():
    p = [np.zeros(4, np.float32)]
    g = [np.ones(4, np.float32)]
    b = [np.zeros(4, np.float32)]
    kw = dict(lr=0.5, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    assert kernels.fused_sgd(p, g, b, [True], **kw)
    bigger = [np.zeros(8, np.float32)]
    for _ in range(2):  # the second call hits the cached plan for `bigger`: b is still checked
        with pytest.raises(ValueError, match="should contain 8 elements not 4"):
            kernels.fused_sgd(bigger, [np.ones(8, np.float32)], b, [False], **kw)
    np.testing.assert_array_equal(p[0], np.full(4, -0.5, np.float32))
