"""Grad mode is per thread: a ``no_grad()`` block or a running ``backward()`` in one thread never
turns recording off in another (issue 13, item 1)."""

from __future__ import annotations

import sys
import threading

import numpy as np

import ember
from ember import nn


def _trainer(steps: int, seed: int, failures: list, start: threading.Barrier):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = ember.optim.SGD(model.parameters(), lr=0.01)
    x = ember.tensor(rng.standard_normal((4, 8)).astype(np.float32))
    y = ember.tensor(rng.standard_normal((4, 1)).astype(np.float32))
    start.wait()
    for _ in range(steps):
        try:
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            if any(p.grad is None for p in model.parameters()):
                failures.append("a parameter was left without a gradient")
            opt.step()
        except Exception as e:  # noqa: BLE001 - any error in a thread is a failure
            failures.append(repr(e))


def _evaluator(stop: threading.Event, failures: list, start: threading.Barrier):
    model = nn.Linear(8, 1)
    x = ember.ones(2, 8)
    start.wait()
    while not stop.is_set():
        with ember.no_grad():
            out = model(x)
            if out.requires_grad:
                failures.append("no_grad output requires grad")
        if not ember.is_grad_enabled():
            failures.append("no_grad leaked out of its block")


def test_two_trainers_and_a_no_grad_evaluator():
    steps = 2000
    failures: list = []
    stop = threading.Event()
    start = threading.Barrier(3)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        trainers = [threading.Thread(target=_trainer, args=(steps, s, failures, start)) for s in (0, 1)]
        evaluator = threading.Thread(target=_evaluator, args=(stop, failures, start))
        for t in (*trainers, evaluator):
            t.start()
        for t in trainers:
            t.join()
        stop.set()
        evaluator.join()
    finally:
        sys.setswitchinterval(old)
    assert failures == [], f"{len(failures)} failures, first: {failures[:3]}"


def test_grad_mode_of_a_new_thread_is_the_default():
    seen = []
    with ember.no_grad():
        t = threading.Thread(target=lambda: seen.append(ember.is_grad_enabled()))
        t.start()
        t.join()
        assert not ember.is_grad_enabled()
    assert seen == [True]  # as PyTorch: a thread starts with recording on


def test_set_grad_enabled_in_a_thread_stays_there():
    def off():
        ember.set_grad_enabled(False)
        seen.append(ember.is_grad_enabled())

    seen = []
    t = threading.Thread(target=off)
    t.start()
    t.join()
    assert seen == [False] and ember.is_grad_enabled()
