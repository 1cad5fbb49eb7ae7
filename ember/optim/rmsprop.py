"""``RMSprop``: divide the gradient by a running root-mean-square of recent gradients.

The update is torch's (``torch/optim/rmsprop.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad; g = g + wd * p (if wd)
    v.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    avg = sqrt(v - ga * ga) + eps, with ga.lerp_(g, 1 - alpha)  (centered)  |  sqrt(v) + eps
    b.mul_(momentum).addcdiv_(g, avg); p -= lr * b  (momentum > 0)  |  p.addcdiv_(g, avg, value=-lr)
"""

from __future__ import annotations

from ember.ops import creation
from ember.optim._common import FOR_EACH, FOR_LOOP, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """The RMSprop algorithm, as ``torch.optim.RMSprop``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 1e-2).
        alpha: smoothing constant of the squared-gradient average (default: 0.99).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: L2 penalty (default: 0).
        momentum: momentum factor (default: 0).
        centered: normalize by an estimate of the gradient's variance (default: False).
        maximize: maximize the objective instead of minimizing (default: False).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor
            (None: foreach).
        capturable: accepted for compatibility (CPU only).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.RMSprop([w], lr=0.01)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    _group_fallbacks = {
        "momentum": 0,
        "centered": False,
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor()
        state["square_avg"] = creation.zeros_like(p)
        if group["momentum"] > 0:
            state["momentum_buffer"] = creation.zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        alpha, eps, weight_decay = group["alpha"], group["eps"], group["weight_decay"]
        momentum, centered, maximize = group["momentum"], group["centered"], group["maximize"]
        F = FOR_LOOP if impl == "forloop" else FOR_EACH
        F.add_([s["step"] for s in states], 1)
        if maximize:
            grads = F.neg(grads)
        if weight_decay != 0:
            grads = F.add(grads, params, alpha=weight_decay)
        square_avgs = [s["square_avg"] for s in states]
        F.mul_(square_avgs, alpha)
        F.addcmul_(square_avgs, grads, grads, 1 - alpha)
        if centered:
            grad_avgs = [s["grad_avg"] for s in states]
            F.lerp_(grad_avgs, grads, 1 - alpha)
            avg = F.addcmul(square_avgs, grad_avgs, grad_avgs, -1)
            F.sqrt_(avg)
        else:
            avg = F.sqrt(square_avgs)
        F.add_(avg, eps)
        if momentum > 0:
            bufs = [s["momentum_buffer"] for s in states]
            F.mul_(bufs, momentum)
            F.addcdiv_(bufs, grads, avg, 1)
            F.add_(params, bufs, alpha=-lr)
        else:
            F.addcdiv_(params, grads, avg, -lr)
