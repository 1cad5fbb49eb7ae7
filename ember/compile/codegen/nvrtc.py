"""Compile CUDA C with NVRTC, loaded through ctypes (no GPU needed to compile).

The library comes from PyPI's ``nvidia-cuda-nvrtc-cu12`` (the ``test`` extra) or the system.
:func:`compile_ptx` returns PTX text or raises :class:`NVRTCError` with the compiler's log.

Example:
    >>> from ember.compile.codegen import nvrtc
    >>> lib = nvrtc.load()  # None when no libnvrtc is installed
"""

from __future__ import annotations

import ctypes
import glob
import os

__all__ = ["NVRTCError", "load", "compile_ptx"]


class NVRTCError(RuntimeError):
    """NVRTC rejected the source; the message holds its log."""


_lib: list = []


def _candidates():
    try:
        import nvidia.cuda_nvrtc as pkg

        for d in pkg.__path__:
            yield from sorted(glob.glob(os.path.join(d, "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    yield "libnvrtc.so.12"
    yield "libnvrtc.so"


def load():
    """The NVRTC library (``ctypes.CDLL``), or None when none can be loaded."""
    if not _lib:
        lib = None
        for path in _candidates():
            if "builtins" in path or ".alt." in path:
                continue
            try:
                lib = ctypes.CDLL(path)
                break
            except OSError:
                continue
        _lib.append(lib)
    return _lib[0]


def compile_ptx(src: str, name: str = "kernel.cu", arch: str = "compute_75") -> str:
    """Compile ``src`` to PTX; raise :class:`NVRTCError` with the log when it does not compile."""
    lib = load()
    if lib is None:
        raise NVRTCError("libnvrtc not found (pip install nvidia-cuda-nvrtc-cu12)")
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None)
    if rc:
        raise NVRTCError(f"nvrtcCreateProgram failed ({rc})")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++14"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        if rc:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, buf)
            raise NVRTCError(f"NVRTC could not compile {name}:\n{buf.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        return buf.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
