"""Mask helpers shared by the Transformer modules, with PyTorch's rules and messages.

``canonical_mask`` turns a bool "may not attend" mask into an additive float mask (0 / -inf) and
warns when a key padding mask and an attention mask have different dtypes; ``detect_is_causal``
decides, when ``is_causal`` is not given, whether a mask is exactly the causal one.
"""

from __future__ import annotations

import warnings

import numpy as np

from ember.ops.creation import full, zeros_like
from ember.ops.movement import triu
from ember.tensor import Tensor

__all__ = ["canonical_mask", "none_or_dtype", "generate_square_subsequent_mask", "detect_is_causal", "seq_len"]


def none_or_dtype(mask: Tensor | None):
    return None if mask is None else mask.dtype


def canonical_mask(mask, mask_name: str, other_type, other_name: str, target_type, check_other: bool = True):
    """``mask`` as an additive float mask of ``target_type`` (PyTorch's ``F._canonical_mask``)."""
    if mask is None:
        return None
    is_float = mask.dtype.is_floating_point
    if mask._data.dtype != np.bool_ and not is_float:
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if check_other and other_type is not None and mask.dtype != other_type:
        warnings.warn(
            f"Support for mismatched {mask_name} and {other_name} is deprecated. Use same type for both instead.",
            stacklevel=3,
        )
    if is_float:
        return mask
    return zeros_like(mask, dtype=target_type).masked_fill(mask, float("-inf"))


def generate_square_subsequent_mask(sz: int, device=None, dtype=None) -> Tensor:
    """The (sz, sz) causal mask: ``-inf`` above the diagonal, 0 on and below it."""
    return triu(full((sz, sz), float("-inf"), dtype=dtype, device=device), diagonal=1)


def seq_len(src: Tensor, batch_first: bool) -> int:
    if src.dim() == 2:
        return src.shape[0]
    return src.shape[1 if batch_first else 0]


def detect_is_causal(mask: Tensor | None, is_causal: bool | None, size: int | None = None) -> bool:
    """``is_causal`` when given; otherwise whether ``mask`` equals the causal mask of its size."""
    make_causal = is_causal is True
    if is_causal is None and mask is not None:
        sz = size if size is not None else mask.shape[-2]
        if tuple(mask.shape) == (sz, sz):
            causal = generate_square_subsequent_mask(sz, device=mask.device, dtype=mask.dtype)
            make_causal = bool((mask == causal).all())
        else:
            make_causal = False
    return make_causal
