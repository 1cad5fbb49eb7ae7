"""``Module.register_full_backward_hook``: ``hook(module, grad_input, grad_output)`` runs when the
gradients with respect to the module's tensor inputs are computed, and may replace them.

As in PyTorch, the module's tensor inputs and outputs pass through an identity Function: the one on
the outputs records ``grad_output``, the one on the inputs calls the hooks with ``grad_input`` and
returns their replacement, checked for count, size and dtype.

Example:
    >>> import ember
    >>> m = ember.nn.Linear(3, 2)
    >>> seen = []
    >>> h = m.register_full_backward_hook(lambda mod, gi, go: seen.append(go[0].shape))
    >>> m(ember.ones(4, 3, requires_grad=True)).sum().backward()
    >>> seen
    [ember.Size([4, 2])]
"""

from __future__ import annotations

from ember.autograd import grad_mode
from ember.autograd._hook_checks import checked_hook_result
from ember.autograd.function import Function
from ember.tensor import Tensor

__all__ = ["call_with_backward_hooks"]


class _Identity(Function):
    @staticmethod
    def forward(ctx, *tensors, callback=None):
        ctx.callback = callback
        return tensors if len(tensors) > 1 else tensors[0]

    @staticmethod
    def backward(ctx, *grads):
        return ctx.callback(grads)


def _through(values: list, callback) -> list:
    """``values`` with its grad-requiring tensors passed through one :class:`_Identity`."""
    at = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
    if not at:
        return values
    res = _Identity.apply(*[values[i] for i in at], callback=callback)
    res = res if isinstance(res, tuple) else (res,)
    values = list(values)
    for i, r in zip(at, res):
        values[i] = r
    return values


def _run_hooks(module, grad_input: tuple, grad_output: tuple) -> tuple:
    for hook in list(module._backward_hooks.values()):
        res = hook(module, grad_input, grad_output)
        if res is None:
            continue
        if not isinstance(res, (tuple, list)) or len(res) != len(grad_input):
            got = len(res) if isinstance(res, (tuple, list)) else type(res).__name__
            raise RuntimeError(
                f"Backward hook returned an invalid number of grad_input, got {got}, but expected {len(grad_input)}"
            )
        grad_input = tuple(
            new if old is None or new is None else checked_hook_result(hook, old, new)
            for old, new in zip(grad_input, res)
        )
    return grad_input


def call_with_backward_hooks(module, forward, args: tuple, kwargs: dict):
    """Run ``forward(*args, **kwargs)`` with the module's full backward hooks attached."""
    if not grad_mode.is_grad_enabled():
        return forward(*args, **kwargs)
    state = {"grad_output": None}
    inputs_tracked = any(isinstance(a, Tensor) and a.requires_grad for a in args)

    def on_inputs(grads):
        return _run_hooks(module, tuple(grads), state["grad_output"])

    def on_outputs(grads):
        state["grad_output"] = tuple(grads)
        if not inputs_tracked:  # no gradient flows to the inputs: the hooks see None for them
            _run_hooks(module, tuple(None for a in args if isinstance(a, Tensor)), state["grad_output"])
        return grads

    args = tuple(_through(list(args), on_inputs))
    out = forward(*args, **kwargs)
    if isinstance(out, Tensor):
        return _through([out], on_outputs)[0]
    if isinstance(out, tuple):
        return type(out)(_through(list(out), on_outputs)) if type(out) is tuple else out
    return out
