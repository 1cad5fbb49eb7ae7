"""``ember.accelerator``: the device-agnostic accelerator queries of PyTorch 2.6+.

The accelerator is CUDA when a GPU is usable through CuPy, otherwise there is none: then
``is_available()`` is False, ``current_accelerator()`` is None, ``device_count()`` is 0 and the
calls that need a device raise ``RuntimeError``, as in PyTorch.

Example:
    >>> import ember
    >>> device = ember.accelerator.current_accelerator() if ember.accelerator.is_available() else ember.device("cpu")
    >>> ember.zeros(1, device=device).device.type in ("cpu", "cuda")
    True
"""

from __future__ import annotations

from ember import cuda
from ember._device import device

__all__ = [
    "is_available",
    "current_accelerator",
    "device_count",
    "current_device_index",
    "set_device_index",
    "synchronize",
]


def is_available() -> bool:
    """True when a CUDA device is usable (CuPy and a GPU)."""
    return cuda.is_available()


def current_accelerator(check_available: bool = False) -> device | None:
    """``device('cuda')`` when there is a GPU, else None."""
    return device("cuda") if cuda.is_available() else None


def device_count() -> int:
    return cuda.device_count()


def _require(what: str) -> None:
    if not cuda.is_available():
        raise RuntimeError(f"accelerator.{what}: Cannot access accelerator device when none is available.")


def current_device_index() -> int:
    _require("current_device_index")
    return cuda.current_device()


current_device_idx = current_device_index


def set_device_index(device, /) -> None:
    _require("set_device_index")
    cuda.set_device(device)


set_device_idx = set_device_index


def synchronize(device=None, /) -> None:
    _require("synchronize")
    cuda.synchronize()
