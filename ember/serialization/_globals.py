"""Which Python globals a ``weights_only`` load may use, and the unpickler that enforces it.

Ember's own checkpoints hold plain data as JSON; only objects outside that set (a whole Module, a
user class) are pickled. PyTorch's files are pickles throughout. Both are read with
:class:`RestrictedUnpickler`, whose ``find_class`` returns only globals from a fixed table plus the
ones the user allowlisted (:func:`add_safe_globals`, :func:`safe_globals`). It never imports a
module: an allowlisted global is the very object the user passed in, found by its name. A name
outside the table raises ``pickle.UnpicklingError`` naming it, as PyTorch's weights-only
unpickler does, before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import pickle
import threading
from collections.abc import Callable
from typing import Any

from ember import _dtype

__all__ = ["add_safe_globals", "clear_safe_globals", "get_safe_globals", "safe_globals"]

_lock = threading.Lock()
_user_globals: list[Any] = []  # as passed: objects or (object, "module.name") pairs


def _bytes_from_latin1(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call as ``_codecs.encode`` to rebuild ``bytes``; only latin1 is allowed."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError("Weights only load failed: _codecs.encode is only allowed with 'latin1'")
    return text.encode("latin1")


# Globals any weights-only load may use: containers and values, never anything that runs code.
_DEFAULT_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "collections.Counter": collections.Counter,
    "builtins.set": builtins.set,
    "builtins.frozenset": builtins.frozenset,
    "builtins.bytearray": builtins.bytearray,
    "builtins.complex": builtins.complex,
    "builtins.slice": builtins.slice,
    "_codecs.encode": _bytes_from_latin1,
    "ember._dtype._lookup_name": _dtype._lookup_name,
}


def add_safe_globals(safe_globals: list[Callable | tuple[Callable, str]]) -> None:
    """Allow ``ember.load(..., weights_only=True)`` to use these classes or functions.

    Each item is the class or function itself, or ``(obj, "module.qualname")`` when the file
    names it differently. An allowed class can be instantiated and given state by the file, and an
    allowed function can be called with the file's arguments: add only what you trust.

    Example:
        >>> import ember
        >>> from collections import namedtuple
        >>> Point = namedtuple("Point", "x y")
        >>> ember.serialization.add_safe_globals([Point])
        >>> Point in ember.serialization.get_safe_globals()
        True
        >>> ember.serialization.clear_safe_globals()
    """
    if not isinstance(safe_globals, (list, tuple)):
        raise TypeError(f"add_safe_globals expects a list, got {type(safe_globals).__name__}")
    for item in safe_globals:
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[1], str):
                raise TypeError(f"add_safe_globals: expected (object, 'module.name'), got {item!r}")
        elif not (hasattr(item, "__module__") and hasattr(item, "__qualname__")):
            raise TypeError(f"add_safe_globals: {item!r} has no __module__/__qualname__; pass (obj, 'module.name')")
    with _lock:
        _user_globals.extend(safe_globals)


def get_safe_globals() -> list[Callable | tuple[Callable, str]]:
    """The globals added by :func:`add_safe_globals` (a copy)."""
    with _lock:
        return list(_user_globals)


def clear_safe_globals() -> None:
    """Forget every global added by :func:`add_safe_globals`."""
    with _lock:
        _user_globals.clear()


class safe_globals:
    """Context manager: the given globals are allowed inside the ``with`` block only.

    Example:
        >>> import ember
        >>> with ember.serialization.safe_globals([complex]):
        ...     len(ember.serialization.get_safe_globals())
        1
        >>> ember.serialization.get_safe_globals()
        []
    """

    def __init__(self, safe_globals: list[Callable | tuple[Callable, str]]) -> None:
        self.safe_globals = list(safe_globals)
        self._before: list | None = None

    def __enter__(self) -> None:
        self._before = get_safe_globals()
        add_safe_globals(self.safe_globals)

    def __exit__(self, *exc) -> None:
        with _lock:
            _user_globals[:] = self._before


def _user_table() -> dict[str, Any]:
    table = {}
    for item in get_safe_globals():
        if isinstance(item, tuple):
            table[item[1]] = item[0]
        else:
            table[f"{item.__module__}.{item.__qualname__}"] = item
    return table


UNSAFE_MESSAGE = (
    "Re-running `ember.load` with `weights_only` set to `False` will likely succeed, but it can result in "
    "arbitrary code execution. Do it only if you got the file from a trusted source."
)


def refused(full_name: str, extra: str = "") -> pickle.UnpicklingError:
    """PyTorch's weights-only error for a global outside the allowlist, with Ember's names."""
    return pickle.UnpicklingError(
        "Weights only load failed. This file can still be loaded, to do so you have two options, do those steps "
        f"only if you trust the source of the checkpoint.\n\t(1) {UNSAFE_MESSAGE}\n\t(2) Alternatively, to load "
        "with `weights_only=True` please check the recommended steps in the following error message.\n\t"
        f"WeightsUnpickler error: Unsupported global: GLOBAL {full_name} was not an allowed global by default. "
        f"Please use `ember.serialization.add_safe_globals([{full_name}])` or the "
        f"`ember.serialization.safe_globals([{full_name}])` context manager to allowlist this global if you "
        f"trust this class/function.{extra}"
    )


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from ``table``, the defaults and the user's allowlist.

    With ``weights_only=False`` names outside them are imported as ``pickle`` does (the caller
    trusts the file). ``persistent_load`` is supplied by the caller.
    """

    def __init__(self, file, table: dict[str, Any], weights_only: bool, reject: Callable[[str], None] | None = None):
        super().__init__(file)
        self._table = {**_DEFAULT_GLOBALS, **table}
        self._user = _user_table() if weights_only else {}
        self._weights_only = weights_only
        self._reject = reject  # called first with each name not in the table (for format-specific errors)

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles (torch.save's default) name Python 2 modules: __builtin__.set.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in self._table:
            return self._table[full]
        if full in self._user:
            return self._user[full]
        if self._reject is not None:
            self._reject(full)
        if self._weights_only:
            raise refused(full)
        return super().find_class(module, name)
