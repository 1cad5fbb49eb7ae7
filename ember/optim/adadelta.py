"""``Adadelta``: an adaptive learning rate from running averages of squared gradients and updates.

The update is torch's (``torch/optim/adadelta.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad; g = g + wd * p (if wd)
    v.mul_(rho).addcmul_(g, g, value=1 - rho)
    delta = sqrt(u + eps) / sqrt(v + eps) * g
    u.mul_(rho).addcmul_(delta, delta, value=1 - rho)
    p.add_(delta, alpha=-lr)
"""

from __future__ import annotations

from ember.ops import creation
from ember.optim._common import begin_update, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    """The Adadelta algorithm, as ``torch.optim.Adadelta``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: coefficient that scales delta before it is applied to the parameters (default: 1.0).
        rho: coefficient of the running averages of squared gradients and updates (default: 0.9).
        eps: added to the denominator for numerical stability (default: 1e-6).
        weight_decay: L2 penalty (default: 0).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor
            (None: foreach).
        maximize: maximize the objective instead of minimizing (default: False).
        capturable: accepted for compatibility (CPU only).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.Adadelta([w], lr=1.0)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.9968, -1.9968], requires_grad=True)
    """

    _group_fallbacks = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}

    def __init__(
        self,
        params,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor()
        state["square_avg"] = creation.zeros_like(p)
        state["acc_delta"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        rho, eps = group["rho"], group["eps"]
        F, _, grads = begin_update(group, params, grads, states, impl)
        square_avgs = [s["square_avg"] for s in states]
        acc_deltas = [s["acc_delta"] for s in states]
        F.mul_(square_avgs, rho)
        F.addcmul_(square_avgs, grads, grads, 1 - rho)
        std = F.add(square_avgs, eps)
        F.sqrt_(std)
        deltas = F.add(acc_deltas, eps)
        F.sqrt_(deltas)
        F.div_(deltas, std)
        F.mul_(deltas, grads)
        F.mul_(acc_deltas, rho)
        F.addcmul_(acc_deltas, deltas, deltas, 1 - rho)
        F.add_(params, deltas, alpha=-lr)
