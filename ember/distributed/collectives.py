"""Collectives on process groups: ``all_reduce``, ``broadcast``, ``all_gather``, ... as torch.distributed.

Each call first exchanges one small row of metadata per rank (the op, dtype, element count, root
and reduce op; one nonblocking all-gather of a few int64s), so a rank that passes a different
shape, dtype or op makes *every* rank raise the same clear error instead of hanging. Then the
data moves with mpi4py's buffer methods on the tensors' own NumPy arrays: no copy for contiguous
tensors. ``async_op=True`` returns a :class:`Work`; otherwise the call waits (with the group's
timeout) and returns None.

Example (2 ranks):
    >>> t = ember.ones(3) * (dist.get_rank() + 1)   # doctest: +SKIP
    >>> dist.all_reduce(t)                           # doctest: +SKIP
    >>> t                                            # doctest: +SKIP
    tensor([3., 3., 3.])
"""

from __future__ import annotations

import numpy as np

from ember.distributed import _nccl
from ember.distributed._mpi import as_buffer, mpi, mpi_datatype, reduce_dtype, write_back
from ember.distributed.process_group import (
    DistBackendError,
    ProcessGroup,
    ReduceOp,
    _resolve,
    _warn_not_in_group,
)
from ember.distributed.work import Op, Work, completed

__all__ = [
    "all_reduce",
    "reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "gather",
    "scatter",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "all_to_all",
    "all_to_all_single",
    "barrier",
]

_OP_IDS = {
    name: i + 1
    for i, name in enumerate(
        [
            "all_reduce",
            "reduce",
            "broadcast",
            "all_gather",
            "all_gather_into_tensor",
            "gather",
            "scatter",
            "reduce_scatter",
            "reduce_scatter_tensor",
            "all_to_all",
            "all_to_all_single",
            "barrier",
            "object",
        ]
    )
}
_OP_NAMES = {v: k for k, v in _OP_IDS.items()}
_DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]
_DTYPES += ["complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64"]
_HEAD = 6  # op, dtype, count, root, reduce op, local error flag; then per-peer counts


def _dtype_code(dtype: np.dtype) -> int:
    try:
        return _DTYPES.index(np.dtype(dtype).name) + 1
    except ValueError:
        return 99


# ----- the metadata check -----
def _check(
    pg: ProcessGroup, op: str, dtype=None, count: int = 0, root: int = -1, redop: int = -1, local_err=None, peers=()
):
    """Generator: all-gather one row per rank, then raise the same error on every rank if they disagree.

    ``peers`` is an optional flat list of per-peer counts (all_to_all: sends then receives).
    Returns the table (one row per group rank).
    """
    n = pg.size()
    width = _HEAD + 2 * n
    row = np.zeros(width, np.int64)
    row[:_HEAD] = [
        _OP_IDS[op],
        _dtype_code(dtype) if dtype is not None else 0,
        count,
        root,
        redop,
        local_err is not None,
    ]
    if len(peers):
        row[_HEAD : _HEAD + len(peers)] = peers
    table = np.empty((n, width), np.int64)
    yield [pg.meta_comm.Iallgather(row, table)]
    if local_err is not None:
        raise local_err
    for r in range(n):
        if table[r, 0] != row[0]:
            raise DistBackendError(
                f"ember.distributed: {op}: rank {pg.ranks[r]} called {_OP_NAMES.get(int(table[r, 0]), '?')} "
                f"while rank {pg.ranks[pg.rank()]} called {op}: every rank of a group must call the same collectives in the same order"
            )
        if table[r, 5]:
            raise DistBackendError(
                f"ember.distributed: {op}: rank {pg.ranks[r]} passed invalid arguments (see its error)"
            )
    return table


def _require_equal(pg, op: str, table, col: int, what: str) -> None:
    vals = table[:, col]
    if (vals != vals[0]).any():
        desc = ", ".join(f"rank {pg.ranks[r]}: {_describe(col, v)}" for r, v in enumerate(vals.tolist()))
        raise DistBackendError(f"ember.distributed: {op}: mismatched {what} across ranks ({desc})")


def _describe(col: int, v: int) -> str:
    if col == 1:
        return _DTYPES[v - 1] if 0 < v <= len(_DTYPES) else "?"
    return str(v)


