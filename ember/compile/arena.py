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

import numpy as np

__all__ = ["ALIGN", "plan", "ArenaPool"]

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


class ArenaPool:
    """One arena shared by programs that never run at the same time: the step graphs of one
    compiled function (the first step's and the steady state's; a call runs one of them, start
    to end). The steady state's program then starts in memory the first step already faulted
    in (a fresh 76 MB arena's first touch, huge pages compacted on demand, cost MoE-GPT's second
    call 0.01-0.2 s) and the function holds one arena instead of one per graph.

    Example:
        >>> pool = ArenaPool()
        >>> a, b = pool.get(1000), pool.get(500)
        >>> b.ctypes.data == a.ctypes.data and a.ctypes.data % ALIGN == 0
        True
    """

    def __init__(self):
        self.buffer = np.empty(0, np.uint8)

    def get(self, nbytes: int) -> np.ndarray:
        """``nbytes`` of the shared arena, 64-byte aligned (a program built earlier keeps the
        smaller buffer it got)."""
        if self.buffer.size < nbytes:
            raw = np.empty(nbytes + ALIGN, np.uint8)
            shift = (-raw.ctypes.data) % ALIGN
            self.buffer = raw[shift : shift + nbytes]
        return self.buffer[:nbytes]
