"""The CUDA backend: CuPy arrays. Importable without a GPU; ``is_available()`` says whether one works."""

from __future__ import annotations

import numpy as np

from ember._flags import matmul  # noqa: F401 - ember.backends.cuda.matmul.allow_tf32, as torch's

__all__ = ["name", "is_available", "device_count", "asarray", "to_host", "scatter_add", "new_generator"]

try:  # CuPy is the optional ``[cuda]`` extra.
    import cupy as xp
except Exception:  # noqa: BLE001 - any import failure means: no CUDA here
    xp = None

name = "cuda"


def is_available() -> bool:
    if xp is None:
        return False
    try:
        return xp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver, no device
        return False


def device_count() -> int:
    return xp.cuda.runtime.getDeviceCount() if is_available() else 0


def _require():
    if not is_available():
        raise RuntimeError(
            "Found no NVIDIA driver on your system or CuPy is not installed; "
            "install ember[cuda] on a machine with a GPU to use device='cuda'"
        )


def asarray(data, dtype=None):
    _require()
    return xp.asarray(data, dtype=dtype)


def to_host(arr) -> np.ndarray:
    return xp.asnumpy(arr)


def scatter_add(target, index, values) -> None:
    # unbuffered: repeated indices accumulate (cupyx.scatter_add is deprecated); host index arrays
    # (np.indices of a gather's shape) move to the device first
    if isinstance(index, tuple):
        index = tuple(xp.asarray(i) if isinstance(i, np.ndarray) else i for i in index)
    elif isinstance(index, np.ndarray):
        index = xp.asarray(index)
    xp.add.at(target, index, values)


def new_generator(seed: int):
    _require()
    return xp.random.default_rng(seed)
