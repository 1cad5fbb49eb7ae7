"""The model zoo: each model in one readable file, written against Ember's PyTorch-style API.

``MLP`` and ``ResNet`` classify images; ``LSTMLanguageModel``, ``GPT`` and ``MoEGPT`` model
character sequences. ``build(name, **kwargs)`` makes one by the name ``ember train`` uses.
"""

from __future__ import annotations

from ember.models.gpt import GPT, GPTConfig
from ember.models.lstm_lm import LSTMLanguageModel
from ember.models.mlp import MLP
from ember.models.moe_gpt import MoEGPT
from ember.models.resnet import ResNet

__all__ = ["MLP", "ResNet", "LSTMLanguageModel", "GPT", "GPTConfig", "MoEGPT", "build"]


def build(name: str, **kwargs):
    """Make a model by its command-line name: mlp, resnet, lstm, gpt or moe-gpt."""
    if name == "mlp":
        return MLP(**kwargs)
    if name == "resnet":
        return ResNet(**kwargs)
    if name == "lstm":
        return LSTMLanguageModel(**kwargs)
    if name == "gpt":
        return GPT(GPTConfig(**kwargs))
    if name == "moe-gpt":
        return MoEGPT(GPTConfig(**kwargs))
    raise ValueError(f"unknown model '{name}' (expected one of mlp, resnet, lstm, gpt, moe-gpt)")
