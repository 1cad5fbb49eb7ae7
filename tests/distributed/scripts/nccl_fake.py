"""backend="nccl" code path against a stand-in for CuPy (no GPU here): one process, run directly.

The stand-in records what ember asks of ``cupy.cuda.nccl``: the communicator built from the
unique id that went over MPI, and each collective's pointers, counts, dtypes, ops and stream.
"""

import sys
import types

import numpy as np

calls = []


class FakeArray:
    """A CuPy-like array over NumPy memory (``.data.ptr``, ``.flags``, in-place ops)."""

    def __init__(self, a):
        self.a = a
        self.data = types.SimpleNamespace(ptr=a.__array_interface__["data"][0])
        self.flags, self.size, self.dtype = a.flags, a.size, a.dtype

    def __getitem__(self, k):
        return self.a[k]

    def __setitem__(self, k, v):
        self.a[k] = v.a if isinstance(v, FakeArray) else v


class FakeComm:
    def __init__(self, n, uid, rank):
        calls.append(("init", n, uid, rank))

    def __getattr__(self, name):
        return lambda *args: calls.append((name, *args))


UID = tuple(range(-64, 64))
nccl = types.SimpleNamespace(
    get_unique_id=lambda: UID,
    NcclCommunicator=FakeComm,
    NCCL_FLOAT32=7,
    NCCL_FLOAT64=8,
    NCCL_FLOAT16=6,
    NCCL_INT32=2,
    NCCL_INT64=4,
    NCCL_INT8=0,
    NCCL_UINT8=1,
    NCCL_SUM=0,
    NCCL_PROD=1,
    NCCL_MAX=2,
    NCCL_MIN=3,
)  # no NCCL_AVG: an old NCCL, so AVG is a sum divided by the size
stream = types.SimpleNamespace(ptr=1234)
cuda = types.SimpleNamespace(
    nccl=nccl,
    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
    Device=lambda i: types.SimpleNamespace(use=lambda: calls.append(("device", i))),
    get_current_stream=lambda: stream,
)
cupy = types.ModuleType("cupy")
cupy.cuda = cuda
sys.modules.update({"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.nccl": nccl})

import ember.distributed as dist  # noqa: E402
from ember.distributed import _nccl  # noqa: E402

dist.init_process_group("nccl")
assert calls[:2] == [("device", 0), ("init", 1, UID, 0)], calls  # the id came back from MPI intact
pg = dist.GroupMember.WORLD
assert pg.nccl is not None and dist.get_backend() == "nccl"


class CudaTensor:
    def __init__(self, a):
        self._data, self._device = FakeArray(a), types.SimpleNamespace(type="cuda")

    def _bump_version(self):
        pass


t = CudaTensor(np.arange(4, dtype=np.float32))
calls.clear()
dist.all_reduce(t, op=dist.ReduceOp.MAX)
ptr = t._data.data.ptr
assert calls == [("allReduce", ptr, ptr, 4, 7, 2, 1234)], calls
calls.clear()
dist.all_reduce(t, op=dist.ReduceOp.AVG)  # sum, then / 1
assert calls == [("allReduce", ptr, ptr, 4, 7, 0, 1234)], calls
calls.clear()
dist.broadcast(t, src=0)
assert calls == [("bcast", ptr, 4, 7, 0, 1234)], calls
out = CudaTensor(np.zeros(4, np.int64))
inp = CudaTensor(np.ones(4, np.int64))
calls.clear()
dist.all_gather_into_tensor(out, inp)
dist.reduce_scatter_tensor(out, inp, op=dist.ReduceOp.SUM)
assert calls == [
    ("allGather", inp._data.data.ptr, out._data.data.ptr, 4, 4, 1234),
    ("reduceScatter", inp._data.data.ptr, out._data.data.ptr, 4, 4, 0, 1234),
], calls
import ember  # noqa: E402

assert _nccl.applies(pg, t) and not _nccl.applies(pg, ember.zeros(2))  # CPU tensors keep using MPI
calls.clear()
cpu = ember.ones(2)
dist.all_reduce(cpu)
assert calls == [] and cpu.tolist() == [1.0, 1.0]
try:
    dist.all_reduce(CudaTensor(np.zeros(2, np.complex64)))
except TypeError as e:
    assert "complex64 are not supported by NCCL" in str(e), e
else:
    raise AssertionError("complex tensors must be refused")
dist.destroy_process_group()
print("OK nccl through cupy (stand-in)", flush=True)
