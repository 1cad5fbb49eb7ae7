"""``Trainer``: the training loop of ``ember train``, shared with distributed and compiled runs.

One object holds the model, optimizer, scheduler, data and history; ``fit()`` runs the epochs,
evaluates after each, and writes ``checkpoint.ckpt``, ``metrics.json`` and ``curves.png``. What a
model trains on and how a batch is scored comes from its task in the registry
(``ember.models.registry``), so the loop never branches on a model name.

Hooks for other runs: ``wrap_model`` (e.g. DDP) wraps the module used for forward while
checkpoints keep the plain module's ``state_dict``; ``wrap_optimizer`` (e.g. ZeRO) wraps the
optimizer; ``is_writer=False`` (ranks other than 0) trains without writing files or printing;
``sync`` (data-parallel runs, see ``ember/cli/train_parallel.py``) gives each rank its share of
every batch and sums the step's figures (loss, accuracy, a pending Ctrl-C) over the ranks, so all
ranks log, stop and checkpoint at the same step. ``parallel`` (``--parallel tp|pp|ep``, see
``ember/cli/train_sharded.py``) makes, from the recipe, a run that trains a split copy of the
model and gathers the unsplit one before each evaluation and checkpoint.

Ctrl-C (SIGINT) is deferred to the next step boundary: the step that is running finishes (the
optimizer and scheduler never stop half-way), then a consistent checkpoint is written and the run
exits with status 130; ``--resume`` continues it to the same losses as an uninterrupted run. A
second Ctrl-C stops at once, without a checkpoint.

Example:
    >>> from pathlib import Path
    >>> from ember.models.registry import MODELS
    >>> t = Trainer(MODELS["mlp"], MODELS["mlp"].recipe, Path("runs/mlp"))
    >>> t.is_writer
    True
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ember
from ember import optim
from ember.models.registry import ModelSpec, Recipe, recipe_dict

__all__ = ["Trainer", "DeferredInterrupt", "CHECKPOINT"]

CHECKPOINT = "checkpoint.ckpt"


class DeferredInterrupt:
    """While active (main thread only), SIGINT sets ``requested`` instead of raising; a second
    SIGINT raises ``KeyboardInterrupt`` at once. Nested blocks share the outermost one, so a
    Ctrl-C during set-up (``ember train`` enters one before loading data) is seen by the loop."""

    _active: DeferredInterrupt | None = None

    def __init__(self):
        self.requested = False
        self._previous = None
        self._outer: DeferredInterrupt | None = None

    def __enter__(self) -> DeferredInterrupt:
        if DeferredInterrupt._active is not None:
            self._outer = DeferredInterrupt._active
            return self._outer
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            DeferredInterrupt._active = self
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._outer is None and DeferredInterrupt._active is self:
            DeferredInterrupt._active = None
            signal.signal(signal.SIGINT, self._previous)
        self._outer = None
        return False


def build_optimizer(model, recipe: Recipe):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adam":
        return optim.Adam(groups, lr=recipe.lr)
    if recipe.optimizer == "adamw":
        return optim.AdamW(groups, lr=recipe.lr)
    if recipe.optimizer == "sgd":
        return optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer '{recipe.optimizer}'")


def build_scheduler(opt, recipe: Recipe, total_steps: int, done: int = 0):
    """The recipe's schedule over ``total_steps``, advanced past ``done`` steps already taken
    (a resumed run that was extended gets the schedule of its new length)."""
    if recipe.schedule == "onecycle":
        sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total_steps, pct_start=0.15)
    elif recipe.schedule == "cosine":
        sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    else:
        sched = optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    with warnings.catch_warnings():  # stepping without optimizer steps: a replay, not a mistake
        warnings.simplefilter("ignore")
        for _ in range(done):
            sched.step()
    return sched


class Trainer:
    """Train ``spec``'s model with ``recipe``, writing to ``out`` (see the module docstring)."""

    def __init__(
        self,
        spec: ModelSpec,
        recipe: Recipe,
        out: Path,
        *,
        seed: int = 0,
        checkpoint_every: int = 100,
        quiet: bool = False,
        data_root: str | None = None,
        text: str | None = None,
        wrap_model: Callable | None = None,
        wrap_optimizer: Callable | None = None,
        is_writer: bool = True,
        sync=None,
        parallel: Callable | None = None,
    ):
        self.spec, self.recipe, self.out = spec, recipe, Path(out)
        self.task = spec.task
        self.seed, self.checkpoint_every, self.quiet = seed, checkpoint_every, quiet
        self.data_root, self.text = data_root, text
        self.wrap_model, self.wrap_optimizer, self.is_writer = wrap_model, wrap_optimizer, is_writer
        self.sync = sync
        self.parallel = parallel(recipe) if parallel else None
        self.history: dict = {"epochs": [], "steps": []}
        self.position = (0, 0)  # (epoch, steps done in it)
        self.progress: dict = {}  # running sums of the current epoch

    # ------------------------------------------------------------------ set-up
    def setup(self, state: dict | None = None) -> Trainer:
        """Build data, model, optimizer and scheduler; restore ``state`` (a checkpoint) if given."""
        recipe = self.recipe
        ember.manual_seed(self.seed)
        self.train_batches, self.test_batches, self.meta = self.task.batches(recipe, self.data_root, self.text)
        self.model_kwargs = self.task.model_kwargs(recipe, self.meta)
        self.module = self.spec.builder(**self.model_kwargs)
        if self.parallel is not None:  # the shards are cut from the weights they resume from
            if state is not None:
                self.module.load_state_dict(state["model"])
            self.model = self.parallel.shard(self.module)
        else:
            self.model = self.wrap_model(self.module) if self.wrap_model else self.module
        self.optimizer = build_optimizer(self.model if self.parallel else self.module, recipe)
        if self.wrap_optimizer:  # first: the scheduler must drive the wrapper's parameter groups
            self.optimizer = self.wrap_optimizer(self.optimizer)
        total = recipe.epochs * len(self.train_batches)
        if state is None:
            self.scheduler = build_scheduler(self.optimizer, recipe, total)
        else:
            self.module.load_state_dict(state["model"])
            saved_total = state["recipe"]["epochs"] * len(self.train_batches)
            if saved_total == total:
                # A new scheduler writes its first learning rate into the optimizer: build it
                # first, then restore the optimizer (its learning rates too), then the scheduler.
                self.scheduler = build_scheduler(self.optimizer, recipe, total)
                self._load_optimizer(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
            else:  # the run was extended (or shortened): the schedule of the new length, replayed
                self._load_optimizer(state["optimizer"])
                self.scheduler = build_scheduler(self.optimizer, recipe, total, state["scheduler"]["last_epoch"])
            ember.set_rng_state(state["rng"])
            self.history = state["history"]
            self.position = (state["epoch"], state["step_in_epoch"])
            self.progress = dict(state.get("progress", {}))
        return self

    def _load_optimizer(self, state: dict) -> None:
        if self.parallel is not None:
            self.parallel.load_optimizer_state(state, self.module, self.optimizer)
        else:
            self.optimizer.load_state_dict(state)

    def log(self, msg: str) -> None:
        if self.is_writer:
            print(msg)

    # ------------------------------------------------------------------ checkpoints and outputs
    def state_dict(self, optimizer_state: dict | None = None) -> dict:
        return {
            "progress": self.progress,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict() if optimizer_state is None else optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "rng": ember.get_rng_state(),
            "epoch": self.position[0],
            "step_in_epoch": self.position[1],
            "history": self.history,
            "recipe": recipe_dict(self.recipe),
            "model_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model_kwargs.items()},
            "vocab": "".join(self.meta.get("vocab", [])),
            "seed": self.seed,
        }

    def save(self) -> None:
        if hasattr(self.optimizer, "consolidate_state_dict"):  # ZeRO: every rank sends its shard
            self.optimizer.consolidate_state_dict(to=0)
        optimizer_state = None
        if self.parallel is not None:  # the unsplit model on every rank, its optimizer state on rank 0
            self.parallel.gather_weights(self.module)
            optimizer_state = self.parallel.optimizer_state(self.module, self.optimizer)
        if self.is_writer:
            ember.save(self.state_dict(optimizer_state), self.out / CHECKPOINT)

    # ------------------------------------------------------------------ one step / evaluation
    def train_step(self, x, y):
        """One optimizer step on a batch: ``(loss value, number correct or None)``."""
        if self.parallel is not None:
            lv, right = self.parallel.train_step(self.task, self.model, self.optimizer, x, y)
            self.scheduler.step()
            return lv, right
        loss, right = self.task.loss(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item(), right

    def evaluate(self) -> dict:
        if self.parallel is not None:  # evaluate the unsplit model, as one process would
            self.parallel.gather_weights(self.module)
        self.model.eval()
        self.module.eval()
        total, correct, count = 0.0, 0, 0
        with ember.no_grad():
            for x, y in self.test_batches.epoch(seed=0, epoch=0):
                if self.sync is not None:
                    x, y = self.sync.shard(x, y, train=False)
                loss, right, n = self.task.eval_batch(self.module, x, y)
                total += loss
                correct += right or 0
                count += n
        if self.sync is not None:
            total, correct, count = self.sync.sum([total, correct, count])
        self.model.train()
        self.module.train()
        out = {"loss": total / max(count, 1)}
        if self.task.reports_accuracy:
            out["accuracy"] = correct / max(count, 1)
        return out

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Run the remaining epochs; returns the metrics (also written to ``metrics.json``)."""
        with DeferredInterrupt() as stop:
            start_epoch, skip = self.position
            for epoch in range(start_epoch, self.recipe.epochs):
                self._epoch(epoch, skip if epoch == start_epoch else 0, stop)
                if stop.requested:
                    self._stop()
            return self._finish()  # a Ctrl-C while the last files are written: they are finished first

    def _epoch(self, epoch: int, first: int, stop: DeferredInterrupt) -> None:
        from tqdm import tqdm

        self.module.train()
        t0 = time.perf_counter()
        # Running sums of the epoch so far: restored on resume, so the epoch's figures cover the
        # steps before the interruption too.
        p = dict(self.progress) if first else {}
        seen, correct = p.get("seen", 0), p.get("correct", 0)
        loss_sum, steps = p.get("loss_sum", 0.0), p.get("steps", 0)
        t0 -= p.get("elapsed", 0.0)
        bar = tqdm(
            self.train_batches.epoch(self.seed, epoch, skip=first),
            total=len(self.train_batches),
            initial=first,
            desc=f"epoch {epoch + 1}/{self.recipe.epochs}",
            dynamic_ncols=True,
            disable=self.quiet or not self.is_writer,
        )
        for i, (x, y) in enumerate(bar, start=first):
            n = len(y)
            if self.sync is not None:
                x, y = self.sync.shard(x, y)
            lv, right = self.train_step(x, y)
            if self.sync is not None:  # the whole batch's figures, and a Ctrl-C seen by any rank
                lv_sum, right, n, stop_any = self.sync.sum([lv * len(y), right or 0, len(y), float(stop.requested)])
                lv, right, stop.requested = (
                    lv_sum / n,
                    (int(right) if self.task.reports_accuracy else None),
                    bool(stop_any),
                )
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1}, step {i}")
            self.history["steps"].append(lv)
            seen, steps, loss_sum = seen + n, steps + 1, loss_sum + lv
            if right is not None:
                correct += right
            self.position = (epoch, i + 1)
            self.progress = {
                "seen": seen,
                "correct": correct,
                "loss_sum": loss_sum,
                "steps": steps,
                "elapsed": time.perf_counter() - t0,
            }
            post = {"loss": f"{loss_sum / steps:.4f}", "samples/s": f"{seen / (time.perf_counter() - t0):.0f}"}
            if right is not None:
                post["acc"] = f"{correct / seen:.4f}"
            bar.set_postfix(post, refresh=False)
            if self.checkpoint_every and (i + 1) % self.checkpoint_every == 0:
                self.save()
            if stop.requested:  # the step is complete: a consistent state to save
                bar.close()
                self._stop()
        bar.close()
        elapsed = time.perf_counter() - t0
        ev = self.evaluate()
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(steps, 1),
            "test_loss": ev["loss"],
            "epoch_seconds": elapsed,
            "samples_per_second": seen / elapsed if elapsed else 0.0,
        }
        if "accuracy" in ev:
            row["train_accuracy"] = correct / max(seen, 1)
            row["test_accuracy"] = ev["accuracy"]
        if hasattr(self.module, "expert_load"):
            row["expert_token_share"] = self.module.expert_load()
        self.history["epochs"].append(row)
        self.position, self.progress = (epoch + 1, 0), {}
        self.save()
        msg = f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, test loss {ev['loss']:.4f}"
        if "accuracy" in ev:
            msg += f", test accuracy {ev['accuracy']:.4f}"
        self.log(msg + f" ({elapsed:.0f}s)")

    def _stop(self) -> None:
        self.save()
        self.log(
            f"\ninterrupted: checkpoint saved at epoch {self.position[0] + 1}, step {self.position[1]}; "
            f"continue with: ember train --model {self.recipe.model} --out {self.out} --resume"
        )
        raise SystemExit(130)

    def _finish(self) -> dict:
        h = self.history
        metrics = {
            "model": self.recipe.model,
            "dataset": self.recipe.dataset,
            "parameters": sum(p.numel() for p in self.module.parameters()),
            "recipe": recipe_dict(self.recipe),
            "epochs": h["epochs"],
            "final": h["epochs"][-1] if h["epochs"] else None,
        }
        if self.is_writer:
            write_json(self.out / "metrics.json", metrics)
            if h["epochs"]:
                plot_curves(h, self.out / "curves.png")
            self.log(f"wrote {self.out / CHECKPOINT}, {self.out / 'metrics.json'}, {self.out / 'curves.png'}")
        return metrics


# --------------------------------------------------------------------------- files
def plot_curves(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] + 1 for e in history["epochs"]]
    fig, axes = plt.subplots(1, 2 if "test_accuracy" in (history["epochs"] or [{}])[0] else 1, figsize=(10, 4))
    axes = np.atleast_1d(axes)
    axes[0].plot(epochs, [e["train_loss"] for e in history["epochs"]], "o-", label="train")
    axes[0].plot(epochs, [e["test_loss"] for e in history["epochs"]], "s-", label="test")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss (nats)")
    axes[0].legend()
    if len(axes) > 1:
        axes[1].plot(epochs, [e["train_accuracy"] for e in history["epochs"]], "o-", label="train")
        axes[1].plot(epochs, [e["test_accuracy"] for e in history["epochs"]], "s-", label="test")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("accuracy")
        axes[1].legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
