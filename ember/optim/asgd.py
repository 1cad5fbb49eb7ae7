"""``ASGD``: averaged stochastic gradient descent.

The update is torch's (``torch/optim/asgd.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad; g = g + wd * p (if wd)
    p *= 1 - lambd * eta;  p -= eta * g
    ax += (p - ax) * mu   (ax = p while mu == 1)
    eta = lr / (1 + lambd * lr * t) ** alpha;  mu = 1 / max(1, t - t0)

``eta`` and ``mu`` are 0-d tensors of the scalar dtype (float32 unless the default dtype is
float64), as in PyTorch, so their rounding matches.
"""

from __future__ import annotations

from ember.ops import creation
from ember.optim._common import begin_update, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["ASGD"]


class ASGD(Optimizer):
    """Averaged stochastic gradient descent, as ``torch.optim.ASGD``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 1e-2).
        lambd: decay term (default: 1e-4).
        alpha: power for the eta update (default: 0.75).
        t0: the step at which averaging starts (default: 1e6).
        weight_decay: L2 penalty (default: 0).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor
            (None: foreach).
        maximize: maximize the objective instead of minimizing (default: False).
        differentiable: must be False.
        capturable: accepted for compatibility (CPU only).

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.ASGD([w], lr=0.1, lambd=0.0)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.8000, -1.6000], requires_grad=True)
    """

    _group_fallbacks = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, weight_decay=weight_decay)
        defaults = {
            "lr": lr,
            "lambd": lambd,
            "alpha": alpha,
            "t0": t0,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        for p_state in self.state.values():
            for key in ("eta", "mu"):
                if key in p_state and not hasattr(p_state[key], "item"):
                    p_state[key] = step_tensor(p_state[key])

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor()
        state["eta"] = step_tensor(to_scalar(group["lr"]))
        state["mu"] = step_tensor(1.0)
        state["ax"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        lambd, alpha, t0 = group["lambd"], group["alpha"], group["t0"]
        F, steps, grads = begin_update(group, params, grads, states, impl)
        etas = [s["eta"].item() for s in states]
        F.mul_(params, [1 - lambd * eta for eta in etas])
        F.add_(params, F.mul(grads, [-eta for eta in etas]))
        averaged = [i for i, s in enumerate(states) if s["mu"].item() != 1]
        copied = [i for i, s in enumerate(states) if s["mu"].item() == 1]
        if averaged:
            axs = [states[i]["ax"] for i in averaged]
            diffs = F.sub([params[i] for i in averaged], axs)
            F.mul_(diffs, [states[i]["mu"] for i in averaged])
            F.add_(axs, diffs)
        if copied:
            F.copy_([states[i]["ax"] for i in copied], [params[i] for i in copied])
        for s, step in zip(states, steps):
            t = step.item()
            s["eta"].fill_(lr / ((1 + lambd * lr * t) ** alpha))
            s["mu"].fill_(1 / max(1, t - t0))
