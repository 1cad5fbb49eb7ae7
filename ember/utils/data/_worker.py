"""The DataLoader's worker processes: the loop each runs, its seeding, and what crosses the pipe.

A worker receives tasks ``(epoch, send_idx, indices)`` on its own index queue, fetches and
collates the batch, and puts ``(epoch, send_idx, worker_id, result)`` on the shared result queue.
``None`` on the index queue means "exit". Tensors travel as NumPy arrays (:class:`_ArrayBox`) and
are rebuilt in the parent; an exception travels as :class:`ExceptionWrapper` with the worker's
formatted traceback, and the parent re-raises it. A batch or an exception type that cannot be
pickled reaches the parent as an error it raises (:class:`ResultQueue`), instead of being lost in
the queue's feeder thread while the parent waits.

A worker never blocks forever: it waits on its queue with a timeout and exits when the parent
process has gone (its parent pid changed), so a killed trainer leaves no orphans.
"""

from __future__ import annotations

import copy
import multiprocessing.queues
import os
import queue
import random
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "WorkerInfo",
    "get_worker_info",
    "ExceptionWrapper",
    "KeyErrorMessage",
    "to_transport",
    "from_transport",
    "worker_loop",
    "ResultQueue",
    "unsendable",
]

_POLL_S = 1.0  # how often an idle worker checks that its parent is alive


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker process knows about itself (see :func:`get_worker_info`)."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """In a DataLoader worker, its :class:`WorkerInfo`; in the main process, None.

    An IterableDataset uses it to give each worker a disjoint share of the stream.

    Example:
        >>> from ember.utils.data import get_worker_info
        >>> get_worker_info() is None
        True
    """
    return _worker_info


class ExceptionWrapper:
    """An exception caught in a worker, carried to the parent as its type and traceback text."""

    def __init__(self, exc: BaseException, where: str) -> None:
        self.exc_type = type(exc)
        self.msg = f"Caught {type(exc).__name__} {where}.\nOriginal {traceback.format_exc()}"

    def as_text(self, why: str) -> ExceptionWrapper:
        """This error with its type reduced to a name in the message, for when the type cannot be pickled."""
        out = ExceptionWrapper.__new__(ExceptionWrapper)
        out.exc_type = RuntimeError
        out.msg = f"{self.msg}\n(The worker's {self.exc_type.__qualname__} could not be sent as itself: {why}.)"
        return out

    def reraise(self):
        # Re-raise the worker's exception type when it can be built from a message; KeyError
        # would quote the message, so it gets the same treatment as PyTorch gives it.
        msg = self.msg
        if self.exc_type is KeyError:
            msg = KeyErrorMessage(msg)
        try:
            exc = self.exc_type(msg)
        except Exception:
            raise RuntimeError(msg) from None
        raise exc


class KeyErrorMessage(str):
    """A str whose repr is itself, so ``KeyError(msg)`` prints the traceback unquoted."""

    def __repr__(self) -> str:
        return self


class _IterableEnd:
    """A worker's answer when its copy of an IterableDataset has run out for this epoch."""


class _ArrayBox:
    """A tensor's array on its way from a worker to the parent."""

    __slots__ = ("array", "requires_grad")

    def __init__(self, array: np.ndarray, requires_grad: bool) -> None:
        self.array = array
        self.requires_grad = requires_grad


def to_transport(obj: Any) -> Any:
    """Replace tensors inside dicts, lists and tuples by :class:`_ArrayBox` (plain arrays pickle fast)."""
    from ember.tensor import Tensor

    if isinstance(obj, Tensor):
        return _ArrayBox(obj._device.backend.to_host(obj._data), obj._requires_grad)
    if isinstance(obj, dict):
        out = copy.copy(obj)  # keeps the dict's type (OrderedDict, defaultdict, ...)
        for k, v in obj.items():
            out[k] = to_transport(v)
        return out
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_transport(v) for v in obj))
    if type(obj) in (list, tuple):
        return type(obj)(to_transport(v) for v in obj)
    return obj


def from_transport(obj: Any) -> Any:
    """Undo :func:`to_transport` in the parent."""
    from ember.tensor import _wrap

    if isinstance(obj, _ArrayBox):
        t = _wrap(obj.array)
        t._requires_grad = obj.requires_grad
        return t
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = from_transport(v)
        return obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(from_transport(v) for v in obj))
    if type(obj) in (list, tuple):
        return type(obj)(from_transport(v) for v in obj)
    return obj


def _seed_worker(seed: int) -> None:
    """Seed ember's, Python's and NumPy's global generators for one worker, as PyTorch does."""
    from ember.random import manual_seed

    manual_seed(seed)
    random.seed(seed)
    np.random.seed(np.random.SeedSequence(seed).generate_state(4))


