"""One model registry, one return convention per model, a Trainer with hooks for other runs, and
no work-order leftovers (issue 13, item 13)."""

from __future__ import annotations

import json
from pathlib import Path

import ember
from ember import models
from ember.cli import main as cli
from ember.cli.recipes import RECIPES
from ember.cli.trainer import Trainer
from ember.models.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_one_registry_feeds_the_cli_the_recipes_and_build():
    train_parser = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    choices = next(a.choices for a in train_parser._actions if a.dest == "model")
    assert list(choices) == list(MODELS) == list(RECIPES)
    assert all(RECIPES[n] is MODELS[n].recipe for n in MODELS)
    assert isinstance(models.build("mlp", num_classes=10, hidden=(8,)), models.MLP)
    for path in ("ember/cli/train.py", "ember/cli/trainer.py", "ember/cli/main.py"):
        text = (ROOT / path).read_text()
        assert '"moe-gpt"' not in text and '"lstm"' not in text, f"{path} names models"


def test_gpt_returns_logits_and_loss_always():
    cfg = models.GPTConfig(vocab_size=10, n_layer=1, n_head=2, n_embd=8, block_size=8)
    idx = ember.zeros(1, 4, dtype=ember.long)
    for model in (models.GPT(cfg), models.MoEGPT(models.GPTConfig(**{**cfg.__dict__, "moe_num_experts": 2}))):
        out = model(idx)
        assert isinstance(out, tuple) and len(out) == 2 and out[1] is None
        logits, loss = model(idx, idx)
        assert logits.shape == (1, 4, 10) and loss.ndim == 0
    logits, caches = models.GPT(cfg).decode(idx, [(None, None)], 0)
    assert logits.shape == (1, 4, 10) and len(caches) == 1


def test_trainer_hooks_wrap_the_model_and_keep_non_writers_silent(tmp_path, tiny_fashion, capsys):  # noqa: F811
    spec = MODELS["mlp"]
    recipe = type(spec.recipe)(**{**spec.recipe.__dict__, "epochs": 1, "batch_size": 64})
    wrapped = []

    def wrap_model(module):
        wrapped.append(module)
        return module

    trainer = Trainer(spec, recipe, tmp_path / "rank1", quiet=True, data_root=str(tiny_fashion),
                      wrap_model=wrap_model, wrap_optimizer=lambda opt: opt, is_writer=False)  # fmt: skip
    (tmp_path / "rank1").mkdir()
    metrics = trainer.setup().fit()
    assert wrapped == [trainer.module] and metrics["final"]["test_accuracy"] > 0
    assert list((tmp_path / "rank1").iterdir()) == []  # no checkpoint, metrics or curves
    assert capsys.readouterr().out == ""
    writer = Trainer(spec, recipe, tmp_path / "rank0", quiet=True, data_root=str(tiny_fashion))
    (tmp_path / "rank0").mkdir()
    writer.setup().fit()
    assert json.loads((tmp_path / "rank0" / "metrics.json").read_text())["recipe"]["batch_size"] == 64


def test_no_work_order_leftovers():
    for path in ROOT.joinpath("ember").rglob("*.py"):
        text = path.read_text()
        assert "append imports below this line" not in text, path
        assert "DESIGN.md" not in text, path
    import ember.autograd.function as function
    import ember.ops.elementwise as elementwise
    import ember.profiler as profiler

    assert not hasattr(ember.Tensor, "_view_fn") and not hasattr(function, "_FunctionMeta")
    assert not hasattr(elementwise, "_FLOAT_KINDS") and not hasattr(profiler.profile, "_active_here")
