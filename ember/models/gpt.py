"""A GPT in one file, after nanoGPT: causal self-attention blocks, tied embeddings, sampling.

``generate`` keeps a key/value cache per layer, so each new token costs one position's work
instead of re-running the whole context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ember
from ember import nn
from ember.nn import functional as F
from ember.utils.checkpoint import checkpoint

__all__ = ["GPTConfig", "CausalSelfAttention", "MLP", "Block", "GPT"]


@dataclass
class GPTConfig:
    block_size: int = 64  # longest context the model attends over
    vocab_size: int = 128  # number of token ids
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # residual stream width
    dropout: float = 0.0  # dropout on attention weights, residual branches and embeddings
    bias: bool = True  # biases in Linear and LayerNorm layers
    moe_num_experts: int = 8  # MoE-GPT only: experts per MoE layer
    moe_top_k: int = 2  # MoE-GPT only: experts each token is routed to
    moe_capacity_factor: float = 1.25  # MoE-GPT only: expert capacity relative to an even split
    moe_aux_loss_coef: float = 0.01  # MoE-GPT only: weight of the load-balancing loss
    checkpoint: bool = False  # training: recompute each block's activations in backward (less memory)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            past_k, past_v = cache
            if past_k is not None:
                k = ember.cat([past_k, k], dim=2)  # (B, nh, T_past + T, hs)
                v = ember.cat([past_v, v], dim=2)
            cache = (k, v)
        # With a cache, the new queries sit at the end of the sequence: causal masking for a
        # single new token is "attend to everything", which is_causal=False gives.
        causal = cache is None or T > 1
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y)), cache


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, mlp: nn.Module | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = mlp if mlp is not None else MLP(cfg)

    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        x = x + a
        return x + self.mlp(self.ln_2(x)), cache


def _block_output(block: Block, x):
    return block(x)[0]


class GPT(nn.Module):
    """A decoder-only transformer language model.

    Shape:
        input (B, T) token ids with T <= block_size; output (B, T, vocab_size) logits, and the
        mean cross-entropy when ``targets`` (B, T) are given.

    Example:
        >>> import ember
        >>> model = GPT(GPTConfig(vocab_size=10, n_layer=1, n_head=2, n_embd=8, block_size=8))
        >>> logits, loss = model(ember.zeros(1, 4, dtype=ember.long))
        >>> logits.shape
        ember.Size([1, 4, 10])
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg, self._make_mlp(cfg)) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _make_mlp(self, cfg: GPTConfig):
        return None

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        """``(logits, loss)`` as nanoGPT: ``loss`` is the mean cross-entropy, None without targets."""
        logits, _ = self.decode(idx)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def decode(self, idx, caches=None, pos_offset: int = 0):
        """``(logits, caches)``: the logits of ``idx`` (B, T) placed at ``pos_offset``, attending over
        the key/value ``caches`` of earlier positions (one ``(k, v)`` per block, or None)."""
        B, T = idx.shape
        if pos_offset + T > self.config.block_size:
            raise ValueError(f"sequence of length {pos_offset + T} exceeds block_size {self.config.block_size}")
        pos = ember.arange(pos_offset, pos_offset + T, dtype=ember.long)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        new_caches = []
        for i, block in enumerate(self.transformer.h):
            if self.config.checkpoint and caches is None and self.training and ember.is_grad_enabled():
                x, c = checkpoint(_block_output, block, x, use_reentrant=False), None
            else:
                x, c = block(x, None if caches is None else caches[i])
            new_caches.append(c)
        return self.lm_head(self.transformer.ln_f(x)), new_caches  # (B, T, V)

    @ember.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None):
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T), one token at a time.

        A key/value cache makes each step attend over cached keys; when the context would exceed
        ``block_size``, the cache restarts from the last ``block_size // 2`` tokens.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        was_training = self.training
        self.eval()
        bs = self.config.block_size
        caches = None
        fed = 0  # positions already in the cache
        for _ in range(max_new_tokens):
            if caches is None or fed >= bs:
                ctx = idx[:, -(bs // 2 if fed >= bs else bs) :]
                caches = [(None, None) for _ in self.transformer.h]
                logits, caches = self.decode(ctx, caches, pos_offset=0)
                fed = ctx.size(1)
            else:
                logits, caches = self.decode(idx[:, -1:], caches, pos_offset=fed)
                fed += 1
            logits = logits[:, -1, :] / temperature  # (B, V)
            if top_k is not None:
                v, _ = ember.topk(logits, min(top_k, logits.size(-1)))
                logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
            probs = F.softmax(logits, dim=-1)
            nxt = ember.multinomial(probs, num_samples=1)  # (B, 1)
            idx = ember.cat([idx, nxt], dim=1)
        self.train(was_training)
        return idx
