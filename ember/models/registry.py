"""The one model registry: name -> builder, task and default training recipe.

Everything that needs the list of models (``ember train``'s choices, ``models.build``, resume,
``ember generate``, the PyTorch reference runs) reads it from here. A *task* says what the data
is, how a batch becomes a loss, and which metrics an evaluation reports, so the training loop
(``ember.cli.trainer.Trainer``) never branches on a model name.

Example:
    >>> from ember.models.registry import MODELS
    >>> sorted(MODELS)
    ['gpt', 'lstm', 'mlp', 'moe-gpt', 'resnet']
    >>> MODELS["mlp"].task.dataset
    'fashion-mnist'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

__all__ = ["Recipe", "Task", "Classification", "LanguageModeling", "ModelSpec", "MODELS", "build", "recipe_dict"]


@dataclass
class Recipe:
    model: str  # a name in MODELS
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


def recipe_dict(recipe: Recipe) -> dict:
    """The recipe as JSON-ready values (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(recipe).items()}


class Task:
    """What a model is trained on and how a batch is scored."""

    dataset: str
    kind: str  # for errors: "model 'mlp' classifies images"
    reports_accuracy = False

    def batches(self, recipe: Recipe, data_root=None, text=None):
        """``(train batches, evaluation batches, meta)``; meta holds what the builder needs."""
        raise NotImplementedError

    def model_kwargs(self, recipe: Recipe, meta: dict) -> dict:
        raise NotImplementedError

    def loss(self, model, x, y):
        """``(mean loss, number of correct predictions or None)`` of one training batch."""
        raise NotImplementedError

    def eval_batch(self, model, x, y) -> tuple:
        """``(summed loss, number of correct or None, count)`` of one evaluation batch."""
        raise NotImplementedError


class Classification(Task):
    """Image classification on Fashion-MNIST; the model returns logits (B, classes)."""

    dataset, kind = "fashion-mnist", "classifies images"
    reports_accuracy = True

    def batches(self, recipe, data_root=None, text=None):
        from ember.cli.batches import ImageBatches
        from ember.datasets import FashionMNIST

        train = FashionMNIST(root=data_root, train=True)
        test = FashionMNIST(root=data_root, train=False)
        tr = ImageBatches(train.data.numpy(), train.targets.numpy(), recipe.batch_size, shuffle=True)
        te = ImageBatches(test.data.numpy(), test.targets.numpy(), 500, shuffle=False)
        return tr, te, {"num_classes": 10}

    def model_kwargs(self, recipe, meta):
        return {**recipe.model_kwargs, "num_classes": meta["num_classes"]}

    def loss(self, model, x, y):
        from ember.nn import functional as F

        logits = model(x)
        return F.cross_entropy(logits, y), int((logits.argmax(1) == y).sum().item())

    def eval_batch(self, model, x, y):
        from ember.nn import functional as F

        logits = model(x)
        loss = F.cross_entropy(logits, y, reduction="sum").item()
        return loss, int((logits.argmax(1) == y).sum().item()), len(y)


class LanguageModeling(Task):
    """Next-character prediction on a text corpus. ``returns_loss``: the model's forward is
    ``(logits, loss) = model(x, y)`` (GPT, nanoGPT's convention); otherwise it returns logits."""

    dataset, kind = "text", "is a language model"

    def __init__(self, returns_loss: bool, uses_block_size: bool):
        self.returns_loss, self.uses_block_size = returns_loss, uses_block_size

    def batches(self, recipe, data_root=None, text=None):
        from ember.cli.batches import TextBatches
        from ember.datasets import CharTextDataset

        train = CharTextDataset(text, block_size=recipe.block_size, split="train")
        val = CharTextDataset(text, block_size=recipe.block_size, split="val")
        tr = TextBatches(train.data.numpy(), recipe.batch_size, recipe.block_size, recipe.steps_per_epoch)
        te = TextBatches(val.data.numpy(), recipe.batch_size, recipe.block_size, recipe.eval_batches)
        return tr, te, {"vocab": train.itos, "vocab_size": train.vocab_size}

    def model_kwargs(self, recipe, meta):
        kwargs = {**recipe.model_kwargs, "vocab_size": meta["vocab_size"]}
        if self.uses_block_size:
            kwargs["block_size"] = recipe.block_size
        return kwargs

    def loss(self, model, x, y):
        from ember.nn import functional as F

        if self.returns_loss:
            return model(x, y)[1], None
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)), None

    def eval_batch(self, model, x, y):
        from ember.nn import functional as F

        logits = model(x)[0] if self.returns_loss else model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        return loss.item() * y.numel(), None, y.numel()


@dataclass
class ModelSpec:
    name: str
    builder: Callable  # builder(**kwargs) -> Module
    task: Task
    recipe: Recipe


def _gpt(**kw):
    from ember.models.gpt import GPT, GPTConfig

    return GPT(GPTConfig(**kw))


def _moe_gpt(**kw):
    from ember.models.gpt import GPTConfig
    from ember.models.moe_gpt import MoEGPT

    return MoEGPT(GPTConfig(**kw))


def _mlp(**kw):
    from ember.models.mlp import MLP

    return MLP(**kw)


def _resnet(**kw):
    from ember.models.resnet import ResNet

    return ResNet(**kw)


def _lstm(**kw):
    from ember.models.lstm_lm import LSTMLanguageModel

    return LSTMLanguageModel(**kw)


_IMAGES = Classification()
_GPT_TASK = LanguageModeling(returns_loss=True, uses_block_size=True)
_GPT_KW = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "mlp",
            _mlp,
            _IMAGES,
            Recipe("mlp", "fashion-mnist", epochs=2, batch_size=128, lr=4e-3, optimizer="adam",
                   model_kwargs={"hidden": (512, 256), "batch_norm": True}),
        ),
        ModelSpec(
            "resnet",
            _resnet,
            _IMAGES,
            Recipe("resnet", "fashion-mnist", epochs=4, batch_size=128, lr=4e-3, optimizer="adamw",
                   weight_decay=5e-4, model_kwargs={"depth": 8, "widths": (16, 32, 64)}),
        ),
        ModelSpec(
            "lstm",
            _lstm,
            LanguageModeling(returns_loss=False, uses_block_size=False),
            Recipe("lstm", "text", epochs=4, batch_size=32, lr=3e-3, optimizer="adam", steps_per_epoch=250,
                   model_kwargs={"embed_dim": 64, "hidden_size": 256, "num_layers": 2, "dropout": 0.0}),
        ),
        ModelSpec(
            "gpt",
            _gpt,
            _GPT_TASK,
            Recipe("gpt", "text", epochs=10, batch_size=32, lr=2e-3, optimizer="adamw", weight_decay=0.1,
                   steps_per_epoch=250, model_kwargs=dict(_GPT_KW)),
        ),
        ModelSpec(
            "moe-gpt",
            _moe_gpt,
            _GPT_TASK,
            Recipe("moe-gpt", "text", epochs=4, batch_size=32, lr=2e-3, optimizer="adamw", weight_decay=0.1,
                   steps_per_epoch=250, model_kwargs={**_GPT_KW, "moe_num_experts": 8, "moe_top_k": 2}),
        ),
    )
}  # fmt: skip


def build(name: str, **kwargs):
    """Make a model by its registry name (``ember train --model``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}' (expected one of {', '.join(MODELS)})")
    return MODELS[name].builder(**kwargs)
