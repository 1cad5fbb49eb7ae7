"""ember.optim against torch.optim: ten steps from the same parameters give the same parameters.

Each framework computes its own gradients (by its own autograd) of the same smooth loss, so the
trajectories only agree if the update rules, defaults and state handling agree.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

import ember
import ember.optim

SHAPES = [(3, 4), (4,), (2, 3, 2)]
RTOL, ATOL = 1e-5, 1e-6


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = [rng.uniform(-1.5, 1.5, size=s).astype(np.float32) for s in SHAPES]
    a = [rng.uniform(0.5, 2.0, size=s).astype(np.float32) for s in SHAPES]
    b = [rng.uniform(-1.0, 1.0, size=s).astype(np.float32) for s in SHAPES]
    return params, a, b


class Problem:
    """The same parameters and loss, sum(a p^2 + b sin(p)), in one framework."""

    def __init__(self, lib, seed: int = 0):
        params, a, b = _arrays(seed)
        self.lib = lib
        self.params = [lib.tensor(p, requires_grad=True) for p in params]
        self.a = [lib.tensor(x) for x in a]
        self.b = [lib.tensor(x) for x in b]

    def loss(self):
        total = 0
        for p, a, b in zip(self.params, self.a, self.b):
            total = total + (a * p * p).sum() + (b * self.lib.sin(p)).sum()
        return total

    def backward(self):
        loss = self.loss()
        loss.backward()
        return loss

    def values(self):
        return [p.detach().numpy().copy() for p in self.params]


def _optim(lib, name):
    return getattr(ember.optim if lib is ember else torch.optim, name)


def _make(lib, name, problem, kwargs, groups=None):
    cls = _optim(lib, name)
    if groups is None:
        return cls(problem.params, **kwargs)
    ps = problem.params
    return cls([{"params": [ps[i] for i in idx], **extra} for idx, extra in groups], **kwargs)


def _assert_close(mine, ref, what):
    for i, (m, r) in enumerate(zip(mine, ref)):
        np.testing.assert_allclose(m, r, rtol=RTOL, atol=ATOL, err_msg=f"{what}: parameter {i}")


def _run_both(name, kwargs, steps=10, groups=None):
    pe, pt = Problem(ember), Problem(torch)
    oe, ot = _make(ember, name, pe, kwargs, groups), _make(torch, name, pt, kwargs, groups)
    for step in range(steps):
        for prob, opt in ((pe, oe), (pt, ot)):
            opt.zero_grad()
            prob.backward()
            opt.step()
        _assert_close(pe.values(), pt.values(), f"{name}({kwargs}) step {step + 1}")
    return pe, oe, pt, ot


CASES = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.02, "momentum": 0.9, "maximize": True}),
    ("SGD", {}),
    ("Adam", {}),
    ("Adam", {"lr": 0.05, "amsgrad": True}),
    ("Adam", {"lr": 0.05, "weight_decay": 0.1}),
    ("Adam", {"lr": 0.05, "betas": (0.3, 0.9), "eps": 1e-6}),
    ("Adam", {"lr": 0.05, "maximize": True}),
    ("Adam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "amsgrad": True}),
    ("AdamW", {}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True}),
    ("AdamW", {"lr": 0.05, "maximize": True}),
    ("RMSprop", {}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}),
    ("RMSprop", {"lr": 0.01, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-6}),
    ("Adagrad", {"lr": 0.1, "maximize": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_ten_steps_match_torch(name, kwargs):
    _run_both(name, kwargs)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_param_groups_with_own_hyperparameters(name):
    extra = {"SGD": {"momentum": 0.5}, "Adam": {"betas": (0.8, 0.99)}, "AdamW": {"weight_decay": 0.3}}
    groups = [([0], {"lr": 0.1, **extra.get(name, {})}), ([1, 2], {})]
    pe, oe, pt, ot = _run_both(name, {"lr": 0.01}, steps=5, groups=groups)
    assert [g["lr"] for g in oe.param_groups] == [g["lr"] for g in ot.param_groups]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": 0.05, "momentum": 0.9}),
        ("SGD", {"lr": 0.05}),
        ("Adam", {"lr": 0.05, "amsgrad": True}),
        ("AdamW", {"lr": 0.05}),
        ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}),
    ],
)
def test_state_dict_round_trip(name, kwargs):
    # Reference: ten uninterrupted steps.
    ref = Problem(ember)
    opt = _make(ember, name, ref, kwargs)
    for _ in range(10):
        opt.zero_grad()
        ref.backward()
        opt.step()

    # Three steps, save, load into a new optimizer, seven more steps.
    prob = Problem(ember)
    first = _make(ember, name, prob, kwargs)
    for _ in range(3):
        first.zero_grad()
        prob.backward()
        first.step()
    saved = copy.deepcopy(first.state_dict())
    second = _make(ember, name, prob, kwargs)
    second.load_state_dict(saved)
    for _ in range(7):
        second.zero_grad()
        prob.backward()
        second.step()
    _assert_close(prob.values(), ref.values(), f"{name} resumed")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": 0.05, "momentum": 0.9}),
        ("SGD", {"lr": 0.05}),
        ("Adam", {"amsgrad": True}),
        ("AdamW", {}),
        ("RMSprop", {"momentum": 0.9, "centered": True}),
        ("Adagrad", {}),
    ],
)
def test_state_dict_format_matches_torch(name, kwargs):
    groups = [([2, 0], {"lr": 0.1}), ([1], {})]
    pe, oe, pt, ot = _run_both(name, kwargs, steps=3, groups=groups)
    se, st = oe.state_dict(), ot.state_dict()
    assert list(se) == ["state", "param_groups"]
    assert [g["params"] for g in se["param_groups"]] == [g["params"] for g in st["param_groups"]] == [[0, 1], [2]]
    for ge, gt in zip(se["param_groups"], st["param_groups"]):
        assert set(ge) == set(gt)
        for key in ge:
            assert ge[key] == gt[key], key
    assert list(se["state"]) == list(st["state"])
    for idx in st["state"]:
        assert list(se["state"][idx]) == list(st["state"][idx])
        for key, vt in st["state"][idx].items():
            ve = se["state"][idx][key]
            assert isinstance(ve, ember.Tensor)
            assert ve.shape == tuple(vt.shape) and str(ve.dtype)[6:] == str(vt.dtype)[6:], key
            np.testing.assert_allclose(ve.numpy(), vt.numpy(), rtol=1e-4, atol=1e-6, err_msg=key)


def test_load_state_dict_casts_and_validates():
    prob = Problem(ember)
    opt = ember.optim.Adam(prob.params, lr=0.01)
    prob.backward()
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].double()
    other = ember.optim.Adam(Problem(ember).params, lr=0.5)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.01
    assert other.state[other.param_groups[0]["params"][0]]["exp_avg"].dtype == ember.float32
    assert other.state[other.param_groups[0]["params"][0]]["step"].item() == 1.0
    with pytest.raises(ValueError, match="different number of parameter groups"):
        ember.optim.Adam([{"params": prob.params[:1]}, {"params": prob.params[1:]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size"):
        ember.optim.Adam(prob.params[:2]).load_state_dict(sd)


def test_param_without_grad_is_skipped():
    for lib in (ember, torch):
        prob = Problem(lib)
        opt = _optim(lib, "Adam")(prob.params, lr=0.1)
        before = prob.values()
        (prob.params[0] * prob.params[0]).sum().backward()
        opt.step()
        after = prob.values()
        assert not np.array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])
        assert len(opt.state) == 1


def test_zero_grad():
    prob = Problem(ember)
    opt = ember.optim.SGD(prob.params, lr=0.1)
    prob.backward()
    grad = prob.params[0].grad
    opt.zero_grad(set_to_none=False)
    assert prob.params[0].grad is grad
    assert not grad.numpy().any()
    opt.zero_grad()
    assert all(p.grad is None for p in prob.params)


def test_step_with_closure_runs_with_grad():
    results = []
    for lib in (ember, torch):
        prob = Problem(lib)
        opt = _optim(lib, "SGD")(prob.params, lr=0.1, momentum=0.9)

        def closure(prob=prob, opt=opt):
            opt.zero_grad()
            return prob.backward()

        with lib.no_grad():
            losses = [float(opt.step(closure)) for _ in range(3)]
        results.append((losses, prob.values()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=RTOL)
    _assert_close(results[0][1], results[1][1], "closure")


def test_step_hooks_and_version_counter():
    prob = Problem(ember)
    opt = ember.optim.SGD(prob.params, lr=0.1)
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    prob.backward()
    version = prob.params[0]._version
    opt.step()
    assert calls == ["pre", "post"]
    assert prob.params[0]._version == version + 1
    h1.remove()
    opt.step()
    assert calls == ["pre", "post", "post"]


def test_add_param_group_and_repr():
    pe, pt = Problem(ember), Problem(torch)
    oe = ember.optim.SGD(pe.params[:1], lr=0.1, momentum=0.9)
    ot = torch.optim.SGD(pt.params[:1], lr=0.1, momentum=0.9)
    oe.add_param_group({"params": pe.params[1], "lr": 0.01})
    ot.add_param_group({"params": pt.params[1], "lr": 0.01})
    assert [len(g["params"]) for g in oe.param_groups] == [1, 1]
    assert repr(oe) == repr(ot)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        oe.add_param_group({"params": [pe.params[0]]})


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we compare whatever both frameworks raise
        return type(e), re.sub(r"torch|ember", "LIB", str(e))
    return None


def _check_errors_match(make):
    got, want = _error(lambda: make(ember)), _error(lambda: make(torch))
    assert want is not None
    assert got == want


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": -0.1}),
        ("SGD", {"lr": 0.1, "momentum": -0.5}),
        ("SGD", {"lr": 0.1, "weight_decay": -1.0}),
        ("SGD", {"lr": 0.1, "nesterov": True}),
        ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}),
        ("Adam", {"lr": -1.0}),
        ("Adam", {"eps": -1.0}),
        ("Adam", {"betas": (1.0, 0.999)}),
        ("Adam", {"betas": (0.9, -0.1)}),
        ("Adam", {"betas": (0, 0.999)}),
        ("Adam", {"weight_decay": -0.1}),
        ("AdamW", {"betas": (0.9, 1.5)}),
        ("RMSprop", {"alpha": -0.1}),
        ("RMSprop", {"momentum": -0.1}),
        ("Adagrad", {"lr_decay": -0.1}),
        ("Adagrad", {"initial_accumulator_value": -0.1}),
    ],
)
def test_invalid_hyperparameters_raise_like_torch(name, kwargs):
    _check_errors_match(lambda lib: _optim(lib, name)(Problem(lib).params, **kwargs))


def test_bad_params_raise_like_torch():
    _check_errors_match(lambda lib: _optim(lib, "SGD")(Problem(lib).params[0], lr=0.1))
    _check_errors_match(lambda lib: _optim(lib, "SGD")([], lr=0.1))
    _check_errors_match(lambda lib: _optim(lib, "Adam")([{"params": set(Problem(lib).params)}]))

    def twice(lib):
        ps = Problem(lib).params
        return _optim(lib, "SGD")([{"params": ps[:2]}, {"params": ps[1:]}], lr=0.1)

    _check_errors_match(twice)

    def non_leaf(lib):
        p = lib.ones(3, requires_grad=True) * 2
        return _optim(lib, "SGD")([p], lr=0.1)

    _check_errors_match(non_leaf)


def test_float64_params_and_named_params():
    for lib in (ember, torch):
        w = lib.tensor([1.0, -2.0], dtype=lib.float64, requires_grad=True)
        opt = _optim(lib, "Adam")([("w", w)], lr=0.1)
        (w * w).sum().backward()
        opt.step()
        assert w.dtype == lib.float64
        assert opt.state_dict()["param_groups"][0]["param_names"] == ["w"]
        assert str(opt.state[w]["exp_avg"].dtype)[-7:] == "float64"
