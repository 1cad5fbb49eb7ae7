"""The mode of ``ember.ops.dispatch.apply``: eager (no handler), profile or capture.

It lives apart from ``ops`` so the autograd engine can consult it (the profiler times gradient
rules through ``backward_hook``) without importing the op layer.
"""

from __future__ import annotations

__all__ = ["mode"]


class _Mode:
    """The active mode of ``apply``: ``handler`` is None in eager mode (the fast path)."""

    __slots__ = ("handler", "composite", "backward_hook", "data_read")

    def __init__(self):
        self.handler = None  # fn(prim, inputs, params) -> result, for profile and capture
        self.composite = None  # fn(name, fn, args, kwargs) -> result: composite ops (profile)
        self.backward_hook = None  # fn(node, grad) -> grads, wraps gradient rules (profile)
        # fn(tensor, what): Python is about to read a tensor's values (ember.compile: a graph
        # break while capturing; the pending ops run first in its lazy mode)
        self.data_read = None


mode = _Mode()
