"""``ember train``: train a model from the zoo, evaluate it, and keep everything resumable.

One loop serves image classification (Fashion-MNIST) and character language modelling (a text
corpus). Each epoch ends with an evaluation on held-out data; the output folder receives the
checkpoint (``checkpoint.ckpt``), ``metrics.json`` and ``curves.png``. A checkpoint is written
every ``--checkpoint-every`` steps, at the end of each epoch, and on Ctrl-C; ``--resume``
continues from it with the same data order and random state as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

import ember
from ember import optim
from ember.cli.batches import ImageBatches, TextBatches
from ember.cli.recipes import RECIPES, Recipe
from ember.nn import functional as F

CHECKPOINT = "checkpoint.ckpt"


# --------------------------------------------------------------------------- set-up
def make_recipe(args) -> Recipe:
    r = RECIPES[args.model]
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr") if getattr(args, k) is not None}
    if args.dataset is not None:
        overrides["dataset"] = args.dataset
    return replace(r, **overrides)


def load_data(recipe: Recipe, args):
    """Training and evaluation batch sources, plus facts the model needs (vocabulary size)."""
    if recipe.dataset == "fashion-mnist":
        from ember.datasets import FashionMNIST

        train = FashionMNIST(root=args.data_root, train=True)
        test = FashionMNIST(root=args.data_root, train=False)
        tr = ImageBatches(train.data.numpy(), train.targets.numpy(), recipe.batch_size, shuffle=True)
        te = ImageBatches(test.data.numpy(), test.targets.numpy(), 500, shuffle=False)
        return tr, te, {"num_classes": 10}
    if recipe.dataset == "text":
        from ember.datasets import CharTextDataset

        train = CharTextDataset(args.text, block_size=recipe.block_size, split="train")
        val = CharTextDataset(args.text, block_size=recipe.block_size, split="val")
        tr = TextBatches(train.data.numpy(), recipe.batch_size, recipe.block_size, recipe.steps_per_epoch)
        te = TextBatches(val.data.numpy(), recipe.batch_size, recipe.block_size, recipe.eval_batches)
        return tr, te, {"vocab": train.itos, "vocab_size": train.vocab_size}
    raise ValueError(f"unknown dataset '{recipe.dataset}'")


def build_model(recipe: Recipe, meta: dict):
    from ember import models

    kwargs = dict(recipe.model_kwargs)
    if recipe.model in ("mlp", "resnet"):
        if recipe.dataset != "fashion-mnist":
            raise ValueError(f"model '{recipe.model}' classifies images: use --dataset fashion-mnist")
        kwargs["num_classes"] = meta["num_classes"]
    else:
        if recipe.dataset != "text":
            raise ValueError(f"model '{recipe.model}' is a language model: use --dataset text")
        kwargs["vocab_size"] = meta["vocab_size"]
        if recipe.model != "lstm":
            kwargs["block_size"] = recipe.block_size
    return models.build(recipe.model, **kwargs), kwargs


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


def build_scheduler(opt, recipe: Recipe, total_steps: int):
    if recipe.schedule == "onecycle":
        return optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total_steps, pct_start=0.15)
    if recipe.schedule == "cosine":
        return optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


# --------------------------------------------------------------------------- one step / evaluation
def compute_loss(model, recipe: Recipe, x, y):
    """(loss, number of correct predictions or None) for one batch."""
    if recipe.dataset == "fashion-mnist":
        logits = model(x)
        return F.cross_entropy(logits, y), int((logits.argmax(1) == y).sum().item())
    if recipe.model == "lstm":
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)), None
    _, loss = model(x, y)
    return loss, None


def evaluate(model, recipe: Recipe, batches) -> dict:
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with ember.no_grad():
        for x, y in batches.epoch(seed=0, epoch=0):
            if recipe.dataset == "fashion-mnist":
                logits = model(x)
                total_loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(1) == y).sum().item())
                count += len(y)
            else:
                if recipe.model == "lstm":
                    logits = model(x)
                    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
                else:
                    logits, _ = model(x)
                    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
                total_loss += loss.item() * y.numel()
                count += y.numel()
    model.train()
    out = {"loss": total_loss / max(count, 1)}
    if recipe.dataset == "fashion-mnist":
        out["accuracy"] = correct / max(count, 1)
    return out


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, state: dict) -> None:
    ember.save(state, path)


def _state(model, opt, sched, recipe, model_kwargs, meta, position, history, args, progress=None) -> dict:
    return {
        "progress": progress or {},
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": ember.get_rng_state(),
        "epoch": position[0],
        "step_in_epoch": position[1],
        "history": history,
        "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()},
        "model_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model_kwargs.items()},
        "vocab": "".join(meta.get("vocab", [])),
        "seed": args.seed,
    }


# --------------------------------------------------------------------------- plots
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


# --------------------------------------------------------------------------- the loop
def train(args) -> dict:
    """Run (or resume) training as the parsed ``args`` say; returns the metrics dict."""
    from tqdm import tqdm

    if args.threads:
        ember.set_num_threads(args.threads)
    out = Path(args.out or f"runs/{args.model}")
    out.mkdir(parents=True, exist_ok=True)
    resume_path = None
    if args.resume:
        resume_path = Path(args.resume) if args.resume != "auto" else out / CHECKPOINT
        if not resume_path.exists():
            raise SystemExit(f"ember train: no checkpoint to resume at {resume_path}")

    recipe = make_recipe(args)
    ember.manual_seed(args.seed)
    train_b, test_b, meta = load_data(recipe, args)
    model, model_kwargs = build_model(recipe, meta)
    opt = build_optimizer(model, recipe)
    total_steps = recipe.epochs * len(train_b)
    sched = build_scheduler(opt, recipe, total_steps)
    history = {"epochs": [], "steps": []}
    start_epoch, skip = 0, 0
    resumed_progress: dict = {}
    if resume_path is not None:
        state = ember.load(resume_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ember.set_rng_state(state["rng"])
        history = state["history"]
        start_epoch, skip = state["epoch"], state["step_in_epoch"]
        resumed_progress = state.get("progress", {})
        print(f"resumed from {resume_path} at epoch {start_epoch + 1}, step {skip}")

    n_params = sum(p.numel() for p in model.parameters())
    print(f"training {recipe.model} ({n_params:,} parameters) on {recipe.dataset} for {recipe.epochs} epochs")
    position = (start_epoch, skip)
    progress: dict = {}
    try:
        for epoch in range(start_epoch, recipe.epochs):
            model.train()
            t0 = time.perf_counter()
            first = skip if epoch == start_epoch else 0
            # Running sums of the epoch so far: restored on resume, so the epoch's figures cover
            # the steps before the interruption too.
            progress = dict(resumed_progress) if first else {}
            seen, correct = progress.get("seen", 0), progress.get("correct", 0)
            loss_sum, steps = progress.get("loss_sum", 0.0), progress.get("steps", 0)
            t0 -= progress.get("elapsed", 0.0)
            bar = tqdm(
                train_b.epoch(args.seed, epoch, skip=first),
                total=len(train_b),
                initial=first,
                desc=f"epoch {epoch + 1}/{recipe.epochs}",
                dynamic_ncols=True,
                disable=args.quiet,
            )
            for i, (x, y) in enumerate(bar, start=first):
                loss, right = compute_loss(model, recipe, x, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                lv = loss.item()
                if not math.isfinite(lv):
                    raise FloatingPointError(f"loss became {lv} at epoch {epoch + 1}, step {i}")
                history["steps"].append(lv)
                seen += len(y)
                steps += 1
                loss_sum += lv
                if right is not None:
                    correct += right
                position = (epoch, i + 1)
                progress = {
                    "seen": seen,
                    "correct": correct,
                    "loss_sum": loss_sum,
                    "steps": steps,
                    "elapsed": time.perf_counter() - t0,
                }
                rate = seen / (time.perf_counter() - t0)
                post = {"loss": f"{loss_sum / steps:.4f}", "samples/s": f"{rate:.0f}"}
                if right is not None:
                    post["acc"] = f"{correct / seen:.4f}"
                bar.set_postfix(post, refresh=False)
                if args.checkpoint_every and (i + 1) % args.checkpoint_every == 0:
                    save_checkpoint(
                        out / CHECKPOINT,
                        _state(model, opt, sched, recipe, model_kwargs, meta, position, history, args, progress),
                    )
            bar.close()
            elapsed = time.perf_counter() - t0
            ev = evaluate(model, recipe, test_b)
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
            if recipe.model == "moe-gpt":
                row["expert_token_share"] = model.expert_load()
            history["epochs"].append(row)
            position = (epoch + 1, 0)
            save_checkpoint(
                out / CHECKPOINT, _state(model, opt, sched, recipe, model_kwargs, meta, position, history, args)
            )
            msg = f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, test loss {ev['loss']:.4f}"
            if "accuracy" in ev:
                msg += f", test accuracy {ev['accuracy']:.4f}"
            print(msg + f" ({elapsed:.0f}s)")
    except KeyboardInterrupt:
        state = _state(model, opt, sched, recipe, model_kwargs, meta, position, history, args, progress)
        save_checkpoint(out / CHECKPOINT, state)
        print(
            f"\ninterrupted: checkpoint saved at epoch {position[0] + 1}, step {position[1]}; "
            f"continue with: ember train --model {args.model} --out {out} --resume"
        )
        raise SystemExit(130) from None

    metrics = {
        "model": recipe.model,
        "dataset": recipe.dataset,
        "parameters": n_params,
        "recipe": _state(model, opt, sched, recipe, model_kwargs, meta, position, history, args)["recipe"],
        "epochs": history["epochs"],
        "final": history["epochs"][-1] if history["epochs"] else None,
    }
    write_json(out / "metrics.json", metrics)
    if history["epochs"]:
        plot_curves(history, out / "curves.png")
    print(f"wrote {out / CHECKPOINT}, {out / 'metrics.json'}, {out / 'curves.png'}")
    return metrics
