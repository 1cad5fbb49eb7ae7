"""``ember.amp``: automatic mixed precision — ``autocast`` and ``GradScaler``.

Example:
    >>> import ember
    >>> model = ember.nn.Linear(4, 2)
    >>> with ember.amp.autocast("cpu", dtype=ember.bfloat16):
    ...     out = model(ember.randn(3, 4))
    >>> out.dtype
    ember.bfloat16
"""

from ember.amp.autocast_mode import (
    autocast,
    get_autocast_dtype,
    is_autocast_available,
    is_autocast_enabled,
    set_autocast_dtype,
    set_autocast_enabled,
)
from ember.amp.custom import custom_bwd, custom_fwd
from ember.amp.grad_scaler import GradScaler
from ember.amp.policy import autocast_args

__all__ = [
    "autocast",
    "GradScaler",
    "autocast_args",
    "is_autocast_available",
    "is_autocast_enabled",
    "get_autocast_dtype",
    "set_autocast_enabled",
    "set_autocast_dtype",
    "custom_fwd",
    "custom_bwd",
]
