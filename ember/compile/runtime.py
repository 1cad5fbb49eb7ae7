"""Runtime: build the generated C into a cached shared library and run a schedule.

The library is built by ``ember.backends.ckernels`` (its compiler search, flags with
``-O3 -march=native -fopenmp``, on-disk cache keyed by the source hash, atomic writes, rebuild of a
corrupt entry). Fused groups are called through ctypes; every other step runs its eager
implementation through ``apply``.

Example:
    >>> from ember.compile.runtime import build_kernels  # see tests/test_compile.py
"""

from __future__ import annotations

import ctypes

import numpy as np

from ember.backends import ckernels
from ember.compile.codegen.c import CRenderer, prelude
from ember.compile.ir import Node
from ember.ops.dispatch import apply
from ember.tensor import Tensor

__all__ = ["BuildError", "render_c", "render_cuda", "build_kernels", "execute"]


class BuildError(Exception):
    """The generated C could not be built or loaded; ``str(e)`` says why."""


def render_c(groups: list) -> str:
    r = CRenderer()
    return prelude() + "\n".join(r.render(g, f"ember_k{g.id}") for g in groups)


def build_kernels(groups: list, log=None) -> list:
    """Build (or load from the cache) one library with every group's kernel; return the
    ctypes functions in group order. Raises :class:`BuildError` naming the cause."""
    if not groups:
        return []
    src = render_c(groups)
    cc = ckernels.compiler()
    if cc is None:
        raise BuildError("no C compiler found (set $CC)")
    path = ckernels.library_path(src, "compiled", cc)
    if log:  # the kernels, without the prelude of math helpers (mathf.c)
        log(f"generated source ({path}):\n{src[len(prelude()) :]}")
    sigs = {
        f"ember_k{g.id}": [ctypes.c_void_p] * (len(g.inputs) + len(g.outputs))
        + [ctypes.c_int64] * (1 if g.reduction is None else 3)
        for g in groups
    }
    lib = ckernels.load(src, "compiled", sigs)
    if lib is None:
        raise BuildError(f"the C compiler failed on the generated source (see {path.parent}; logger ember.ckernels)")
    return [getattr(lib, f"ember_k{g.id}") for g in groups]


def _wrap(arr) -> Tensor:
    t = Tensor.__new__(Tensor)
    t._data = arr
    return t


def _arg(env, a):
    return env[a] if isinstance(a, Node) else a


def execute(steps: list, kernels: dict, env: dict) -> None:
    """Run ``steps`` over ``env`` (node -> Tensor, holding placeholders; filled in place)."""
    if hasattr(steps, "run"):  # a whole-graph program (program_runtime.Program)
        return steps.run(env)
    for kind, x in steps:
        if kind == "group":
            ins = [np.ascontiguousarray(env[a]._data) for a in x.inputs]
            dt = np.dtype(str(x.dtype).replace("ember.", ""))
            outs = [np.empty(o.shape, dt) for o in x.outputs]
            sizes = (x.numel(),) if x.reduction is None else (x.numel(), *x.rows_cols())
            kernels[x.id](*[a.ctypes.data for a in ins], *[o.ctypes.data for o in outs], *sizes)
            for o, arr in zip(x.outputs, outs):
                env[o] = _wrap(arr)
        elif x.kind == "call":
            env[x] = apply(x.prim, *[_arg(env, a) for a in x.args], **x.params)
        elif x.kind == "item":  # capture numbers the tensor outputs, skipping the None ones
            env[x] = [t for t in env[x.args[0]] if t is not None][x.index]
        elif x.kind == "constant":
            env[x] = x.value


def render_cuda(groups: list) -> str:
    """The CUDA C source of ``groups`` (one ``__global__`` kernel each), from the same IR and
    expression table as :func:`render_c`."""
    from ember.compile.codegen.cuda import PRELUDE as CU_PRELUDE
    from ember.compile.codegen.cuda import CudaRenderer

    r = CudaRenderer()
    return CU_PRELUDE + "\n".join(r.render(g, f"ember_k{g.id}") for g in groups)
