"""ONNX export, for devices Ember does not run on.

``ember.onnx.export`` runs the model once under the dispatch point's capture mode (the model's
tensors are traced by meta stand-ins: nothing is computed), maps each captured primitive to ONNX
nodes through one table (``ember.onnx._emitters.EMITTERS``), writes parameters and buffers as
initializers with their real values, and checks the result with ``onnx.checker``. It needs the
``onnx`` package (``pip install ember[onnx]``).

Example:
    >>> import io, ember, ember.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    >>> f = io.BytesIO()
    >>> ember.onnx.export(model, (ember.randn(2, 4),), f, input_names=["x"],
    ...                   output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
"""

from __future__ import annotations

from ember.onnx._export import export
from ember.onnx._state import is_in_onnx_export
from ember.onnx.errors import UnsupportedOperatorError

__all__ = ["export", "is_in_onnx_export", "UnsupportedOperatorError"]
