"""NumPy ufuncs compiled at run time: ops NumPy lacks, as one call instead of several.

``ufuncs.c`` is built like the C kernels (the same compiler, cache directory and atomic rename,
see ``ember.backends.ckernels``), but as a CPython extension module whose functions are real
NumPy ufuncs: one call costs what one NumPy op costs, where the NumPy composition takes several
(``sigmoid``: seven calls on float32), which on small tensors is most of an op's time. The cache
key covers the Python and NumPy versions the module is built against.

:func:`get` returns the module, or None when the C kernels are off (``EMBER_CKERNELS=0``), there
is no compiler or headers, or the build fails; callers keep their NumPy form then. Nothing is
built at import time.

Example:
    >>> import numpy as np
    >>> from ember.backends.ckernels import ufuncs
    >>> mod = ufuncs.get()
    >>> mod is None or float(mod.sigmoid(np.float32(0.0))) == 0.5
    True
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np

from ember.backends import ckernels

__all__ = ["get", "reset", "source"]

_HERE = Path(__file__).parent
_state: dict = {"mod": None, "tried": False}


def source() -> str:
    """The C source, headed by what the binary depends on (so the cache key does too)."""
    head = f"/* built for Python {sys.version.split()[0]} ({sys.implementation.cache_tag}), NumPy {np.__version__} */\n"
    return head + (_HERE / "ufuncs.c").read_text()


def _flag_sets() -> tuple:
    inc = ["-I" + sysconfig.get_paths()["include"], "-I" + np.get_include()]
    base = ["-O3", "-fPIC", "-shared", "-fno-math-errno", *inc]
    return ([*base, "-march=native"], base)


def get():
    """The compiled module (``get().sigmoid`` is a NumPy ufunc), or None; built on first use."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("EMBER_CKERNELS", "1") == "0":
            return None
        try:
            src = source()
        except OSError as e:  # an install that left out the .c file
            ckernels.log.debug("ember ufuncs disabled: C source missing: %s", e)
            return None
        _state["mod"] = _load(src)
    return _state["mod"]


def _load(src: str):
    for attempt in range(2):
        path = ckernels.build(src, "ufuncs", _flag_sets())
        if path is None:
            return None
        try:
            spec = importlib.util.spec_from_file_location("ember_ufuncs", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.sigmoid  # noqa: B018 - a module without it is a broken build
            return mod
        except (ImportError, OSError, AttributeError) as e:
            ckernels.log.debug("ember ufuncs: cannot load %s (%s)%s", path, e, "; rebuilding" if attempt == 0 else "")
            try:
                path.unlink()
            except OSError:
                pass
    return None


def reset() -> None:
    """Forget the loaded module so the next :func:`get` builds/loads again (for tests)."""
    _state.update(mod=None, tried=False)
