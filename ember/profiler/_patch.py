"""Install and remove the profiler's timing wrappers.

Forward: every public function of the op modules is replaced, in its module, in the ``ember``
namespace and on ``Tensor`` (methods and operators), by one wrapper per function object; calls
between ops go through module globals, so nested ops are seen too. Backward: every Node
subclass's ``backward`` is wrapped under the node's name. ``uninstall`` puts the originals back.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types

_MODULES = [
    "ember.ops.elementwise",
    "ember.ops.reduce",
    "ember.ops.movement",
    "ember.ops.index",
    "ember.ops.linalg",
    "ember.ops.creation",
    "ember.ops.convert",
    "ember.ops.inplace",
    "ember.nn.functional",
    "ember.nn.functional.activation",
    "ember.nn.functional.loss",
    "ember.nn.functional.normalization",
    "ember.nn.functional.linear",
    "ember.nn.functional.conv",
    "ember.nn.functional.pooling",
    "ember.nn.functional.attention",
    "ember.nn.functional.rnn",
]

_saved: list = []  # (owner, attribute name, original)


def _forward_wrapper(fn, prof):
    name = fn.__name__

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = prof._enter_op()
        try:
            return fn(*args, **kwargs)
        finally:
            # Ops called by a gradient rule belong to the backward pass.
            prof._exit_op(name, start, "backward" if prof._backward_depth else "forward")

    return timed


def _backward_wrapper(fn, prof):
    @functools.wraps(fn)
    def timed(self, grad):
        start = prof._enter_op()
        prof._backward_depth += 1
        try:
            return fn(self, grad)
        finally:
            prof._backward_depth -= 1
            prof._exit_op(self.name(), start, "backward")

    return timed


def _replace(owner, attr: str, new) -> None:
    _saved.append((owner, attr, owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)))
    setattr(owner, attr, new)


def _all_subclasses(cls):
    seen, stack = [], [cls]
    while stack:
        c = stack.pop()
        for sub in c.__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


def install(prof) -> None:
    import ember
    from ember.autograd.node import Node
    from ember.tensor import Tensor

    wrappers: dict = {}  # id(original function) -> wrapper, so each function is wrapped once
    modules = []
    for name in _MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            continue
    for mod in modules:
        for attr, fn in list(vars(mod).items()):
            if attr.startswith("_") or not isinstance(fn, types.FunctionType):
                continue
            if fn.__module__ not in _MODULES:  # skip helpers imported from elsewhere (record, ...)
                continue
            w = wrappers.get(id(fn))
            if w is None:
                w = wrappers[id(fn)] = _forward_wrapper(fn, prof)
            _replace(mod, attr, w)
    # Modules that imported an op by name (``from ember.nn.functional.conv import conv2d``) hold
    # the original function object: swap it there too, so no call escapes the profile.
    others = [
        m for n, m in sorted(sys.modules.items()) if n.startswith("ember.") and m is not None and m not in modules
    ]
    for owner in [ember, Tensor] + others:
        for attr, fn in list(vars(owner).items()):
            if isinstance(fn, types.FunctionType) and id(fn) in wrappers:
                _replace(owner, attr, wrappers[id(fn)])
    for cls in _all_subclasses(Node):
        if "backward" in cls.__dict__:
            _replace(cls, "backward", _backward_wrapper(cls.__dict__["backward"], prof))


def uninstall() -> None:
    while _saved:
        owner, attr, original = _saved.pop()
        setattr(owner, attr, original)
