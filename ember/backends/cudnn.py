"""``ember.backends.cudnn``: PyTorch's cuDNN switches, stored and readable.

Ember does not call cuDNN (its GPU path is CuPy with generated kernels), so ``is_available()`` is
False and the flags have no effect on results; programs that set ``benchmark``, ``deterministic``,
``allow_tf32`` or ``enabled`` run unchanged and read back what they set.

Example:
    >>> import ember
    >>> ember.backends.cudnn.benchmark = True
    >>> ember.backends.cudnn.benchmark, ember.backends.cudnn.is_available()
    (True, False)
    >>> ember.backends.cudnn.benchmark = False
"""

from __future__ import annotations

__all__ = ["is_available", "version", "enabled", "benchmark", "deterministic", "allow_tf32"]

# PyTorch's defaults.
enabled = True
benchmark = False
deterministic = False
allow_tf32 = True


def is_available() -> bool:
    """False: Ember has no cuDNN path."""
    return False


def version() -> None:
    """None, as PyTorch returns when cuDNN is not available."""
    return None
