"""Compiled functions on CUDA tensors: each fused group runs as one CUDA kernel.

The kernels are :func:`runtime.render_cuda`'s rendering of the same fused groups the C renderer
uses (one expression table), built by CuPy's NVRTC (``cupy.RawModule``, cached by CuPy) and
launched on CuPy arrays; every other op runs its ``cuda`` implementation through ``apply``.
What stays CPU-only: whole-step programs (a compiled training step on CUDA runs eagerly, with a
warning), memory arenas, and GEMM groups (their matmuls run on cuBLAS through CuPy instead of
the renderer's one-thread-per-output loop). Groups over other dtypes than float32 and float64
run op by op.

Example (on a machine with a GPU):
    >>> import ember
    >>> f = ember.compile(lambda x: (x * 2 + 1).relu().sum(-1))
    >>> f(ember.ones(4, 8, device="cuda")).tolist()
    [24.0, 24.0, 24.0, 24.0]
"""

from __future__ import annotations

import numpy as np

from ember import _device, backends
from ember.compile.codegen.c import kernel_sizes
from ember.tensor import Tensor

__all__ = ["CudaKernels", "cuda_groups", "build_cuda_kernels", "launch"]

_DTYPES = ("ember.float32", "ember.float64")
THREADS = 256  # per block; one thread per element, row or column (codegen/cuda.py)


class CudaKernels(dict):
    """Group id -> CuPy kernel function; :func:`runtime.execute` launches these on device arrays."""

    launches = 0  # kernels launched in this process (tests check the compiled path ran)


def cuda_groups(groups: list) -> list:
    """The groups that run as CUDA kernels: not GEMM groups, and float32/float64 throughout."""
    keep = []
    for g in groups:
        values = list(g.inputs) + list(g.outputs) + list(g.nodes)
        if g.kind != "gemm" and all(str(v.dtype) in _DTYPES for v in values):
            keep.append(g)
    return keep


def build_cuda_kernels(groups: list, log=None) -> CudaKernels:
    """Compile every group's kernel into one CuPy module (NVRTC); CuPy caches the build on disk."""
    from ember.compile.runtime import render_cuda

    kernels = CudaKernels()
    if not groups:
        return kernels
    src = render_cuda(groups)
    if log:
        log(f"generated CUDA source:\n{src}")
    module = backends.get("cuda").xp.RawModule(code=src)
    for g in groups:
        kernels[g.id] = module.get_function(f"ember_k{g.id}")
    return kernels


def _np_dtype(node) -> np.dtype:
    return np.dtype(str(node.dtype).replace("ember.", ""))


def launch(group, fn, env: dict) -> None:
    """Run ``group``'s kernel over the device arrays of its inputs; its outputs go into ``env``."""
    cp = backends.get("cuda").xp
    first = env[group.inputs[0]] if group.inputs else None
    ins = [backends.contiguous(env[a]._data) for a in group.inputs]
    outs = [cp.empty(o.shape, _np_dtype(o)) for o in group.outputs]
    n, rows, cols = kernel_sizes(group)
    threads = {"row": rows, "col": cols}.get(group.kind, n)
    if threads > 0:
        fn(
            ((threads + THREADS - 1) // THREADS,),
            (THREADS,),
            (*ins, *outs, cp.int64(n), cp.int64(rows), cp.int64(cols)),
        )
        CudaKernels.launches += 1
    device = first._device if first is not None else _device.device("cuda")
    for o, arr in zip(group.outputs, outs):
        t = Tensor.__new__(Tensor)
        t._data = arr
        t._device = device
        env[o] = t