# ----- helpers -----
def _group(group, op: str):
    pg = _resolve(group)
    if not pg.is_member():
        _warn_not_in_group(op)
        return None
    return pg


def _run(body, op: str, pg, async_op: bool):
    work = Work(body, op, pg, blocking=not async_op)
    if async_op:
        return work
    work.wait()
    return None


def _nothing(op, pg, async_op):
    return completed(op, pg) if async_op else None


def _bytes(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1).view(np.uint8)


def _root(pg, global_rank, group_rank, what: str) -> int:
    if group_rank is not None:
        return int(group_rank)
    return pg.group_rank(int(global_rank), what)


def _mpi_op(op: ReduceOp, dtype: np.dtype, name: str):
    MPI = mpi()
    op = ReduceOp(op)
    if op == ReduceOp.PREMUL_SUM:
        raise ValueError(f"{name}: ReduceOp.PREMUL_SUM is only supported by NCCL")
    if dtype == np.bool_:
        return (
            {
                ReduceOp.SUM: MPI.LOR,
                ReduceOp.MAX: MPI.LOR,
                ReduceOp.BOR: MPI.LOR,
                ReduceOp.PRODUCT: MPI.LAND,
                ReduceOp.MIN: MPI.LAND,
                ReduceOp.BAND: MPI.LAND,
                ReduceOp.BXOR: MPI.LXOR,
            }[op]
            if op != ReduceOp.AVG
            else _bad_avg(name, dtype)
        )
    if op in (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR) and dtype.kind not in "iu":
        raise TypeError(f"{name}: bitwise ReduceOp.{op.name} needs an integer tensor, got {dtype}")
    if op == ReduceOp.AVG and dtype.kind not in "fc":
        _bad_avg(name, dtype)
    return {
        ReduceOp.SUM: MPI.SUM,
        ReduceOp.AVG: MPI.SUM,
        ReduceOp.PRODUCT: MPI.PROD,
        ReduceOp.MIN: MPI.MIN,
        ReduceOp.MAX: MPI.MAX,
        ReduceOp.BAND: MPI.BAND,
        ReduceOp.BOR: MPI.BOR,
        ReduceOp.BXOR: MPI.BXOR,
    }[op]


def _bad_avg(name, dtype):
    raise TypeError(f"{name}: ReduceOp.AVG needs a floating-point tensor, got {dtype}")


class _Reduction:
    """The typed buffer a reduction runs on (16-bit floats widened to float32, a copy)."""

    def __init__(self, t, name: str, op):
        self.t = t
        self.arr, self.own = as_buffer(t)
        self.err = None
        self.mop = None
        try:
            self.mop = _mpi_op(op, self.arr.dtype, name)
        except (TypeError, ValueError) as e:
            self.err = e
        wide = reduce_dtype(self.arr.dtype)
        self.work = self.arr.astype(wide) if wide is not None else self.arr
        self.spec = [self.work.reshape(-1), mpi_datatype(self.work.dtype)] if self.err is None else None

    def finish(self, op, size: int) -> None:
        if ReduceOp(op) == ReduceOp.AVG:
            np.true_divide(self.work, size, out=self.work, casting="unsafe")
        if self.work is not self.arr:
            self.arr[...] = self.work
        if not self.own:
            write_back(self.t, self.arr)
        self.t._bump_version()


