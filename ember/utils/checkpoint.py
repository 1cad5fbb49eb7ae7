"""Activation checkpointing: trade compute for memory by recomputing a segment in backward.

``checkpoint(fn, *args)`` runs ``fn`` without keeping its intermediate activations; when the
gradient reaches its outputs, ``fn`` is run again (with the same random numbers when
``preserve_rng_state``) to rebuild them, and the gradient flows on through the rebuilt graph.

* ``use_reentrant=True`` (PyTorch's historical default): the segment runs under ``no_grad``;
  backward re-runs it and calls ``ember.autograd.backward`` inside the outer backward, so
  parameters used inside get ``.grad`` directly. As in PyTorch, the output needs an input that
  requires grad, and ``ember.autograd.grad`` cannot reach parameters inside the segment.
* ``use_reentrant=False`` (recommended): the segment runs without recording a graph while a
  dispatch handler collects the tensors from outside it that require grad (parameters); the
  checkpoint node has an edge to each input and each of their leaves, so ``ember.autograd.grad``
  and ``backward(inputs=...)`` work, and keyword arguments are passed through. As in PyTorch,
  the recomputation stops early: the ops after the last one whose output backward reads (a
  block's last projection and residual add) get their gradient nodes but are not computed
  again (``ember/utils/_checkpoint_early_stop.py``; ``set_checkpoint_early_stop(False)`` turns
  it off).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from ember import random as _random
from ember.autograd import grad_mode
from ember.autograd.function import Function
from ember.autograd.node import Node
from ember.tensor import Tensor
from ember.utils._checkpoint_early_stop import OpLog, Replay, early_stop, set_checkpoint_early_stop

__all__ = ["checkpoint", "checkpoint_sequential", "set_checkpoint_early_stop"]


def _rng_state():
    """The default generator's state as NumPy's dict (cheaper than ``get_rng_state``'s tensor)."""
    return _random.default_generator.np.bit_generator.state


def _set_rng_state(state) -> None:
    _random.default_generator.np.bit_generator.state = state


@contextlib.contextmanager
def _rng_fork(state, enabled: bool):
    """Run a block with the global RNG set to ``state``, then put the current state back."""
    if not enabled:
        yield
        return
    current = _rng_state()
    _set_rng_state(state)
    try:
        yield
    finally:
        _set_rng_state(current)


def _detach_inputs(args):
    out = []
    for a in args:
        if isinstance(a, Tensor):
            d = a.detach()
            d.requires_grad_(a.requires_grad)
            out.append(d)
        else:
            out.append(a)
    return out


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


class _Reentrant(Function):
    @staticmethod
    def forward(ctx, run, preserve, *args):
        ctx.run, ctx.preserve = run, preserve
        ctx.rng = _rng_state() if preserve else None
        ctx.tensor_slots = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        ctx.plain = [None if isinstance(a, Tensor) else a for a in args]
        ctx.save_for_backward(*(a for a in args if isinstance(a, Tensor)))
        return run(*args)

    @staticmethod
    def backward(ctx, *grads):
        from ember.autograd import backward

        args = list(ctx.plain)
        for i, t in zip(ctx.tensor_slots, ctx.saved_tensors):
            args[i] = t
        inputs = _detach_inputs(args)
        with _rng_fork(ctx.rng, ctx.preserve), grad_mode.enable_grad():
            outputs = _as_tuple(ctx.run(*inputs))
        pairs = [(o, g) for o, g in zip(outputs, grads) if isinstance(o, Tensor) and o.requires_grad and g is not None]
        if not pairs:
            raise RuntimeError("none of output has requires_grad=True, this checkpoint() is not necessary")
        backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None) + tuple(x.grad if isinstance(x, Tensor) else None for x in inputs)


