"""The BLAS that generated C calls for GEMMs: NumPy's bundled OpenBLAS (ILP64 ``cblas`` symbols
with a suffix, ``scipy_cblas_sgemm64_``). The generated library holds two function pointers
set once after loading (``ember_set_blas(sgemm, dgemm)``), so it links against nothing and
uses the very BLAS NumPy uses (same threads, same results as eager ``matmul``).

Example:
    >>> from ember.compile.codegen import blas
    >>> blas.gemm_addresses() is None or len(blas.gemm_addresses()) == 2
    True
"""

from __future__ import annotations

import ctypes
import glob
import os

__all__ = ["gemm_addresses", "SYMBOLS"]

# (sgemm, dgemm) symbol names, NumPy >= 2 wheels first, then a plain ILP64/LP64 cblas
SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"), ("cblas_sgemm64_", "cblas_dgemm64_"))
_found: list = []


def _libraries():
    import numpy

    base = os.path.dirname(os.path.dirname(numpy.__file__))
    for d in (os.path.join(base, "numpy.libs"), os.path.join(os.path.dirname(numpy.__file__), ".dylibs")):
        yield from sorted(glob.glob(os.path.join(d, "*openblas*")))


def gemm_addresses() -> tuple | None:
    """``(sgemm, dgemm)`` addresses of 64-bit-integer ``cblas_?gemm`` functions, or None."""
    if not _found:
        result = None
        for path in _libraries():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for s, d in SYMBOLS:
                try:
                    fs, fd = getattr(lib, s), getattr(lib, d)
                except AttributeError:
                    continue
                result = (ctypes.cast(fs, ctypes.c_void_p).value, ctypes.cast(fd, ctypes.c_void_p).value)
                break
            if result:
                break
        _found.append(result)
    return _found[0]
