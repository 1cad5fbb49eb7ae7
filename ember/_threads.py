"""Thread limits for BLAS (``ember.set_num_threads``), through threadpoolctl when available."""

from __future__ import annotations

import os

__all__ = ["set_num_threads", "get_num_threads", "reapply"]

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


def reapply() -> None:
    """Apply ``set_num_threads``' limit again, to the thread pools loaded since: threadpoolctl
    limits only the libraries loaded when it runs, and libgomp arrives with the first C kernel
    library (a generated kernel sizes its team by ``omp_get_max_threads()``)."""
    if _state["n"]:
        set_num_threads(_state["n"])


def get_num_threads() -> int:
    """``set_num_threads``'s value; else ``OMP_NUM_THREADS``; else the cores this process may use
    (PyTorch's default too)."""
    if _state["n"]:
        return _state["n"]
    try:
        env = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        env = 0
    if env > 0:
        return env
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1
