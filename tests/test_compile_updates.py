"""The optimizer update of a compiled training step from primitives (compile/passes/updates.py):
no ``_fused_``/``_foreach_`` op is left, fusion forms one update loop per parameter that writes
the parameter and its state in place, and parameters follow eager's step for step."""

import warnings

import numpy as np
import pytest

import ember
from ember.compile.passes import fusion as fusion_mod
from ember.compile.step import StepEntry

pytestmark = pytest.mark.skipif(ember.backends.ckernels.get() is None, reason="needs the C kernels")

_OPTS = {
    "adam": lambda ps: ember.optim.Adam(ps, lr=1e-2, fused=True),
    "adam-l2-max": lambda ps: ember.optim.Adam(ps, lr=1e-2, weight_decay=0.1, maximize=True, fused=True),
    "adamw": lambda ps: ember.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, fused=True),
    "adam-beta0": lambda ps: ember.optim.Adam(ps, lr=1e-2, betas=(0.3, 0.0), fused=True),
    # foreach: the step counts stay tensors under capture (optim/adam.py), so the step is one graph
    "adam-foreach": lambda ps: ember.optim.Adam(ps, lr=1e-2, foreach=True),
    "adamw-foreach": lambda ps: ember.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=True),
    "sgd": lambda ps: ember.optim.SGD(ps, lr=0.05, fused=True),
    "sgd-momentum": lambda ps: ember.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01, fused=True),
    "sgd-nesterov": lambda ps: ember.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, fused=True),
    "sgd-foreach": lambda ps: ember.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=True),
}


def _setup(opt_name, dtype=ember.float32):
    ember.manual_seed(0)
    model = ember.nn.Sequential(ember.nn.Linear(6, 5), ember.nn.Tanh(), ember.nn.Linear(5, 3)).to(dtype)
    opt = _OPTS[opt_name](list(model.parameters()))
    x, y = ember.randn(7, 6, dtype=dtype), ember.randint(0, 3, (7,))

    def step():
        opt.zero_grad()
        loss = ember.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step, model


def _run(opt_name, steps, compiled=True):
    step, model = _setup(opt_name)
    fn = ember.compile(step) if compiled else step
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to eager
        losses = [fn().item() for _ in range(steps)]
    fn.model = model
    return losses, [p.detach().numpy().copy() for p in model.parameters()], fn


def fn_params(fn):
    return list(fn.model.parameters())


def _steady(fn) -> StepEntry:
    entries = list(fn.cache.values())
    assert all(isinstance(e, StepEntry) for e in entries)
    return entries[-1]


@pytest.mark.parametrize("opt_name", list(_OPTS))
def test_the_update_is_primitives_fused_per_parameter_and_matches_eager(opt_name):
    want_losses, want, _ = _run(opt_name, 8, compiled=False)
    losses, got, fn = _run(opt_name, 8)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    entry = _steady(fn)
    ops = entry.graph.counts()
    assert not [k for k in ops if k.startswith(("_fused_", "_foreach_"))], ops
    params = {n.binding[1]: n for n in entry.graph.nodes if n.kind == "placeholder" and n.binding[0] == "const"}
    params = [params[id_p] for id_p in params if any(id_p is p for p in fn_params(fn))]
    groups = [g for kind, g in entry.steps if kind == "group"]
    into = entry.steps.write_into  # the program writes parameters (and state) in place
    writes = {dst: o for o, dst in into.values()}
    for p in params:  # each parameter's update: one elementwise loop reading it and writing it
        (g,) = [g for g in groups if writes[p] in g.outputs]
        assert g.kind == "elementwise" and p in g.inputs and g.shape == p.shape
        if opt_name.startswith("adam"):
            assert {"sqrt", "div", "mul", "add", "sub"} <= {n.op for n in g.nodes}
            m, v = [writes[d] for d in writes if d is not p and writes[d] in g.outputs]  # and m, v
    if opt_name.startswith("adam"):  # bias corrections: scalars from each step count
        assert ops["expm1"] == (1 if opt_name == "adam-beta0" else 2) * len(params)
    per_param = 4 if opt_name.startswith("adam") else 1 if opt_name == "sgd" else 2  # p, m, v, step / p, buf
    assert len(into) == per_param * len(params) == per_param * 4
    assert not [n for n in entry.program.spec.eager_nodes]


def test_hand_kernel_when_the_pass_is_off(monkeypatch):
    monkeypatch.setenv("EMBER_DECOMPOSE_UPDATES", "0")
    want_losses, want, _ = _run("adamw", 4, compiled=False)
    losses, got, fn = _run("adamw", 4)
    assert _steady(fn).graph.counts()["_fused_adamw_"] == 1
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_viewed_parameter_keeps_the_hand_kernel():
    """A parameter read through a view (``w.t()``) must be written where it is: the op stays whole."""
    ember.manual_seed(0)
    w = ember.randn(4, 3, requires_grad=True)
    opt = ember.optim.Adam([w], lr=1e-2, fused=True)
    x = ember.randn(2, 3)
    w0 = w.detach().clone()

    def step():
        opt.zero_grad()
        loss = (x @ w.t()).tanh().sum()
        loss.backward()
        opt.step()
        return loss

    fn = ember.compile(step)
    for _ in range(3):
        fn()
    assert _steady(fn).graph.counts()["_fused_adam_"] == 1
    w2 = w0.clone().requires_grad_(True)
    opt2 = ember.optim.Adam([w2], lr=1e-2, fused=True)
    for _ in range(3):
        opt2.zero_grad()
        (x @ w2.t()).tanh().sum().backward()
        opt2.step()
    np.testing.assert_allclose(w.detach().numpy(), w2.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_many_updates_reading_one_value_stay_small_kernels(monkeypatch):
    """Same-shape updates whose gradients read one shared input merge as siblings only up to
    ``MAX_BUFFERS`` buffers per kernel (thousands of arguments used to break the build)."""
    monkeypatch.setattr(fusion_mod, "MAX_BUFFERS", 24)

    def make():
        ember.manual_seed(0)
        ps = [ember.randn(5, requires_grad=True) for _ in range(12)]
        x = ember.randn(5)
        opt = ember.optim.Adam(ps, lr=1e-2, fused=True)

        def step():
            opt.zero_grad()
            loss = sum((p * x).tanh().sum() for p in ps)
            loss.backward()
            opt.step()
            return loss

        return step, ps

    eager, pe = make()
    step, pc = make()
    fn = ember.compile(step)
    for _ in range(4):
        np.testing.assert_allclose(fn().item(), eager().item(), rtol=1e-5)
    for a, b in zip(pc, pe):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)
    groups = [g for kind, g in _steady(fn).steps if kind == "group"]
    assert groups and max(len(g.inputs) + len(g.outputs) for g in groups) <= 24
