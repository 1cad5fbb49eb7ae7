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

from ember._mutations import MUTATIONS
from ember.optim._tracked import ParamState, StateDict
from ember.optim.optimizer import register_optimizer_step_pre_hook
from ember.tensor import Tensor

__all__ = [
    "Effects",
    "FastGuards",
    "Guards",
    "OptimizerGuard",
    "TensorGuards",
    "keeps_guards",
    "structure",
    "structure_holds",
    "write_back",
]


_MISSING = object()
_NO_DICT: dict = {}  # stands for a module's missing _parameters/_buffers/_modules
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


_STRUCTURE = ("_parameters", "_buffers", "_modules")


def structure(modules) -> list:
    """``(module, attribute, dict, its items)`` for each module's parameters, buffers and children:
    the objects a captured graph was traced with (a parameter replaced by a new one is another
    graph input)."""
    out = []
    for m in modules:
        for name in _STRUCTURE:
            d = m.__dict__.get(name)
            if d is not None:
                out.append((m, name, d, list(d.items())))
    return out


def structure_holds(items: list) -> bool:
    """Whether every module of :func:`structure`'s ``items`` still has the same parameters,
    buffers and children."""
    for m, name, d, snapshot in items:
        if m.__dict__.get(name) is not d or len(d) != len(snapshot):
            return False
        for k, v in snapshot:
            if d.get(k, _MISSING) is not v:
                return False
    return True


class Guards:
    """What a step graph assumed about Python state: ``check()`` is True when it still holds."""

    def __init__(self, grads: list, opts: list, modules: list = (), structure: list = ()):
        self.grads = grads  # (tensor, grad was None)
        self.opts = opts  # OptimizerGuard
        self.modules = modules  # (module, .training): dropout and batch norm depend on it
        self.structure = structure  # see structure(): the modules' parameters, buffers, children

    def check(self) -> bool:
        for p, was_none in self.grads:
            if (p._grad is None) is not was_none:
                return False
        for m, t in self.modules:
            if m.training != t:
                return False
        if self.structure and not structure_holds(self.structure):
            return False
        for o in self.opts:
            if not o.check():
                return False
        return True


class FastGuards:
    """A guard check that, once the full check passed, passes again in one integer comparison
    while nothing it reads can have changed, else in a few C-level ``map``s while every object it
    read is the same one (by identity) and every flag has the same value.

    What it reads: the guarded tensors' arrays (a tensor's shape, dtype and device change only
    with its ``_data``) and ``requires_grad``; whether each ``.grad`` in ``none`` is None; each
    ``.grad`` in ``read`` and its array; each module's ``training`` and the dicts of its
    parameters, buffers and children (``structure``: a parameter replaced is another input);
    each optimizer's groups (dicts, their keys and values: hyperparameters are numbers, compared
    by identity as ``OptimizerGuard`` does) and state (keys, per-parameter dicts, their keys and
    values). The objects of the last passing check are held, so their ids cannot be reused by
    new objects.

    **Stamp**: every change to a tensor's ``_data``/``_grad``/``_requires_grad``, a module's
    attributes and an optimizer's counted state advances ``ember._mutations.MUTATIONS`` (see
    that module for the list). While it equals its value at the last pass, only what it does not
    cover is compared: the ``.grad`` in ``read``, the optimizers' ``param_groups`` (plain dicts:
    ``g["lr"] = ...``), the ``state`` objects themselves, and a state holding plain dicts (a
    user's ``opt.state[p] = {...}``: not counted, so read in full). After the native step evicted the
    caches, that is a few dozen objects instead of ~700 (GPT), each a read from memory.

    ``full()`` runs the complete check when something differs; ``datas`` is the list of the
    tensors' arrays at the last pass (the same list object while nothing changed: a program's
    pointer table is refilled only when it is a new list).
    """

    def __init__(self, full, tensors=(), none=(), read=(), modules=(), opts=(), structure=()):
        self.full = full
        self.tensors = list(tensors)
        self.none = list(none)
        self.read = list(read)
        self.modules = list(modules)
        self.opts = list(opts)
        self.owners = [(m, name) for m, name, _d, _items in structure]
        self.datas = None
        self._ids = self._flags = self._held = None
        self._valid = None  # MUTATIONS[0] at the last pass
        self._uncounted: list = []  # optimizers whose state holds plain dicts (read every call)
        self._loose = None  # (ids, flags) of what the stamp does not cover, at the last pass
        self._groups: list = []  # (optimizer, param_groups, state, per group) at the last pass

    def _loose_signature(self, uncounted) -> tuple:
        """What ``MUTATIONS`` does not cover: the ``.grad`` in ``read`` (a compiled step's own
        writebacks set ``.grad`` without counting, see ``keeps_guards``), the optimizers' groups,
        their ``state`` objects and the states in ``uncounted``."""
        other: list = []
        flags: list = []
        if self.read:  # another graph's writeback may give them new tensors without a count
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
        for o in uncounted:
            _state_signature(o.state, other, flags)
        return list(map(id, other)), flags, other

    def _signature(self, datas, uncounted) -> tuple:
        ids, flags, other = self._loose_signature(uncounted)
        n_ids, n_flags = len(ids), len(flags)
        flags += map(_RG, self.tensors)
        if self.none:
            flags += map(is_, map(_GRAD, self.none), repeat(None))
        if self.modules:
            flags += map(_TRAINING, self.modules)
        if self.owners:
            dicts = [m.__dict__.get(name, _NO_DICT) for m, name in self.owners]
            other += dicts
            other += chain.from_iterable(map(_values, dicts))
            flags += chain.from_iterable(dicts)  # the names
            flags += map(len, dicts)
        for o in self.opts:
            if o not in uncounted:
                _state_signature(o.state, other, flags)
        ids += map(id, datas)
        ids += map(id, other[n_ids:])
        return ids, flags, other, (n_ids, n_flags)

    def _loose_same(self) -> bool:
        """Whether what ``MUTATIONS`` does not cover is as at the last pass: the same objects
        as :meth:`_loose_signature` compares, in fewer steps (each object read here is a read
        from memory after the native step)."""
        if self._uncounted or self.read:
            ids, flags, _ = self._loose_signature(self._uncounted)
            return ids == self._loose[0] and flags == self._loose[1]
        for o, groups, state, per in self._groups:
            if o.param_groups is not groups or o.state is not state or len(groups) != len(per):
                return False
            for g, (g0, keys, values, params, n) in zip(groups, per):
                if g is not g0 or len(g) != len(keys):
                    return False
                if False in map(is_, g.values(), values) or False in map(is_, g, keys):  # by identity
                    return False
                if g.get("params") is not params or len(params) != n:
                    return False
        return True

    def check(self) -> bool:
        now = MUTATIONS[0]
        if now == self._valid and self._loose_same():  # nothing the stamp covers changed
            return True
        datas = list(map(_DATA, self.tensors))
        uncounted = [o for o in self.opts if not _tracked(o.state)]
        ids, flags, other, (n_ids, n_flags) = self._signature(datas, uncounted)
        if ids != self._ids or flags != self._flags:
            if not self.full():
                self._valid = None
                return False
            self.datas = datas
        self._ids, self._flags, self._held = ids, flags, other
        self._uncounted = uncounted
        self._loose = (ids[:n_ids], flags[:n_flags])
        self._groups = [
            (
                o,
                o.param_groups,
                o.state,
                [(g, list(g), list(g.values()), g.get("params"), len(g.get("params", ()))) for g in o.param_groups],
            )
            for o in self.opts
        ]
        self._valid = now
        return True


