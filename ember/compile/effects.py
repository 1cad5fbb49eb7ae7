"""Python state a captured training step changes besides tensor memory, and its guards.

A step (``loss.backward()``, ``optimizer.zero_grad()``, ``optimizer.step()``) changes more than
the tensors its ops write in place: the backward sets or accumulates leaves' ``.grad``,
``zero_grad()`` sets them to None, and an optimizer's first step fills ``optimizer.state``. The
capture records these Python-level changes here while the function runs on tracers, undoes them
afterwards, and turns them into *writebacks*: after each compiled call, ``p.grad`` and
``optimizer.state[p][key]`` are set to the graph values (or None) they held at the end of the
trace, so the Python state is eager's.

A graph is only valid for the state it was traced in, so the same pass yields *guards*: whether
each touched ``.grad`` was None, and for each stepped optimizer its hyperparameters (baked into
the update ops as numbers) and the structure and identity of its state.

Example:
    >>> from ember.compile.effects import Effects  # see tests/test_compile_step.py
"""

from __future__ import annotations

import threading
from itertools import chain, repeat
from operator import attrgetter, is_

from ember.optim._tracked import MUTATIONS, ParamState, StateDict
from ember.optim.optimizer import register_optimizer_step_pre_hook
from ember.tensor import Tensor

__all__ = ["Effects", "FastGuards", "Guards", "OptimizerGuard", "TensorGuards", "write_back"]


_MISSING = object()
_DATA = attrgetter("_data")
_RG = attrgetter("_requires_grad")
_GRAD = attrgetter("_grad")
_TRAINING = attrgetter("training")
_values = dict.values


def _same_value(now, then) -> bool:
    if now is then:
        return True
    if isinstance(then, Tensor) or isinstance(now, Tensor):
        return False  # state tensors are guarded by identity
    try:
        return bool(now == then)
    except Exception:
        return False


class OptimizerGuard:
    """An optimizer's groups (hyperparameters are numbers in the update ops) and state (its
    tensors by identity), as a capture saw them; ``check()`` in a few microseconds per group."""

    def __init__(self, opt):
        self.opt = opt
        self.groups = [
            (g, g["params"], len(g["params"]), [(k, v) for k, v in g.items() if k != "params"])
            for g in opt.param_groups
        ]
        self.state = [(p, s, len(s), list(s.items())) for p, s in opt.state.items()]

    def check(self) -> bool:
        o = self.opt
        if len(o.param_groups) != len(self.groups) or len(o.state) != len(self.state):
            return False
        for g, (g0, params, n, items) in zip(o.param_groups, self.groups):
            if g is not g0 or g["params"] is not params or len(params) != n:
                return False
            for k, v in items:
                if not _same_value(g.get(k, _MISSING), v):
                    return False
        state = o.state
        for p, s0, n, items in self.state:
            s = state.get(p)
            if s is not s0 or len(s) != n:
                return False
            for k, v in items:
                if not _same_value(s.get(k, _MISSING), v):
                    return False
        return True


class TensorGuards:
    """Shape, dtype, device and ``requires_grad`` of tensors a graph reads besides its arguments."""

    def __init__(self, tensors: list):
        self.items = [(t, t._data.shape, t._data.dtype, t._device, t._requires_grad) for t in tensors]

    def check(self) -> bool:
        for t, shape, dtype, dev, rg in self.items:
            d = t._data
            if d.shape != shape or d.dtype != dtype or t._device is not dev or t._requires_grad is not rg:
                return False
        return True


class Guards:
    """What a step graph assumed about Python state: ``check()`` is True when it still holds."""

    def __init__(self, grads: list, opts: list, modules: list = ()):
        self.grads = grads  # (tensor, grad was None)
        self.opts = opts  # OptimizerGuard
        self.modules = modules  # (module, .training): dropout and batch norm depend on it

    def check(self) -> bool:
        for p, was_none in self.grads:
            if (p._grad is None) is not was_none:
                return False
        for m, t in self.modules:
            if m.training != t:
                return False
        for o in self.opts:
            if not o.check():
                return False
        return True


