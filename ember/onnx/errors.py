"""Export errors, as PyTorch's ``torch.onnx.errors`` names them."""

from __future__ import annotations

__all__ = ["UnsupportedOperatorError"]


class UnsupportedOperatorError(RuntimeError):
    """An op in the model has no ONNX export; the message names the op."""
