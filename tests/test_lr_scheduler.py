"""ember.optim.lr_scheduler against torch.optim.lr_scheduler: the same lr sequences, step by step."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

import ember
import ember.optim

STEPS = 30


def _lib_optim(lib):
    return ember.optim if lib is ember else torch.optim


def _opt(lib, kind="SGD"):
    """An optimizer over two param groups with different lrs."""
    ps = [lib.zeros(2, requires_grad=True), lib.zeros(3, requires_grad=True)]
    groups = [{"params": ps[:1], "lr": 0.1}, {"params": ps[1:], "lr": 0.05}]
    if kind == "SGD":
        return _lib_optim(lib).SGD(groups, lr=0.1, momentum=0.9)
    return _lib_optim(lib).Adam(groups, lr=0.1, betas=(0.9, 0.99))


def _cube(epoch):
    return 1.0 / (1 + epoch) ** 3


class Scale:
    """A callable object: its __dict__ is saved in the scheduler's state_dict."""

    def __init__(self, rate):
        self.rate = rate

    def __call__(self, epoch):
        return self.rate**epoch


# name -> builder(ls, opt) where ls is the lr_scheduler module of either framework
SCHEDULERS = {
    "StepLR": lambda ls, o: ls.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda ls, o: ls.MultiStepLR(o, milestones=[5, 12, 12, 20], gamma=0.3),
    "ExponentialLR": lambda ls, o: ls.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda ls, o: ls.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
    "LambdaLR": lambda ls, o: ls.LambdaLR(o, lambda e: 1.0 / (e + 1)),
    "LambdaLR-list": lambda ls, o: ls.LambdaLR(o, [_cube, Scale(0.95)]),
    "MultiplicativeLR": lambda ls, o: ls.MultiplicativeLR(o, lambda e: 0.97),
    "LinearLR": lambda ls, o: ls.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=8),
    "ConstantLR": lambda ls, o: ls.ConstantLR(o, factor=0.5, total_iters=4),
    "PolynomialLR": lambda ls, o: ls.PolynomialLR(o, total_iters=20, power=2.0),
    "OneCycleLR-cos": lambda ls, o: ls.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=STEPS),
    "OneCycleLR-linear": lambda ls, o: ls.OneCycleLR(
        o, max_lr=0.8, epochs=3, steps_per_epoch=10, anneal_strategy="linear", pct_start=0.25
    ),
    "OneCycleLR-three-phase": lambda ls, o: ls.OneCycleLR(
        o, max_lr=1.0, total_steps=STEPS + 5, three_phase=True, base_momentum=[0.8, 0.7], max_momentum=0.9
    ),
    "OneCycleLR-no-momentum": lambda ls, o: ls.OneCycleLR(o, max_lr=1.0, total_steps=STEPS, cycle_momentum=False),
    "SequentialLR": lambda ls, o: ls.SequentialLR(
        o, [ls.LinearLR(o, start_factor=0.1, total_iters=5), ls.CosineAnnealingLR(o, T_max=25)], milestones=[5]
    ),
    "SequentialLR-three": lambda ls, o: ls.SequentialLR(
        o,
        [ls.ConstantLR(o, factor=0.5, total_iters=3), ls.ExponentialLR(o, gamma=0.9), ls.StepLR(o, 4, gamma=0.5)],
        milestones=[6, 15],
    ),
    "ChainedScheduler": lambda ls, o: ls.ChainedScheduler(
        [ls.LinearLR(o, start_factor=0.5, total_iters=4), ls.ExponentialLR(o, gamma=0.95)]
    ),
}


def _lrs(opt):
    return [float(g["lr"]) for g in opt.param_groups]


def _momenta(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def _sequence(lib, name, kind="SGD", steps=STEPS):
    """(last_lr, group lrs, momenta) after construction and after each of ``steps`` steps."""
    opt = _opt(lib, kind)
    sched = SCHEDULERS[name](lib.optim.lr_scheduler if lib is torch else ember.optim.lr_scheduler, opt)
    seq = [(list(sched.get_last_lr()), _lrs(opt), _momenta(opt))]
    for _ in range(steps):
        opt.step()
        sched.step()
        seq.append((list(sched.get_last_lr()), _lrs(opt), _momenta(opt)))
    return seq


def _assert_sequences_equal(mine, ref):
    assert len(mine) == len(ref)
    for step, (m, r) in enumerate(zip(mine, ref)):
        for a, b in zip(m, r):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=f"step {step}")


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_lr_sequence_matches_torch(name):
    _assert_sequences_equal(_sequence(ember, name), _sequence(torch, name))


@pytest.mark.parametrize("name", ["OneCycleLR-cos", "OneCycleLR-three-phase"])
def test_one_cycle_cycles_adam_beta1(name):
    mine, ref = _sequence(ember, name, kind="Adam"), _sequence(torch, name, kind="Adam")
    _assert_sequences_equal(mine, ref)
    assert len({m for _, _, moms in mine for m in moms}) > 3  # beta1 really moves


def test_one_cycle_overrun_raises_like_torch():
    for lib, ls in ((ember, ember.optim.lr_scheduler), (torch, torch.optim.lr_scheduler)):
        opt = _opt(lib)
        sched = ls.OneCycleLR(opt, max_lr=1.0, total_steps=3)
        for _ in range(3):
            opt.step()
            sched.step()
        with pytest.raises(ValueError, match="Tried to step 4 times. The specified number of total steps is 3"):
            sched.step()


