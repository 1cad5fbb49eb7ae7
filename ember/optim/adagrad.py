"""``Adagrad``: per-coordinate learning rates from the running sum of squared gradients.

The update is torch's (``torch/optim/adagrad.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad; g = g + wd * p (if wd)
    clr = lr / (1 + (t - 1) * lr_decay)
    s.addcmul_(g, g)
    p.addcdiv_(g, sqrt(s) + eps, value=-clr)
"""

from __future__ import annotations

from ember.ops import creation
from ember.ops import fused as fused_ops
from ember.optim._common import FOR_EACH, FOR_LOOP, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor

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
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor.
        fused: use the fused C kernel (one native call for all parameters); with both None,
            Ember picks it where available (see ``Optimizer._implementation``).
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
        check_hyperparameters(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, eps=eps,
        )  # fmt: skip
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
                self._init_state(p, self.state[p], group)

    _supports_fused = True
    _group_fallbacks = {"foreach": None, "maximize": False, "differentiable": False, "fused": None}

    def _init_state(self, p: Tensor, state: dict, group: dict) -> None:
        state["step"] = step_tensor(is_fused=bool(group["fused"]))
        state["sum"] = creation.full_like(p, group["initial_accumulator_value"])

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        lr_decay, eps, weight_decay, maximize = (
            group["lr_decay"],
            group["eps"],
            group["weight_decay"],
            group["maximize"],
        )
        steps = [s["step"] for s in states]
        sums = [s["sum"] for s in states]
        F = FOR_LOOP if impl == "forloop" else FOR_EACH
        F.add_(steps, 1)
        if impl == "fused":
            fused_ops._fused_adagrad_(
                params, grads, sums, steps, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                maximize=maximize,
            )  # fmt: skip
            return
        if maximize:
            grads = F.neg(grads)
        if weight_decay != 0:
            grads = F.add(grads, params, alpha=weight_decay)
        F.addcmul_(sums, grads, grads, 1)
        std = F.sqrt(sums)
        F.add_(std, eps)
        F.addcdiv_(params, grads, std, [-lr / (1 + (s.item() - 1) * lr_decay) for s in steps])
