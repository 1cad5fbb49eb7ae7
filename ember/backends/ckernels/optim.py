"""The fused optimizer kernels (``optim.c``): build, check every buffer, call once per parameter list.

``optim.c`` is compiled into its own cached library (``optim-<hash>.so``, by the same machinery
as the other kernels) on first use. Each wrapper takes lists of NumPy arrays (one entry per
parameter), checks that every buffer has the kernel's dtype, the parameter's element count and
is C-contiguous (written ones also writable) *before* the ctypes call, and updates them all in
one native call. A wrapper returns False when the library is unavailable (no C compiler, or
``EMBER_CKERNELS=0``): the caller then runs its NumPy path.

Example:
    >>> import numpy as np
    >>> from ember.backends.ckernels import optim
    >>> p, g, b = np.ones(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32)
    >>> done = optim.fused_sgd([p], [g], [b], [True], lr=0.5, momentum=0.9, dampening=0.0,
    ...                        weight_decay=0.0, nesterov=False, maximize=False)
    >>> bool(not done or p[0] == 0.5)
    True
"""

from __future__ import annotations

import ctypes
import os
import weakref
from pathlib import Path

import numpy as np

from ember.backends import ckernels

__all__ = ["addc_inplace", "available", "fused_adagrad", "fused_adam", "fused_sgd", "lerp_inplace"]

_HERE = Path(__file__).parent
_I64, _INT, _DBL, _PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
SIGNATURES = {  # symbol (without the dtype suffix) -> argtypes, declared once
    "fused_adam": [_I64, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, *[_DBL] * 5, _INT, _INT, _INT, _INT],
    "fused_sgd": [_I64, _PTR, _PTR, _PTR, _PTR, _PTR, *[_DBL] * 4, _INT, _INT, _INT],
    "fused_adagrad": [_I64, _PTR, _PTR, _PTR, _PTR, _PTR, *[_DBL] * 4, _INT, _INT],
    "addc_inplace": [_I64, _PTR, _PTR, _PTR, _DBL, _INT, _INT],
    "lerp_inplace": [_I64, _PTR, _PTR, _DBL, _INT],
}
#: Below this many elements the in-place kernels are not worth their call (checks and ctypes
#: cost about as much as NumPy's three passes over a few thousand elements).
INPLACE_MIN = 1 << 12
_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
_TYPES = {"f32": ("float", "sqrtf", "fmaf"), "f64": ("double", "sqrt", "fma")}
# Below this many elements in one call the update runs on one thread (a parallel region costs
# more than it saves on small work, as for the other kernels).
PARALLEL_MIN = 1 << 17
# The kernels' flags, plus no contraction of a * b + c into one FMA: each operation rounds as in
# PyTorch's kernels, so fused and unfused updates agree to the last bits. First with 256-bit
# vectors preferred (x86): NumPy's large arrays start 16 bytes past a 64-byte boundary, and
# 512-bit accesses that split cache lines made the Adam update ~15% slower than PyTorch's.
FLAG_SETS = tuple([*flags, "-ffp-contract=off", "-mprefer-vector-width=256"] for flags in ckernels.FLAG_SETS) + tuple(
    [*flags, "-ffp-contract=off"] for flags in ckernels.FLAG_SETS
)
_state: dict = {"lib": None, "tried": False, "openmp": False, "pid": os.getpid()}


def source() -> str:
    """The translation unit: ``optim.c`` once per dtype."""
    body = (_HERE / "optim.c").read_text()
    parts = [
        "#include <math.h>\n#include <stdint.h>\n"
        "int ember_optim_openmp(void) {\n#ifdef _OPENMP\n  return 1;\n#else\n  return 0;\n#endif\n}\n"
    ]
    for suffix, (real, sqrt, fma) in _TYPES.items():
        parts.append(f"#define real {real}\n#define K(name) name##_{suffix}\n#define SQRT {sqrt}\n#define FMA {fma}\n")
        parts.append(body)
        parts.append("#undef real\n#undef K\n#undef SQRT\n#undef FMA\n")
    return "\n".join(parts)


def _lib():
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("EMBER_CKERNELS", "1") == "0":
            return None
        try:
            src = source()
        except OSError:  # an install that left out the .c file
            return None
        lib = ckernels.load(src, "optim", SIGNATURES, suffixes=("_f32", "_f64"), flag_sets=FLAG_SETS)
        if lib is not None:
            lib.ember_optim_openmp.restype = _INT
            _state["openmp"] = bool(lib.ember_optim_openmp())
        _state["lib"] = lib
    return _state["lib"]


def available() -> bool:
    """Whether the fused kernels are compiled and loaded (builds them on the first call)."""
    return _lib() is not None


