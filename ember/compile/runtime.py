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
from ember.compile.codegen import blas
from ember.compile.codegen.blocks import render_kernels
from ember.compile.codegen.c import kernel_sizes, prelude
from ember.compile.cuda_runtime import CudaKernels, launch
from ember.compile.ir import Node
from ember.ops.dispatch import apply
from ember.tensor import Tensor

__all__ = ["BuildError", "render_c", "render_cuda", "build_kernels", "execute"]


class BuildError(Exception):
    """The generated C could not be built or loaded; ``str(e)`` says why."""


def render_c(groups: list) -> str:
    """The C source of ``groups``: the prelude, each distinct kernel once, and an ``ember_k<id>``
    function per group that calls its kernel (``codegen/blocks.render_kernels``): a step's
    per-parameter optimizer updates are a few distinct kernels, and the compiler's time goes with
    the distinct code."""
    kernels, wrappers, _names = render_kernels(groups)
    return kernels + "\n" + wrappers


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
        f"ember_k{g.id}": [ctypes.c_void_p] * (len(g.inputs) + len(g.outputs)) + [ctypes.c_int64] * 3 for g in groups
    }
    sigs["ember_set_blas"] = [ctypes.c_void_p, ctypes.c_void_p]
    lib = ckernels.load(src, "compiled", sigs)
    if lib is None:
        raise BuildError(f"the C compiler failed on the generated source (see {path.parent}; logger ember.ckernels)")
    if any(g.kind == "gemm" for g in groups):
        lib.ember_set_blas(*blas.gemm_addresses())
    return [getattr(lib, f"ember_k{g.id}") for g in groups]


def _wrap(arr) -> Tensor:
    t = Tensor.__new__(Tensor)
    t._data = arr
    return t


def _arg(env, a):
    return env[a] if isinstance(a, Node) else a


def _out_buffer(plan, env, o, dt) -> np.ndarray:
    """Where a group writes output ``o``: its arena slot, the eager result it may overwrite (when
    that array is contiguous and its own), or a new array."""
    if plan is not None:
        if o in plan.offsets:
            return plan.buffer(o, dt)
        a = plan.over_eager.get(o)
        if a is not None:
            arr = env[a]._data
            if arr.dtype == dt and arr.flags.c_contiguous and arr.flags.writeable and arr.flags.owndata:
                return arr
    return np.empty(o.shape, dt)


def execute(steps: list, kernels: dict, env: dict) -> None:
    """Run ``steps`` over ``env`` (node -> Tensor, holding placeholders; filled in place). The
    groups' temporaries live in the arena of ``steps.plan`` (see ``passes/memplan.py``); a
    whole-graph program (``program_runtime.Program``) runs as one native call."""
    if hasattr(steps, "run"):
        return steps.run(env)
    plan = getattr(steps, "plan", None)
    on_cuda = isinstance(kernels, CudaKernels)
    for kind, x in steps:
        if kind == "group" and on_cuda:
            launch(x, kernels[x.id], env)
        elif kind == "group":
            ins = [np.ascontiguousarray(env[a]._data) for a in x.inputs]
            # each output's own dtype: a group may cast between float32 and bfloat16/float16
            outs = [_out_buffer(plan, env, o, np.dtype(str(o.dtype).replace("ember.", ""))) for o in x.outputs]
            sizes = kernel_sizes(x)
            kernels[x.id](*[a.ctypes.data for a in ins], *[o.ctypes.data for o in outs], *sizes)
            for o, arr in zip(x.outputs, outs):
                env[o] = _wrap(arr)
        elif kind == "fn":  # a step that needs more than apply (compile/joint.py: autograd nodes)
            x(env)
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
