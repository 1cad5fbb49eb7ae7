"""``ember train --nproc 2 --parallel dp|zero|zero2``: the main job on two real ranks.

Each mode cuts every global batch into two shares, so dp, zero and zero2 take the same steps and
reach the same losses; rank 0 alone writes, and the checkpoint resumes in a single process.
"""

from __future__ import annotations

import json

import pytest

from tests.distributed._launch import ember_train


def test_data_parallel_modes_train_the_same_and_resume_in_one_process(tiny_fashion, tmp_path):
    common = ["--model", "mlp", "--data-root", str(tiny_fashion), "--epochs", "1", "--batch-size", "32"]
    losses = {}
    for mode in ("dp", "zero", "zero2"):
        out = tmp_path / mode
        rc, stdout = ember_train(*common, "--out", str(out), "--nproc", "2", "--parallel", mode)
        assert rc == 0, stdout
        assert stdout.count("epoch 1: train loss") == 1, stdout  # rank 0 alone reports
        metrics = json.loads((out / "metrics.json").read_text())
        losses[mode] = metrics["final"]["train_loss"]
    assert losses["zero"] == pytest.approx(losses["dp"], rel=1e-5)
    assert losses["zero2"] == pytest.approx(losses["dp"], rel=1e-5)

    # The sharded run's checkpoint (plain weights, whole optimizer state) continues in one process.
    rc, stdout = ember_train(*common[:-4], "--epochs", "2", "--out", str(tmp_path / "zero"), "--resume")
    assert rc == 0, stdout
    assert "epoch 2: train loss" in stdout
    assert len(json.loads((tmp_path / "zero" / "metrics.json").read_text())["epochs"]) == 2


def test_unknown_parallel_mode_is_refused():
    rc, stdout = ember_train("--model", "mlp", "--nproc", "2", "--parallel", "sp", timeout=60)
    assert rc == 2 and "invalid choice: 'sp'" in stdout


def test_a_mode_that_does_not_apply_to_the_model_is_one_clear_line(tiny_fashion, tmp_path):
    rc, stdout = ember_train(
        "--model", "mlp", "--data-root", str(tiny_fashion), "--out", str(tmp_path), "--nproc", "2", "--parallel", "tp",
        timeout=60,
    )  # fmt: skip
    assert rc == 1 and "--parallel tp applies to gpt, not 'mlp'" in stdout, stdout
