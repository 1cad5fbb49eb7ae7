"""``ember.utils``: helpers around the core, as ``torch.utils`` (``ember.utils.data`` loads data)."""

from ember.utils import data

__all__ = ["data"]
