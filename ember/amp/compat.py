"""The deprecated per-device spellings ``ember.cuda.amp`` and ``ember.cpu.amp``.

PyTorch keeps ``torch.cuda.amp.autocast(...)``, ``torch.cuda.amp.GradScaler(...)`` and the
``torch.cpu.amp`` pair as thin wrappers that warn (FutureWarning) and forward to ``torch.amp``
with the device filled in; these do the same.
"""

from __future__ import annotations

import sys
import types
import warnings

from ember.amp.autocast_mode import autocast as _autocast
from ember.amp.grad_scaler import GradScaler as _GradScaler

__all__ = ["cuda_amp", "cpu_amp"]


def _deprecated(what: str, device: str) -> None:
    warnings.warn(
        f"`ember.{device}.amp.{what}(args...)` is deprecated. Please use `ember.amp.{what}('{device}', args...)` instead.",
        FutureWarning,
        stacklevel=3,
    )


class _CudaAutocast(_autocast):
    """``ember.cuda.amp.autocast(enabled=True, dtype=float16, cache_enabled=True)``."""

    def __init__(self, enabled: bool = True, dtype=None, cache_enabled: bool = True):
        _deprecated("autocast", "cuda")
        super().__init__(
            "cuda", dtype="float16" if dtype is None else dtype, enabled=enabled, cache_enabled=cache_enabled
        )


class _CpuAutocast(_autocast):
    """``ember.cpu.amp.autocast(enabled=True, dtype=bfloat16, cache_enabled=True)``."""

    def __init__(self, enabled: bool = True, dtype=None, cache_enabled: bool = True):
        _deprecated("autocast", "cpu")
        super().__init__(
            "cpu", dtype="bfloat16" if dtype is None else dtype, enabled=enabled, cache_enabled=cache_enabled
        )


def _scaler_for(device: str):
    class Scaler(_GradScaler):
        def __init__(
            self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True
        ):
            _deprecated("GradScaler", device)
            super().__init__(device, init_scale, growth_factor, backoff_factor, growth_interval, enabled)

    Scaler.__name__ = Scaler.__qualname__ = "GradScaler"
    Scaler.__doc__ = f"``ember.{device}.amp.GradScaler``: ``ember.amp.GradScaler('{device}', ...)``."
    return Scaler


def _module(device: str, autocast_cls) -> types.ModuleType:
    m = types.ModuleType(f"ember.{device}.amp", f"Deprecated spellings of ember.amp for {device}.")
    m.autocast = autocast_cls
    m.GradScaler = _scaler_for(device)
    autocast_cls.__name__ = autocast_cls.__qualname__ = "autocast"
    sys.modules[m.__name__] = m
    return m


def _cuda_custom(name: str):
    def deco(fn=None, **kwargs):
        warnings.warn(
            f"`ember.cuda.amp.{name}(args...)` is deprecated. "
            f"Please use `ember.amp.{name}(args..., device_type='cuda')` instead.",
            FutureWarning,
            stacklevel=2,
        )
        from ember.amp import custom

        return getattr(custom, name)(fn, device_type="cuda", **kwargs)

    deco.__name__ = deco.__qualname__ = name
    deco.__doc__ = f"``ember.cuda.amp.{name}``: ``ember.amp.{name}(..., device_type='cuda')`` (deprecated)."
    return deco


cuda_amp = _module("cuda", _CudaAutocast)
cuda_amp.custom_fwd = _cuda_custom("custom_fwd")
cuda_amp.custom_bwd = _cuda_custom("custom_bwd")
cpu_amp = _module("cpu", _CpuAutocast)
