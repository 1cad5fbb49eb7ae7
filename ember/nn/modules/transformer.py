"""``TransformerEncoderLayer`` and ``TransformerEncoder`` with PyTorch's structure and parameter names.

The layer is self-attention then a feed-forward block, each with dropout, a residual connection
and a LayerNorm, either after the residual (``norm_first=False``, the original Transformer) or
before the sublayer (``norm_first=True``, pre-LN). ``TransformerEncoder`` stacks deep copies of
one layer. Ember has no nested tensors, but it keeps what PyTorch's nested-tensor fast path does
to the values: in inference (eval mode, no gradient to the weights) with a left-aligned key
padding mask and no attention mask, the outputs at padded positions are zeros before the final
norm, as PyTorch returns them, unless ``enable_nested_tensor=False``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

from ember.autograd.grad_mode import state as grad_state
from ember.nn.functional.activation import gelu, relu
from ember.nn.modules._transformer_masks import canonical_mask, detect_is_causal, none_or_dtype, seq_len
from ember.nn.modules.activation import GELU, ReLU
from ember.nn.modules.attention import MultiheadAttention
from ember.nn.modules.container import ModuleList
from ember.nn.modules.dropout import Dropout
from ember.nn.modules.linear import Linear
from ember.nn.modules.module import Module
from ember.nn.modules.normalization import LayerNorm
from ember.tensor import Tensor

__all__ = ["TransformerEncoderLayer", "TransformerEncoder"]


def _activation(activation):
    if activation == "relu":
        return relu
    if activation == "gelu":
        return gelu
    if callable(activation):
        return activation
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


def _relu_or_gelu(activation) -> int:
    """PyTorch's ``activation_relu_or_gelu`` flag: 1 for ReLU, 2 for GELU, 0 otherwise."""
    if activation is relu or isinstance(activation, ReLU):
        return 1
    if activation is gelu or isinstance(activation, GELU):
        return 2
    return 0


class TransformerEncoderLayer(Module):
    """Self-attention + feed-forward block, post-LN (default) or pre-LN (``norm_first=True``).

    Args:
        d_model: width. nhead: attention heads. dim_feedforward: hidden width of the MLP (2048).
        dropout: after attention, inside and after the MLP (0.1). activation: "relu", "gelu" or a
        callable. layer_norm_eps: LayerNorm epsilon (1e-5). batch_first: (N, S, E) input.
        norm_first: pre-LN. bias: biases in linears and LayerNorms.

    Example:
        >>> import ember
        >>> layer = ember.nn.TransformerEncoderLayer(d_model=16, nhead=4, batch_first=True)
        >>> layer(ember.randn(2, 10, 16)).shape
        ember.Size([2, 10, 16])
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)
        self.activation_relu_or_gelu = _relu_or_gelu(self.activation)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        src_key_padding_mask = canonical_mask(
            src_key_padding_mask, "src_key_padding_mask", none_or_dtype(src_mask), "src_mask", src.dtype
        )
        src_mask = canonical_mask(src_mask, "src_mask", None, "", src.dtype, check_other=False)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class TransformerEncoder(Module):
    """A stack of ``num_layers`` copies of ``encoder_layer``, then an optional final ``norm``.

    Example:
        >>> import ember
        >>> layer = ember.nn.TransformerEncoderLayer(d_model=16, nhead=4)
        >>> enc = ember.nn.TransformerEncoder(layer, num_layers=2)
        >>> enc(ember.randn(10, 2, 16)).shape
        ember.Size([10, 2, 16])
    """

    def __init__(
        self,
        encoder_layer: TransformerEncoderLayer,
        num_layers: int,
        norm: Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ) -> None:
        super().__init__()
        self.layers = ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check
        why_not = _why_not_nested(encoder_layer)
        if enable_nested_tensor and why_not:
            warnings.warn(
                f"enable_nested_tensor is True, but self.use_nested_tensor is False because {why_not}", stacklevel=2
            )
            self.use_nested_tensor = False

    def _pads_to_zero(self, src: Tensor, mask, kpm) -> bool:
        """Whether PyTorch would run this call on nested tensors (padded outputs become zeros)."""
        first = self.layers[0]
        if not getattr(self, "use_nested_tensor", False) or first.training or src.dim() != 3:
            return False
        if kpm is None or mask is not None:
            return False
        if self.mask_check and not _left_aligned(kpm):
            return False
        if grad_state.enabled and (src.requires_grad or any(p.requires_grad for p in first.parameters())):
            return False
        return True

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        src_key_padding_mask = canonical_mask(
            src_key_padding_mask, "src_key_padding_mask", none_or_dtype(mask), "mask", src.dtype
        )
        mask = canonical_mask(mask, "mask", None, "", src.dtype, check_other=False)
        batch_first = self.layers[0].self_attn.batch_first
        is_causal = detect_is_causal(mask, is_causal, seq_len(src, batch_first))
        out = src
        for mod in self.layers:
            out = mod(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal)
        if self._pads_to_zero(src, mask, src_key_padding_mask):
            keep = (src_key_padding_mask == 0).to(out.dtype)  # (N, S): 1 where not padding
            out = out * (keep.unsqueeze(-1) if batch_first else keep.transpose(0, 1).unsqueeze(-1))
        if self.norm is not None:
            out = self.norm(out)
        return out


def _why_not_nested(layer) -> str:
    """PyTorch's reason (same words) for not using nested tensors with this layer, or ''."""
    name = "encoder_layer"
    if not isinstance(layer, TransformerEncoderLayer):
        return f"{name} was not TransformerEncoderLayer"
    if layer.norm_first:
        return f"{name}.norm_first was True"
    if not layer.self_attn.batch_first:
        return f"{name}.self_attn.batch_first was not True(use batch_first for better inference performance)"
    if not layer.self_attn._qkv_same_embed_dim:
        return f"{name}.self_attn._qkv_same_embed_dim was not True"
    if layer.self_attn.in_proj_bias is None:
        return f"{name}.self_attn was passed bias=False"
    if not layer.activation_relu_or_gelu:
        return f"{name}.activation_relu_or_gelu was not True"
    if layer.norm1.eps != layer.norm2.eps:
        return f"{name}.norm1.eps was not equal to {name}.norm2.eps"
    if layer.self_attn.num_heads % 2 == 1:
        return f"{name}.self_attn.num_heads is odd"
    return ""


def _left_aligned(kpm: Tensor) -> bool:
    """Every row of the (additive) key padding mask is real positions first, then padding."""
    pad = (kpm != 0).numpy()
    # Left-aligned: once padding starts in a row it never stops.
    return bool((pad[:, :-1] <= pad[:, 1:]).all()) if pad.shape[1] > 1 else True
