"""``ember train``: train a model from the registry, evaluate it, and keep everything resumable.

This module turns the command line into a :class:`~ember.cli.trainer.Trainer`: it checks the
arguments, the output folder and the checkpoint to resume before any training starts, so a
mistake is one clear error line, not a traceback an epoch later. The loop itself (epochs,
evaluation, checkpoints every ``--checkpoint-every`` steps, at each epoch end and on Ctrl-C) is in
``trainer.py``; ``--resume`` continues with the same data order and random state as an
uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import ember
from ember.cli.trainer import CHECKPOINT, Trainer
from ember.models.registry import MODELS, Recipe

__all__ = ["train", "make_recipe", "read_checkpoint", "TrainError"]

DEFAULT_MODEL = "resnet"
_TRAINING_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "step_in_epoch", "history", "recipe")


class TrainError(ValueError):
    """A problem with the arguments, the data, the output folder or the checkpoint."""


def _check_args(args) -> None:
    """The numeric options (also checked by the parser; here for programmatic callers)."""
    for name in ("epochs", "batch_size", "checkpoint_every", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise TrainError(f"--lr must be a positive number, got {args.lr}")


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise TrainError(f"output folder {out} is not writable: {e.strerror or e}") from None


def read_checkpoint(path: Path) -> dict:
    """A checkpoint that can be resumed: all training state present, every weight finite."""
    if not path.exists():
        raise TrainError(f"no checkpoint to resume at {path}")
    state = ember.load(path)
    if not isinstance(state, dict):
        raise TrainError(f"{path} is not an ember train checkpoint")
    missing = [k for k in _TRAINING_KEYS if k not in state]
    if missing:
        raise TrainError(
            f"{path} holds no training state (missing {', '.join(repr(k) for k in missing)}): cannot resume"
        )
    for name, t in state["model"].items():
        if t.dtype.is_floating_point and not bool(ember.isfinite(t).all()):
            raise TrainError(f"{path} holds non-finite weights (NaN or inf in '{name}'): refusing to resume")
    return state


def make_recipe(args, state: dict | None = None) -> Recipe:
    """The model's recipe (the checkpoint's when resuming) with the explicit options applied."""
    if state is not None:
        saved = dict(state["recipe"])
        saved["model_kwargs"] = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["model_kwargs"].items()}
        base = Recipe(**saved)
    else:
        base = MODELS[args.model or DEFAULT_MODEL].recipe
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr") if getattr(args, k) is not None}
    if state is not None and "batch_size" in overrides and overrides["batch_size"] != base.batch_size:
        print(
            f"ember train: warning: --resume with --batch-size {overrides['batch_size']} (the checkpoint used "
            f"{base.batch_size}): the data order and the step count change, so the run will not match an "
            "uninterrupted one",
            file=sys.stderr,
        )
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    recipe = replace(base, **overrides)
    task = MODELS[recipe.model].task
    if recipe.dataset != task.dataset:
        raise TrainError(f"model '{recipe.model}' {task.kind}: use --dataset {task.dataset}")
    return recipe


def train(args, **trainer_options) -> dict:
    """Run (or resume) training as the parsed ``args`` say; returns the metrics dict.
    ``trainer_options`` go to :class:`Trainer` (``wrap_model``, ``wrap_optimizer``, ``is_writer``)."""
    _check_args(args)
    if args.threads:
        ember.set_num_threads(args.threads)
    out = Path(args.out or f"runs/{args.model or DEFAULT_MODEL}")
    _check_writable(out)
    state = None
    if args.resume:
        state = read_checkpoint(Path(args.resume) if args.resume != "auto" else out / CHECKPOINT)
        saved_model = state["recipe"]["model"]
        if args.model is not None and args.model != saved_model:
            raise TrainError(f"the checkpoint holds a '{saved_model}' model, not '{args.model}'")
    recipe = make_recipe(args, state)
    trainer = Trainer(
        MODELS[recipe.model],
        recipe,
        out,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        quiet=args.quiet,
        data_root=args.data_root,
        text=args.text,
        **trainer_options,
    )
    trainer.setup(state)
    if state is not None:
        trainer.log(f"resumed from {args.resume if args.resume != 'auto' else out / CHECKPOINT} at epoch "
                    f"{trainer.position[0] + 1}, step {trainer.position[1]}")  # fmt: skip
    n_params = sum(p.numel() for p in trainer.module.parameters())
    trainer.log(f"training {recipe.model} ({n_params:,} parameters) on {recipe.dataset} for {recipe.epochs} epochs")
    return trainer.fit()