# ----- reductions -----
def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce ``tensor`` across the group in place, so every rank holds the result.

    Example:
        >>> dist.all_reduce(t, op=dist.ReduceOp.AVG)  # doctest: +SKIP
    """
    pg = _group(group, "all_reduce")
    if pg is None:
        return _nothing("all_reduce", pg, async_op)
    if _nccl.applies(pg, tensor):
        return pg.nccl.all_reduce(tensor, op, async_op)
    red = _Reduction(tensor, "all_reduce", op)

    def body():
        table = yield from _check(pg, "all_reduce", red.arr.dtype, red.arr.size, redop=int(op), local_err=red.err)
        _require_equal(pg, "all_reduce", table, 1, "dtypes")
        _require_equal(pg, "all_reduce", table, 2, "tensor sizes (element counts)")
        _require_equal(pg, "all_reduce", table, 4, "reduce ops")
        yield Op(pg.comm, "allreduce", mpi().IN_PLACE, red.spec, red.mop)
        red.finish(op, pg.size())

    return _run(body(), "all_reduce", pg, async_op)


def _all_reduce_unchecked(tensor, group, op=ReduceOp.SUM) -> Work:
    """Async all_reduce without the metadata exchange, for callers whose peers are known to
    match by construction (DDP's buckets: parameter shapes are verified once, at wrap time)."""
    pg = _group(group, "all_reduce")
    red = _Reduction(tensor, "all_reduce", op)
    if red.err is not None:
        raise red.err

    def body():
        yield Op(pg.comm, "allreduce", mpi().IN_PLACE, red.spec, red.mop)
        red.finish(op, pg.size())

    return Work(body(), "all_reduce", pg, deferred=True)


def _reduce_scatter_unchecked(output, input, group, op=ReduceOp.SUM) -> Work:
    """Async reduce_scatter_tensor without the metadata exchange, for callers whose peers match
    by construction (ZeRO-2's gradient buckets, laid out the same on every rank)."""
    pg = _group(group, "reduce_scatter_tensor")
    src = _Reduction(input, "reduce_scatter_tensor", op)
    out = _Reduction(output, "reduce_scatter_tensor", op)
    if src.err is not None or out.err is not None:
        raise src.err or out.err

    def body():
        yield Op(pg.comm, "reduce_scatter_block", src.spec, out.spec, src.mop)
        out.finish(op, pg.size())

    return Work(body(), "reduce_scatter_tensor", pg, deferred=True)


def reduce(tensor, dst: int | None = None, op=ReduceOp.SUM, group=None, async_op: bool = False, group_dst=None):
    """Reduce ``tensor`` across the group into rank ``dst``'s tensor (the others keep theirs)."""
    pg = _group(group, "reduce")
    if pg is None:
        return _nothing("reduce", pg, async_op)
    root = _root(pg, 0 if dst is None else dst, group_dst, "dst")
    red = _Reduction(tensor, "reduce", op)
    me = pg.rank()

    def body():
        table = yield from _check(pg, "reduce", red.arr.dtype, red.arr.size, root, int(op), red.err)
        for col, what in ((1, "dtypes"), (2, "tensor sizes (element counts)"), (3, "dst ranks"), (4, "reduce ops")):
            _require_equal(pg, "reduce", table, col, what)
        MPI = mpi()
        if me == root:
            yield Op(pg.comm, "reduce", MPI.IN_PLACE, red.spec, red.mop, root=root)
            red.finish(op, pg.size())
        else:
            yield Op(pg.comm, "reduce", red.spec, None, red.mop, root=root)

    return _run(body(), "reduce", pg, async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce ``input`` (world_size times ``output``'s size) and give each rank its block in ``output``."""
    pg = _group(group, "reduce_scatter_tensor")
    if pg is None:
        return _nothing("reduce_scatter_tensor", pg, async_op)
    if _nccl.applies(pg, output, input):
        return pg.nccl.reduce_scatter_tensor(output, input, op, async_op)
    n = pg.size()
    src = _Reduction(input, "reduce_scatter_tensor", op)
    out = _Reduction(output, "reduce_scatter_tensor", op)
    err = src.err
    if err is None and src.arr.size != n * out.arr.size:
        err = ValueError(
            f"reduce_scatter_tensor: input has {src.arr.size} elements, expected world_size ({n}) x output's {out.arr.size}"
        )
    if err is None and src.arr.dtype != out.arr.dtype:
        err = TypeError(f"reduce_scatter_tensor: input dtype {src.arr.dtype} and output dtype {out.arr.dtype} differ")

    def body():
        table = yield from _check(
            pg, "reduce_scatter_tensor", out.arr.dtype, out.arr.size, redop=int(op), local_err=err
        )
        for col, what in ((1, "dtypes"), (2, "output sizes (element counts)"), (4, "reduce ops")):
            _require_equal(pg, "reduce_scatter_tensor", table, col, what)
        yield Op(pg.comm, "reduce_scatter_block", src.spec, out.spec, src.mop)
        out.finish(op, n)

    return _run(body(), "reduce_scatter_tensor", pg, async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op: bool = False):
    """Reduce the i-th tensors of every rank's ``input_list`` into rank i's ``output``."""
    pg = _group(group, "reduce_scatter")
    if pg is None:
        return _nothing("reduce_scatter", pg, async_op)
    if len(input_list) != pg.size():
        raise ValueError(f"reduce_scatter: input_list has {len(input_list)} tensors, expected world_size {pg.size()}")
    from ember.tensor import _wrap

    flat = _wrap(np.concatenate([np.asarray(t._data).reshape(-1) for t in input_list]))  # one copy, as gloo
    return _renamed(reduce_scatter_tensor(output, flat, op, pg, async_op=True), "reduce_scatter", async_op)


def _renamed(work, name, async_op):
    if work is None:
        return None
    work._name = name
    if async_op:
        return work
    work.wait()
    return None


# ----- data movement -----
def broadcast(tensor, src: int | None = None, group=None, async_op: bool = False, group_src=None):
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor``."""
    pg = _group(group, "broadcast")
    if pg is None:
        return _nothing("broadcast", pg, async_op)
    root = _root(pg, 0 if src is None else src, group_src, "src")
    if _nccl.applies(pg, tensor):
        return pg.nccl.broadcast(tensor, root, async_op)
    arr, own = as_buffer(tensor)

    def body():
        table = yield from _check(pg, "broadcast", arr.dtype, arr.size, root)
        for col, what in ((1, "dtypes"), (2, "tensor sizes (element counts)"), (3, "src ranks")):
            _require_equal(pg, "broadcast", table, col, what)
        yield Op(pg.comm, "bcast", _bytes(arr), root=root)
        if pg.rank() != root:
            if not own:
                write_back(tensor, arr)
            tensor._bump_version()

    return _run(body(), "broadcast", pg, async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op: bool = False):
    """Concatenate every rank's ``input_tensor`` (in rank order) into ``output_tensor``."""
    pg = _group(group, "all_gather_into_tensor")
    if pg is None:
        return _nothing("all_gather_into_tensor", pg, async_op)
    if _nccl.applies(pg, output_tensor, input_tensor):
        return pg.nccl.all_gather_into_tensor(output_tensor, input_tensor, async_op)
    src, _ = as_buffer(input_tensor)
    dst, own = as_buffer(output_tensor)
    err = None
    if dst.size != pg.size() * src.size or dst.dtype != src.dtype:
        err = ValueError(
            f"all_gather_into_tensor: output ({dst.size} x {dst.dtype}) must hold world_size ({pg.size()}) "
            f"x input ({src.size} x {src.dtype})"
        )

    def body():
        table = yield from _check(pg, "all_gather_into_tensor", src.dtype, src.size, local_err=err)
        _require_equal(pg, "all_gather_into_tensor", table, 1, "dtypes")
        _require_equal(pg, "all_gather_into_tensor", table, 2, "input sizes (element counts)")
        yield Op(pg.comm, "allgather", _bytes(src), _bytes(dst))
        if not own:
            write_back(output_tensor, dst)
        output_tensor._bump_version()

    return _run(body(), "all_gather_into_tensor", pg, async_op)


def all_gather(tensor_list, tensor, group=None, async_op: bool = False):
    """Fill ``tensor_list[i]`` with rank i's ``tensor`` on every rank."""
    pg = _group(group, "all_gather")
    if pg is None:
        return _nothing("all_gather", pg, async_op)
    src, _ = as_buffer(tensor)
    n = pg.size()
    err = None
    if len(tensor_list) != n:
        err = ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors, expected world_size {n}")
    elif any(t._data.size != src.size or t._data.dtype != src.dtype for t in tensor_list):
        err = ValueError("all_gather: every tensor in tensor_list must have the input's size and dtype")
    recv = np.empty(n * src.size, src.dtype)

    def body():
        table = yield from _check(pg, "all_gather", src.dtype, src.size, local_err=err)
        _require_equal(pg, "all_gather", table, 1, "dtypes")
        _require_equal(pg, "all_gather", table, 2, "tensor sizes (element counts)")
        yield Op(pg.comm, "allgather", _bytes(src), _bytes(recv))
        for i, t in enumerate(tensor_list):
            write_back(t, recv[i * src.size : (i + 1) * src.size])
            t._bump_version()

    return _run(body(), "all_gather", pg, async_op)


def gather(tensor, gather_list=None, dst: int | None = None, group=None, async_op: bool = False, group_dst=None):
    """Collect every rank's ``tensor`` into ``gather_list`` on rank ``dst``."""
    pg = _group(group, "gather")
    if pg is None:
        return _nothing("gather", pg, async_op)
    root = _root(pg, 0 if dst is None else dst, group_dst, "dst")
    src, _ = as_buffer(tensor)
    n, me = pg.size(), pg.rank()
    err = None
    if me == root:
        if gather_list is None or len(gather_list) != n:
            err = ValueError(f"gather: the dst rank needs a gather_list of world_size ({n}) tensors")
        elif any(t._data.size != src.size for t in gather_list):
            err = ValueError("gather: every tensor in gather_list must have the input's size")
    elif gather_list:
        err = ValueError("gather: Argument ``gather_list`` must NOT be specified on non-destination ranks.")
    recv = np.empty(n * src.size, src.dtype) if me == root else None

    def body():
        table = yield from _check(pg, "gather", src.dtype, src.size, root, local_err=err)
        for col, what in ((1, "dtypes"), (2, "tensor sizes (element counts)"), (3, "dst ranks")):
            _require_equal(pg, "gather", table, col, what)
        yield Op(pg.comm, "gather", _bytes(src), _bytes(recv) if recv is not None else None, root=root)
        if recv is not None:
            for i, t in enumerate(gather_list):
                write_back(t, recv[i * src.size : (i + 1) * src.size])
                t._bump_version()

    return _run(body(), "gather", pg, async_op)


def scatter(tensor, scatter_list=None, src: int | None = None, group=None, async_op: bool = False, group_src=None):
    """Give rank i ``scatter_list[i]`` from rank ``src``, written into its ``tensor``."""
    pg = _group(group, "scatter")
    if pg is None:
        return _nothing("scatter", pg, async_op)
    root = _root(pg, 0 if src is None else src, group_src, "src")
    dst, own = as_buffer(tensor)
    n, me = pg.size(), pg.rank()
    err = None
    send = None
    if me == root:
        if scatter_list is None or len(scatter_list) != n:
            err = ValueError(f"scatter: the src rank needs a scatter_list of world_size ({n}) tensors")
        elif any(t._data.size != dst.size or t._data.dtype != dst.dtype for t in scatter_list):
            err = ValueError("scatter: every tensor in scatter_list must have the output's size and dtype")
        else:
            send = np.concatenate([np.asarray(t._data).reshape(-1) for t in scatter_list])
    elif scatter_list:
        err = ValueError("scatter: Argument ``scatter_list`` must NOT be specified on non-source ranks.")

    def body():
        table = yield from _check(pg, "scatter", dst.dtype, dst.size, root, local_err=err)
        for col, what in ((1, "dtypes"), (2, "tensor sizes (element counts)"), (3, "src ranks")):
            _require_equal(pg, "scatter", table, col, what)
        yield Op(pg.comm, "scatter", _bytes(send) if send is not None else None, _bytes(dst), root=root)
        if not own:
            write_back(tensor, dst)
        tensor._bump_version()

    return _run(body(), "scatter", pg, async_op)


def _alltoallv(pg, op, send, recv, scounts, rcounts, dtype, err):
    """Generator: validate per-peer counts (elements) against the peers', then one Ialltoallv."""
    n, me = pg.size(), pg.rank()
    peers = list(scounts) + list(rcounts)
    table = yield from _check(pg, op, dtype, int(sum(scounts)), local_err=err, peers=peers)
    _require_equal(pg, op, table, 1, "dtypes")
    for j in range(n):
        sent_to_me = int(table[j, _HEAD + me])
        if sent_to_me != rcounts[j]:
            raise DistBackendError(
                f"ember.distributed: {op}: rank {pg.ranks[j]} sends {sent_to_me} elements to rank {pg.ranks[me]}, "
                f"which expects {rcounts[j]} (mismatched split sizes)"
            )
    item = np.dtype(dtype).itemsize
    sc = [c * item for c in scounts]
    rc = [c * item for c in rcounts]
    sd = np.concatenate([[0], np.cumsum(sc)[:-1]]).tolist()
    rd = np.concatenate([[0], np.cumsum(rc)[:-1]]).tolist()
    yield Op(pg.comm, "alltoallv", [_bytes(send), (sc, sd)], [_bytes(recv), (rc, rd)])


def all_to_all_single(
    output, input, output_split_sizes=None, input_split_sizes=None, group=None, async_op: bool = False
):
    """Split ``input`` along dim 0 and send piece j to rank j; concatenate what arrives into ``output``.

    Splits may be uneven (``input_split_sizes`` / ``output_split_sizes``, in rows of dim 0).
    """
    pg = _group(group, "all_to_all_single")
    if pg is None:
        return _nothing("all_to_all_single", pg, async_op)
    n = pg.size()
    src, _ = as_buffer(input)
    dst, own = as_buffer(output)
    err = None
    in_rows = input.shape[0] if input.ndim else 1
    out_rows = output.shape[0] if output.ndim else 1
    row_in = src.size // in_rows if in_rows else 0
    row_out = dst.size // out_rows if out_rows else 0
    isz = list(input_split_sizes) if input_split_sizes else None
    osz = list(output_split_sizes) if output_split_sizes else None
    if isz is None:
        if in_rows % n:
            err = ValueError(f"all_to_all_single: input's dim 0 ({in_rows}) is not divisible by world_size {n}")
        isz = [in_rows // n] * n
    if osz is None:
        if out_rows % n and err is None:
            err = ValueError(f"all_to_all_single: output's dim 0 ({out_rows}) is not divisible by world_size {n}")
        osz = [out_rows // n] * n
    if err is None and (len(isz) != n or len(osz) != n or sum(isz) != in_rows or sum(osz) != out_rows):
        err = ValueError(
            f"all_to_all_single: split sizes {isz} / {osz} must have world_size ({n}) entries summing to dim 0 "
            f"({in_rows} / {out_rows})"
        )
    if err is None and (src.dtype != dst.dtype or (in_rows and out_rows and row_in != row_out)):
        err = ValueError("all_to_all_single: input and output must have the same dtype and row size")
    scounts = [s * row_in for s in isz] if err is None else [0] * n
    rcounts = [s * row_out for s in osz] if err is None else [0] * n

    def body():
        yield from _alltoallv(pg, "all_to_all_single", src, dst, scounts, rcounts, src.dtype, err)
        if not own:
            write_back(output, dst)
        output._bump_version()

    return _run(body(), "all_to_all_single", pg, async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op: bool = False):
    """Send ``input_tensor_list[j]`` to rank j; receive rank j's piece in ``output_tensor_list[j]``."""
    pg = _group(group, "all_to_all")
    if pg is None:
        return _nothing("all_to_all", pg, async_op)
    n = pg.size()
    err = None
    if len(input_tensor_list) != n or len(output_tensor_list) != n:
        err = ValueError(f"all_to_all: both lists must hold world_size ({n}) tensors")
    dtypes = {t._data.dtype for t in list(input_tensor_list) + list(output_tensor_list)}
    if err is None and len(dtypes) != 1:
        err = TypeError(f"all_to_all: all tensors must have one dtype, got {sorted(str(d) for d in dtypes)}")
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.float32)
    if err is None:
        send = np.concatenate([np.asarray(t._data).reshape(-1) for t in input_tensor_list])
        scounts = [t._data.size for t in input_tensor_list]
        rcounts = [t._data.size for t in output_tensor_list]
    else:
        send, scounts, rcounts = np.empty(0, dtype), [0] * n, [0] * n
    recv = np.empty(sum(rcounts), dtype)

    def body():
        yield from _alltoallv(pg, "all_to_all", send, recv, scounts, rcounts, dtype, err)
        off = 0
        for t, c in zip(output_tensor_list, rcounts):
            write_back(t, recv[off : off + c])
            t._bump_version()
            off += c

    return _run(body(), "all_to_all", pg, async_op)


def barrier(group=None, async_op: bool = False, device_ids=None):
    """Wait until every rank of the group has reached the barrier (bounded by the group's timeout)."""
    pg = _group(group, "barrier")
    if pg is None:
        return _nothing("barrier", pg, async_op)

    def body():
        yield from _check(pg, "barrier")
        yield Op(pg.comm, "barrier")

    return _run(body(), "barrier", pg, async_op)
