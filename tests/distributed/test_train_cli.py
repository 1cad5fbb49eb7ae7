"""``ember train --nproc 2 --parallel dp|zero|zero2``: the main job on two real ranks.

Each mode cuts every global batch into two shares, so dp, zero and zero2 take the same steps and
reach the same losses; rank 0 alone writes, and the checkpoint resumes in a single process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.distributed._launch import ROOT


def _ember_train(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "ember.cli.main", "train", "--quiet", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        pytest.fail(f"ember train {args} did not finish in {timeout} s:\n{out}")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # nothing of the job may outlive the test
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(p.args, p.returncode, out, "")


def test_data_parallel_modes_train_the_same_and_resume_in_one_process(tiny_fashion, tmp_path):
    common = ["--model", "mlp", "--data-root", str(tiny_fashion), "--epochs", "1", "--batch-size", "32"]
    losses = {}
    for mode in ("dp", "zero", "zero2"):
        out = tmp_path / mode
        run = _ember_train(*common, "--out", str(out), "--nproc", "2", "--parallel", mode)
        assert run.returncode == 0, run.stdout
        assert run.stdout.count("epoch 1: train loss") == 1, run.stdout  # rank 0 alone reports
        metrics = json.loads((out / "metrics.json").read_text())
        losses[mode] = metrics["final"]["train_loss"]
    assert losses["zero"] == pytest.approx(losses["dp"], rel=1e-5)
    assert losses["zero2"] == pytest.approx(losses["dp"], rel=1e-5)

    # The sharded run's checkpoint (plain weights, whole optimizer state) continues in one process.
    resumed = _ember_train(*common[:-4], "--epochs", "2", "--out", str(tmp_path / "zero"), "--resume")
    assert resumed.returncode == 0, resumed.stdout
    assert "epoch 2: train loss" in resumed.stdout
    assert len(json.loads((tmp_path / "zero" / "metrics.json").read_text())["epochs"]) == 2


def test_unknown_parallel_mode_is_refused():
    run = _ember_train("--model", "mlp", "--nproc", "2", "--parallel", "tp", timeout=60)
    assert run.returncode == 2 and "invalid choice: 'tp'" in run.stdout
