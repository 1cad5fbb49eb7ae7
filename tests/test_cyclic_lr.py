"""lr_scheduler.CyclicLR against torch's: the lr and momentum (or beta1) sequences, and its state."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

import ember
import ember.optim


def _setup(lib, opt_name, opt_kwargs, groups=1):
    params = [{"params": [lib.zeros(2, requires_grad=True)]} for _ in range(groups)]
    return getattr(lib.optim, opt_name)(params, **opt_kwargs)


def _sequence(lib, opt_name, opt_kwargs, sched_kwargs, steps=25, groups=1):
    opt = _setup(lib, opt_name, opt_kwargs, groups)
    sched = lib.optim.lr_scheduler.CyclicLR(opt, **sched_kwargs)
    key = "betas" if "betas" in opt.defaults else "momentum"
    out = []
    for _ in range(steps):
        opt.step()
        sched.step()
        moms = [g[key][0] if key == "betas" else g[key] for g in opt.param_groups]
        out.append((sched.get_last_lr(), moms))
    return out


class Halving:
    """A callable-object scale_fn: saved in the state_dict by its attributes."""

    def __init__(self):
        self.base = 0.5

    def __call__(self, x):
        return self.base**x


CASES = [
    ("SGD", {"lr": 0.1, "momentum": 0.9}, {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 4}),
    (
        "SGD",
        {"lr": 0.1, "momentum": 0.9},
        {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3, "step_size_down": 5, "mode": "triangular2"},
    ),
    (
        "SGD",
        {"lr": 0.1, "momentum": 0.9},
        {"base_lr": [0.01, 0.02], "max_lr": [0.1, 0.3], "step_size_up": 4, "mode": "exp_range", "gamma": 0.9},
    ),
    (
        "Adam",
        {"lr": 0.1},
        {"base_lr": 0.001, "max_lr": 0.01, "step_size_up": 5, "base_momentum": 0.85, "max_momentum": 0.95},
    ),
    (
        "SGD",
        {"lr": 0.1},
        {
            "base_lr": 0.01,
            "max_lr": 0.1,
            "step_size_up": 2,
            "cycle_momentum": False,
            "scale_fn": lambda x: 0.5**x,
            "scale_mode": "iterations",
        },
    ),
    (
        "RMSprop",
        {"lr": 0.1, "momentum": 0.5},
        {"base_lr": 0.01, "max_lr": 0.05, "step_size_up": 3, "scale_fn": Halving()},
    ),
]


@pytest.mark.parametrize(("opt_name", "opt_kwargs", "sched_kwargs"), CASES)
def test_cyclic_lr_matches_torch(opt_name, opt_kwargs, sched_kwargs):
    groups = 2 if isinstance(sched_kwargs["base_lr"], list) else 1
    mine = _sequence(ember, opt_name, opt_kwargs, sched_kwargs, groups=groups)
    ref = _sequence(torch, opt_name, opt_kwargs, sched_kwargs, groups=groups)
    for step, ((lr_e, m_e), (lr_t, m_t)) in enumerate(zip(mine, ref)):
        np.testing.assert_allclose(lr_e, lr_t, rtol=1e-12, err_msg=f"lr at step {step}")
        np.testing.assert_allclose(m_e, m_t, rtol=1e-12, err_msg=f"momentum at step {step}")


def test_cyclic_lr_errors_like_torch():
    for lib in (ember, torch):
        opt = lib.optim.Adagrad([lib.zeros(2, requires_grad=True)])
        with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
            lib.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1)
        opt = lib.optim.SGD([lib.zeros(2, requires_grad=True)], lr=0.1, momentum=0.9)
        with pytest.raises(ValueError, match="mode is invalid and scale_fn is None"):
            lib.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, mode="cosine")
        with pytest.raises(TypeError, match="is not an Optimizer"):
            lib.optim.lr_scheduler.CyclicLR(object(), 0.01, 0.1)


def test_cyclic_lr_state_dict_round_trip():
    opt = _setup(ember, "SGD", {"lr": 0.1, "momentum": 0.9})
    fn = Halving()
    sched = ember.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=3, scale_fn=fn)
    for _ in range(4):
        opt.step()
        sched.step()
    fn.base = 0.25
    state = pickle.loads(pickle.dumps(sched.state_dict()))  # no function objects inside
    assert state["_scale_fn_custom"] == {"base": 0.25}
    opt2 = _setup(ember, "SGD", {"lr": 0.1, "momentum": 0.9})
    fn2 = Halving()
    sched2 = ember.optim.lr_scheduler.CyclicLR(opt2, 0.01, 0.1, step_size_up=3, scale_fn=fn2)
    sched2.load_state_dict(state)
    assert fn2.base == 0.25 and sched2.last_epoch == sched.last_epoch
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
