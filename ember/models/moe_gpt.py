"""MoE-GPT: the GPT of ``gpt.py`` with every MLP replaced by a Mixture-of-Experts layer.

Each token is routed to ``moe_top_k`` of ``moe_num_experts`` expert MLPs; the load-balancing
auxiliary loss of every MoE layer, scaled by ``moe_aux_loss_coef``, is added to the training loss
so that the router keeps the experts evenly loaded.
"""

from __future__ import annotations

from ember import nn
from ember.models.gpt import GPT, GPTConfig

__all__ = ["MoEGPT"]


class MoEGPT(GPT):
    """GPT with ``ember.nn.MoE`` feed-forward layers.

    Example:
        >>> import ember
        >>> cfg = GPTConfig(vocab_size=10, n_layer=1, n_head=2, n_embd=8, block_size=8, moe_num_experts=4)
        >>> logits, loss = MoEGPT(cfg)(ember.zeros(1, 4, dtype=ember.long), ember.zeros(1, 4, dtype=ember.long))
        >>> loss.dim()
        0
    """

    def _make_mlp(self, cfg: GPTConfig):
        return nn.MoE(
            cfg.n_embd,
            4 * cfg.n_embd,
            num_experts=cfg.moe_num_experts,
            top_k=cfg.moe_top_k,
            capacity_factor=cfg.moe_capacity_factor,
        )

    def moe_layers(self) -> list:
        return [block.mlp for block in self.transformer.h]

    def forward(self, idx, targets=None):
        """``(logits, loss)`` as GPT, the loss with the routers' load-balancing term added."""
        logits, loss = super().forward(idx, targets)
        if loss is not None:
            loss = loss + self.config.moe_aux_loss_coef * sum(m.aux_loss for m in self.moe_layers())
        return logits, loss

    def expert_load(self) -> list:
        """Per layer, the share of routed tokens each expert received in the last forward."""
        shares = []
        for m in self.moe_layers():
            counts = m.tokens_per_expert.double()
            shares.append((counts / counts.sum().clamp_min(1)).tolist())
        return shares
