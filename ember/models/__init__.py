"""The model zoo: each model in one readable file, written against Ember's PyTorch-style API.

``MLP`` and ``ResNet`` classify images; ``LSTMLanguageModel``, ``GPT`` and ``MoEGPT`` model
character sequences. ``build(name, **kwargs)`` makes one by its name in the registry
(``registry.MODELS``: builder, task and training recipe per model).
"""

from __future__ import annotations

from ember.models.gpt import GPT, GPTConfig
from ember.models.lstm_lm import LSTMLanguageModel
from ember.models.mlp import MLP
from ember.models.moe_gpt import MoEGPT
from ember.models.registry import MODELS, build
from ember.models.resnet import ResNet

__all__ = ["MLP", "ResNet", "LSTMLanguageModel", "GPT", "GPTConfig", "MoEGPT", "MODELS", "build"]
