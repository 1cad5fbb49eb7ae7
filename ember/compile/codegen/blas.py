"""The GEMM that generated C calls (fused GEMM groups, whole-graph programs).

Generated libraries link against nothing: they hold ``cblas_?gemm``-shaped function pointers
(row-major, 64-bit integers) set once after loading (``ember_set_blas`` for fused groups,
``ember_program_init`` for programs). Where the hand kernels are built for AVX-512
(``backends/ckernels/ops.has_gemm``) the pointers are gemm.c's ``gemm_cblas``: its register
tiles where eager ``matmul``/``linear`` would run them (``ops.use_tiles``: enough work, one
thread), NumPy's OpenBLAS otherwise; elsewhere (AVX2, no compiler, ``EMBER_CKERNELS=0``) they are
NumPy's OpenBLAS itself (``scipy_cblas_sgemm64_``...). So compiled code runs the GEMMs eager runs.

:func:`openblas` is the one lookup of NumPy's BLAS symbols (``program_runtime.blas`` uses it too).

Example:
    >>> from ember.compile.codegen import blas
    >>> blas.gemm_addresses() is None or len(blas.gemm_addresses()) == 2
    True
    >>> with blas.tiles(False):  # OpenBLAS for every GEMM of generated code, for a comparison
    ...     pass
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os

__all__ = ["SYMBOLS", "openblas", "gemm_addresses", "gemm_table", "tiles", "tiles_active"]

# (sgemm, dgemm, integer type) by the names OpenBLAS builds export: NumPy >= 2 wheels first
SYMBOLS = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "int64_t"),
    ("cblas_sgemm64_", "cblas_dgemm64_", "int64_t"),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", "int32_t"),
    ("cblas_sgemm", "cblas_dgemm", "int32_t"),
)
_found: list = []
_tiles: dict = {"on": True, "lib": None}
_INT64_MAX = (1 << 63) - 1


def _libraries():
    import numpy

    here = os.path.dirname(numpy.__file__)
    for d in (os.path.join(here, os.pardir, "numpy.libs"), os.path.join(here, ".libs"), os.path.join(here, ".dylibs")):
        for pat in ("libscipy_openblas*", "libopenblas*"):
            yield from sorted(glob.glob(os.path.join(d, pat)))


def openblas() -> tuple | None:
    """``(integer type, sgemm address, dgemm address)`` of NumPy's bundled OpenBLAS, or None."""
    if not _found:
        result = None
        for path in _libraries():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for s, d, itype in SYMBOLS:
                try:
                    fs, fd = getattr(lib, s), getattr(lib, d)
                except AttributeError:
                    continue
                result = (itype, ctypes.cast(fs, ctypes.c_void_p).value, ctypes.cast(fd, ctypes.c_void_p).value)
                break
            if result:
                break
        _found.append(result)
    return _found[0]


def _tile_lib():
    """The hand-kernel library with gemm.c's ``gemm_cblas`` set up over OpenBLAS, or None where
    the tiles do not run (no AVX-512 build, no kernels, no 64-bit-integer BLAS to fall back on)."""
    if _tiles["lib"] is None:
        import numpy as np

        from ember.backends import ckernels
        from ember.backends.ckernels import ops

        b = openblas()
        lib = ckernels.get()
        ok = b is not None and b[0] == "int64_t" and lib is not None and ops.has_gemm(np.float32)
        _tiles["lib"] = lib if ok else False
        if ok:
            for sfx in ("f32", "f64"):
                fn = getattr(lib, f"gemm_set_blas_{sfx}")
                fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64], None
            _configure()
    return _tiles["lib"] or None


def _configure() -> None:
    from ember.backends.ckernels import ops

    lib, b = _tiles["lib"], openblas()
    minimum = ops.GEMM_MIN if _tiles["on"] else _INT64_MAX
    lib.gemm_set_blas_f32(b[1], minimum, ops.PARALLEL_MIN)
    lib.gemm_set_blas_f64(b[2], minimum, ops.PARALLEL_MIN)


def gemm_addresses() -> tuple | None:
    """``(sgemm, dgemm)`` addresses with ``cblas_?gemm``'s 64-bit-integer interface that
    generated code calls (gemm.c's dispatcher where the tiles run, else OpenBLAS), or None."""
    t = gemm_table()
    return None if t is None or t[0] != "int64_t" else t[1:]


def gemm_table() -> tuple | None:
    """``(integer type, sgemm, dgemm)`` for generated code (see :func:`gemm_addresses`), or None."""
    b = openblas()
    if b is None:
        return None
    lib = _tile_lib()
    if lib is None:
        return b
    return (b[0],) + tuple(ctypes.cast(getattr(lib, f"gemm_cblas_{s}"), ctypes.c_void_p).value for s in ("f32", "f64"))


def tiles_active() -> bool:
    """Whether GEMMs of generated code may run on gemm.c's tiles now."""
    return _tiles["on"] and _tile_lib() is not None


@contextlib.contextmanager
def tiles(enabled: bool):
    """Within the block, generated code's GEMMs run on gemm.c's tiles (where eager would) or,
    with ``enabled=False``, all on OpenBLAS: for comparing the two paths. Libraries already built
    follow the switch (it is read at every call)."""
    before = _tiles["on"]
    _tiles["on"] = bool(enabled)
    if _tile_lib() is not None:
        _configure()
    try:
        yield
    finally:
        _tiles["on"] = before
        if _tile_lib() is not None:
            _configure()