class _NonReentrant(Function):
    @staticmethod
    def forward(ctx, state, n_args, *args_and_leaves):
        ctx.state = state
        ctx.n_args = n_args
        ctx.save_for_backward(*(a for a in args_and_leaves if isinstance(a, Tensor)))
        ctx.plain = [None if isinstance(a, Tensor) else a for a in args_and_leaves]
        return state["outputs"]

    @staticmethod
    def backward(ctx, *grads):
        from ember.autograd import grad as autograd_grad

        st = ctx.state
        saved = iter(ctx.saved_tensors)
        full = [next(saved) if p is None else p for p in ctx.plain]
        args, leaves = full[: ctx.n_args], full[ctx.n_args :]
        inputs = _detach_inputs(args)
        # Rebuild the segment with the leaves themselves, so their gradients line up with edges;
        # with early stop, the ops after the last one whose output backward reads only get nodes.
        with _rng_fork(st["rng"], st["preserve"]), grad_mode.enable_grad(), _replay(st["stop"]):
            outputs = _as_tuple(st["run"](*inputs, **st["kwargs"]))
        pairs = [(o, g) for o, g in zip(outputs, grads) if isinstance(o, Tensor) and o.requires_grad and g is not None]
        wanted = [x for x in inputs + leaves if isinstance(x, Tensor) and x.requires_grad]
        got = iter(
            autograd_grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True)
            if pairs and wanted
            else []
        )
        result = [next(got) if isinstance(x, Tensor) and x.requires_grad else None for x in inputs + leaves]
        return (None, None) + tuple(result)


@contextlib.contextmanager
def _replay(stop):
    """The recomputation's dispatch handler (``_checkpoint_early_stop.Replay``), when early stop is on."""
    if stop is None:
        yield
        return
    from ember._mode import mode

    prev = mode.handler
    mode.handler = Replay(stop[0], stop[1], prev)
    try:
        yield
    finally:
        mode.handler = prev


class _ExternalInputs:
    """A dispatch handler for a block: collects, in order, the op inputs that require grad
    other than ``inputs`` (under no_grad, every such tensor comes from outside the block)."""

    def __init__(self, inputs):
        self.skip = {id(x) for x in inputs if isinstance(x, Tensor)}
        self.tensors: list = []
        self._ids: set = set()
        self.log = OpLog()  # what early stop needs to know about each op

    def __enter__(self):
        from ember._mode import mode

        self.prev = prev = mode.handler
        tensors, ids, skip, log = self.tensors, self._ids, self.skip, self.log
        from ember.ops.dispatch import run

        def handler(prim, ins, params):
            for x in ins:
                if isinstance(x, Tensor) and x._requires_grad and id(x) not in skip and id(x) not in ids:
                    ids.add(id(x))
                    tensors.append(x)
            out = prev(prim, ins, params) if prev is not None else run(prim, ins, params)
            log.note(prim, ins, out)
            return out

        mode.handler = handler
        return self

    def __exit__(self, *exc):
        from ember._mode import mode

        mode.handler = self.prev
        return False


def _segment_leaves(outputs, inputs) -> list:
    """Leaf tensors that require grad, reachable from ``outputs``, other than ``inputs``."""
    skip = {id(x) for x in inputs if isinstance(x, Tensor)}
    seen, leaves = set(), []
    stack = [o._node for o in outputs if isinstance(o, Tensor) and o._node is not None]
    stack += [o for o in outputs if isinstance(o, Tensor) and o._node is None and o._requires_grad]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, Node):
            stack.extend(x for x in e.edges if x is not None)
        elif id(e) not in skip:
            leaves.append(e)
    return leaves


