"""Run an unmodified PyTorch script on Ember: ``python -m ember.as_torch script.py [args]``.

Installs an import hook that answers ``import torch`` (and ``torch.nn``, ``torch.nn.functional``,
``from torch.utils.data import DataLoader``, ...) with Ember's own modules, then runs the script as
``__main__``. The script's source is not touched: this is the same as replacing every
``import torch`` with ``import ember as torch``, including in the modules the script imports.

A ``torch.X`` that Ember does not have fails as a normal ``ModuleNotFoundError`` naming
``torch.X``, so a missing API shows up at the import that needs it.

Example:
    $ python -m ember.as_torch train.py --device=cpu --compile=False

Or from Python, before the script's imports run::

    >>> import ember.as_torch
    >>> ember.as_torch.install()
    >>> import torch
    >>> torch.__name__
    'ember'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import runpy
import sys

__all__ = ["install", "uninstall", "main"]

_ALIAS = "torch"
_TARGET = "ember"


class _TorchAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Maps the module ``torch[.X]`` to the already-importable module ``ember[.X]``.

    The Ember module object itself is returned, so ``torch.nn.Module is ember.nn.Module`` and
    classes are never loaded twice.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _ALIAS and not fullname.startswith(_ALIAS + "."):
            return None
        real = _TARGET + fullname[len(_ALIAS) :]
        if real in sys.modules:
            return importlib.util.spec_from_loader(fullname, self)
        parent = real.rpartition(".")[0]
        if parent and parent not in sys.modules:
            importlib.import_module(parent)
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(_TARGET + spec.name[len(_ALIAS) :])

    def exec_module(self, module) -> None:
        # The Ember module has already run; the import system only records it under the alias.
        return None


_finder = _TorchAliasFinder()


def install() -> None:
    """Make ``import torch`` (and every ``torch.X``) import Ember's modules from now on.

    Raises:
        RuntimeError: when the real ``torch`` is already imported in this process.
    """
    loaded = sys.modules.get(_ALIAS)
    if loaded is not None and not loaded.__name__.startswith(_TARGET):
        raise RuntimeError("ember.as_torch.install(): the real torch is already imported in this process")
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the hook and the ``torch`` aliases it made."""
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    for name in [n for n in sys.modules if n == _ALIAS or n.startswith(_ALIAS + ".")]:
        if sys.modules[name].__name__.startswith(_TARGET):
            del sys.modules[name]


def main(argv: list[str] | None = None) -> None:
    """``python -m ember.as_torch script.py [args]`` or ``python -m ember.as_torch -m module [args]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m ember.as_torch script.py [args ...] | -m module [args ...]")
        raise SystemExit(0 if argv else 2)
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit("ember.as_torch: -m needs a module name")
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(0, _script_dir(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


def _script_dir(script: str) -> str:
    import os

    return os.path.dirname(os.path.abspath(script))


if __name__ == "__main__":
    main()
