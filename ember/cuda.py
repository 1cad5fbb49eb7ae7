"""``ember.cuda``: whether a CUDA device (through CuPy) is usable here."""

from __future__ import annotations

from ember.amp.compat import cuda_amp as amp  # noqa: F401 - ember.cuda.amp.autocast / GradScaler
from ember.backends import get as _get_backend

__all__ = [
    "is_available",
    "device_count",
    "manual_seed",
    "manual_seed_all",
    "set_device",
    "current_device",
    "is_bf16_supported",
    "empty_cache",
    "synchronize",
]


def is_available() -> bool:
    """True when CuPy is installed and sees at least one GPU.

    Example:
        >>> import ember
        >>> isinstance(ember.cuda.is_available(), bool)
        True
    """
    return _get_backend("cuda").is_available()


def device_count() -> int:
    return _get_backend("cuda").device_count()


def manual_seed(seed: int) -> None:
    """Accepted and ignored, as PyTorch does without a GPU.

    Ember draws the random numbers of GPU tensors from the default (host) generator, which
    ``ember.manual_seed`` seeds; there is no separate GPU generator to seed here.
    """


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)


def _require(op: str) -> None:
    if not is_available():
        raise RuntimeError(
            f"cuda.{op}: no CUDA device is available (Ember needs CuPy and an NVIDIA GPU: install ember[cuda])"
        )


def _index(device) -> int:
    if isinstance(device, int):
        return device
    from ember._device import device as _device_cls

    d = _device_cls(device) if isinstance(device, str) else device
    if d.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {d}")
    return 0 if d.index is None else d.index


def set_device(device) -> None:
    """Make ``device`` (an index, ``'cuda:1'`` or a device) current; RuntimeError without a GPU.

    A negative index is ignored, as in PyTorch.
    """
    idx = _index(device)
    if idx < 0:
        return
    _require("set_device")
    if idx >= device_count():
        raise RuntimeError(f"cuda.set_device: invalid device ordinal {idx} (there are {device_count()} devices)")
    _get_backend("cuda").xp.cuda.Device(idx).use()


def current_device() -> int:
    _require("current_device")
    return _get_backend("cuda").xp.cuda.Device().id


def is_bf16_supported(including_emulation: bool = True) -> bool:
    """False: Ember has no bfloat16 dtype on the GPU path yet, and without a GPU PyTorch says False too."""
    return False


def empty_cache() -> None:
    """Return cached GPU blocks to the driver (no-op without a GPU, as in PyTorch)."""
    if is_available():
        _get_backend("cuda").xp.get_default_memory_pool().free_all_blocks()


def synchronize() -> None:
    backend = _get_backend("cuda")
    if backend.is_available():
        backend.xp.cuda.Device().synchronize()


def _legacy_types() -> None:
    # ember.cuda.FloatTensor & co.: PyTorch's CUDA typed constructors (isinstance true for CUDA tensors).
    from ember._legacy_tensors import CUDA_TYPES

    globals().update(CUDA_TYPES)


_legacy_types()
