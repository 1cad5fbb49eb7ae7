"""The reference for ``ember train``: the same recipe, run with PyTorch (and with Ember) side by side.

The model files of ``ember/models`` are written in the PyTorch API; here each one is loaded a
second time with ``torch`` bound where the file says ``ember``, so both frameworks train the very
same architecture, with the same recipe (optimizer, parameter groups, schedule, batch order).
Per epoch it records time, samples/s, train loss and test accuracy for each framework. With
``--fw both`` each framework runs in its own process, one after the other: in one process the
OpenMP threads PyTorch leaves spinning take the cores from whatever runs next (a GPT step of Ember
measured 3x slower after PyTorch had run in the same process).

    python -m bench.train_reference --model mlp --epochs 2
    python -m bench.train_reference --model resnet --epochs 3 --fw torch
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path

FILES = {"mlp": "mlp.py", "resnet": "resnet.py", "gpt": "gpt.py", "lstm": "lstm_lm.py"}
CLASSES = {"mlp": "MLP", "resnet": "ResNet", "lstm": "LSTMLanguageModel"}


def load_model_source(name: str, framework: str):
    """The module of ``ember/models/<name>.py`` executed against ``framework`` ('ember' or 'torch')."""
    import ember.models

    path = Path(ember.models.__file__).with_name(FILES[name])
    src = path.read_text()
    if framework == "torch":
        src = (
            src.replace("from ember.nn import functional as F", "from torch.nn import functional as F")
            .replace("from ember import nn", "from torch import nn")
            .replace("import ember\n", "import torch as ember\n")
        )
    mod = types.ModuleType(f"{framework}_{name}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up there
    exec(compile(src, str(path), "exec"), mod.__dict__)  # noqa: S102 - our own model file
    return mod


def _framework(name: str):
    if name == "torch":
        import torch

        return torch
    import ember

    return ember


def run_image_recipe(model_name: str, fw_name: str, epochs: int, seed: int = 0, threads: int | None = None) -> list:
    """Train ``model_name`` on Fashion-MNIST with ``ember train``'s recipe; returns per-epoch rows."""
    from ember.cli.batches import ImageBatches
    from ember.cli.recipes import RECIPES
    from ember.datasets import FashionMNIST

    fw = _framework(fw_name)
    if threads:
        fw.set_num_threads(threads)
    fw.manual_seed(seed)
    recipe = RECIPES[model_name]
    train = FashionMNIST(train=True)
    test = FashionMNIST(train=False)
    tr = ImageBatches(train.data.numpy(), train.targets.numpy(), recipe.batch_size, shuffle=True)
    te = ImageBatches(test.data.numpy(), test.targets.numpy(), 500, shuffle=False)
    mod = load_model_source(model_name, fw_name)
    kwargs = dict(recipe.model_kwargs)
    model = getattr(mod, CLASSES[model_name])(num_classes=10, **kwargs)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt_cls = {"adam": fw.optim.Adam, "adamw": fw.optim.AdamW}[recipe.optimizer]
    opt = opt_cls(groups, lr=recipe.lr)
    sched = fw.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=epochs * len(tr), pct_start=0.15)
    F = fw.nn.functional

    def to_fw(x):
        return fw.from_numpy(x.numpy())

    rows = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum, steps, seen = 0.0, 0, 0
        for x, y in tr.epoch(seed, epoch):
            x, y = to_fw(x), to_fw(y)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
            steps += 1
            seen += len(y)
        elapsed = time.perf_counter() - t0
        model.eval()
        correct = 0
        with fw.no_grad():
            for x, y in te.epoch(0, 0):
                correct += int((model(to_fw(x)).argmax(1) == to_fw(y)).sum().item())
        rows.append(
            {
                "framework": fw_name,
                "epoch": epoch + 1,
                "seconds": elapsed,
                "samples_per_second": seen / elapsed,
                "train_loss": loss_sum / steps,
                "test_accuracy": correct / len(test.targets),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run_text_recipe(model_name: str, fw_name: str, epochs: int, seed: int = 0, threads: int | None = None) -> list:
    """Train the GPT of ``ember train --model gpt`` for ``epochs`` epochs; returns per-epoch rows."""
    from ember.cli.batches import TextBatches
    from ember.cli.recipes import RECIPES
    from ember.datasets import CharTextDataset

    fw = _framework(fw_name)
    if threads:
        fw.set_num_threads(threads)
    fw.manual_seed(seed)
    recipe = RECIPES[model_name]
    train = CharTextDataset(block_size=recipe.block_size, split="train")
    tr = TextBatches(train.data.numpy(), recipe.batch_size, recipe.block_size, recipe.steps_per_epoch)
    mod = load_model_source(model_name, fw_name)
    cfg = mod.GPTConfig(vocab_size=train.vocab_size, block_size=recipe.block_size, **recipe.model_kwargs)
    model = mod.GPT(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = fw.optim.AdamW(groups, lr=recipe.lr)
    total = recipe.epochs * len(tr)
    sched = fw.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.15)
    rows = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        loss_sum = 0.0
        for x, y in tr.epoch(seed, epoch):
            _, loss = model(fw.from_numpy(x.numpy()), fw.from_numpy(y.numpy()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        elapsed = time.perf_counter() - t0
        rows.append(
            {
                "framework": fw_name,
                "epoch": epoch + 1,
                "seconds": elapsed,
                "samples_per_second": len(tr) * recipe.batch_size / elapsed,
                "train_loss": loss_sum / len(tr),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp", choices=["mlp", "resnet", "gpt"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--fw", default="both", choices=["both", "ember", "torch"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    args = p.parse_args(argv)
    from ember.cli.recipes import RECIPES

    epochs = args.epochs or RECIPES[args.model].epochs
    if args.fw == "both":
        for fw in ("torch", "ember"):
            child = [sys.executable, "-m", "bench.train_reference", "--model", args.model, "--fw", fw]
            child += ["--epochs", str(epochs)] + (["--threads", str(args.threads)] if args.threads else [])
            child += ["--json", args.json] if args.json else []
            code = subprocess.run(child, check=False).returncode
            if code:
                return code
        return 0
    run = run_text_recipe if args.model == "gpt" else run_image_recipe
    rows = run(args.model, args.fw, epochs, threads=args.threads)
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({"model": args.model, **r}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
