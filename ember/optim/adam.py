"""``Adam`` and ``AdamW``: adaptive moment estimation, with L2 or decoupled weight decay.

The update is torch's (``torch/optim/adam.py``), as in-place Tensor ops::

    t += 1; g = -grad if maximize else grad
    p *= 1 - lr * wd  (AdamW)    |    g = g + wd * p  (Adam, if wd)
    m.lerp_(g, 1 - beta1);  v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    v_max = max(v_max, v)  (amsgrad; used instead of v below)
    p.addcdiv_(m, sqrt(v) / sqrt(1 - beta2**t) + eps, value=-lr / (1 - beta1**t))
"""

from __future__ import annotations

import math

from ember._mode import mode as _mode
from ember.ops import creation
from ember.ops import fused as fused_ops
from ember.optim._common import FOR_EACH, FOR_LOOP, check_hyperparameters, step_tensor, to_scalar
from ember.optim.optimizer import Optimizer
from ember.tensor import Tensor

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """The Adam algorithm, as ``torch.optim.Adam``.

    Args:
        params: parameters, or dicts defining parameter groups.
        lr: learning rate (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its square
            (default: (0.9, 0.999)).
        eps: added to the denominator for numerical stability (default: 1e-8).
        weight_decay: weight decay (L2 penalty; decoupled when ``decoupled_weight_decay``) (default: 0).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximize the objective instead of minimizing (default: False).
        decoupled_weight_decay: apply weight decay to the parameter directly, as AdamW (default: False).
        foreach: use the multi-tensor ops (``ember._foreach_*``); False: one op per tensor.
        fused: use the fused C kernel (one native call for all parameters). When ``foreach``
            and ``fused`` are both None, Ember picks the fused kernel where it is available,
            else foreach (see ``Optimizer._implementation``).
        capturable: accepted for compatibility (CPU only).
        differentiable: must be False.

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.Adam([w], lr=0.1)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.9000, -1.9000], requires_grad=True)
    """

    _supports_fused = True
    _group_fallbacks = {
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
        "fused": None,
    }

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        check_hyperparameters(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        both_float = isinstance(betas[0], float) and isinstance(betas[1], float)
        both_tensor = isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor)
        if not (both_float or both_tensor):
            raise ValueError("betas must be either both floats or both Tensors")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _init_state(self, p, state, group) -> None:
        state["step"] = step_tensor(is_fused=bool(group["fused"]))
        state["exp_avg"] = creation.zeros_like(p)
        state["exp_avg_sq"] = creation.zeros_like(p)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = creation.zeros_like(p)

    def _update(self, group, params, grads, states, impl) -> None:
        lr = to_scalar(group["lr"])
        beta1, beta2 = (to_scalar(b) for b in group["betas"])
        eps, weight_decay, amsgrad = group["eps"], group["weight_decay"], group["amsgrad"]
        maximize, decoupled = group["maximize"], group["decoupled_weight_decay"]
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        max_sqs = [s["max_exp_avg_sq"] for s in states] if amsgrad else None
        F = FOR_LOOP if impl == "forloop" else FOR_EACH
        F.add_(steps, 1)
        if impl == "fused":
            fn = fused_ops._fused_adamw_ if decoupled else fused_ops._fused_adam_
            fn(
                params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps, lr=lr, beta1=beta1, beta2=beta2,
                weight_decay=weight_decay, eps=eps, amsgrad=amsgrad, maximize=maximize,
            )  # fmt: skip
            return
        if maximize:
            grads = F.neg(grads)
        if weight_decay != 0:
            if decoupled:
                F.mul_(params, 1 - lr * weight_decay)
            else:
                grads = F.add(grads, params, alpha=weight_decay)
        F.lerp_(exp_avgs, grads, 1 - beta1)
        F.mul_(exp_avg_sqs, beta2)
        F.addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        # under ember.compile's capture, where reading a count would break the graph
        traced = _mode.data_read is not None and steps[0]._device.type == "meta"
        counts = None if traced else [s.item() for s in steps]
        if amsgrad:
            F.maximum_(max_sqs, exp_avg_sqs)
        denom = F.sqrt(max_sqs if amsgrad else exp_avg_sqs)
        if traced:  # the step counts stay tensors (as torch's _get_value when compiling): one graph
            F.div_(denom, [_bias_correction(s, beta2).sqrt() for s in steps])
            F.add_(denom, eps)
            update = F.div(exp_avgs, denom)
            F.mul_(update, [_bias_correction(s, beta1).reciprocal() * -lr for s in steps])
            F.add_(params, update)
            return
        F.div_(denom, [math.sqrt(1 - beta2**t) for t in counts])
        F.add_(denom, eps)
        F.addcdiv_(params, exp_avgs, denom, [-lr / (1 - beta1**t) for t in counts])


def _bias_correction(step: Tensor, beta: float) -> Tensor:
    """``1 - beta**step`` of a step count tensor, as ``-expm1(step * log(beta))``: in float32,
    ``1 - 0.999**1`` loses four digits to cancellation."""
    if beta == 0:
        return step * 0 + 1
    return -(step * math.log(beta)).expm1()


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``.

    Takes the arguments of :class:`Adam` (without ``decoupled_weight_decay``, which is always on).

    Example:
        >>> import ember
        >>> w = ember.tensor([1.0, -2.0], requires_grad=True)
        >>> opt = ember.optim.AdamW([w], lr=0.1, weight_decay=0.1)
        >>> (w * w).sum().backward()
        >>> opt.step()
        >>> w
        tensor([ 0.8900, -1.8800], requires_grad=True)
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
