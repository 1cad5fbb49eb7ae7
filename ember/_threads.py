"""Thread limits for BLAS (``ember.set_num_threads``), through threadpoolctl when available."""

from __future__ import annotations

import os

_state = {"n": None}


def set_num_threads(n: int) -> None:
    if n < 1:
        raise ValueError("set_num_threads expects a positive integer")
    _state["n"] = int(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=int(n))


def get_num_threads() -> int:
    return _state["n"] or os.cpu_count() or 1
