"""``ember.utils``: helpers around the core, as ``torch.utils`` (``ember.utils.data`` loads data,
``ember.utils.checkpoint`` recomputes activations in backward)."""

from ember.utils import checkpoint, data

__all__ = ["checkpoint", "data"]
