"""``GradScaler``: dynamic loss scaling, so that float16 gradients neither underflow nor overflow.

The loss is multiplied by a scale before ``backward``; ``unscale_`` divides the gradients by it
and records whether any is inf/NaN; ``step`` skips the optimizer step when one is; ``update``
halves the scale after an overflow and doubles it after ``growth_interval`` clean steps.
The arithmetic follows PyTorch's (a float32 scale, a growth tracker, the same error messages).
"""

from __future__ import annotations

import warnings
from enum import Enum

import numpy as np

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


class GradScaler:
    """Scale the loss, unscale the gradients, skip non-finite steps and adapt the scale.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (disabled, with a warning, when CUDA is not available).
        init_scale: the first scale.
        growth_factor: the scale's multiplier after ``growth_interval`` steps without inf/NaN.
        backoff_factor: the scale's multiplier after a step with inf/NaN gradients.
        growth_interval: clean steps between growths.
        enabled: ``False`` makes every method a pass-through (``step`` just steps).

    Example:
        >>> import ember
        >>> model = ember.nn.Linear(3, 1)
        >>> opt = ember.optim.SGD(model.parameters(), lr=0.1)
        >>> scaler = ember.amp.GradScaler("cpu", init_scale=1024.0)
        >>> loss = model(ember.ones(2, 3)).sum()
        >>> scaler.scale(loss).backward()
        >>> scaler.step(opt)
        >>> scaler.update()
        >>> scaler.get_scale()
        1024.0
    """

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self._device = device
        self._enabled = bool(enabled)
        if self._enabled and device == "cuda":
            from ember import cuda

            if not cuda.is_available():
                warnings.warn(
                    "ember.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.", stacklevel=2
                )
                self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
        self._init_scale = init_scale
        self._scale = None  # np.float32, made on first use as PyTorch's lazily made tensor
        self._growth_factor = growth_factor
        self._backoff_factor = backoff_factor
        self._growth_interval = growth_interval
        self._init_growth_tracker = 0
        self._growth_tracker = None
        self._per_optimizer_states: dict = {}

    # ----------------------------------------------------------------- scaling
    def _lazy_init(self) -> None:
        self._scale = np.float32(self._init_scale)
        self._growth_tracker = self._init_growth_tracker

    def _check_scale(self, funcname: str) -> None:
        if self._scale is None:
            raise AssertionError(
                f"Attempted {funcname} but _scale is None.  This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration."
            )

    def scale(self, outputs):
        """``outputs`` (a tensor, or nested lists/tuples of them) multiplied by the scale."""
        if not self._enabled:
            return outputs
        if self._scale is None:
            self._lazy_init()
        from ember.tensor import Tensor

        if isinstance(outputs, Tensor):
            return outputs * _scalar_tensor(self._scale, outputs)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        if hasattr(outputs, "__iter__"):
            return map(self.scale, outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    def _state(self, optimizer) -> dict:
        key = id(optimizer)
        st = self._per_optimizer_states.get(key)
        if st is None:
            st = {"stage": OptState.READY, "found_inf": 0.0}
            self._per_optimizer_states[key] = st
        return st

    def _unscale_grads(self, optimizer, inv_scale: np.float32, allow_fp16: bool) -> float:
        found = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if not allow_fp16 and g.dtype.name == "float16":
                    raise ValueError("Attempting to unscale FP16 gradients.")
                d = g._data
                with np.errstate(over="ignore", invalid="ignore"):
                    np.multiply(d, inv_scale, out=d, casting="unsafe")
                if not found and not np.isfinite(d).all():
                    found = True
        return 1.0 if found else 0.0

    def unscale_(self, optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale in place (once per ``update``)."""
        if not self._enabled:
            return
        self._check_scale("unscale_")
        st = self._state(optimizer)
        if st["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        if st["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = np.float32(1.0 / np.float64(self._scale))  # as PyTorch: double reciprocal, then float
        st["found_inf"] = self._unscale_grads(optimizer, inv_scale, False)
        st["stage"] = OptState.UNSCALED

    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless done), then ``optimizer.step()`` only when no gradient is inf/NaN.

        Returns the optimizer's return value, or None when the step was skipped.
        """
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale("step")
        st = self._state(optimizer)
        if st["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if st["stage"] is OptState.READY:
            self.unscale_(optimizer)
        retval = None
        if not st["found_inf"]:
            retval = optimizer.step(*args, **kwargs)
        st["stage"] = OptState.STEPPED
        return retval

    def update(self, new_scale=None) -> None:
        """Adapt the scale from this iteration's steps (or set it to ``new_scale``)."""
        if not self._enabled:
            return
        self._check_scale("update")
        if new_scale is not None:
            from ember.tensor import Tensor

            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1:
                    raise AssertionError("new_scale should be a single-element tensor.")
                if new_scale.requires_grad:
                    raise AssertionError("new_scale should not require grad.")
                self._scale = np.float32(new_scale.item())
            elif isinstance(new_scale, float):
                self._scale = np.float32(new_scale)
            else:
                raise AssertionError(
                    "new_scale should be a float or a 1-element torch.cuda.FloatTensor or torch.FloatTensor with requires_grad=False."
                )
        else:
            found = [st["found_inf"] for st in self._per_optimizer_states.values()]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            if sum(found):
                self._scale = np.float32(self._scale * np.float32(self._backoff_factor))
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = np.float32(self._scale * np.float32(self._growth_factor))
                    if np.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = {}

    # ----------------------------------------------------------------- accessors
    def get_scale(self) -> float:
        """The current scale as a Python float (1.0 when disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale)

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else int(self._growth_tracker)

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict:
        """``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval``, ``_growth_tracker``
        (empty when disabled), as PyTorch's."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler."
            )
        self._init_scale = state_dict["scale"]
        if self._scale is not None:
            self._scale = np.float32(state_dict["scale"])
        self._growth_factor = state_dict["growth_factor"]
        self._backoff_factor = state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]
        self._init_growth_tracker = state_dict["_growth_tracker"]
        if self._growth_tracker is not None:
            self._growth_tracker = state_dict["_growth_tracker"]


def _scalar_tensor(value, like):
    """A 0-dim float32 tensor on ``like``'s device (0-dim: it does not widen a float16 loss)."""
    from ember.tensor import _wrap

    arr = np.asarray(value, dtype=np.float32)
    if like._device.type != "cpu":
        arr = like._device.backend.asarray(arr)
    return _wrap(arr, like._device)
