"""An optimizer's ``state`` as dicts that count their changes, so a compiled step's guards can skip
re-reading it.

``Optimizer.state`` is a :class:`StateDict` (a ``defaultdict(ParamState)``) and each parameter's
state a :class:`ParamState`: plain dicts whose every mutating method (item assignment that puts a
different object, deletion, ``clear``, ``pop``, ``popitem``, ``setdefault`` of a new key,
``update``, ``|=``) advances the global counter ``MUTATIONS[0]``. ``compile.effects.FastGuards``
compares a stepped optimizer's state object by object only when the counter moved since its last
passing check (a GPT step's Adam state is ~1,500 objects; after the native step evicted the caches
each read comes from memory). Writes that bypass the methods (``dict.__setitem__(state, ...)``)
are not seen: don't. A state of plain dicts (a user's assignment ``opt.state[p] = {...}``) is
compared object by object on every call, as before.

Pickled (``copy.deepcopy``, ``ember.save``), both become plain dicts.

Example:
    >>> from ember.optim._tracked import MUTATIONS, ParamState
    >>> s, before = ParamState(), MUTATIONS[0]
    >>> s["step"] = 1
    >>> MUTATIONS[0] > before
    True
"""

from __future__ import annotations

from collections import defaultdict

from ember._mutations import MUTATIONS  # the one global count (tensors and modules advance it too)

__all__ = ["MUTATIONS", "ParamState", "StateDict", "tracked_state"]

_MISSING = object()


def _bump() -> None:
    MUTATIONS[0] += 1


class _Counted:
    """Mutating methods of ``dict`` that advance ``MUTATIONS`` (mixed into dict subclasses)."""

    __slots__ = ()

    def __setitem__(self, key, value) -> None:
        if dict.get(self, key, _MISSING) is not value:  # a writeback of the same object: no change
            MUTATIONS[0] += 1
        dict.__setitem__(self, key, value)

    def __delitem__(self, key) -> None:
        MUTATIONS[0] += 1
        dict.__delitem__(self, key)

    def clear(self) -> None:
        MUTATIONS[0] += 1
        dict.clear(self)

    def pop(self, *args):
        MUTATIONS[0] += 1
        return dict.pop(self, *args)

    def popitem(self):
        MUTATIONS[0] += 1
        return dict.popitem(self)

    def setdefault(self, key, default=None):
        if key not in self:
            MUTATIONS[0] += 1
        return dict.setdefault(self, key, default)

    def update(self, *args, **kwargs) -> None:
        MUTATIONS[0] += 1
        dict.update(self, *args, **kwargs)

    def __ior__(self, other):
        MUTATIONS[0] += 1
        dict.update(self, other)
        return self


class ParamState(_Counted, dict):
    """One parameter's optimizer state (``{"step": ..., "exp_avg": ...}``), counting its changes."""

    __slots__ = ()

    def copy(self) -> ParamState:
        return ParamState(self)

    __copy__ = copy

    def __reduce__(self):
        return (dict, (dict(self),))


class StateDict(_Counted, defaultdict):
    """``optimizer.state``: parameter -> :class:`ParamState`, made on first access as PyTorch's
    ``defaultdict(dict)`` does, counting its changes."""

    __slots__ = ()

    def __init__(self, items=()):
        defaultdict.__init__(self, ParamState)
        for k, v in dict(items).items():
            dict.__setitem__(self, k, tracked_state(v))
        _bump()

    def __reduce__(self):
        return (defaultdict, (dict,), None, None, iter([(k, dict(v)) for k, v in self.items()]))

    def copy(self) -> StateDict:  # defaultdict's copy would call StateDict(factory, items)
        return StateDict(self)

    __copy__ = copy


def tracked_state(value):
    """``value`` as a :class:`ParamState` where it is a plain dict (loaded or assigned state)."""
    return ParamState(value) if type(value) is dict else value