def reset() -> None:
    """Forget the loaded library so the next call builds/loads again (for tests)."""
    _state.update(lib=None, tried=False, openmp=False)


def _threads(total: int) -> int:
    if total < PARALLEL_MIN or not _state["openmp"] or os.getpid() != _state["pid"]:
        return 1
    from ember._threads import get_num_threads

    return max(1, min(get_num_threads(), total // (PARALLEL_MIN // 2)))


# The last pointer array built for each (kernel, buffer role), with weak references to the
# arrays it was built from: an optimizer passes the same arrays every step (gradients too, when
# they are zeroed in place), and then only their identity is compared (a dead array never
# matches, and nothing is kept alive). A hit skips the per-array checks: they passed when the
# entry was built, and an ndarray keeps its dtype, size and buffer (``.data`` replacement and
# state loading give new arrays, which miss).
_last: dict = {}


def _same(refs: list, arrays) -> bool:
    if len(refs) != len(arrays):
        return False
    for r, a in zip(refs, arrays):
        if r() is not a:
            return False
    return True


def _pointers(kernel: str, what: str, arrays: list, dtype, sizes: list, writable: bool, plan=None):
    """A ``void*[]`` of the arrays' data, after checking each one (dtype, size, contiguity).

    ``plan``: the cached plan of the parameters (their ``dtype`` and ``sizes``) on a hit; an
    identical list of arrays checked against that same plan reuses its pointer array.
    """
    key = (kernel, what)
    last = _last.get(key)
    if plan is not None and last is not None and last[2] is plan and _same(last[0], arrays):
        return last[1]
    if len(arrays) != len(sizes):
        raise ValueError(f"{kernel}: expected {len(sizes)} {what} buffers, got {len(arrays)}")
    for i, (a, n) in enumerate(zip(arrays, sizes)):
        if type(a) is not np.ndarray:
            raise TypeError(f"{kernel}: {what}[{i}] must be a NumPy array, got {type(a).__name__}")
        if a.dtype != dtype:
            raise TypeError(f"{kernel}: {what}[{i}] has dtype {a.dtype}, expected {dtype}")
        if a.size != n:
            raise ValueError(f"{kernel}: {what}[{i}] should contain {n} elements not {a.size}")
        flags = a.flags
        if not flags.c_contiguous:
            raise ValueError(f"{kernel}: {what}[{i}] must be C-contiguous")
        if writable and not flags.writeable:
            raise ValueError(f"{kernel}: {what}[{i}] is read-only")
    addrs = [a.__array_interface__["data"][0] for a in arrays]
    ptrs = (ctypes.c_void_p * len(addrs))(*addrs)
    _last[key] = ([weakref.ref(a) for a in arrays], ptrs, plan)
    return ptrs


def _prepare(kernel: str, params: list):
    """The kernel function for the params' dtype, their sizes, the size array and total, and the
    plan (these five, cached while the params are the same arrays); None without the library."""
    key = (kernel, "plan")
    last = _last.get(key)
    if last is not None and _same(last[0], params):
        return (*last[1], last[1])
    if not params:
        raise ValueError(f"{kernel}: empty parameter list")
    dtype = params[0].dtype if type(params[0]) is np.ndarray else None
    if dtype not in _SUFFIX:
        raise TypeError(f"{kernel}: parameters must be float32 or float64 NumPy arrays, got {dtype}")
    lib = _lib()
    if lib is None:
        return None
    sizes = [a.size for a in params]
    c_sizes = (ctypes.c_int64 * len(sizes))(*sizes)
    fn = getattr(lib, kernel + _SUFFIX[dtype])
    plan = (fn, dtype, sizes, c_sizes, sum(sizes))
    # Checked (and cached against this plan) before the plan is kept: a plan is only reused
    # for parameters that passed the checks.
    _pointers(kernel, "params", params, dtype, sizes, True, plan)
    _last[key] = ([weakref.ref(a) for a in params], plan)
    return (*plan, plan)


def fused_adam(
    params,
    grads,
    exp_avgs,
    exp_avg_sqs,
    max_exp_avg_sqs,
    steps,
    *,
    lr,
    beta1,
    beta2,
    eps,
    weight_decay,
    amsgrad,
    maximize,
    decoupled,
) -> bool:
    """Adam/AdamW over every parameter in one call; ``steps`` are the (already incremented) counts."""
    prep = _prepare("fused_adam", params)
    if prep is None:
        return False
    fn, dt, sizes, c_sizes, total, plan = prep
    n = len(params)
    args = [
        _pointers("fused_adam", "params", params, dt, sizes, True, plan),
        _pointers("fused_adam", "grads", grads, dt, sizes, False, plan),
        _pointers("fused_adam", "exp_avgs", exp_avgs, dt, sizes, True, plan),
        _pointers("fused_adam", "exp_avg_sqs", exp_avg_sqs, dt, sizes, True, plan),
        _pointers("fused_adam", "max_exp_avg_sqs", max_exp_avg_sqs, dt, sizes, True, plan) if amsgrad else None,
    ]
    if len(steps) != n:
        raise ValueError(f"fused_adam: expected {n} step counts, got {len(steps)}")
    c_steps = (ctypes.c_double * n)(*steps)
    fn(n, *args, c_sizes, c_steps, lr, beta1, beta2, eps, weight_decay, int(amsgrad), int(maximize),
       int(decoupled), _threads(total))  # fmt: skip
    return True


def fused_sgd(
    params, grads, momentum_buffers, first_step, *, lr, momentum, dampening, weight_decay, nesterov, maximize
) -> bool:
    """SGD over every parameter in one call; ``first_step[i]``: buffer i is set to the gradient."""
    prep = _prepare("fused_sgd", params)
    if prep is None:
        return False
    fn, dt, sizes, c_sizes, total, plan = prep
    n = len(params)
    p = _pointers("fused_sgd", "params", params, dt, sizes, True, plan)
    g = _pointers("fused_sgd", "grads", grads, dt, sizes, False, plan)
    b = _pointers("fused_sgd", "momentum_buffers", momentum_buffers, dt, sizes, True, plan) if momentum != 0 else None
    if len(first_step) != n:
        raise ValueError(f"fused_sgd: expected {n} first-step flags, got {len(first_step)}")
    c_first = (ctypes.c_int8 * n)(*[bool(f) for f in first_step])
    fn(n, p, g, b, c_sizes, c_first, lr, momentum, dampening, weight_decay, int(nesterov), int(maximize),
       _threads(total))  # fmt: skip
    return True


def fused_adagrad(params, grads, state_sums, steps, *, lr, lr_decay, weight_decay, eps, maximize) -> bool:
    """Adagrad over every parameter in one call; ``steps`` are the (already incremented) counts."""
    prep = _prepare("fused_adagrad", params)
    if prep is None:
        return False
    fn, dt, sizes, c_sizes, total, plan = prep
    n = len(params)
    p = _pointers("fused_adagrad", "params", params, dt, sizes, True, plan)
    g = _pointers("fused_adagrad", "grads", grads, dt, sizes, False, plan)
    s = _pointers("fused_adagrad", "state_sums", state_sums, dt, sizes, True, plan)
    if len(steps) != n:
        raise ValueError(f"fused_adagrad: expected {n} step counts, got {len(steps)}")
    c_steps = (ctypes.c_double * n)(*steps)
    fn(n, p, g, s, c_sizes, c_steps, lr, lr_decay, weight_decay, eps, int(maximize), _threads(total))
    return True


def _inplace_fn(kernel: str, x, others) -> object:
    """The kernel for writing ``x`` from ``others`` elementwise, or None where it does not apply:
    not float32/float64 NumPy arrays of one dtype and shape, not C-contiguous, ``x`` read-only,
    an operand overlapping ``x`` other than ``x`` itself, a small size, or no library."""
    if type(x) is not np.ndarray or x.size < INPLACE_MIN:
        return None
    dt = x.dtype
    suffix = _SUFFIX.get(dt)
    if suffix is None or not x.flags.c_contiguous or not x.flags.writeable:
        return None
    for o in others:
        if type(o) is not np.ndarray or o.dtype != dt or o.shape != x.shape or not o.flags.c_contiguous:
            return None
        if o is not x and np.may_share_memory(o, x):
            return None
    lib = _lib()
    return None if lib is None else getattr(lib, kernel + suffix)


def addc_inplace(x, a, b, value: float, divide: bool) -> bool:
    """``x += value * a * b`` (``divide``: ``value * a / b``) in one pass, as ``addcmul_``/``addcdiv_``;
    False (nothing written) where the kernel does not apply, see ``_inplace_fn``."""
    fn = _inplace_fn("addc_inplace", x, (a, b))
    if fn is None:
        return False
    fn(x.size, x.ctypes.data, a.ctypes.data, b.ctypes.data, value, int(divide), _threads(x.size))
    return True


def lerp_inplace(x, end, weight: float) -> bool:
    """``x.lerp_(end, weight)`` for a number ``weight`` in one pass; False where it does not apply."""
    fn = _inplace_fn("lerp_inplace", x, (end,))
    if fn is None:
        return False
    fn(x.size, x.ctypes.data, end.ctypes.data, weight, _threads(x.size))
    return True
