"""``ember train`` / ``ember generate`` / ``ember demo`` end to end on tiny data made here.

The resume test interrupts a run mid-epoch (as Ctrl-C would), resumes it from the checkpoint,
and requires the losses after the interruption to equal an uninterrupted run's, bit for bit.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import ember
from ember.cli import main as cli
from ember.cli import train as train_mod
from ember.models.registry import MODELS


@pytest.fixture()
def tiny_text(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("In the beginning God created the heaven and the earth. " * 60)
    return path


def _train_args(out, *extra):
    return cli.build_parser().parse_args(["train", "--out", str(out), "--quiet", *extra])


def test_train_mlp_writes_outputs(tiny_fashion, tmp_path):
    out = tmp_path / "run"
    metrics = train_mod.train(
        _train_args(out, "--model", "mlp", "--data-root", str(tiny_fashion), "--epochs", "2", "--batch-size", "32")
    )
    assert (out / "checkpoint.ckpt").exists() and (out / "curves.png").exists()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["final"]["test_accuracy"] == metrics["final"]["test_accuracy"]
    assert metrics["final"]["test_accuracy"] > 0.5  # the bright band makes the classes easy
    assert len(saved["epochs"]) == 2


def test_resume_after_interrupt_gives_identical_losses(tiny_fashion, tmp_path, monkeypatch):
    # Ctrl-C inside a step (during the forward of the 12th batch, mid-way through epoch 2): the
    # step completes, then a consistent checkpoint is written and the run exits with 130.
    common = ["--model", "mlp", "--data-root", str(tiny_fashion), "--epochs", "2", "--batch-size", "32"]
    full = train_mod.train(_train_args(tmp_path / "full", *common, "--checkpoint-every", "1000"))
    reference = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert full["final"] is not None

    task = MODELS["mlp"].task
    calls = {"n": 0}
    real = type(task).loss

    def interrupt_in_step_12(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(task), "loss", interrupt_in_step_12)
    with pytest.raises(SystemExit) as stop:
        train_mod.train(_train_args(tmp_path / "part", *common, "--checkpoint-every", "1000"))
    assert stop.value.code == 130
    monkeypatch.setattr(type(task), "loss", real)
    state = ember.load(tmp_path / "part" / "checkpoint.ckpt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 4)  # after the whole 12th step
    train_mod.train(_train_args(tmp_path / "part", *common, "--resume"))
    resumed = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert resumed["epochs"][-1]["test_loss"] == reference["epochs"][-1]["test_loss"]
    assert resumed["epochs"][-1]["train_loss"] == reference["epochs"][-1]["train_loss"]


def test_gpt_trains_and_generates(tiny_text, tmp_path, capsys, monkeypatch):
    out = tmp_path / "gpt"
    args = _train_args(out, "--model", "gpt", "--text", str(tiny_text), "--epochs", "1", "--batch-size", "8")
    monkeypatch.setattr(MODELS["gpt"].recipe, "steps_per_epoch", 6)
    metrics = train_mod.train(args)
    assert np.isfinite(metrics["final"]["test_loss"])
    code = cli.main(["generate", "--checkpoint", str(out / "checkpoint.ckpt"), "--prompt", "In the", "--tokens", "20"])
    assert code == 0
    text = capsys.readouterr().out.strip().splitlines()[-1]
    assert text.startswith("In the") and len(text) == len("In the") + 20


def test_generate_rejects_unknown_characters(tiny_text, tmp_path, monkeypatch):
    out = tmp_path / "lstm"
    monkeypatch.setattr(MODELS["lstm"].recipe, "steps_per_epoch", 2)
    train_mod.train(_train_args(out, "--model", "lstm", "--text", str(tiny_text), "--epochs", "1"))
    with pytest.raises(SystemExit, match="outside the vocabulary"):
        cli.main(["generate", "--checkpoint", str(out / "checkpoint.ckpt"), "--prompt", "Zebra?"])


def test_model_dataset_mismatch_is_a_clear_error(tiny_text, tmp_path):
    with pytest.raises(ValueError, match="classifies images"):
        train_mod.train(_train_args(tmp_path / "x", "--model", "mlp", "--dataset", "text", "--text", str(tiny_text)))


def test_demo_prints_lecture_gradients(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--format", "dot"]) == 0
    text = capsys.readouterr().out
    assert "df/dx1   = 5.500000" in text and "df/dx2   = 1.716338" in text
    assert (tmp_path / "forward_graph.dot").exists() and (tmp_path / "backward_graph.dot").exists()
