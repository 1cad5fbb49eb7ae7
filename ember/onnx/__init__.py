"""``ember.onnx``: export to ONNX, for devices Ember does not run on.

The exporter (``ember.onnx.export`` from a captured graph, checked with onnxruntime) is not built
yet; this package exists so that ``import ember.onnx`` works in PyTorch programs that import it
without exporting. Calling a missing function raises ``AttributeError`` rather than a fake export.

Example:
    >>> import ember.onnx
    >>> hasattr(ember.onnx, "export")
    False
"""

from __future__ import annotations

__all__: list[str] = []
