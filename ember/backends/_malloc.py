"""Keep freed large buffers in the C heap, so a new array of the same size costs no page faults.

glibc serves allocations above its mmap threshold (128 KiB to 32 MiB, adaptive) with fresh mmap
calls, and gives them back on free. An eager framework allocates a fresh output per op, so every
16M-element op then pays for touching ~16,000 new pages: about 50% more than the arithmetic
itself. Raising the mmap and trim thresholds makes freed buffers reusable, which is what
PyTorch's caching allocators do by other means. The process keeps its peak heap instead of
returning it to the OS; ``ember.backends.cpu.tune_allocator(False)`` restores glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT_MMAP = 128 * 1024
_GLIBC_DEFAULT_TRIM = 128 * 1024


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "mallopt") else None
    except OSError:
        return None


def tune(enabled: bool = True) -> bool:
    """Raise (or restore) glibc's mmap/trim thresholds; returns whether glibc accepted it."""
    lib = _libc()
    if lib is None:
        return False
    if enabled:
        ok = lib.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and lib.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    else:
        ok = lib.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_MMAP) and lib.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_TRIM)
    return bool(ok)
