"""``ember.autocast``: run the listed ops in a lower precision inside a region.

See :mod:`ember.amp.policy` for which ops are cast to what.
"""

from __future__ import annotations

import functools
import warnings

from ember.amp import state

__all__ = [
    "autocast",
    "is_autocast_available",
    "is_autocast_enabled",
    "get_autocast_dtype",
    "set_autocast_enabled",
    "set_autocast_dtype",
]

_SUPPORTED = {"cpu": ("bfloat16", "float16"), "cuda": ("float16", "bfloat16", "float32")}


class autocast:
    """Context manager (and decorator) that runs matmul-like ops in ``dtype`` on ``device_type``.

    Parameters keep their float32 storage: they are cast on the way into each op (once per
    region, with ``cache_enabled``), and their gradients come back in float32. Regions nest; an
    inner ``autocast(..., enabled=False)`` turns it off for a block. The state is per thread.

    Args:
        device_type: ``"cpu"`` or ``"cuda"``.
        dtype: the low-precision dtype (default bfloat16 on CPU, float16 on CUDA).
        enabled: whether autocast is on in the region.
        cache_enabled: reuse the cast of each parameter within the region (default True).

    Example:
        >>> import ember
        >>> lin = ember.nn.Linear(4, 2)
        >>> with ember.autocast("cpu", dtype=ember.bfloat16):
        ...     y = lin(ember.randn(3, 4))
        >>> y.dtype, lin.weight.dtype
        (ember.bfloat16, ember.float32)
    """

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool | None = None):
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        if device_type not in _SUPPORTED:
            raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")
        self.device = device_type
        name = state.current(device_type)[1] if dtype is None else _dtype_name(dtype)
        self.fast_dtype = name
        self._enabled = bool(enabled)
        self._cache_enabled = True if cache_enabled is None else bool(cache_enabled)
        if self._enabled and name not in _SUPPORTED[device_type]:
            # PyTorch warns and disables autocast for a dtype the device does not support.
            allowed = ", ".join(f"ember.{d}" for d in _SUPPORTED[device_type])
            warnings.warn(
                f"In {device_type.upper()} autocast, but the target dtype is not supported. Disabling autocast.\n"
                f"{device_type.upper()} Autocast only supports dtypes of {allowed} currently.",
                stacklevel=2,
            )
            self._enabled = False
        if self._enabled and device_type == "cuda":
            from ember import cuda

            if not cuda.is_available():
                warnings.warn("User provided device_type of 'cuda', but CUDA is not available. Disabling", stacklevel=2)
                self._enabled = False

    def __enter__(self):
        loc = state.local
        dev = state.current(self.device)
        self._prev = (list(dev), loc.cache_enabled)
        dev[0], dev[1] = self._enabled, self.fast_dtype
        loc.cache_enabled = self._cache_enabled
        loc.depth += 1
        state.refresh()
        return self

    def __exit__(self, *exc):
        loc = state.local
        dev = state.current(self.device)
        (dev[0], dev[1]), loc.cache_enabled = self._prev
        loc.depth -= 1
        if loc.depth == 0:
            loc.cache.clear()  # casts of parameters live for the outermost region only
        state.refresh()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(self.device, self.fast_dtype, self._enabled, self._cache_enabled):
                return fn(*args, **kwargs)

        return wrapper


def _dtype_name(dtype) -> str:
    from ember import _dtype

    return _dtype.to_dtype(dtype).name


def is_autocast_available(device_type: str) -> bool:
    """Whether autocast has a policy for ``device_type`` (``"cpu"`` and ``"cuda"``)."""
    return device_type in _SUPPORTED


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether autocast is on for ``device_type`` (PyTorch: CUDA when not given)."""
    return bool(state.current(device_type or "cuda")[0])


def set_autocast_enabled(device_type: str, enabled: bool) -> None:
    state.current(device_type)[0] = bool(enabled)
    state.refresh()


def get_autocast_dtype(device_type: str):
    """The dtype autocast uses (or would use) on ``device_type``."""
    from ember import _dtype

    return _dtype.to_dtype(state.current(device_type)[1])


def set_autocast_dtype(device_type: str, dtype) -> None:
    state.current(device_type)[1] = _dtype_name(dtype)
