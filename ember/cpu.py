"""``ember.cpu``: PyTorch's CPU device module (``ember.cpu.amp`` and availability queries)."""

from __future__ import annotations

from ember.amp.compat import cpu_amp as amp

__all__ = ["amp", "is_available", "device_count", "synchronize"]


def is_available() -> bool:
    """Always True: Ember always runs on the CPU."""
    return True


def device_count() -> int:
    return 1


def synchronize(device=None) -> None:
    """CPU work is synchronous: nothing to wait for."""
