"""``RAdam``: Adam with a rectified adaptive learning rate (and optional decoupled weight decay).

The update is torch's (``torch/optim/radam.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad
    p *= 1 - lr * wd  (decoupled)   |   g = g + wd * p  (if wd)
    m.lerp_(g, 1 - beta1); v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2**t / (1 - beta2**t)
    rho_t > 5:  p -= lr * m / (1 - beta1**t) * rect_t * sqrt(1 - beta2**t) / (sqrt(v) + eps)
    else:       p -= lr * m / (1 - beta1**t)
"""

from __future__ import annotations

import math

from ember.ops import creation
from ember.optim._common import begin_update, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["RAdam"]


class RAdam(Optimizer):
    """The RAdam algorithm, as ``torch.optim.RAdam``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its square
            (default: (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: weight decay (L2 penalty, or decoupled as in AdamW) (default: 0).
        decoupled_weight_decay: apply weight decay to the parameters directly (default: False).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor
            (None: foreach).
        maximize: maximize the objective instead of minimizing (default: False).
        capturable: accepted for compatibility (CPU only).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.RAdam([w], lr=0.1)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.8000, -1.6000], requires_grad=True)
    """

    _group_fallbacks = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
        "decoupled_weight_decay": False,
    }

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor()
        state["exp_avg"] = creation.zeros_like(p)
        state["exp_avg_sq"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        beta1, beta2 = (to_scalar(b) for b in group["betas"])
        eps, weight_decay = group["eps"], group["weight_decay"]
        F, steps, grads = begin_update(group, params, grads, states, impl, l2=False)
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                F.mul_(params, 1 - lr * weight_decay)
            else:
                grads = F.add(grads, params, alpha=weight_decay)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        F.lerp_(exp_avgs, grads, 1 - beta1)
        F.mul_(exp_avg_sqs, beta2)
        F.addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)

        rho_inf = 2 / (1 - beta2) - 1
        updates = F.div(exp_avgs, [1 - beta1 ** s.item() for s in steps])  # bias-corrected m
        F.mul_(updates, lr)
        rect, scales = [], []  # the parameters whose variance is tractable (rho_t > 5)
        for i, s in enumerate(steps):
            t = s.item()
            bias_correction2 = 1 - beta2**t
            rho_t = rho_inf - 2 * t * (beta2**t) / bias_correction2
            if rho_t > 5.0:
                r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                rect.append(i)
                scales.append(bias_correction2**0.5 * r)
        if rect:
            denom = F.sqrt([exp_avg_sqs[i] for i in rect])
            F.add_(denom, eps)
            sub = [updates[i] for i in rect]
            F.div_(sub, denom)
            F.mul_(sub, scales)
        F.add_(params, updates, alpha=-1.0)
