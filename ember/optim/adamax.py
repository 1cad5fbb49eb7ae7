"""``Adamax``: Adam with the infinity norm of past gradients in place of their second moment.

The update is torch's (``torch/optim/adamax.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad; g = g + wd * p (if wd)
    m.lerp_(g, 1 - beta1)
    u = maximum(u * beta2, |g| + eps)
    p.addcdiv_(m, u, value=-lr / (1 - beta1**t))
"""

from __future__ import annotations

from ember.ops import creation
from ember.optim._common import begin_update, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["Adamax"]


class Adamax(Optimizer):
    """The Adamax algorithm (Adam on the infinity norm), as ``torch.optim.Adamax``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 2e-3).
        betas: coefficients of the running average of the gradient and of the infinity norm
            (default: (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: L2 penalty (default: 0).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor
            (None: foreach).
        maximize: maximize the objective instead of minimizing (default: False).
        capturable: accepted for compatibility (CPU only).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.Adamax([w], lr=0.1)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    _group_fallbacks = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor()
        state["exp_avg"] = creation.zeros_like(p)
        state["exp_inf"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        beta1, beta2 = (to_scalar(b) for b in group["betas"])
        eps = group["eps"]
        F, steps, grads = begin_update(group, params, grads, states, impl)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_infs = [s["exp_inf"] for s in states]
        F.lerp_(exp_avgs, grads, 1 - beta1)
        F.mul_(exp_infs, beta2)
        norms = F.abs(grads)
        F.add_(norms, eps)
        F.maximum_(exp_infs, norms)
        F.addcdiv_(params, exp_avgs, exp_infs, [-lr / (1 - beta1 ** s.item()) for s in steps])
