"""Runtime-compiled C kernels for the CPU backend (NumPy plus generated C).

The C sources next to this file (``mathf.c``, then ``kernels.c``, ``conv.c`` and ``gemm.c`` instantiated for
float32 and float64) are compiled on first use with the system C compiler (``$CC``, else ``cc``/``gcc``/
``clang``) into a shared library cached under ``$EMBER_CACHE_DIR`` (default
``~/.cache/ember/kernels``), keyed by a hash of the source, compiler, flags and CPU. Compilation
writes a temporary file and renames it into place, so concurrent processes never load a
half-written library. When there is no compiler, the build fails, or the cached library cannot be
loaded even after a rebuild, :func:`get` returns None and callers keep their NumPy path; the reason
is logged once at debug level (logger ``ember.ckernels``). Nothing is compiled at import time.
``EMBER_CKERNELS=0`` in the environment (read on first use) disables the kernels.

Example:
    >>> from ember.backends import ckernels
    >>> lib = ckernels.get()  # a ctypes.CDLL, or None without a working C compiler
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ember import _threads
from ember.backends.ckernels import signatures as _signatures

__all__ = [
    "log",
    "FLAG_SETS",
    "SIGNATURES",
    "source",
    "compiler",
    "cache_dir",
    "library_path",
    "build",
    "load",
    "get",
    "reset",
    "uses_openmp",
    "has_avx512",
]

log = logging.getLogger("ember.ckernels")

_HERE = Path(__file__).parent
# Tried in order; the first set the compiler accepts is used. No -ffast-math: it breaks NaN/inf.
# -fno-trapping-math (FP exception flags are never read) lets GCC if-convert the clamps in the
# float exp/erf so those loops vectorize; -fno-math-errno lets sqrt be one instruction.
_BASE = ["-O3", "-fPIC", "-shared", "-fno-trapping-math", "-fno-math-errno"]
FLAG_SETS = (
    [*_BASE, "-march=native", "-fopenmp"],
    [*_BASE, "-march=native"],
    [*_BASE, "-fopenmp"],
    _BASE,
)
_TYPES = {  # per instantiation of kernels.c: C type, symbol suffix, math functions
    "f32": ("float", "exp_f32", "logf", "erf_f32", "tanh_f32", "sqrtf"),
    "f64": ("double", "exp", "log", "erf", "tanh", "sqrt"),
}
# Each kernel's parameters, declared once (signatures.py); ``load`` sets the ctypes argtypes from them.
SIGNATURES = _signatures.SIGNATURES
_I64, _INT, _DBL, _PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p  # for other libraries' argtypes

_state: dict = {"lib": None, "tried": False, "openmp": False, "avx512": False}


def source() -> str:
    """The full C translation unit: the float helpers, then kernels.c once per dtype."""
    parts = [(_HERE / "mathf.c").read_text()]
    body = "\n".join((_HERE / f).read_text() for f in ("kernels.c", "conv.c", "gemm.c"))
    for suffix, (real, exp, log_, erf, tanh, sqrt) in _TYPES.items():
        parts.append(
            f"#define real {real}\n#define K(name) name##_{suffix}\n#define EXP {exp}\n#define LOG {log_}\n"
            f"#define ERF {erf}\n#define TANH {tanh}\n#define SQRT {sqrt}\n"
        )
        parts.append(body)
        parts.append("#undef real\n#undef K\n#undef EXP\n#undef LOG\n#undef ERF\n#undef TANH\n#undef SQRT\n")
    return "\n".join(parts)


def compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` (may hold arguments), else the first of cc, gcc, clang."""
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    found = _which_cc(os.environ.get("PATH"))  # (a PATH search costs ~1 ms: once per PATH)
    return None if found is None else list(found)


@functools.lru_cache(maxsize=8)
def _which_cc(path_var):
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name, path=path_var)
        if path:
            return (path,)
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("EMBER_CACHE_DIR") or Path.home() / ".cache" / "ember" / "kernels")


