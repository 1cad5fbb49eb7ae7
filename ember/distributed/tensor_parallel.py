"""Tensor (Megatron-style) parallelism: sharded linears, a vocabulary-parallel embedding, a
vocabulary-parallel cross-entropy, and a tensor-parallel GPT built from an ordinary one.

A column-parallel linear keeps a slice of the output features (rows of the weight); a
row-parallel linear keeps a slice of the input features (columns) and sums the partial outputs
with one all-reduce. Chained column -> row (attention: heads split; MLP: hidden units split),
each sub-layer costs one all-reduce in the forward (``reduce_from_group``) and one in the
backward (``copy_to_group`` on its input). Every layer has ``from_...`` constructors that cut
an unsplit layer, so a tensor-parallel model starts from exactly the single-process weights.

Collective count, read as Megatron-LM's "one all-reduce per block in each direction": per
*parallel block* (the attention block, and the MLP block), so a transformer layer has two in
the forward and two in the backward. That is the minimum without sequence parallelism: the
LayerNorm and the residual between the two blocks need the whole (summed) activation, so the
attention output must be reduced before the MLP can start. The whole GPT adds one forward
all-reduce for the embedding, one backward all-reduce for the head's input and two small
(B*T)-row all-reduces for the vocabulary-parallel cross-entropy; nothing else is communicated
(``tests/distributed/scripts/tp.py`` counts them).

Example (``ember run -n 2``):
    >>> tp = TensorParallelGPT.from_gpt(GPT(cfg))          # doctest: +SKIP
    >>> loss = tp(idx, targets)[1]                          # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

import ember
import ember.distributed as dist
from ember import nn
from ember.distributed.nn.functional import copy_to_group, gather_from_group, reduce_from_group, scatter_to_group
from ember.nn import functional as F
from ember.nn.parameter import Parameter

__all__ = [
    "ColumnParallelLinear",
    "RowParallelLinear",
    "VocabParallelEmbedding",
    "vocab_parallel_cross_entropy",
    "TensorParallelAttention",
    "TensorParallelMLP",
    "TensorParallelBlock",
    "TensorParallelGPT",
]


def _share(size: int, group, what: str) -> tuple[int, int]:
    n, r = dist.get_world_size(group), dist.get_rank(group)
    if size % n:
        raise ValueError(f"{what}: size {size} is not divisible by the {n} ranks of the tensor-parallel group")
    k = size // n
    return r * k, (r + 1) * k


def _param(a: np.ndarray) -> Parameter:
    return Parameter(ember.tensor(np.ascontiguousarray(a)))


class ColumnParallelLinear(nn.Module):
    """``y = x W_r^T + b_r``: this rank's slice of the output features.

    Args:
        gather_output: concatenate the slices (all-gather) so every rank gets the whole output.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gather_output: bool = False, group=None):
        super().__init__()
        lo, hi = _share(out_features, group, "ColumnParallelLinear")
        self.group, self.gather_output = group, gather_output
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(ember.empty(hi - lo, in_features))
        self.bias = Parameter(ember.zeros(hi - lo)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group=None, gather_output: bool = False, chunks: int = 1):
        """Cut an ``nn.Linear``; ``chunks`` > 1 splits each of that many row blocks (packed q, k, v)."""
        w = linear.weight.detach().numpy()
        b = linear.bias.detach().numpy() if linear.bias is not None else None
        out = w.shape[0] // chunks
        lo, hi = _share(out, group, "ColumnParallelLinear")
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.group, m.gather_output = group, gather_output
        m.in_features, m.out_features = w.shape[1], w.shape[0]
        m.weight = _param(np.concatenate([w[c * out + lo : c * out + hi] for c in range(chunks)]))
        m.bias = (
            _param(np.concatenate([b[c * out + lo : c * out + hi] for c in range(chunks)])) if b is not None else None
        )
        return m

    def forward(self, x):
        y = F.linear(copy_to_group(x, self.group), self.weight, self.bias)
        return gather_from_group(y, self.group) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """``y = sum_r x_r W_r^T + b``: this rank's slice of the input features, one all-reduce.

    Args:
        input_is_parallel: the input is already this rank's slice (after a column-parallel layer).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, input_is_parallel: bool = True, group=None
    ):
        super().__init__()
        lo, hi = _share(in_features, group, "RowParallelLinear")
        self.group, self.input_is_parallel = group, input_is_parallel
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(ember.empty(out_features, hi - lo))
        self.bias = Parameter(ember.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group=None, input_is_parallel: bool = True):
        w = linear.weight.detach().numpy()
        lo, hi = _share(w.shape[1], group, "RowParallelLinear")
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.group, m.input_is_parallel = group, input_is_parallel
        m.in_features, m.out_features = w.shape[1], w.shape[0]
        m.weight = _param(w[:, lo:hi])
        m.bias = _param(linear.bias.detach().numpy()) if linear.bias is not None else None
        return m

    def forward(self, x):
        if not self.input_is_parallel:
            x = scatter_to_group(x, self.group)
        y = reduce_from_group(F.linear(x, self.weight), self.group)
        return y + self.bias if self.bias is not None else y


class VocabParallelEmbedding(nn.Module):
    """An embedding whose rows (the vocabulary) are split across ranks; one all-reduce combines them.

    :meth:`from_embedding` pads a vocabulary that the ranks do not divide with zero rows at the
    end (as Megatron-LM does); ``vocab_size`` is the real size, ``num_embeddings`` the padded one.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, group=None):
        super().__init__()
        self.lo, self.hi = _share(num_embeddings, group, "VocabParallelEmbedding")
        self.group = group
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.vocab_size = num_embeddings
        self.weight = Parameter(ember.randn(self.hi - self.lo, embedding_dim))

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, group=None):
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.group = group
        m.vocab_size, m.embedding_dim = emb.weight.shape
        n = dist.get_world_size(group)
        m.num_embeddings = -(-m.vocab_size // n) * n
        m.lo, m.hi = _share(m.num_embeddings, group, "VocabParallelEmbedding")
        w = emb.weight.detach().numpy()
        w = np.concatenate([w, np.zeros((m.num_embeddings - m.vocab_size, m.embedding_dim), w.dtype)])
        m.weight = _param(w[m.lo : m.hi])
        return m

    def forward(self, idx):
        outside = (idx < self.lo) | (idx >= self.hi)
        local = (idx - self.lo).masked_fill(outside, 0)
        out = F.embedding(local, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_group(out, self.group)


def vocab_parallel_cross_entropy(logits, target, group=None, vocab_start: int | None = None):
    """Mean cross-entropy of logits split along the vocabulary (last dim) without gathering them.

    Two all-reduces of (N,)-sized data (the max; then the sum of exponentials and the target
    logit together, as one (N, 2) tensor) replace the all-gather of (N, V) logits.
    ``logits``: (N, V/n) this rank's slice; ``target``: (N,) ids.
    """
    v_local = logits.shape[-1]
    lo = dist.get_rank(group) * v_local if vocab_start is None else vocab_start
    with ember.no_grad():
        m = logits.max(dim=-1).values
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    shifted = logits - m.unsqueeze(-1)  # (N, V/n); the max is a constant for the gradient
    inside = (target >= lo) & (target < lo + v_local)
    local_t = (target - lo).masked_fill(~inside, 0)
    picked = shifted.gather(-1, local_t.unsqueeze(-1)).squeeze(-1).masked_fill(~inside, 0.0)
    both = reduce_from_group(ember.stack([shifted.exp().sum(dim=-1), picked], dim=-1), group)  # (N, 2)
    sum_exp, target_logit = both[:, 0], both[:, 1]
    return (sum_exp.log() - target_logit).mean()


class TensorParallelAttention(nn.Module):
    """Causal self-attention with this rank's heads (q, k, v column-parallel; projection row-parallel)."""

    @classmethod
    def from_attention(cls, attn, group=None):
        m = cls()
        n = dist.get_world_size(group)
        if attn.n_head % n:
            raise ValueError(f"TensorParallelAttention: {attn.n_head} heads cannot be split over {n} ranks")
        m.c_attn = ColumnParallelLinear.from_linear(attn.c_attn, group, chunks=3)
        m.c_proj = RowParallelLinear.from_linear(attn.c_proj, group)
        m.n_head = attn.n_head // n
        return m

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.c_attn(x).chunk(3, dim=2)  # each (B, T, C/n)
        hs = q.shape[-1] // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh/n, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh/n, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * hs)
        return self.c_proj(y)


class TensorParallelMLP(nn.Module):
    """GELU MLP with the hidden units split: column-parallel up, row-parallel down."""

    @classmethod
    def from_mlp(cls, mlp, group=None):
        m = cls()
        m.c_fc = ColumnParallelLinear.from_linear(mlp.c_fc, group)
        m.c_proj = RowParallelLinear.from_linear(mlp.c_proj, group)
        return m

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class TensorParallelBlock(nn.Module):
    """A GPT block (``ember.models.gpt.Block``) split over the tensor-parallel group.

    Per transformer layer: two all-reduces forward (after attention, after the MLP) and two
    backward (their inputs), i.e. one per parallel block in each direction, as Megatron-LM (see
    the module docstring for why two is the minimum). LayerNorms are replicated.
    """

    @classmethod
    def from_block(cls, block, group=None):
        m = cls()
        m.ln_1, m.ln_2 = _copy(block.ln_1), _copy(block.ln_2)
        m.attn = TensorParallelAttention.from_attention(block.attn, group)
        m.mlp = TensorParallelMLP.from_mlp(block.mlp, group)
        return m

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def _copy(module):
    import copy

    return copy.deepcopy(module)


class TensorParallelGPT(nn.Module):
    """``ember.models.gpt.GPT`` split over a tensor-parallel group (dropout off).

    The tied token embedding / LM head is vocabulary-parallel: one shard parameter serves both,
    and the loss is :func:`vocab_parallel_cross_entropy` on the (B*T, V/n) logit slices. A
    vocabulary the ranks do not divide is padded; the padding's logits are -inf.
    """

    @classmethod
    def from_gpt(cls, gpt, group=None):
        m = cls()
        m.group = group
        m.config = gpt.config
        m.wte = VocabParallelEmbedding.from_embedding(gpt.transformer.wte, group)
        m.wpe = _copy(gpt.transformer.wpe)
        m.h = nn.ModuleList([TensorParallelBlock.from_block(b, group) for b in gpt.transformer.h])
        m.ln_f = _copy(gpt.transformer.ln_f)
        return m

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = ember.arange(0, T, dtype=ember.long)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C), replicated
        for block in self.h:
            x = block(x)
        h = copy_to_group(self.ln_f(x), self.group)
        logits = F.linear(h, self.wte.weight)  # (B, T, V/n): this rank's vocabulary slice
        if self.wte.hi > self.wte.vocab_size:  # padding rows: never a prediction
            pad = ember.arange(self.wte.lo, self.wte.hi) >= self.wte.vocab_size
            logits = logits.masked_fill(pad, float("-inf"))
        loss = None
        if targets is not None:
            loss = vocab_parallel_cross_entropy(logits.view(B * T, -1), targets.view(-1), self.group, self.wte.lo)
        return logits, loss