def checkpoint(
    function,
    *args,
    use_reentrant: bool | None = None,
    context_fn=None,
    determinism_check: str = "default",
    debug: bool = False,
    preserve_rng_state: bool = True,
    **kwargs,
) -> Any:
    """Run ``function(*args, **kwargs)`` without storing its activations; recompute them in backward.

    Gradients equal those without checkpointing. ``preserve_rng_state`` replays the same random
    draws (dropout masks) in the recomputation.

    Example:
        >>> import ember
        >>> from ember.utils.checkpoint import checkpoint
        >>> lin = ember.nn.Linear(4, 4)
        >>> x = ember.randn(2, 4, requires_grad=True)
        >>> y = checkpoint(lambda t: lin(t).relu(), x, use_reentrant=False)
        >>> y.sum().backward()
        >>> x.grad.shape, lin.weight.grad.shape
        (ember.Size([2, 4]), ember.Size([4, 4]))
    """
    if use_reentrant is None:
        warnings.warn(
            "ember.utils.checkpoint: the use_reentrant parameter should be passed explicitly. "
            "use_reentrant=False is recommended; use_reentrant=True keeps the current default behavior.",
            stacklevel=2,
        )
        use_reentrant = True
    if determinism_check not in ("default", "none"):
        raise ValueError(f"determinism_check should be one of ['default', 'none'], but got {determinism_check}")
    if use_reentrant:
        if context_fn is not None or debug:
            raise ValueError("Passing `context_fn` or `debug` is only supported when use_reentrant=False.")
        if kwargs:
            raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
        if grad_mode.is_grad_enabled() and not any(isinstance(a, Tensor) and a.requires_grad for a in args):
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=2)
        return _Reentrant.apply(function, preserve_rng_state, *args)

    if not grad_mode.is_grad_enabled():
        return function(*args, **kwargs)
    fwd_ctx, _ = context_fn() if context_fn is not None else (contextlib.nullcontext(), None)
    rng = _rng_state() if preserve_rng_state else None
    inputs = _detach_inputs(args)
    # The first run keeps nothing for backward, so it records no graph: it runs under no_grad,
    # and a dispatch handler notes the tensors from outside the segment that require grad
    # (parameters, captured tensors), which the checkpoint node needs edges to. Recording a
    # graph only to drop it would cost a node per op and a walk over them.
    with fwd_ctx, _ExternalInputs(inputs) as seen, grad_mode.no_grad():
        outputs = function(*inputs, **kwargs)
    leaves = _segment_leaves(seen.tensors, inputs)
    log = seen.log
    log._made = None
    if not leaves and not any(isinstance(a, Tensor) and a.requires_grad for a in args):
        return outputs  # nothing to differentiate: the plain result
    # The segment's graph is dropped here: only the outputs' arrays stay alive.
    detached = tuple(o.detach() if isinstance(o, Tensor) else o for o in _as_tuple(outputs))
    state = {"run": function, "kwargs": kwargs, "rng": rng, "preserve": preserve_rng_state}
    state["stop"] = (log, log.stop_index()) if early_stop.enabled else None
    state["outputs"] = detached if isinstance(outputs, tuple) else detached[0]
    return _NonReentrant.apply(state, len(args), *args, *leaves)


def checkpoint_sequential(functions, segments: int, input, use_reentrant: bool | None = None, **kwargs):
    """Split a ``Sequential`` (or list of modules) into ``segments`` checkpointed chunks.

    The last chunk runs normally (its activations are needed at once by backward), as in PyTorch.

    Example:
        >>> import ember
        >>> from ember.utils.checkpoint import checkpoint_sequential
        >>> net = ember.nn.Sequential(ember.nn.Linear(4, 4), ember.nn.ReLU(), ember.nn.Linear(4, 2))
        >>> x = ember.randn(3, 4, requires_grad=True)
        >>> checkpoint_sequential(net, 2, x, use_reentrant=False).shape
        ember.Size([3, 2])
    """
    if use_reentrant is None:
        warnings.warn(
            "ember.utils.checkpoint.checkpoint_sequential: the use_reentrant parameter should be passed "
            "explicitly. use_reentrant=False is recommended.",
            stacklevel=2,
        )
        use_reentrant = True
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    if hasattr(functions, "children") and not isinstance(functions, (list, tuple)):
        functions = list(functions.children())

    def run_function(start, end, fns):
        def forward(x):
            for j in range(start, end + 1):
                x = fns[j](x)
            return x

        return forward

    segment_size = len(functions) // segments
    end = -1
    for start in range(0, segment_size * (segments - 1), segment_size):
        end = start + segment_size - 1
        input = checkpoint(
            run_function(start, end, functions), input, use_reentrant=use_reentrant, preserve_rng_state=preserve
        )
    return run_function(end + 1, len(functions) - 1, functions)(input)
