"""Capture records an optimizer step: its update ops (in-place, multi-tensor and fused) are
primitives applied through ``apply``, so a captured ``optimizer.step()`` holds every one of them
once, as many times as an eager step runs them, and writes nothing."""

import numpy as np
import pytest

import ember
from ember import nn
from ember.ops.capture import capture
from ember.ops.dispatch import REGISTRY
from ember.profiler import profile

_N_PARAMS = 4  # two Linear layers: two weights, two biases

_OPTIMIZERS = {
    "sgd-fused": (lambda ps: ember.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True), {"_fused_sgd_": 1}),
    "sgd-foreach": (
        lambda ps: ember.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True),
        {"_foreach_mul_": 1, "_foreach_add_": 2},  # buf = buf * momentum + g; p -= lr * buf
    ),
    "sgd-forloop": (
        lambda ps: ember.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False),
        {"mul_": _N_PARAMS, "add_": 2 * _N_PARAMS},
    ),
    "adam-fused": (lambda ps: ember.optim.Adam(ps, lr=1e-3, fused=True), {"_foreach_add_": 1, "_fused_adam_": 1}),
    "adam-foreach": (
        lambda ps: ember.optim.Adam(ps, lr=1e-3, foreach=True),
        {
            "_foreach_add_": 2,  # the step counts, then denom + eps
            "_foreach_lerp_": 1,
            "_foreach_mul_": 1,
            "_foreach_addcmul_": 1,
            "_foreach_div_": 1,
            "_foreach_addcdiv_": 1,
            "sqrt": _N_PARAMS,  # the out-of-place sqrt is one op per tensor
        },
    ),
    "adam-forloop": (
        lambda ps: ember.optim.Adam(ps, lr=1e-3, foreach=False),
        {"lerp_": _N_PARAMS, "addcmul_": _N_PARAMS, "addcdiv_": _N_PARAMS, "sqrt": _N_PARAMS},
    ),
}


def _ops(counts) -> dict:
    return {k: v for k, v in counts.items() if k in REGISTRY}


@pytest.mark.parametrize("name", list(_OPTIMIZERS))
def test_capture_records_the_optimizer_update_ops(name):
    make, expected = _OPTIMIZERS[name]
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = make(list(model.parameters()))
    model(ember.randn(3, 4)).sum().backward()
    opt.step()  # the first step creates the state; the steps below are the steady-state update
    with profile() as prof:
        opt.step()
    eager = {}
    for e in prof.key_averages():
        if e.key in REGISTRY:
            eager[e.key] = eager.get(e.key, 0) + e.count
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    state = [
        np.array(v._data, copy=True) for s in opt.state.values() for v in s.values() if isinstance(v, ember.Tensor)
    ]

    with capture() as graph:
        opt.step()

    counts = _ops(graph.counts())
    assert counts == eager  # every update op once, as often as the eager step runs it
    for op, n in expected.items():
        assert counts.get(op) == n, (op, counts)
    # CPU tensors are graph inputs traced by meta stand-ins: nothing was written.
    assert all(np.array_equal(p.detach().numpy(), before[n]) for n, p in model.named_parameters())
    after = [v._data for s in opt.state.values() for v in s.values() if isinstance(v, ember.Tensor)]
    assert all(np.array_equal(a, b) for a, b in zip(after, state))
    # A multi-tensor update writes every tensor of its first list: each is a new value of the graph.
    for rec in graph.ops:
        if rec.op.startswith(("_foreach_", "_fused_")) and rec.op.endswith("_"):
            assert len(rec.outputs) == rec.params["n_written"] > 1


def test_capture_of_an_sgd_step_on_meta_parameters():
    with ember.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        x = ember.randn(3, 4)
    opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with capture() as graph:
        model(x).sum().backward()
        opt.step()
    counts = graph.counts()
    assert counts["linear"] == 2 and counts["_foreach_add_"] == 1  # p -= lr * buf for all params in one op
    assert all(p.device.type == "meta" for p in model.parameters())