class FastGuards:
    """A guard check that, once the full check passed, passes again while every object it read is
    the same one (by identity) and every flag has the same value: a handful of C-level ``map``s
    over the objects instead of the full check's Python loops (a few microseconds for a GPT step's
    200 tensors and its optimizer).

    What it reads: the guarded tensors' arrays (a tensor's shape, dtype and device change only
    with its ``_data``) and ``requires_grad``; whether each ``.grad`` in ``none`` is None; each
    ``.grad`` in ``read`` and its array; each module's ``training``; each optimizer's groups
    (dicts, their keys and values: hyperparameters are numbers, compared by identity as
    ``OptimizerGuard`` does) and state (keys, per-parameter dicts, their keys and values). The
    objects of the last passing check are held, so their ids cannot be reused by new objects.

    An optimizer's state (a GPT step's Adam: ~1,500 objects, which after the native step come
    from memory) is read only when ``optim._tracked.MUTATIONS`` moved since the last pass: its
    ``StateDict``/``ParamState`` dicts advance it on every change. Where a state holds a plain
    dict (a user's ``opt.state[p] = {...}``), the state is read on every call, as everything else
    here is (tensors' arrays, ``requires_grad`` and ``.grad`` are set directly by internal code:
    no counter could see every change).

    ``full()`` runs the complete check when something differs; ``datas`` is the list of the
    tensors' arrays at the last pass (the same list object while nothing changed: a program's
    pointer table is refilled only when it is a new list).
    """

    def __init__(self, full, tensors=(), none=(), read=(), modules=(), opts=()):
        self.full = full
        self.tensors = list(tensors)
        self.none = list(none)
        self.read = list(read)
        self.modules = list(modules)
        self.opts = list(opts)
        self.datas = None
        self._ids = self._flags = self._held = None
        self._short = None  # (ids, flags) of the signature without the optimizers' states
        self._epoch = None  # MUTATIONS[0] at the last pass, where every state counts its changes

    def _signature(self, datas, state: bool = True) -> tuple:
        other: list = []
        flags = list(map(_RG, self.tensors))
        if self.none:
            flags += map(is_, map(_GRAD, self.none), repeat(None))
        if self.modules:
            flags += map(_TRAINING, self.modules)
        if self.read:
            grads = list(map(_GRAD, self.read))
            other += grads
            other += [getattr(g, "_data", None) for g in grads]
        for o in self.opts:
            groups = o.param_groups
            other.append(groups)
            other += groups
            other += chain.from_iterable(map(_values, groups))
            flags += chain.from_iterable(groups)  # the keys
            flags += map(len, groups)
            flags += [len(g.get("params", ())) for g in groups]
            other.append(o.state)
        # The states' contents come last: the signature without them is a prefix of the whole.
        for o in self.opts if state else ():
            state_ = o.state
            dicts = list(state_.values())
            other += state_  # the parameters
            other += dicts
            other += chain.from_iterable(map(_values, dicts))
            flags += chain.from_iterable(dicts)  # the keys
            flags += map(len, dicts)
        ids = list(map(id, datas))
        ids += map(id, other)
        return ids, flags, other

    def check(self) -> bool:
        datas = list(map(_DATA, self.tensors))
        if self._epoch == MUTATIONS[0]:  # no optimizer state changed since the last pass
            ids, flags, _ = self._signature(datas, state=False)
            if ids == self._short[0] and flags == self._short[1]:
                return True
        epoch = MUTATIONS[0]
        ids, flags, other = self._signature(datas)
        if ids != self._ids or flags != self._flags:
            if not self.full():
                return False
            self.datas = datas
        self._ids, self._flags, self._held = ids, flags, other
        self._epoch = None
        if all(_tracked(o.state) for o in self.opts):
            short_ids, short_flags, _ = self._signature(datas, state=False)
            self._short = (short_ids, short_flags)
            self._epoch = epoch
        return True


def write_back(w: tuple, value) -> None:
    """Apply one writeback of :meth:`Effects.collect` with its value from this call: a ``.grad``,
    a module's ``training`` or an optimizer state entry, as the eager step would have left it."""
    if w[0] == "grad":
        w[1]._grad = None if value is None else value._owned()
    elif w[0] == "training":
        w[1].training = value
    else:
        _, opt, p, key, _ = w
        opt.state[p][key] = value


