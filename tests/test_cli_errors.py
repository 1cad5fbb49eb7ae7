"""``ember train`` reports argument, data, output-folder and checkpoint problems as one clear line
with a non-zero exit (the traceback only with ``--debug``), and extends a finished run
(issue 13, item 9)."""

from __future__ import annotations

import json

import pytest

import ember
from ember.cli import main as cli


def _run(capsys, *argv):
    code = cli.main(["train", "--quiet", *argv])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize(
    "option", [("--epochs", "0"), ("--batch-size", "0"), ("--batch-size", "-4"), ("--checkpoint-every", "0"),
               ("--checkpoint-every", "-5"), ("--threads", "0"), ("--epochs", "two"), ("--lr", "-1")],
)  # fmt: skip
def test_bad_numbers_are_refused_up_front(option, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", *option])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option[0]}: expected a positive" in err and "Traceback" not in err


def test_missing_data_is_one_line(tmp_path, capsys):
    code, err = _run(capsys, "--model", "mlp", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ember train: error:") and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - whatever the data error is, it propagates
        cli.main(["train", "--quiet", "--debug", "--model", "mlp", "--data-root", str(tmp_path / "nowhere"),
                  "--out", str(tmp_path / "o")])  # fmt: skip


def test_unwritable_output_folder_is_found_before_training(tmp_path, capsys, tiny_fashion):  # noqa: F811
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = _run(capsys, "--model", "mlp", "--data-root", str(tiny_fashion), "--out", str(blocker / "run"))
    assert code == 1 and "is not writable" in err


def test_resume_without_a_checkpoint(tmp_path, capsys):
    code, err = _run(capsys, "--model", "mlp", "--out", str(tmp_path), "--resume")
    assert code == 1 and "no checkpoint to resume" in err


def test_checkpoint_without_training_state_is_refused(tmp_path, capsys):
    ember.save({"w": ember.ones(2)}, tmp_path / "checkpoint.ckpt")
    code, err = _run(capsys, "--model", "mlp", "--out", str(tmp_path), "--resume")
    assert code == 1 and "holds no training state (missing 'model'" in err


def _quick(out, root, *extra):
    return ["--model", "mlp", "--data-root", str(root), "--batch-size", "64", "--out", str(out), *extra]


def test_checkpoint_with_nan_weights_is_refused(tmp_path, capsys, tiny_fashion):  # noqa: F811
    assert _run(capsys, *_quick(tmp_path, tiny_fashion, "--epochs", "1"))[0] == 0
    state = ember.load(tmp_path / "checkpoint.ckpt")
    name = next(iter(state["model"]))
    state["model"][name][0] = float("nan")
    ember.save(state, tmp_path / "checkpoint.ckpt")
    code, err = _run(capsys, *_quick(tmp_path, tiny_fashion, "--resume", "--epochs", "2"))
    assert code == 1 and f"non-finite weights (NaN or inf in '{name}')" in err


def test_extending_a_finished_run(tmp_path, capsys, tiny_fashion):  # noqa: F811
    assert _run(capsys, *_quick(tmp_path, tiny_fashion, "--epochs", "1"))[0] == 0
    code, err = _run(capsys, *_quick(tmp_path, tiny_fashion, "--resume", "--epochs", "2"))
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1] and metrics["recipe"]["epochs"] == 2
    state = ember.load(tmp_path / "checkpoint.ckpt")
    assert state["scheduler"]["total_steps"] == 2 * 4  # 256 images / 64 per batch, two epochs


def test_resume_with_another_batch_size_warns(tmp_path, capsys, tiny_fashion):  # noqa: F811
    assert _run(capsys, *_quick(tmp_path, tiny_fashion, "--epochs", "1"))[0] == 0
    code, err = _run(capsys, "--model", "mlp", "--data-root", str(tiny_fashion), "--out", str(tmp_path),
                     "--resume", "--epochs", "2", "--batch-size", "32")  # fmt: skip
    assert code == 0
    assert "warning: --resume with --batch-size 32 (the checkpoint used 64)" in err


def test_resume_keeps_the_checkpoints_recipe(tmp_path, capsys, tiny_fashion):  # noqa: F811
    assert _run(capsys, *_quick(tmp_path, tiny_fashion, "--epochs", "1"))[0] == 0
    code, err = _run(capsys, "--data-root", str(tiny_fashion), "--out", str(tmp_path), "--resume", "--epochs", "2")
    assert code == 0 and "warning" not in err
    assert json.loads((tmp_path / "metrics.json").read_text())["recipe"]["batch_size"] == 64
