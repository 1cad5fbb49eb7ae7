"""``MultiheadAttention`` with PyTorch's parameters (``in_proj_weight``, ``in_proj_bias``, ``out_proj``).

Masks follow PyTorch: in ``key_padding_mask`` (N, S) and ``attn_mask`` (L, S) or (N*heads, L, S)
a bool True means "may NOT attend"; float masks are added to the scores. With
``need_weights=False`` the heads run through the fused ``scaled_dot_product_attention``; with
weights the same computation is composed with ember ops so the probabilities can be returned
(averaged over heads unless ``average_attn_weights=False``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ember.nn import init
from ember.nn.functional.attention import _Spec, attention_composite, scaled_dot_product_attention
from ember.nn.functional.linear import linear
from ember.nn.modules.linear import NonDynamicallyQuantizableLinear
from ember.nn.modules.module import Module
from ember.nn.parameter import Parameter
from ember.ops._base import _wrap
from ember.ops.creation import empty
from ember.random import numpy_generator
from ember.tensor import Tensor

__all__ = ["MultiheadAttention"]


def _float_mask(mask: Tensor | None, dtype) -> np.ndarray | None:
    """A bool "disallowed" mask becomes 0 / -inf; a float mask passes through (as arrays)."""
    if mask is None:
        return None
    d = mask._data
    if d.dtype == np.bool_:
        return np.where(d, -np.inf, 0.0).astype(dtype.np if hasattr(dtype, "np") else dtype)
    return d


class MultiheadAttention(Module):
    """Multi-head attention: ``out_proj(concat_h softmax(Q_h K_h^T / sqrt(d) + mask) V_h)``.

    Args:
        embed_dim: model width E. num_heads: heads (E must divide evenly). dropout: on attention
        probabilities (training only). bias: biases of the projections. kdim, vdim: key/value widths
        (separate ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when they differ from E).
        batch_first: (N, L, E) instead of (L, N, E).

    Example:
        >>> import ember
        >>> mha = ember.nn.MultiheadAttention(16, 4, batch_first=True)
        >>> x = ember.randn(2, 5, 16)
        >>> out, w = mha(x, x, x)
        >>> out.shape, w.shape
        (ember.Size([2, 5, 16]), ember.Size([2, 5, 5]))
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(
                f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and num_heads={num_heads} instead"
            )
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not supported")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        kw = {"device": device, "dtype": dtype}
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty((3 * embed_dim, embed_dim), **kw))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(empty((embed_dim, embed_dim), **kw))
            self.k_proj_weight = Parameter(empty((embed_dim, self.kdim), **kw))
            self.v_proj_weight = Parameter(empty((embed_dim, self.vdim), **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **kw)
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _project(self, query, key, value):
        e = self.embed_dim
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            if query is key and key is value:
                return linear(query, w, b).chunk(3, -1)
            wq, wk, wv = w[:e], w[e : 2 * e], w[2 * e :]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return linear(query, wq, bq), linear(key, wk, bk), linear(value, wv, bv)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ):
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
        if key_padding_mask is not None and attn_mask is not None and key_padding_mask.dtype != attn_mask.dtype:
            warnings.warn(
                "Support for mismatched key_padding_mask and attn_mask is deprecated. Use same type for both instead.",
                stacklevel=2,
            )
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            same_kv = key is value
            same_qk = query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)
        tgt_len, bsz, e = query.shape
        src_len = key.shape[0]
        if e != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {e}")
        heads, hd = self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value)
        # (L, N, E) -> (N, heads, L, hd)
        q = q.reshape(tgt_len, bsz, heads, hd).permute(1, 2, 0, 3)
        k = k.reshape(src_len, bsz, heads, hd).permute(1, 2, 0, 3)
        v = v.reshape(src_len, bsz, heads, hd).permute(1, 2, 0, 3)

        dtype = query._data.dtype
        mask = _float_mask(attn_mask, dtype)
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(bsz, heads, tgt_len, src_len)
        kpm = _float_mask(key_padding_mask, dtype)
        if kpm is not None:
            kpm = kpm.reshape(bsz, 1, 1, src_len)
            mask = kpm if mask is None else mask + kpm
        mask_t = None if mask is None else _wrap(np.asarray(mask, dtype=dtype), query.device)
        p = self.dropout if self.training else 0.0

        if need_weights:
            drop = None
            if p > 0:
                keep = numpy_generator(None).random((bsz, heads, tgt_len, src_len)) >= p
                drop = keep.astype(dtype) / dtype.type(1 - p)
            spec = _Spec(1.0 / math.sqrt(hd), None, False, drop, 1, mask_t is not None)
            out, weights = attention_composite(q, k, v, mask_t, spec)
        else:
            out = scaled_dot_product_attention(q, k, v, attn_mask=mask_t, dropout_p=p)
            weights = None
        out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, e)  # (L, N, E)
        out = self.out_proj(out)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        if unbatched:
            out = out.squeeze(1)
            if weights is not None:
                weights = weights.squeeze(0)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights
