"""Object collectives: ``broadcast_object_list``, ``all_gather_object``, ``gather_object``.

Objects are encoded by :mod:`ember.distributed._serial` (tagged JSON, data only): unlike
PyTorch's pickle, nothing a peer sends can make this rank run code.

Example (2 ranks):
    >>> objs = [{"step": 3}] if dist.get_rank() == 0 else [None]   # doctest: +SKIP
    >>> dist.broadcast_object_list(objs, src=0)                     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from ember.distributed import _serial
from ember.distributed.collectives import _check, _group, _root
from ember.distributed.work import Work

__all__ = ["broadcast_object_list", "all_gather_object", "gather_object"]


def broadcast_object_list(object_list: list, src: int | None = None, group=None, device=None, group_src=None) -> None:
    """Replace ``object_list``'s items on every rank with rank ``src``'s."""
    pg = _group(group, "broadcast_object_list")
    if pg is None:
        return
    root = _root(pg, 0 if src is None else src, group_src, "src")
    me = pg.rank()
    payload = np.frombuffer(_serial.dumps(list(object_list)), np.uint8) if me == root else None
    size = np.array([payload.size if payload is not None else 0], np.int64)

    def body():
        yield from _check(pg, "object", root=root)
        yield [pg.comm.Ibcast(size, root=root)]
        buf = payload if me == root else np.empty(int(size[0]), np.uint8)
        yield [pg.comm.Ibcast(buf, root=root)]
        if me != root:
            got = _serial.loads(buf.tobytes())
            if len(got) != len(object_list):
                raise ValueError(
                    f"broadcast_object_list: rank {pg.ranks[root]} sent {len(got)} objects, this list holds {len(object_list)}"
                )
            object_list[:] = got

    Work(body(), "broadcast_object_list", pg).wait()


def _gather_bytes(pg, obj, root):
    """Generator: every rank's encoded ``obj`` at ``root`` (all ranks when root is None)."""
    n = pg.size()
    mine = np.frombuffer(_serial.dumps(obj), np.uint8)
    sizes = np.empty(n, np.int64)
    yield from _check(pg, "object", root=-1 if root is None else root)
    yield [pg.comm.Iallgather(np.array([mine.size], np.int64), sizes)]
    displs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    counts = sizes.tolist()
    if root is None:
        recv = np.empty(int(sizes.sum()), np.uint8)
        yield [pg.comm.Iallgatherv(mine, [recv, (counts, displs)])]
    else:
        recv = np.empty(int(sizes.sum()), np.uint8) if pg.rank() == root else None
        yield [pg.comm.Igatherv(mine, [recv, (counts, displs)] if recv is not None else None, root=root)]
    if recv is None:
        return None
    return [_serial.loads(recv[d : d + c].tobytes()) for d, c in zip(displs, counts)]


def all_gather_object(object_list: list, obj, group=None) -> None:
    """Fill ``object_list[i]`` with rank i's ``obj`` on every rank."""
    pg = _group(group, "all_gather_object")
    if pg is None:
        return
    if len(object_list) != pg.size():
        raise ValueError(f"all_gather_object: object_list must have world_size ({pg.size()}) entries")
    w = Work(_gather_bytes(pg, obj, None), "all_gather_object", pg)
    object_list[:] = w.result()


def gather_object(
    obj, object_gather_list: list | None = None, dst: int | None = None, group=None, group_dst=None
) -> None:
    """Collect every rank's ``obj`` into ``object_gather_list`` on rank ``dst``."""
    pg = _group(group, "gather_object")
    if pg is None:
        return
    root = _root(pg, 0 if dst is None else dst, group_dst, "dst")
    w = Work(_gather_bytes(pg, obj, root), "gather_object", pg)
    got = w.result()
    if pg.rank() == root:
        if object_gather_list is None or len(object_gather_list) != pg.size():
            raise ValueError(f"gather_object: object_gather_list must have world_size ({pg.size()}) entries on dst")
        object_gather_list[:] = got
