"""``ember.func``: function transforms, as ``torch.func`` — ``grad``, ``grad_and_value``, ``vjp``,
``jacrev``, ``hessian`` and ``functional_call``.

The transforms are built on reverse-mode autograd: each call makes fresh leaves for the inputs
it differentiates, runs the function, and takes ``ember.autograd.grad`` with ``create_graph``
so that transforms nest (``jacrev(jacrev(f))`` is the Hessian) and results stay differentiable
with respect to inputs that an outer computation tracks. Inputs may be pytrees (nested tuples,
lists and dicts of tensors).

Not here yet: ``jvp``, ``jacfwd`` (they need forward-mode AD) and ``vmap`` (it needs batching
rules per primitive at the dispatch point); ``hessian`` is therefore ``jacrev(jacrev(f))``
rather than PyTorch's ``jacfwd(jacrev(f))`` (same numbers).

Example:
    >>> import ember
    >>> from ember.func import grad
    >>> grad(lambda x: (x ** 3).sum())(ember.tensor([1.0, 2.0]))
    tensor([ 3., 12.])
"""

from __future__ import annotations

from ember.func._functional_call import functional_call
from ember.func._transforms import grad, grad_and_value, hessian, jacrev, vjp

__all__ = ["grad", "grad_and_value", "vjp", "jacrev", "hessian", "functional_call"]
