"""Default training recipes of ``ember train``: one per model, each a plain dataclass.

A recipe says which dataset a model trains on and with which optimizer and schedule; command-line
options override single fields. The same recipe run in PyTorch is the reference quoted in
BENCHMARKS.md (``bench/train_reference.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recipe:
    model: str  # mlp | resnet | lstm | gpt | moe-gpt
    dataset: str  # fashion-mnist | text
    epochs: int  # passes over the data (text: blocks of `steps_per_epoch` batches)
    batch_size: int
    lr: float
    optimizer: str  # adam | adamw | sgd
    weight_decay: float = 0.0
    schedule: str = "onecycle"  # onecycle | cosine | constant
    steps_per_epoch: int = 0  # text only: batches per "epoch"
    eval_batches: int = 40  # text only: validation batches per evaluation
    block_size: int = 64  # text only: context length
    model_kwargs: dict = field(default_factory=dict)


RECIPES = {
    "mlp": Recipe(
        "mlp",
        "fashion-mnist",
        epochs=2,
        batch_size=128,
        lr=4e-3,
        optimizer="adam",
        model_kwargs={"hidden": (512, 256), "batch_norm": True},
    ),
    "resnet": Recipe(
        "resnet",
        "fashion-mnist",
        epochs=4,
        batch_size=128,
        lr=4e-3,
        optimizer="adamw",
        weight_decay=5e-4,
        model_kwargs={"depth": 8, "widths": (16, 32, 64)},
    ),
    "lstm": Recipe(
        "lstm",
        "text",
        epochs=4,
        batch_size=32,
        lr=3e-3,
        optimizer="adam",
        steps_per_epoch=250,
        model_kwargs={"embed_dim": 64, "hidden_size": 256, "num_layers": 2, "dropout": 0.0},
    ),
    "gpt": Recipe(
        "gpt",
        "text",
        epochs=10,
        batch_size=32,
        lr=2e-3,
        optimizer="adamw",
        weight_decay=0.1,
        steps_per_epoch=250,
        model_kwargs={"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0},
    ),
    "moe-gpt": Recipe(
        "moe-gpt",
        "text",
        epochs=4,
        batch_size=32,
        lr=2e-3,
        optimizer="adamw",
        weight_decay=0.1,
        steps_per_epoch=250,
        model_kwargs={"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "moe_num_experts": 8, "moe_top_k": 2},
    ),
}
