"""Process-wide compatibility flags of PyTorch's API: matmul precision, deterministic algorithms.

Ember stores each flag and returns it when read, so programs that set and check them behave as
under PyTorch. None of them changes Ember's arithmetic today: CPU matmuls are IEEE float32 (no
TF32 mode exists there), and Ember's NumPy/C ops are already deterministic run to run.

Example:
    >>> import ember
    >>> ember.set_float32_matmul_precision("high")
    >>> ember.get_float32_matmul_precision(), ember.backends.cuda.matmul.allow_tf32
    ('high', True)
    >>> ember.set_float32_matmul_precision("highest")
"""

from __future__ import annotations

import warnings

__all__ = [
    "set_float32_matmul_precision",
    "get_float32_matmul_precision",
    "use_deterministic_algorithms",
    "are_deterministic_algorithms_enabled",
    "is_deterministic_algorithms_warn_only_enabled",
    "MatmulFlags",
    "matmul",
]

_PRECISIONS = ("highest", "high", "medium")


class _State:
    matmul_precision = "highest"
    deterministic = False
    deterministic_warn_only = False


_state = _State()


def set_float32_matmul_precision(precision: str) -> None:
    """Record the float32 matmul precision ('highest', 'high' or 'medium'); no effect on Ember's math.

    An unknown value warns and changes nothing, as in PyTorch.
    """
    if precision not in _PRECISIONS:
        warnings.warn(
            f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
            "set_float32_matmul_precision call has no effect.",
            stacklevel=2,
        )
        return
    _state.matmul_precision = precision


def get_float32_matmul_precision() -> str:
    return _state.matmul_precision


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Record the deterministic-algorithms flag (Ember's ops are deterministic whether set or not)."""
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms(): argument 'mode' must be bool, not {type(mode).__name__}")
    _state.deterministic = mode
    _state.deterministic_warn_only = bool(warn_only) and mode


def are_deterministic_algorithms_enabled() -> bool:
    return _state.deterministic


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _state.deterministic_warn_only


class MatmulFlags:
    """``ember.backends.cuda.matmul``: ``allow_tf32`` mirrors the float32 matmul precision."""

    allow_fp16_reduced_precision_reduction = True
    allow_bf16_reduced_precision_reduction = True

    @property
    def allow_tf32(self) -> bool:
        return _state.matmul_precision != "highest"

    @allow_tf32.setter
    def allow_tf32(self, value: bool) -> None:
        _state.matmul_precision = "high" if value else "highest"

    def __setattr__(self, name: str, value) -> None:
        if not hasattr(type(self), name):
            raise AttributeError(f"Unknown attribute {name}")
        object.__setattr__(self, name, value)


matmul = MatmulFlags()