def _strip(state):
    """A scheduler state_dict with functions dropped, for comparing key sets with torch's."""
    return {k for k in state}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_state_dict_round_trip(name):
    ls = ember.optim.lr_scheduler
    reference = [lrs for _, lrs, _ in _sequence(ember, name)]

    opt = _opt(ember)
    sched = SCHEDULERS[name](ls, opt)
    got = [_lrs(opt)]
    for _ in range(10):
        opt.step()
        sched.step()
        got.append(_lrs(opt))
    opt_state = copy.deepcopy(opt.state_dict())
    sched_state = copy.deepcopy(sched.state_dict())

    # A fresh optimizer and scheduler, as a resumed training script builds them.
    opt2 = _opt(ember)
    sched2 = SCHEDULERS[name](ls, opt2)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    for _ in range(STEPS - 10):
        opt2.step()
        sched2.step()
        got.append(_lrs(opt2))
    np.testing.assert_allclose(got, reference, rtol=1e-12)


@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "LambdaLR-list", "OneCycleLR-cos", "SequentialLR"])
def test_state_dict_keys_match_torch(name):
    states = []
    for lib in (ember, torch):
        opt = _opt(lib)
        sched = SCHEDULERS[name](lib.optim.lr_scheduler if lib is torch else ember.optim.lr_scheduler, opt)
        opt.step()
        sched.step()
        states.append(sched.state_dict())
    mine, ref = states
    assert set(mine) == set(ref)
    assert mine["last_epoch"] == ref["last_epoch"]
    if name == "LambdaLR-list":
        assert mine["lr_lambdas"] == ref["lr_lambdas"] == [None, {"rate": 0.95}]
    if name == "SequentialLR":
        assert [set(s) for s in mine["_schedulers"]] == [set(s) for s in ref["_schedulers"]]


def test_step_with_epoch_uses_closed_form():
    seqs = []
    for lib in (ember, torch):
        opt = _opt(lib)
        ls = ember.optim.lr_scheduler if lib is ember else torch.optim.lr_scheduler
        scheds = [ls.StepLR(opt, 3, 0.5), ls.CosineAnnealingLR(opt, T_max=8)]
        seq = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in [4, 9, 2, 7]:
                opt.step()
                for s in scheds:
                    s.step(epoch)
                    seq.append(list(s.get_last_lr()))
        seqs.append(seq)
    np.testing.assert_allclose(seqs[0], seqs[1], rtol=1e-12)


def test_reduce_lr_on_plateau_matches_torch():
    metrics = [1.0, 0.9, 0.9, 0.95, 0.91, 0.8, 0.8, 0.8, 0.8, 0.85, 0.79, 0.79, 0.79, 0.79, 0.79, 0.7]
    for mode, sign in (("min", 1.0), ("max", -1.0)):
        seqs = []
        for lib in (ember, torch):
            opt = _opt(lib)
            ls = ember.optim.lr_scheduler if lib is ember else torch.optim.lr_scheduler
            sched = ls.ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=1, cooldown=1, min_lr=[0.01, 0.02])
            seq = []
            for m in metrics:
                opt.step()
                sched.step(sign * m)
                seq.append(list(sched.get_last_lr()))
            seqs.append(seq)
        np.testing.assert_allclose(seqs[0], seqs[1], rtol=1e-12)


def test_warns_when_scheduler_steps_before_optimizer():
    for lib in (ember, torch):
        opt = _opt(lib)
        ls = ember.optim.lr_scheduler if lib is ember else torch.optim.lr_scheduler
        sched = ls.StepLR(opt, 2)
        with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
            sched.step()


def test_scheduled_lr_drives_the_update():
    """The lr the scheduler writes is the one the next step uses (SGD, no momentum)."""
    w = ember.tensor([1.0], requires_grad=True)
    opt = ember.optim.SGD([w], lr=1.0)
    sched = ember.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    expected = 1.0
    for step in range(4):
        w.grad = ember.ones(1)
        opt.step()
        expected -= 0.5**step
        sched.step()
    assert math.isclose(w.item(), expected, rel_tol=1e-6)


def test_errors_match_torch():
    cases = [
        lambda ls, o: ls.StepLR(object(), 2),
        lambda ls, o: ls.LinearLR(o, start_factor=0.0),
        lambda ls, o: ls.ConstantLR(o, factor=2.0),
        lambda ls, o: ls.OneCycleLR(o, max_lr=1.0),
        lambda ls, o: ls.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=1),
        lambda ls, o: ls.OneCycleLR(o, max_lr=[1.0], total_steps=10),
        lambda ls, o: ls.SequentialLR(o, [ls.StepLR(o, 2)], milestones=[3]),
        lambda ls, o: ls.LambdaLR(o, [lambda e: 1.0]),
        lambda ls, o: ls.StepLR(o, 2, last_epoch=3),
    ]
    for case in cases:
        outcomes = []
        for lib in (ember, torch):
            ls = ember.optim.lr_scheduler if lib is ember else torch.optim.lr_scheduler
            try:
                case(ls, _opt(lib))
            except Exception as e:  # noqa: BLE001 - compare whatever both raise
                outcomes.append((type(e), str(e)))
            else:
                outcomes.append(None)
        assert outcomes[1] is not None
        assert outcomes[0] == outcomes[1]


def test_tensor_lr_is_updated_in_place():
    results = []
    for lib in (ember, torch):
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        lr = lib.tensor(0.1)
        opt = _lib_optim(lib).Adam([w], lr=lr)
        ls = ember.optim.lr_scheduler if lib is ember else torch.optim.lr_scheduler
        sched = ls.ExponentialLR(opt, gamma=0.5)
        for _ in range(3):
            w.grad = lib.ones(2)
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] is lr
        results.append((w.detach().numpy().copy(), float(lr)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    assert results[0][1] == results[1][1] == pytest.approx(0.0125)
