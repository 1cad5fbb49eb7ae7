"""Automatic differentiation: ``backward``, ``grad``, custom ``Function`` and ``gradcheck``.

Reverse mode over the recorded graph: every op output remembers its node, and ``backward``
walks the nodes in reverse topological order (``engine.py``), calling each gradient rule. Rules
are Tensor code, so with ``create_graph=True`` the backward pass is itself a graph that can be
differentiated again.

Example:
    >>> import ember
    >>> x = ember.tensor(2.0, requires_grad=True)
    >>> (g,) = ember.autograd.grad(x ** 3, x, create_graph=True)
    >>> (gg,) = ember.autograd.grad(g, x)
    >>> g.item(), gg.item()
    (12.0, 12.0)
"""

from __future__ import annotations

import numpy as np

import ember
from ember._device import CPU
from ember._mode import mode as _mode
from ember._mutations import bump as _bump
from ember.autograd import engine
from ember.autograd.function import Function, FunctionCtx, once_differentiable
from ember.autograd.grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from ember.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck
from ember.autograd.node import Node
from ember.autograd.variable import Variable

__all__ = [
    "backward",
    "grad",
    "Function",
    "FunctionCtx",
    "once_differentiable",
    "gradcheck",
    "gradgradcheck",
    "GradcheckError",
    "no_grad",
    "enable_grad",
    "set_grad_enabled",
    "inference_mode",
    "is_grad_enabled",
    "Node",
    "Variable",
]


def _as_tuple(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return tuple(x)
    return (x,)


def _root_grads(outputs, grad_outputs, create_graph: bool):
    # ember.ops imports this package: its modules are read at call time, as attributes (two
    # function-level imports would cost 1 us per backward call).
    ops = ember.ops
    grads = []
    for i, out in enumerate(outputs):
        g = grad_outputs[i] if grad_outputs is not None else None
        if g is None:
            if out._data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (output {i} has shape {list(out.shape)})"
                )
            d = out._data
            # The seed gradient: np.ones directly on CPU (ones_like's argument handling costs
            # more than the rest of a small backward's first step).
            eager_cpu = out._device is CPU and _mode.handler is None  # modes see ones_like as an op
            g = ops._base._wrap(np.ones(d.shape, d.dtype)) if eager_cpu else ops.creation.ones_like(out)
        elif not isinstance(g, ops._base.Tensor):
            raise TypeError(f"grad_outputs[{i}] must be a Tensor or None, not {type(g).__name__}")
        elif g._data.shape != out._data.shape:
            raise RuntimeError(
                f"Mismatch in shape: grad_output[{i}] has a shape of {g.shape} and output[{i}] has a shape of {out.shape}."
            )
        elif g._data.dtype != out._data.dtype:
            g = g.to(out.dtype)
        grads.append(g)
    return grads


def _check_roots(outputs) -> list:
    edge = ember.ops.dispatch.edge  # (read as in _root_grads)
    roots = []
    for i, out in enumerate(outputs):
        if not out._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
        roots.append(edge(out))
    return roots


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph: bool = False, inputs=None) -> None:
    """Accumulate gradients of ``tensors`` into the ``.grad`` of the graph's leaves.

    Example:
        >>> import ember
        >>> x = ember.ones(3, requires_grad=True)
        >>> ember.autograd.backward((x * 2).sum())
        >>> x.grad
        tensor([2., 2., 2.])
    """
    outputs = _as_tuple(tensors)
    grad_tensors = _as_tuple(grad_tensors)
    if retain_graph is None:
        retain_graph = create_graph
    roots = _check_roots(outputs)
    grads = _root_grads(outputs, grad_tensors, create_graph)
    if inputs is not None:
        inputs = _as_tuple(inputs)
        got = grad(outputs, inputs, grads, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
        for x, g in zip(inputs, got):
            if g is None:
                continue
            x._grad = g if x._grad is None else x._grad + g
            _bump()  # compiled steps' guards (ember/_mutations.py)
        return
    engine.run_backward(roots, grads, retain_graph, create_graph)


def grad(
    outputs,
    inputs,
    grad_outputs=None,
    retain_graph=None,
    create_graph: bool = False,
    only_inputs: bool = True,
    allow_unused=None,
    is_grads_batched: bool = False,
    materialize_grads: bool = False,
):
    """Gradients of ``outputs`` with respect to ``inputs``, returned rather than accumulated.

    Example:
        >>> import ember
        >>> x = ember.tensor([1.0, 2.0], requires_grad=True)
        >>> ember.autograd.grad((x * x).sum(), x)
        (tensor([2., 4.]),)
    """
    from ember.ops.creation import zeros_like
    from ember.ops.dispatch import edge

    outputs = _as_tuple(outputs)
    inputs = _as_tuple(inputs)
    if allow_unused is None:
        allow_unused = materialize_grads
    if retain_graph is None:
        retain_graph = create_graph
    for i, x in enumerate(inputs):
        if not x._requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require grad")
    roots = _check_roots(outputs)
    grads = _root_grads(outputs, _as_tuple(grad_outputs), create_graph)
    capture = [edge(x) for x in inputs]
    got = engine.run_backward(roots, grads, retain_graph, create_graph, capture=capture)
    result = []
    for i, (x, g) in enumerate(zip(inputs, got)):
        if g is None:
            if materialize_grads:
                g = zeros_like(x)
            elif not allow_unused:
                raise RuntimeError(
                    f"One of the differentiated Tensors (input {i}) appears to not have been used in the "
                    "graph. Set allow_unused=True if this is the desired behavior."
                )
        elif not create_graph:
            g = g.detach()
        result.append(g)
    return tuple(result)


from ember.autograd import functional  # noqa: E402, F401 - jacobian, hessian, vjp, jvp, hvp, vhp