def worker_loop(
    dataset_kind: str,
    dataset: Any,
    index_queue,
    result_queue,
    auto_collation: bool,
    collate_fn,
    drop_last: bool,
    base_seed: int,
    worker_init_fn,
    worker_id: int,
    num_workers: int,
    parent_pid: int,
) -> None:
    """The body of one worker process (the target of ``multiprocessing.Process``)."""
    global _worker_info
    # The parent handles Ctrl-C and shuts workers down; a worker dying of KeyboardInterrupt first
    # would only add a second traceback.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = base_seed + worker_id
    try:
        _seed_worker(seed)
        _worker_info = WorkerInfo(id=worker_id, num_workers=num_workers, seed=seed, dataset=dataset)
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
        init_error = None
    except Exception as exc:
        init_error = ExceptionWrapper(exc, f"in DataLoader worker process {worker_id} during initialization")

    epoch_seen = None
    stream = None  # this worker's iterator over an IterableDataset, per epoch
    exhausted = False
    try:
        while True:
            try:
                task = index_queue.get(timeout=_POLL_S)
            except queue.Empty:
                if os.getppid() != parent_pid:
                    return  # the parent died without telling us
                continue
            if task is None:
                return
            epoch, send_idx, indices = task
            if init_error is not None:
                result_queue.put((epoch, send_idx, worker_id, init_error))
                continue
            if epoch != epoch_seen:
                epoch_seen, stream, exhausted = epoch, None, False
            try:
                if dataset_kind == "iterable":
                    if exhausted:
                        result = _IterableEnd()
                    else:
                        if stream is None:
                            stream = iter(dataset)
                        result = _fetch_iterable(stream, auto_collation, collate_fn, drop_last, indices)
                        exhausted = isinstance(result, _IterableEnd)
                else:
                    result = to_transport(_fetch_map(dataset, auto_collation, collate_fn, indices))
            except Exception as exc:
                result = ExceptionWrapper(exc, f"in DataLoader worker process {worker_id}")
            result_queue.put((epoch, send_idx, worker_id, result))
            del result
    except KeyboardInterrupt:
        pass
    finally:
        # Do not wait for the queue's feeder thread to flush at exit: the parent may no longer be
        # reading, and waiting would hang this process.
        result_queue.cancel_join_thread()
        result_queue.close()


class ResultQueue(multiprocessing.queues.Queue):
    """The workers' result queue. ``put`` pickles in a background thread, where a failure is only
    printed and the item dropped, so the parent would wait for it for ever: here a result that
    cannot be pickled is replaced by an error for the parent to raise, with the reason as text.
    (The hook is the one ``concurrent.futures`` overrides for the same purpose.)"""

    def __init__(self, ctx) -> None:
        super().__init__(ctx=ctx)

    def _on_queue_feeder_error(self, e: Exception, obj: Any) -> None:
        if not (isinstance(obj, tuple) and len(obj) == 4):
            return super()._on_queue_feeder_error(e, obj)
        epoch, send_idx, worker_id, result = obj
        self.put((epoch, send_idx, worker_id, unsendable(result, e, worker_id)))


def unsendable(result: Any, exc: Exception, worker_id: int) -> ExceptionWrapper:
    """The error that replaces a result (or an error) that could not be pickled."""
    why = f"{type(exc).__name__}: {exc}"
    if isinstance(result, ExceptionWrapper):
        return result.as_text(why)
    wrapped = ExceptionWrapper.__new__(ExceptionWrapper)
    wrapped.exc_type = RuntimeError
    wrapped.msg = (
        f"DataLoader worker process {worker_id} could not send its batch to the main process: "
        f"the batch cannot be pickled ({why})"
    )
    return wrapped


def _fetch_map(dataset, auto_collation: bool, collate_fn, index):
    """One batch (or one sample, without auto-collation) from a map-style dataset."""
    if auto_collation:
        getitems = getattr(dataset, "__getitems__", None)
        data = getitems(index) if callable(getitems) else [dataset[i] for i in index]
    else:
        data = dataset[index]
    return collate_fn(data)


def _fetch_iterable(stream, auto_collation: bool, collate_fn, drop_last: bool, batch_size):
    """The next batch from an iterator over an IterableDataset, or _IterableEnd when it ran out."""
    if not auto_collation:
        try:
            return to_transport(collate_fn(next(stream)))
        except StopIteration:
            return _IterableEnd()
    data = []
    for item in stream:
        data.append(item)
        if len(data) == batch_size:
            break
    if not data or (drop_last and len(data) < batch_size):
        return _IterableEnd()
    return to_transport(collate_fn(data))
