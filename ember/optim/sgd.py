"""``SGD``: stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay.

The update is torch's (``torch/optim/sgd.py``), as in-place Tensor ops::

    g = -grad if maximize else grad
    g = g + weight_decay * p                      (if weight_decay)
    b = g (first step) | momentum * b + (1 - dampening) * g
    g = g + momentum * b (nesterov) | b
    p -= lr * g
"""

from __future__ import annotations

from ember.ops import fused as fused_ops
from ember.optim._common import FOR_EACH, FOR_LOOP, check_hyperparameters, to_scalar
from ember.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 1e-3).
        momentum: momentum factor (default: 0).
        dampening: dampening for momentum (default: 0).
        weight_decay: L2 penalty (default: 0).
        nesterov: use Nesterov momentum (default: False).
        maximize: maximize the objective instead of minimizing (default: False).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor.
        fused: use the fused C kernel (one native call for all parameters). When ``foreach``
            and ``fused`` are both None, Ember picks the fused kernel where it is available,
            else foreach (see ``Optimizer._implementation``).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.SGD([w], lr=0.1, momentum=0.9)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.8000, -1.6000], requires_grad=True)
    """

    _supports_fused = True
    _group_fallbacks = {"nesterov": False, "maximize": False, "foreach": None, "differentiable": False, "fused": False}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_hyperparameters(lr=lr, momentum=momentum, weight_decay=weight_decay)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, defaults)

    def _has_state(self, group) -> bool:
        return group["momentum"] != 0  # as torch: no state without momentum

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        momentum, dampening, weight_decay = group["momentum"], group["dampening"], group["weight_decay"]
        nesterov, maximize = group["nesterov"], group["maximize"]
        if impl == "fused":
            bufs, first = [], []
            for g, state in zip(grads, states or [{}] * len(params)):
                buf = state.get("momentum_buffer") if momentum != 0 else None
                if momentum != 0 and buf is None:
                    buf = state["momentum_buffer"] = g.detach().new_empty(g.shape)
                    first.append(True)
                else:
                    first.append(False)
                bufs.append(buf)
            fused_ops._fused_sgd_(
                params, grads, bufs, weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening,
                nesterov=nesterov, maximize=maximize, is_first_step=first,
            )  # fmt: skip
            return
        F = FOR_EACH if impl == "foreach" else FOR_LOOP
        if maximize:
            grads = F.neg(grads)
        if weight_decay != 0:
            grads = F.add(grads, params, alpha=weight_decay)
        if momentum != 0:
            bufs = []
            old_bufs, old_grads = [], []
            for g, state in zip(grads, states):
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.detach().clone()
                else:
                    old_bufs.append(buf)
                    old_grads.append(g)
                bufs.append(buf)
            if old_bufs:
                F.mul_(old_bufs, momentum)
                F.add_(old_bufs, old_grads, alpha=1 - dampening)
            grads = F.add(grads, bufs, alpha=momentum) if nesterov else bufs
        F.add_(params, grads, alpha=-lr)
