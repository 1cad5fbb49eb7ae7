"""bench.amp_ckpt: every mode's step runs on both frameworks (tiny sizes; no timing asserted)."""

from __future__ import annotations

import pytest
import torch

import ember
from bench import amp_ckpt


@pytest.mark.parametrize("mode", amp_ckpt.MODES)
@pytest.mark.parametrize("fw", [ember, torch], ids=["ember", "torch"])
def test_mode_step_runs_and_loss_is_float32(fw, mode):
    fw.manual_seed(0)
    step = amp_ckpt._setup(fw, mode, tiny=True)
    losses = [step().item() for _ in range(3)]
    assert losses[-1] < losses[0]
    assert step().dtype == fw.float32


@pytest.mark.slow
def test_report_runs(capsys):
    amp_ckpt.main(["--tiny", "--steps", "1"])
    out = capsys.readouterr().out
    assert out.count("| ember |") == 3 and out.count("| torch |") == 3