def _tracked(state) -> bool:
    """Whether every change to an optimizer's state advances ``MUTATIONS`` (its dicts count)."""
    return type(state) is StateDict and all(type(s) is ParamState for s in state.values())


class Effects:
    """Track ``.grad`` and optimizer-state changes during one trace (``with effects:``)."""

    def __init__(self):
        self.grad_before: dict = {}  # id(tensor) -> (tensor, its .grad before the trace)
        self.accessed: set = set()  # ids of tensors whose .grad the program read or set
        self.opts: dict = {}  # id(optimizer) -> (optimizer, {param: dict(state)} before the trace)
        self.modules: dict = {}  # id(module) -> (module, .training before the trace)
        self._prop = None
        self._hook = None

    def note_grad(self, t: Tensor) -> None:
        if id(t) not in self.grad_before:
            self.grad_before[id(t)] = (t, t._grad)

    def _note_opt(self, opt, args, kwargs) -> None:
        if id(opt) not in self.opts:
            self.opts[id(opt)] = (opt, {p: dict(s) for p, s in opt.state.items()})

    def __enter__(self):
        owner = next(c for c in Tensor.__mro__ if "grad" in vars(c))  # where the property lives
        prop = vars(owner)["grad"]
        effects = self

        thread = threading.current_thread()  # other threads' .grad are theirs

        def fget(t):
            if threading.current_thread() is thread:
                effects.note_grad(t)
                effects.accessed.add(id(t))
            return prop.fget(t)

        def fset(t, value):
            if threading.current_thread() is thread:
                effects.note_grad(t)
                effects.accessed.add(id(t))
            prop.fset(t, value)

        self._prop = (owner, prop)
        owner.grad = property(fget, fset, doc=prop.__doc__)
        from ember.nn.modules.module import Module

        call, train = Module.__call__, Module.train

        def note(m) -> None:
            if threading.current_thread() is thread and id(m) not in effects.modules:
                effects.modules[id(m)] = (m, m.training)

        def patched_call(m, *args, **kwargs):
            note(m)
            return call(m, *args, **kwargs)

        def patched_train(m, mode=True):
            note(m)
            return train(m, mode)

        self._module = (Module, call, train)
        Module.__call__, Module.train = patched_call, patched_train
        self._hook = register_optimizer_step_pre_hook(self._note_opt)
        return self

    def __exit__(self, *exc):
        owner, prop = self._prop
        owner.grad = prop
        module, call, train = self._module
        module.__call__, module.train = call, train
        self._hook.remove()

    def grad_bindings(self) -> dict:
        """id(a .grad that existed before the trace) -> the tensor it belonged to."""
        return {id(g): t for t, g in self.grad_before.values() if g is not None}

    def collect(self, resolve, unsupported) -> tuple:
        """``(writebacks, guards)`` from the state at the end of the trace; ``resolve(t)`` gives a
        tensor's reference in the graph. Then restores the state from before the trace."""
        writebacks, guard_grads = [], []
        for t, before in self.grad_before.values():
            after = t._grad
            changed = after is not before
            if changed:
                writebacks.append(("grad", t, None if after is None else resolve(after)))
            if changed or id(t) in self.accessed:
                guard_grads.append((t, before is None))
            t._grad = before
        for m, before in self.modules.values():  # train()/eval() inside the function
            if m.training != before:
                writebacks.append(("training", m, ("python", m.training)))
                m.training = before
        opts = []
        for opt, before in self.opts.values():
            for p, s in list(opt.state.items()):
                old = before.get(p, {})
                for k, v in s.items():
                    if k in old and old[k] is v:
                        continue
                    if isinstance(v, Tensor):
                        writebacks.append(("state", opt, p, k, resolve(v)))
                    elif k not in old:
                        writebacks.append(("state", opt, p, k, ("python", v)))
                    elif old[k] != v:
                        raise unsupported(
                            f"the optimizer keeps a Python number in its state ('{k}') that its step changes"
                        )
            for p in list(opt.state):
                if p in before:
                    opt.state[p].clear()
                    opt.state[p].update(before[p])
                else:
                    del opt.state[p]
            opts.append(opt)
        return writebacks, guard_grads, opts
