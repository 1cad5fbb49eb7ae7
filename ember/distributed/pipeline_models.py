"""Cut the registry's models into pipeline stages: a GPT, or a model that is (or wraps) a Sequential.

A GPT becomes the layer list ``[embedding (wte + wpe), block 0, ..., block L-1, head (ln_f +
lm_head)]``, cut into consecutive stages of about equal parameter counts like
:func:`~ember.distributed.pipeline.split_sequential`. The stages hold the model's own modules
(no copies), so training a stage trains the model's parameters on the rank that owns them.

GPT ties the embedding to the LM head: the first stage's embedding and the last stage's head
share one weight. :func:`tied_parameters` finds such weights; the pipeline run all-reduces
their gradients between the stages that hold them (as Megatron-LM does), so the copies on
different ranks take identical steps.

Example (``ember run -n 2``):
    >>> stages = split_model(GPT(cfg), 2)          # [embedding + blocks, blocks + head]  # doctest: +SKIP
    >>> stage = PipelineStage(stages[rank], rank, 2)                                      # doctest: +SKIP
"""

from __future__ import annotations

import ember
from ember import nn
from ember.distributed.pipeline import split_sequential

__all__ = ["GPTEmbedding", "GPTBlockStage", "GPTHead", "split_gpt", "split_model", "tied_parameters"]


class GPTEmbedding(nn.Module):
    """Token + position embedding of a GPT (its own modules): ids (B, T) -> (B, T, C)."""

    def __init__(self, gpt):
        super().__init__()
        self.wte, self.wpe, self.drop = gpt.transformer.wte, gpt.transformer.wpe, gpt.transformer.drop

    def forward(self, idx):
        pos = ember.arange(0, idx.shape[1], dtype=ember.long)
        return self.drop(self.wte(idx) + self.wpe(pos))


class GPTBlockStage(nn.Module):
    """One transformer block without the key/value cache: (B, T, C) -> (B, T, C)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)[0]


class GPTHead(nn.Module):
    """Final LayerNorm and LM head: (B, T, C) -> logits (B, T, V)."""

    def __init__(self, gpt):
        super().__init__()
        self.ln_f, self.lm_head = gpt.transformer.ln_f, gpt.lm_head

    def forward(self, x):
        return self.lm_head(self.ln_f(x))


def split_gpt(gpt, num_stages: int) -> list[nn.Sequential]:
    """``num_stages`` Sequentials: the embedding on the first, the blocks spread, the head on the last."""
    if num_stages < 2:
        raise ValueError(f"split_gpt: a pipeline needs at least 2 stages, got {num_stages}")
    if len(gpt.transformer.h) + 2 < num_stages:
        raise ValueError(f"split_gpt: {len(gpt.transformer.h)} blocks cannot fill {num_stages} stages")
    layers = [GPTEmbedding(gpt), *[GPTBlockStage(b) for b in gpt.transformer.h], GPTHead(gpt)]
    return split_sequential(nn.Sequential(*layers), num_stages)


def split_model(model, num_stages: int) -> list[nn.Sequential]:
    """Stages of a GPT, an ``nn.Sequential``, or a model whose forward is its Sequential ``net``."""
    from ember.models.gpt import GPT

    if isinstance(model, GPT):
        if hasattr(model, "moe_layers"):
            raise ValueError("split_model: MoE-GPT is not pipelined here (its loss adds the routers' terms)")
        return split_gpt(model, num_stages)
    if isinstance(model, nn.Sequential):
        return split_sequential(model, num_stages)
    if isinstance(getattr(model, "net", None), nn.Sequential):
        return split_sequential(model.net, num_stages)
    raise ValueError(f"split_model: {type(model).__name__} is neither a GPT nor a Sequential model")


def tied_parameters(stages: list[nn.Module]) -> list[tuple]:
    """``(parameter, stage indices)`` for every parameter held by more than one stage."""
    holders: dict[int, tuple] = {}
    for i, stage in enumerate(stages):
        for p in stage.parameters():
            p_, seen = holders.get(id(p), (p, ()))
            if i not in seen:
                holders[id(p)] = (p_, (*seen, i))
    return [(p, idx) for p, idx in holders.values() if len(idx) > 1]
