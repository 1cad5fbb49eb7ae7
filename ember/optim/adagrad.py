"""``Adagrad``: per-coordinate learning rates from the running sum of squared gradients.

The update is torch's (``torch/optim/adagrad.py``, single-tensor path), written on arrays::

    t += 1; g = -grad if maximize else grad; g = g + wd * p (if wd)
    clr = lr / (1 + (t - 1) * lr_decay)
    s += g * g
    p -= clr * g / (sqrt(s) + eps)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ember.optim.optimizer import Optimizer, _increment, _params_with_grad, _step_tensor, _to_scalar
from ember.tensor import Tensor, _wrap

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """The Adagrad algorithm, as ``torch.optim.Adagrad``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 1e-2).
        lr_decay: learning rate decay (default: 0).
        weight_decay: L2 penalty (default: 0).
        initial_accumulator_value: initial value of the sum of squared gradients (default: 0).
        eps: added to the denominator for numerical stability (default: 1e-10).
        maximize: maximize the objective instead of minimizing (default: False).
        foreach, fused: accepted for compatibility; Ember has one implementation.
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.Adagrad([w], lr=0.1)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        # As torch: the state of every parameter exists from the start.
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, initial_accumulator_value)

    def _init_state(self, p: Tensor, initial_accumulator_value: float) -> dict:
        state = self.state[p]
        state["step"] = _step_tensor()
        xp = p._device.backend.xp
        state["sum"] = _wrap(xp.full_like(p._data, initial_accumulator_value), p._device)
        return state

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)
        for s in self.state.values():
            if "step" in s and not isinstance(s["step"], Tensor):
                s["step"] = _step_tensor(float(s["step"]))

    def step(self, closure: Callable | None = None):
        """Perform one optimization step (``closure`` re-evaluates the loss and returns it)."""
        loss = self._eval_closure(closure)
        for group in self.param_groups:
            lr = _to_scalar(group["lr"])
            lr_decay = group["lr_decay"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            maximize = group["maximize"]
            for p, g in _params_with_grad(group["params"]):
                state = self.state[p]
                if len(state) == 0:
                    # A parameter added after construction: torch reads the optimizer's default here.
                    state = self._init_state(p, self.defaults["initial_accumulator_value"])
                step = _increment(state["step"])
                d = p._data
                if maximize:
                    g = -g
                if weight_decay != 0:
                    g = g + weight_decay * d
                clr = lr / (1 + (step - 1) * lr_decay)
                s = state["sum"]._data
                s += g * g
                std = np.sqrt(s)
                std += eps
                d -= clr * g / std
                p._bump_version()
        return loss
