"""A liveness-based plan of one preallocated arena for a compiled program's intermediate buffers.

Each buffer is live from the step that writes it to the last step that reads it. Steps are
visited in order: the buffers a step defines are placed first (first fit between the buffers
still live, so a step's outputs never overlap its inputs), then the buffers whose last reader is
that step are released. Offsets are aligned to 64 bytes (a cache line, an AVX-512 vector).

Example:
    >>> from ember.compile.arena import plan
    >>> offsets, size = plan([("a", 256, 0, 1), ("b", 256, 1, 2), ("c", 256, 2, 3)])
    >>> offsets["a"] == offsets["c"], size
    (True, 512)
"""

from __future__ import annotations

import bisect

__all__ = ["ALIGN", "plan"]

ALIGN = 64


def _up(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(buffers: list) -> tuple:
    """``buffers``: ``(key, nbytes, first_step, last_step)``; returns ``({key: offset}, arena size)``."""
    by_start: dict = {}
    by_end: dict = {}
    for key, nbytes, first, last in buffers:
        by_start.setdefault(first, []).append((key, _up(max(nbytes, 1))))
        by_end.setdefault(max(first, last), []).append(key)
    live: dict = {}  # key -> (offset, size)
    taken: list = []  # live.values(), kept sorted
    offsets: dict = {}
    size = 0
    for step in sorted(set(by_start) | set(by_end)):
        for key, nbytes in by_start.get(step, ()):
            off = 0
            for o, s in taken:  # first gap big enough
                if o - off >= nbytes:
                    break
                off = max(off, o + s)
            if key in live:
                taken.remove(live[key])
            live[key] = (off, nbytes)
            bisect.insort(taken, (off, nbytes))
            offsets[key] = off
            size = max(size, off + nbytes)
        for key in by_end.get(step, ()):
            if key in live:
                taken.remove(live.pop(key))
    return offsets, size
