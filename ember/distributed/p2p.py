"""Point-to-point: ``send``/``recv``, ``isend``/``irecv``, ``P2POp`` and ``batch_isend_irecv``.

Messages travel as the tensors' own bytes (MPI tags match them up). A receive whose buffer is
smaller than the message, or larger, raises an error naming both sizes instead of truncating or
leaving stale data.

Example (2 ranks):
    >>> if dist.get_rank() == 0:                 # doctest: +SKIP
    ...     dist.send(ember.arange(4.0), dst=1)
    ... else:
    ...     t = ember.empty(4); dist.recv(t, src=0)
"""

from __future__ import annotations

import numpy as np

from ember.distributed._mpi import as_buffer, mpi, write_back
from ember.distributed.process_group import DistBackendError, _resolve, _warn_not_in_group
from ember.distributed.work import Work, completed

__all__ = ["send", "recv", "isend", "irecv", "P2POp", "batch_isend_irecv"]


def _peer(pg, rank, group_rank, what):
    if group_rank is not None:
        return int(group_rank)
    if rank is None:
        return None
    return pg.group_rank(int(rank), what)


def isend(tensor, dst: int | None = None, group=None, tag: int = 0, group_dst=None):
    """Start sending ``tensor`` to rank ``dst``; returns a Work (the tensor must not change until it is done)."""
    pg = _resolve(group)
    if not pg.is_member():
        _warn_not_in_group("isend")
        return completed("isend", pg)
    peer = _peer(pg, dst, group_dst, "dst")
    if peer == pg.rank():
        raise ValueError("Invalid destination rank: should not be the same as the rank of the current process.")
    arr, _ = as_buffer(tensor)

    def body():
        yield [pg.comm.Isend(arr.reshape(-1).view(np.uint8), dest=peer, tag=tag)]

    return Work(body(), "send", pg, ordered=False)


def irecv(tensor, src: int | None = None, group=None, tag: int = 0, group_src=None):
    """Start receiving into ``tensor`` from ``src`` (any rank when None); ``wait()`` completes it."""
    pg = _resolve(group)
    if not pg.is_member():
        _warn_not_in_group("irecv")
        return completed("irecv", pg)
    MPI = mpi()
    peer = _peer(pg, src, group_src, "src")
    arr, own = as_buffer(tensor)
    buf = arr.reshape(-1).view(np.uint8)

    def body():
        statuses = yield [pg.comm.Irecv(buf, source=MPI.ANY_SOURCE if peer is None else peer, tag=tag)]
        got = statuses[0].Get_count(MPI.BYTE)
        sender = statuses[0].Get_source()
        if got != buf.size:
            raise DistBackendError(
                f"ember.distributed: recv: rank {pg.ranks[sender]} sent {got} bytes but the receiving tensor on rank "
                f"{pg.ranks[pg.rank()]} holds {buf.size} (shape {list(tensor.shape)}, {arr.dtype})"
            )
        if not own:
            write_back(tensor, arr)
        tensor._bump_version()
        return pg.ranks[sender]

    return _RecvWork(body(), "recv", pg, ordered=False)


class _RecvWork(Work):
    def source_rank(self) -> int:
        return self.result()


def send(tensor, dst: int | None = None, group=None, tag: int = 0, group_dst=None) -> None:
    """Send ``tensor`` to rank ``dst`` and wait until the buffer may be reused."""
    isend(tensor, dst, group, tag, group_dst).wait()


def recv(tensor, src: int | None = None, group=None, tag: int = 0, group_src=None) -> int:
    """Receive into ``tensor`` from ``src`` (any rank when None); returns the sender's rank."""
    w = irecv(tensor, src, group, tag, group_src)
    w.wait()
    return w._result if w._result is not None else -1


class P2POp:
    """One operation of ``batch_isend_irecv``: ``P2POp(dist.isend, tensor, peer)``."""

    def __init__(self, op, tensor, peer: int | None = None, group=None, tag: int = 0, group_peer=None):
        if op not in (isend, irecv):
            raise ValueError(
                "Invalid ``op``. Expected ``op`` to be of type ``torch.distributed.isend`` or ``torch.distributed.irecv``."
            )
        self.op, self.tensor, self.peer, self.group, self.tag, self.group_peer = (
            op,
            tensor,
            peer,
            group,
            tag,
            group_peer,
        )


def batch_isend_irecv(p2p_op_list: list[P2POp]) -> list[Work]:
    """Post every send and receive at once (no ordering deadlock); returns their Works."""
    if not p2p_op_list:
        raise ValueError("batch_isend_irecv: p2p_op_list must not be empty")
    return [p.op(p.tensor, p.peer, p.group, p.tag, p.group_peer) for p in p2p_op_list]
