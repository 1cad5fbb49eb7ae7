"""The optimizer-step benchmark workloads run on both frameworks (tiny sizes; no timing asserted)."""

from __future__ import annotations

import pytest
import torch

import ember
from bench import harness, run, wl_optim

OPTIM = harness.REGISTRY["optim"]


def test_optim_workloads_are_registered_with_targets():
    assert "bench.wl_optim" in run.WORKLOAD_MODULES
    names = [c.name for c in OPTIM]
    assert {"Adam fused", "AdamW fused", "SGD fused", "Adam foreach", "Adam for-loop"} <= set(names)
    assert all(c.target == (1.0 if c.name.endswith("fused") else 1.5) for c in OPTIM)
    shapes = wl_optim.gpt_shapes(*wl_optim.GPT)
    assert len(shapes) == 76 and abs(sum(_numel(s) for s in shapes) - 10.7e6) < 0.1e6


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("case", OPTIM, ids=[c.name for c in OPTIM])
def test_optim_workload_steps_move_parameters(case):
    for lib in (ember, torch):
        step = case.impls[lib.__name__](lib, tiny=True)
        opt = step.__self__
        before = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
        step()
        after = [p.detach() for g in opt.param_groups for p in g["params"]]
        assert all(not lib.equal(b, a) for b, a in zip(before, after))
