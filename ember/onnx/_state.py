"""Whether an export is tracing the model (PyTorch: ``torch.onnx.is_in_onnx_export``)."""

from __future__ import annotations

__all__ = ["is_in_onnx_export"]

_exporting = [False]


def is_in_onnx_export() -> bool:
    """True while ``ember.onnx.export`` runs the model (modules may take an exportable path)."""
    return _exporting[0]
