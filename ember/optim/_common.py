"""What every optimizer shares: hyperparameter checks, state factories and the two op sets.

An update rule is written once over *lists* of tensors (parameters, gradients, state) with the
op set ``F`` it is given:

- :data:`FOR_LOOP` runs each op as one in-place Tensor op per tensor (PyTorch's single-tensor
  "for-loop" implementation);
- :data:`FOR_EACH` runs each op as one multi-tensor op (``ember._foreach_*``) over the list.

Both are ops under ``no_grad``, so a capture of ``optimizer.step()`` sees every update, and
both compute the same values (elementwise ops are independent of how tensors are batched).
The fused implementations (``ember._fused_adam_`` and co.) live in ``ember/ops/fused.py``.
"""

from __future__ import annotations

import numpy as np

from ember import _dtype
from ember.ops import creation
from ember.ops import foreach as fe
from ember.tensor import Tensor

__all__ = ["FOR_EACH", "FOR_LOOP", "begin_update", "check_hyperparameters", "scalar_dtype", "step_tensor", "to_scalar"]


# --------------------------------------------------------------------------- hyperparameter checks
def _nonneg(v) -> bool:
    return 0.0 <= v


# name -> (test, PyTorch's message). Checked in the order the caller gives them.
_RULES = {
    "lr": (_nonneg, "Invalid learning rate: {}"),
    "eps": (_nonneg, "Invalid epsilon value: {}"),
    "momentum": (_nonneg, "Invalid momentum value: {}"),
    "weight_decay": (_nonneg, "Invalid weight_decay value: {}"),
    "alpha": (_nonneg, "Invalid alpha value: {}"),
    "lr_decay": (_nonneg, "Invalid lr_decay value: {}"),
    "initial_accumulator_value": (_nonneg, "Invalid initial_accumulator_value value: {}"),
    "rho": (lambda v: 0.0 <= v <= 1.0, "Invalid rho value: {}"),
    "momentum_decay": (_nonneg, "Invalid momentum_decay value: {}"),
}


def check_hyperparameters(**values) -> None:
    """Raise PyTorch's ``ValueError`` for the first invalid hyperparameter among ``values``.

    ``betas`` is checked as a pair in ``[0, 1)``; a tensor ``lr`` must have one element.

    Example:
        >>> check_hyperparameters(lr=0.1, eps=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: Invalid epsilon value: -1.0
    """
    for name, value in values.items():
        if name == "betas":
            for i, beta in enumerate(value):
                if isinstance(beta, Tensor) and beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
                if not 0.0 <= beta < 1.0:
                    raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
            continue
        if name == "lr" and isinstance(value, Tensor) and value.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        test, message = _RULES[name]
        if not test(value):
            raise ValueError(message.format(value))


def to_scalar(x):
    """A hyperparameter as a Python number (a one-element tensor gives its value)."""
    return x.item() if isinstance(x, Tensor) else x


# --------------------------------------------------------------------------- state factories
def scalar_dtype(is_fused: bool = False):
    """The dtype of scalar state (``step``, ``mu_product``, ...): float64 when that is the default
    dtype, else float32; always float32 for ``fused=True`` (as PyTorch)."""
    if not is_fused and _dtype.defaults.float.np == np.float64:
        return _dtype.float64
    return _dtype.float32


def step_tensor(value: float = 0.0, is_fused: bool = False) -> Tensor:
    """A 0-d CPU tensor holding a step count (or another scalar state value)."""
    return creation.tensor(float(value), dtype=scalar_dtype(is_fused))


# --------------------------------------------------------------------------- the two op sets
def _each(other, xs: list) -> list:
    return other if isinstance(other, (list, tuple)) else [other] * len(xs)