def _state_signature(state, other: list, flags: list) -> None:
    dicts = list(state.values())
    other += state  # the parameters
    other += dicts
    other += chain.from_iterable(map(_values, dicts))
    flags += chain.from_iterable(dicts)  # the keys
    flags += map(len, dicts)


def write_back(w: tuple, value, quiet: bool = False) -> None:
    """Apply one writeback of :meth:`Effects.collect` with its value from this call: a ``.grad``,
    a module's ``training`` or an optimizer state entry, as the eager step would have left it.
    ``quiet``: a ``.grad`` set without advancing ``MUTATIONS`` (see :func:`keeps_guards`)."""
    if w[0] == "grad":
        if not quiet:
            MUTATIONS[0] += 1
        w[1]._grad = None if value is None else value._owned()
    elif w[0] == "training":
        w[1].training = value
    else:
        _, opt, p, key, _ = w
        opt.state[p][key] = value


def keeps_guards(writebacks: list, guards: Guards, read: list) -> bool:
    """Whether a step's writebacks leave every guard of its own graph as it was when the call's
    check passed, so they need not advance ``MUTATIONS`` (the next call's check stays one
    comparison): only ``.grad`` writebacks, each giving its parameter a gradient exactly when
    the guard expects one (``None`` where it expects None), none on a ``.grad`` the graph reads
    (``read``: its identity is guarded). A state entry or ``training`` written back is counted
    as usual (``ParamState``, ``Module.__setattr__``).

    Such writebacks keep whether each ``.grad`` is None (the call's check just saw the state its
    guards expect), so no other graph's guard changes either; only which tensor a ``.grad`` is
    changes, and what depends on that compares it itself: ``FastGuards`` reads the ``.grad`` a
    graph reads on every call, ``step_run`` notes the last step that wrote ``.grad``."""
    expect = {id(p): was_none for p, was_none in guards.grads}
    read_ids = {id(p) for p in read}
    for w in writebacks:
        if w[0] != "grad":
            return False
        p = w[1]
        if id(p) in read_ids or id(p) not in expect or (w[-1] is None) is not expect[id(p)]:
            return False
    return True


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
            MUTATIONS[0] += 1
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
