"""``ember.func``: function transforms, as ``torch.func`` — ``grad``, ``grad_and_value``, ``vjp``,
``jacrev``, ``hessian``, ``functional_call``, ``jvp``, ``jacfwd`` and ``vmap``.

The transforms are built on reverse-mode autograd: each call makes fresh leaves for the inputs
it differentiates, runs the function, and takes ``ember.autograd.grad`` with ``create_graph``
so that transforms nest (``jacrev(jacrev(f))`` is the Hessian) and results stay differentiable
with respect to inputs that an outer computation tracks. Inputs may be pytrees (nested tuples,
lists and dicts of tensors).

``jvp`` and ``jacfwd`` use forward-mode AD (``ember.autograd.forward_ad``: a JVP rule per
primitive at the dispatch point), with nested levels (``jvp`` of ``jvp``, ``jacfwd(jacfwd(f))``)
and forward over reverse (``jvp(grad(f))``; ``hessian`` is ``jacfwd(jacrev(f))`` as in
PyTorch). ``vmap`` batches each primitive by its batching rule; reverse mode inside it
(``vmap(grad(f))``, per-sample gradients) records on the physical batched tensors
(``ember/func/_batched_grad.py``).

Example:
    >>> import ember
    >>> from ember.func import grad
    >>> grad(lambda x: (x ** 3).sum())(ember.tensor([1.0, 2.0]))
    tensor([ 3., 12.])
"""

from __future__ import annotations

from ember.func._functional_call import functional_call
from ember.func._jvp import jacfwd, jvp
from ember.func._transforms import grad, grad_and_value, hessian, jacrev, vjp
from ember.func._vmap import vmap

__all__ = ["grad", "grad_and_value", "vjp", "jacrev", "hessian", "functional_call", "jvp", "jacfwd", "vmap"]
