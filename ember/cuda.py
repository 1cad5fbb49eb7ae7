"""``ember.cuda``: whether a CUDA device (through CuPy) is usable here."""

from __future__ import annotations

from ember.amp.compat import cuda_amp as amp  # noqa: F401 - ember.cuda.amp.autocast / GradScaler
from ember.backends import get as _get_backend


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
    """Seed the GPU generator too (Ember draws GPU randoms on the host, so this is the CPU seed)."""


def manual_seed_all(seed: int) -> None:
    manual_seed(seed)


def synchronize() -> None:
    backend = _get_backend("cuda")
    if backend.is_available():
        backend.xp.cuda.Device().synchronize()