class _ForLoop:
    """One in-place (or out-of-place) Tensor op per tensor: PyTorch's "for-loop" path."""

    @staticmethod
    def add_(xs, other, alpha=1):
        for x, o in zip(xs, _each(other, xs)):
            x.add_(o, alpha=alpha)

    @staticmethod
    def add(xs, other, alpha=1):
        return [x.add(o, alpha=alpha) for x, o in zip(xs, _each(other, xs))]

    @staticmethod
    def sub(xs, other):
        return [x.sub(o) for x, o in zip(xs, _each(other, xs))]

    @staticmethod
    def mul_(xs, other):
        for x, o in zip(xs, _each(other, xs)):
            x.mul_(o)

    @staticmethod
    def mul(xs, other):
        return [x.mul(o) for x, o in zip(xs, _each(other, xs))]

    @staticmethod
    def div_(xs, other):
        for x, o in zip(xs, _each(other, xs)):
            x.div_(o)

    @staticmethod
    def div(xs, other):
        return [x.div(o) for x, o in zip(xs, _each(other, xs))]

    @staticmethod
    def addcmul_(xs, t1, t2, value=1):
        for x, a, b, v in zip(xs, t1, t2, _each(value, xs)):
            x.addcmul_(a, b, value=v)

    @staticmethod
    def addcmul(xs, t1, t2, value=1):
        return [x.addcmul(a, b, value=v) for x, a, b, v in zip(xs, t1, t2, _each(value, xs))]

    @staticmethod
    def addcdiv_(xs, t1, t2, value=1):
        for x, a, b, v in zip(xs, t1, t2, _each(value, xs)):
            x.addcdiv_(a, b, value=v)

    @staticmethod
    def lerp_(xs, ends, weight):
        for x, e in zip(xs, ends):
            x.lerp_(e, weight)

    @staticmethod
    def maximum_(xs, others):
        for x, o in zip(xs, others):
            x.maximum_(o)

    @staticmethod
    def sqrt(xs):
        return [x.sqrt() for x in xs]

    @staticmethod
    def sqrt_(xs):
        for x in xs:
            x.sqrt_()

    @staticmethod
    def neg(xs):
        return [x.neg() for x in xs]

    @staticmethod
    def abs(xs):
        return [x.abs() for x in xs]

    @staticmethod
    def copy_(xs, srcs):
        for x, s in zip(xs, srcs):
            x.copy_(s)


class _ForEach:
    """One multi-tensor op (``ember._foreach_*``) per call, over the whole list."""

    add_ = staticmethod(fe._foreach_add_)
    add = staticmethod(fe._foreach_add)
    mul_ = staticmethod(fe._foreach_mul_)
    mul = staticmethod(fe._foreach_mul)
    div_ = staticmethod(fe._foreach_div_)
    div = staticmethod(fe._foreach_div)
    addcmul_ = staticmethod(fe._foreach_addcmul_)
    addcmul = staticmethod(fe._foreach_addcmul)
    addcdiv_ = staticmethod(fe._foreach_addcdiv_)
    lerp_ = staticmethod(fe._foreach_lerp_)
    maximum_ = staticmethod(fe._foreach_maximum_)
    sqrt = staticmethod(fe._foreach_sqrt)
    sqrt_ = staticmethod(fe._foreach_sqrt_)
    neg = staticmethod(fe._foreach_neg)
    abs = staticmethod(fe._foreach_abs)
    copy_ = staticmethod(fe._foreach_copy_)

    @staticmethod
    def sub(xs, other):
        return fe._foreach_sub(xs, other)


FOR_LOOP = _ForLoop()
FOR_EACH = _ForEach()


def begin_update(group, params, grads, states, impl: str, *, l2: bool = True):
    """The steps the Adam-family updates (Adamax, RAdam, NAdam, Adadelta, ASGD) start with.

    Picks the op set (one op per tensor, or the multi-tensor ``_foreach_`` ops), adds 1 to each
    state's step count, negates the gradients for ``maximize`` and, with ``l2``, adds the L2
    penalty ``weight_decay * param`` to them. Returns ``(F, steps, grads)``.
    """
    F = FOR_LOOP if impl == "forloop" else FOR_EACH
    steps = [s["step"] for s in states]
    F.add_(steps, 1)
    if group["maximize"]:
        grads = F.neg(grads)
    if l2 and group["weight_decay"] != 0:
        grads = F.add(grads, params, alpha=group["weight_decay"])
    return F, steps, grads
