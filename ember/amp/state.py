"""Per-thread autocast state: whether it is on, for which device type, and in which dtype.

Kept free of other Ember imports so that every op module (and the autograd engine) can read it
cheaply. Like PyTorch's, the state is thread-local: an autocast region in one thread never
changes how ops run in another.
"""

from __future__ import annotations

import threading

__all__ = ["USED", "local", "current", "suspended"]


class _Local(threading.local):
    def __init__(self):
        # device type -> [enabled, dtype name]; the dtype defaults are PyTorch's.
        self.devices = {"cpu": [False, "bfloat16"], "cuda": [False, "float16"]}
        self.active = False  # any device enabled: the one test on every op's hot path
        self.depth = 0  # nesting of autocast regions (the cast cache is cleared at depth 0)
        self.cache = {}  # id(leaf) -> (leaf, its cast); see ember.amp.policy
        self.cache_enabled = True


local = _Local()
#: True once autocast was turned on in any thread: until then no thread's ``local.active`` can be
#: True, so a hot path (a compiled call's guard) may skip reading the thread-local state.
USED = [False]


def refresh() -> None:
    local.active = any(on for on, _ in local.devices.values())
    if local.active:
        USED[0] = True


def current(device_type: str):
    """``(enabled, dtype name)`` of ``device_type``'s autocast."""
    return local.devices.setdefault(device_type, [False, "float16"])


class suspended:
    """Turn all autocast off for a block (the backward pass runs in the forward's dtypes)."""

    def __enter__(self):
        self._saved = local.active
        local.active = False
        return self

    def __exit__(self, *exc):
        local.active = self._saved
        return False
