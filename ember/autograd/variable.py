"""``ember.autograd.Variable``: PyTorch's pre-0.4 wrapper, today an alias-making identity.

``Variable(t)`` returns a new leaf sharing ``t``'s memory (cut from ``t``'s graph), with
``requires_grad`` as given; ``isinstance(x, Variable)`` is true for every tensor, as in PyTorch.

Example:
    >>> import ember
    >>> from ember.autograd import Variable
    >>> v = Variable(ember.ones(2), requires_grad=True)
    >>> v.requires_grad, v.is_leaf, isinstance(ember.ones(1), Variable)
    (True, True, True)
"""

from __future__ import annotations

import warnings

from ember.tensor import TensorBase as Tensor  # every Tensor is one; importable while ember.tensor loads

__all__ = ["Variable"]


class _VariableMeta(type):
    def __instancecheck__(cls, other) -> bool:
        return isinstance(other, Tensor)


class Variable(metaclass=_VariableMeta):
    """Call it to get ``data.detach()`` with ``requires_grad`` set; it is not a tensor subclass."""

    def __new__(cls, data: Tensor, requires_grad: bool = False, volatile: bool = False) -> Tensor:
        if volatile:
            warnings.warn(
                "volatile was removed and now has no effect. Use `with torch.no_grad():` instead.", stacklevel=2
            )
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        out = data.detach()
        if requires_grad:
            out.requires_grad_()
        return out
