"""``ember train --parallel tp|pp|ep`` on two real ranks, against one process.

Each sharded run must take the same steps as its single-process reference (tp and pp: one
process on the same batches; ep: ``--parallel dp``, which splits the batches the same way), and
its checkpoint, gathered on rank 0, must hold the unsplit model: loaded into one process it gives
the evaluation loss the run reported, and it resumes (in one process, or on ranks of another mode).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
from tests.distributed._launch import SCRIPTS, run_job

SMALL = str(SCRIPTS / "train_small.py")


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"  # 17 characters: an odd vocabulary, padded for tp
    path.write_text("In the beginning God created the heaven and the earth. " * 60)
    return path


def _train(*args, n: int = 1, timeout: float = 120) -> str:
    """``train_small.py train`` (tiny recipes) in one process or on ``n`` ranks under ``ember run``."""
    launcher = [sys.executable, "-m", "ember.cli.main", "run", "-n", str(n)] if n > 1 else [sys.executable]
    rc, out, _ = run_job([*launcher, SMALL, "train", "--quiet", *args], timeout)
    assert rc == 0, out
    return out


def _final(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["final"]


def _reload_and_evaluate(out: Path, data: list[str]) -> float:
    """The checkpoint in this one process: the evaluation loss of its (unsplit) model."""
    from ember.cli import main as cli
    from ember.cli import train as train_mod
    from ember.cli.trainer import Trainer
    from ember.models.registry import MODELS

    state = ember.load(out / "checkpoint.ckpt")
    args = cli.build_parser().parse_args(["train", *data, "--out", str(out)])
    recipe = train_mod.make_recipe(args, state)
    trainer = Trainer(MODELS[recipe.model], recipe, out, text=args.text, data_root=args.data_root).setup(state)
    return trainer.evaluate()["loss"]


def _weights(out: Path) -> dict:
    return {k: v.numpy() for k, v in ember.load(out / "checkpoint.ckpt")["model"].items()}


def test_tensor_and_pipeline_parallel_gpt_equal_one_process(corpus, tmp_path):
    data = ["--model", "gpt", "--text", str(corpus), "--epochs", "1"]
    _train(*data, "--out", str(tmp_path / "one"))
    for mode in ("tp", "pp"):
        log = _train(*data, "--out", str(tmp_path / mode), "--parallel", mode, n=2)
        assert log.count("epoch 1: train loss") == 1, log  # rank 0 alone reports
    one = _final(tmp_path / "one")
    ref = _weights(tmp_path / "one")
    for mode in ("tp", "pp"):
        got = _final(tmp_path / mode)
        assert got["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5), mode
        assert got["test_loss"] == pytest.approx(one["test_loss"], rel=1e-5), mode
        w = _weights(tmp_path / mode)
        assert w.keys() == ref.keys()
        for k in ref:  # the gathered checkpoint is the unsplit model's, step for step
            np.testing.assert_allclose(w[k], ref[k], rtol=1e-4, atol=1e-5, err_msg=f"{mode} {k}")
        assert _reload_and_evaluate(tmp_path / mode, data) == pytest.approx(got["test_loss"], rel=1e-6)

    # The tp checkpoint (unsplit weights and optimizer state) resumes in one process and on two
    # pipeline ranks to the same second epoch.
    shutil.copytree(tmp_path / "tp", tmp_path / "tp-then-pp")
    more = [*data[:-1], "2", "--resume"]
    _train(*more, "--out", str(tmp_path / "tp"))
    _train(*more, "--out", str(tmp_path / "tp-then-pp"), "--parallel", "pp", n=2)
    alone, piped = _final(tmp_path / "tp"), _final(tmp_path / "tp-then-pp")
    assert alone["epoch"] == piped["epoch"] == 1
    assert piped["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-5)


def test_pipeline_parallel_mlp_equals_one_process(tiny_fashion, tmp_path):
    data = ["--model", "mlp", "--data-root", str(tiny_fashion), "--epochs", "1", "--batch-size", "32"]
    _train(*data, "--out", str(tmp_path / "one"))
    _train(*data, "--out", str(tmp_path / "pp"), "--parallel", "pp", n=2)
    one, pp = _final(tmp_path / "one"), _final(tmp_path / "pp")
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert pp[key] == pytest.approx(one[key], rel=1e-5), key
    assert _reload_and_evaluate(tmp_path / "pp", data) == pytest.approx(pp["test_loss"], rel=1e-6)


def test_expert_parallel_moe_gpt_equals_data_parallel(corpus, tmp_path):
    data = ["--model", "moe-gpt", "--text", str(corpus), "--epochs", "1"]
    _train(*data, "--out", str(tmp_path / "dp"), "--parallel", "dp", n=2)
    _train(*data, "--out", str(tmp_path / "ep"), "--parallel", "ep", n=2)
    dp, ep = _final(tmp_path / "dp"), _final(tmp_path / "ep")
    assert ep["train_loss"] == pytest.approx(dp["train_loss"], rel=1e-5)
    w_dp, w_ep = _weights(tmp_path / "dp"), _weights(tmp_path / "ep")
    assert w_ep.keys() == w_dp.keys()
    for k in w_dp:  # every expert, gathered from its owner
        np.testing.assert_allclose(w_ep[k], w_dp[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert _reload_and_evaluate(tmp_path / "ep", data) == pytest.approx(ep["test_loss"], rel=1e-6)


@pytest.mark.slow
def test_sharded_modes_on_4_ranks(corpus, tmp_path):
    gpt = ["--model", "gpt", "--text", str(corpus), "--epochs", "1"]
    _train(*gpt, "--out", str(tmp_path / "one"))
    for mode in ("tp", "pp"):
        _train(*gpt, "--out", str(tmp_path / mode), "--parallel", mode, n=4, timeout=240)
        assert _final(tmp_path / mode)["train_loss"] == pytest.approx(_final(tmp_path / "one")["train_loss"], rel=1e-5)
    moe = ["--model", "moe-gpt", "--text", str(corpus), "--epochs", "1"]
    for mode in ("dp", "ep"):
        _train(*moe, "--out", str(tmp_path / f"moe-{mode}"), "--parallel", mode, n=4, timeout=240)
    ep, dp = _final(tmp_path / "moe-ep"), _final(tmp_path / "moe-dp")
    assert ep["train_loss"] == pytest.approx(dp["train_loss"], rel=1e-5)
