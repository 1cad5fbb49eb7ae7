"""Tensor and pipeline parallelism with real ranks: equal loss and gradients to the unsplit model."""

import re

import pytest

from tests.distributed._launch import launch


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_tensor_parallel_gpt(n):
    rc, out, _ = launch("tp.py", n=n, timeout=120)
    assert rc == 0, out
    assert len(re.findall(r"OK tensor parallel GPT .*? grads equal, block all-reduces fwd 2 bwd 2", out)) == n, out
    assert len(re.findall(r"OK column/row parallel linear", out)) == n, out


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_pipeline_gpipe_and_1f1b(n):
    rc, out, _ = launch("pp.py", n=n, timeout=120)
    assert rc == 0, out
    for sched in ("ScheduleGPipe", "Schedule1F1B"):
        assert len(re.findall(rf"rank \d: OK {sched}", out)) == n, out


@pytest.mark.parametrize("n", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_expert_parallel_moe(n):
    rc, out, _ = launch("ep.py", n=n, timeout=120)
    assert rc == 0, out
    assert len(re.findall(r"rank \d: OK expert parallel MoE", out)) == n, out


def test_device_mesh_combinations_on_4_ranks():
    rc, out, _ = launch("mesh.py", n=4, timeout=240)
    assert rc == 0, out
    for what in ("mesh groups", "DPxTP equals one process", "PPxDP equals one process", "DPxEP trains"):
        assert len(re.findall(rf"rank \d: OK {what}", out)) == 4, (what, out)


def test_differentiable_collectives():
    rc, out, _ = launch("functional.py", n=2, timeout=120)
    assert rc == 0, out
    assert len(re.findall(r"rank \d: OK differentiable collectives", out)) == 2, out
