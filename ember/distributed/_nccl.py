"""NCCL through CuPy for ``backend="nccl"``: collectives on CUDA tensors run GPU to GPU.

``init_process_group("nccl")`` (and ``new_group`` under it) on a machine with a CUDA GPU and
CuPy: each rank selects GPU ``LOCAL_RANK % device_count``, rank 0 of the group draws an NCCL
unique id (``cupy.cuda.nccl.get_unique_id()``), the id is broadcast over the group's MPI
communicator as a plain int8 buffer (nothing is unpickled), and every rank builds
``cupy.cuda.nccl.NcclCommunicator(size, id, rank)``. Then ``all_reduce``, ``broadcast``,
``all_gather_into_tensor`` and ``reduce_scatter_tensor`` of CUDA tensors call NCCL on the
tensors' CuPy memory, on the current CUDA stream; CPU tensors and the other collectives keep
using MPI. As in PyTorch, a synchronous call returns once the operation is queued on the stream;
``async_op=True`` returns a handle whose ``wait()`` synchronizes the stream.

Without a GPU or CuPy, ``init_process_group("nccl")`` raises a clear error (``process_group.py``)
and this module is never imported, so ember imports and runs on CPU without CuPy.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["NcclComm", "applies"]

_ID_BYTES = 128  # NCCL_UNIQUE_ID_BYTES


def _nccl():
    from cupy.cuda import nccl

    return nccl


def _dtype(dtype) -> int:
    nccl = _nccl()
    table = {
        "float32": nccl.NCCL_FLOAT32,
        "float64": nccl.NCCL_FLOAT64,
        "float16": nccl.NCCL_FLOAT16,
        "int32": nccl.NCCL_INT32,
        "int64": nccl.NCCL_INT64,
        "int8": nccl.NCCL_INT8,
        "uint8": nccl.NCCL_UINT8,
        "bool": nccl.NCCL_UINT8,
    }
    if hasattr(nccl, "NCCL_BFLOAT16"):
        table["bfloat16"] = nccl.NCCL_BFLOAT16
    name = np.dtype(dtype).name
    if name not in table:
        raise TypeError(f"ember.distributed (nccl): tensors of dtype {name} are not supported by NCCL")
    return table[name]


def _op(op) -> tuple[int, bool]:
    """NCCL's reduction for ``op`` and whether the result must still be divided by the size (AVG)."""
    from ember.distributed.process_group import ReduceOp

    nccl = _nccl()
    op = ReduceOp(op)
    if op == ReduceOp.AVG:
        return (nccl.NCCL_AVG, False) if hasattr(nccl, "NCCL_AVG") else (nccl.NCCL_SUM, True)
    table = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.PRODUCT: nccl.NCCL_PROD, ReduceOp.MAX: nccl.NCCL_MAX}
    table[ReduceOp.MIN] = nccl.NCCL_MIN
    if op not in table:
        raise ValueError(f"ember.distributed (nccl): ReduceOp.{op.name} is not supported")
    return table[op], False


class _StreamWork:
    """The handle of an ``async_op=True`` NCCL call: ``wait()`` synchronizes its stream."""

    def __init__(self, name: str, stream, finish=None):
        import cupy

        self.name, self.stream, self._finish = name, stream, finish
        self.event = cupy.cuda.Event()
        self.event.record(stream)

    def is_completed(self) -> bool:
        return self.event.done

    def wait(self, timeout=None) -> bool:
        self.event.synchronize()
        if self._finish is not None:
            self._finish()
            self._finish = None
        return True

    def result(self):
        return None


class NcclComm:
    """The NCCL communicator of one process group (every member builds it at once)."""

    def __init__(self, pg):
        import cupy

        nccl = _nccl()
        devices = cupy.cuda.runtime.getDeviceCount()
        local = int(os.environ.get("LOCAL_RANK", pg.rank()))
        self.device = cupy.cuda.Device(local % devices)
        self.device.use()
        uid = np.zeros(_ID_BYTES, np.int8)
        if pg.rank() == 0:
            uid[:] = np.asarray(nccl.get_unique_id(), np.int64).astype(np.int8)
        pg.comm.Bcast(uid, root=0)  # the id travels over MPI as bytes
        self.size, self.rank = pg.size(), pg.rank()
        self.comm = nccl.NcclCommunicator(self.size, tuple(int(v) for v in uid), self.rank)

    # ----- helpers -----
    @staticmethod
    def _array(t):
        """``t``'s CuPy array, contiguous (a copy to write back when it is not)."""
        import cupy

        a = t._data
        if a.flags.c_contiguous:
            return a, None
        c = cupy.ascontiguousarray(a)
        return c, (lambda: a.__setitem__(Ellipsis, c))

    def _done(self, name, async_op, finish):
        import cupy

        stream = cupy.cuda.get_current_stream()
        if async_op:
            return _StreamWork(name, stream, finish)
        if finish is not None:
            finish()
        return None

    # ----- collectives -----
    def all_reduce(self, t, op, async_op):
        a, back = self._array(t)
        nop, divide = _op(op)
        stream = _stream()
        self.comm.allReduce(a.data.ptr, a.data.ptr, a.size, _dtype(a.dtype), nop, stream)

        def finish():
            if divide:
                a[...] /= self.size
            if back is not None:
                back()
            t._bump_version()

        return self._done("all_reduce", async_op, finish)

    def broadcast(self, t, root: int, async_op):
        a, back = self._array(t)
        self.comm.bcast(a.data.ptr, a.size, _dtype(a.dtype), root, _stream())
        return self._done("broadcast", async_op, back)

    def all_gather_into_tensor(self, out, inp, async_op):
        o, back = self._array(out)
        i, _ = self._array(inp)
        if o.size != i.size * self.size:
            raise ValueError(f"all_gather_into_tensor: output has {o.size} elements, expected {self.size} x {i.size}")
        self.comm.allGather(i.data.ptr, o.data.ptr, i.size, _dtype(i.dtype), _stream())
        return self._done("all_gather_into_tensor", async_op, back)

    def reduce_scatter_tensor(self, out, inp, op, async_op):
        o, back = self._array(out)
        i, _ = self._array(inp)
        if i.size != o.size * self.size:
            raise ValueError(f"reduce_scatter_tensor: input has {i.size} elements, expected {self.size} x {o.size}")
        nop, divide = _op(op)
        self.comm.reduceScatter(i.data.ptr, o.data.ptr, o.size, _dtype(o.dtype), nop, _stream())

        def finish():
            if divide:
                o[...] /= self.size
            if back is not None:
                back()

        return self._done("reduce_scatter_tensor", async_op, finish)


def _stream() -> int:
    import cupy

    return cupy.cuda.get_current_stream().ptr


def applies(pg, *tensors) -> bool:
    """True when ``pg`` has an NCCL communicator and every tensor lives on a CUDA device."""
    return getattr(pg, "nccl", None) is not None and all(t._device.type == "cuda" for t in tensors)