@functools.cache  # /proc/cpuinfo takes milliseconds to read; the CPU stays the same
def _cpu_id() -> str:
    """The CPU's feature flags: a library built with -march=native must not run on another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return os.uname().machine


def library_path(src: str, name: str, cc: list[str], flag_sets=FLAG_SETS) -> Path:
    """Where the library for this source, compiler, flag candidates and CPU is cached."""
    key = hashlib.sha256("\0".join([src, " ".join(cc), repr(flag_sets), _cpu_id()]).encode()).hexdigest()
    return cache_dir() / f"{name}-{key[:32]}.so"


def build(src: str, name: str = "kernels", flag_sets=FLAG_SETS) -> Path | None:
    """Compile ``src`` into the cache (unless already there); return the library's path or None."""
    cc = compiler()
    if cc is None:
        log.debug("ember C kernels disabled: no C compiler found (set $CC)")
        return None
    target = library_path(src, name, cc, flag_sets)
    out_dir = target.parent
    if target.exists():
        return target
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        errors = _compile(src, name, cc, flag_sets, target)
    except OSError as e:  # cache dir not writable, disk full, ...
        errors = [f"cannot write to {out_dir}: {e}"]
    if not errors:
        return target
    log.debug("ember C kernels disabled: compilation failed:\n%s", "\n".join(errors))
    return None


def _compile(src: str, name: str, cc: list[str], flag_sets, target: Path) -> list[str]:
    """Compile with the first flag set that works, into a temporary file renamed to ``target``;
    returns the compiler errors (empty on success)."""
    errors = []
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        c_file = Path(tmp) / f"{name}.c"
        c_file.write_text(src)
        so = Path(tmp) / f"{name}.so"
        for flags in flag_sets:
            try:
                proc = subprocess.run(
                    [*cc, *flags, "-o", str(so), str(c_file), "-lm"], capture_output=True, text=True, timeout=120
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
                continue
            if proc.returncode == 0:
                os.replace(so, target)  # atomic: other processes see no library or a whole one
                return []
            errors.append(proc.stderr.strip()[-2000:])
    return errors


def load(src: str, name: str, signatures: dict, suffixes=("",), flag_sets=FLAG_SETS, reapply: bool = True):
    """Build (or reuse) and load a library, declaring ``signatures`` for each suffix.

    A cached library that fails to load (corrupt, truncated, missing symbols) is removed and
    rebuilt once; if that fails too, returns None.
    """
    for attempt in range(2):
        path = build(src, name, flag_sets)
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(str(path))
            for sym, argtypes in signatures.items():
                for suffix in suffixes:
                    fn = getattr(lib, sym + suffix)
                    fn.argtypes = argtypes
                    fn.restype = None
            if reapply:  # (~1 ms; a caller loading many libraries after one with OpenMP skips it)
                _threads.reapply()  # the library may have brought libgomp in after set_num_threads
            return lib
        except (OSError, AttributeError) as e:
            log.debug("ember C kernels: cannot load %s (%s)%s", path, e, "; rebuilding" if attempt == 0 else "")
            try:
                path.unlink()
            except OSError:
                pass
    return None


def get():
    """The loaded kernel library (a ``ctypes.CDLL``), or None when C kernels are unavailable.

    The first call compiles (or loads the cached library); later calls return the same result.
    """
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("EMBER_CKERNELS", "1") == "0":
            log.debug("ember C kernels disabled by EMBER_CKERNELS=0")
        else:
            try:
                src = source()
            except OSError as e:  # an install that left out the .c files (package data)
                log.debug("ember C kernels disabled: C source missing: %s", e)
                return None
            lib = load(src, "kernels", SIGNATURES, suffixes=("_f32", "_f64"))
            _state["lib"] = lib
            _state["openmp"] = lib is not None and bool(lib.ember_openmp())
            _state["avx512"] = lib is not None and bool(lib.ember_avx512())
    return _state["lib"]


def reset() -> None:
    """Forget the loaded library so the next :func:`get` builds/loads again (for tests)."""
    _state.update(lib=None, tried=False, openmp=False, avx512=False)


def uses_openmp() -> bool:
    return _state["openmp"]


def has_avx512() -> bool:
    """Whether the loaded library was built for AVX-512 (then its GEMM beats an AVX2 BLAS)."""
    return _state["avx512"]
