"""``NAdam``: Adam with Nesterov momentum (and optional decoupled weight decay).

The update is torch's (``torch/optim/nadam.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad
    p *= 1 - lr * wd  (decoupled)   |   g = g + wd * p  (if wd)
    mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)); mu_product *= mu_t
    m.lerp_(g, 1 - beta1); v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = sqrt(v / (1 - beta2**t)) + eps
    p.addcdiv_(g, denom, value=-lr * (1 - mu_t) / (1 - mu_product))
    p.addcdiv_(m, denom, value=-lr * mu_{t+1} / (1 - mu_product * mu_{t+1}))
"""

from __future__ import annotations

from ember.ops import creation
from ember.optim._common import begin_update, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["NAdam"]


class NAdam(Optimizer):
    """The NAdam algorithm, as ``torch.optim.NAdam``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 2e-3).
        betas: coefficients of the running averages of the gradient and its square
            (default: (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: weight decay (L2 penalty, or decoupled as in AdamW) (default: 0).
        momentum_decay: momentum decay psi (default: 4e-3).
        decoupled_weight_decay: apply weight decay to the parameters directly (NAdamW) (default: False).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor
            (None: foreach).
        maximize: maximize the objective instead of minimizing (default: False).
        capturable: accepted for compatibility (CPU only).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.NAdam([w], lr=0.1)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.8944, -1.8944], requires_grad=True)
    """

    _group_fallbacks = {
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
    }

    def __init__(
        self,
        params,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay, momentum_decay=momentum_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        for p_state in self.state.values():
            if "mu_product" in p_state and not hasattr(p_state["mu_product"], "item"):
                p_state["mu_product"] = step_tensor(p_state["mu_product"])

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor()
        state["mu_product"] = step_tensor(1.0)  # a 0-d tensor of the scalar dtype, as torch
        state["exp_avg"] = creation.zeros_like(p)
        state["exp_avg_sq"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        beta1, beta2 = (to_scalar(b) for b in group["betas"])
        eps, weight_decay, momentum_decay = group["eps"], group["weight_decay"], group["momentum_decay"]
        F, steps, grads = begin_update(group, params, grads, states, impl, l2=False)
        counts = [s.item() for s in steps]
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                F.mul_(params, 1 - lr * weight_decay)
            else:
                grads = F.add(grads, params, alpha=weight_decay)
        mus = [beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay)) for t in counts]
        mu_nexts = [beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay)) for t in counts]
        mu_products = [s["mu_product"] for s in states]
        F.mul_(mu_products, mus)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        F.lerp_(exp_avgs, grads, 1 - beta1)
        F.mul_(exp_avg_sqs, beta2)
        F.addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        denom = F.div(exp_avg_sqs, [1 - beta2**t for t in counts])
        F.sqrt_(denom)
        F.add_(denom, eps)
        products = [m.item() for m in mu_products]
        F.addcdiv_(params, grads, denom, [-lr * (1.0 - mu) / (1.0 - mp) for mu, mp in zip(mus, products)])
        F.addcdiv_(
            params, exp_avgs, denom, [-lr * mn / (1.0 - mp * mn) for mn, mp in zip(mu_nexts, products)]
        )  # fmt: skip
