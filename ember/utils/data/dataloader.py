"""``DataLoader``: batches from a dataset, in the main process or prefetched by worker processes.

The sampler always runs in the main process, and batches are numbered as they are sent to the
workers; results are put back in that order, so ``num_workers`` never changes what a seeded run
sees. Each iterator draws one base seed from the loader's generator (the global one by default)
before the sampler draws its own, in both modes, as PyTorch does; worker ``i`` seeds its global
generators with ``base_seed + i``.

Worker processes (``multiprocessing``, fork where available) are shut down when the iterator is
exhausted, deleted or garbage-collected, and when a worker raises (the error is re-raised here with
the worker's traceback). The main process never waits on a queue without a timeout: it checks that
its workers are alive every fraction of a second, and raises if one died.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Iterable
from typing import Any

from ember.random import Generator, numpy_generator
from ember.utils.data import _worker
from ember.utils.data._worker import ExceptionWrapper, _fetch_iterable, _fetch_map, _IterableEnd
from ember.utils.data.collate import default_collate, default_convert
from ember.utils.data.dataset import Dataset, IterableDataset
from ember.utils.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = ["DataLoader"]

_POLL_S = 0.1  # how often the main process checks its workers while waiting for a batch
_JOIN_S = 5.0  # how long a worker gets to exit before it is terminated


class _InfiniteConstantSampler(Sampler):
    """The "indices" of an IterableDataset: None forever (a worker's stream decides when to stop)."""

    def __iter__(self):
        while True:
            yield None


class DataLoader:
    """Iterate over ``dataset`` in batches, as ``torch.utils.data.DataLoader``.

    Args:
        dataset: a map-style (``len``, ``[]``) or iterable (:class:`IterableDataset`) dataset.
        batch_size: samples per batch; None yields single samples (no collation).
        shuffle: a new random order every epoch (from ``generator``, or the global generator).
        sampler, batch_sampler: custom orders of indices, or of lists of indices.
        num_workers: worker processes that prefetch batches (0: load in the main process).
        collate_fn: turns a list of samples into a batch (default: :func:`default_collate`).
        drop_last: drop the last incomplete batch.
        timeout: seconds to wait for a worker's batch before raising (0: wait for ever).
        worker_init_fn: called as ``fn(worker_id)`` in each worker after seeding.
        multiprocessing_context: a start method name or context (default: fork where available).
        generator: the :class:`ember.Generator` for shuffling and the workers' base seed.
        prefetch_factor: batches in flight per worker (default 2 with workers).
        persistent_workers: keep the worker processes across epochs.
        pin_memory: accepted for compatibility; ignored (Ember's host arrays need no pinning).

    Example:
        >>> import ember
        >>> from ember.utils.data import DataLoader, TensorDataset
        >>> ds = TensorDataset(ember.arange(6))
        >>> loader = DataLoader(ds, batch_size=4, shuffle=True, generator=ember.Generator().manual_seed(0))
        >>> len(loader), sorted(sum((b.tolist() for (b,) in loader), []))
        (2, [0, 1, 2, 3, 4, 5])
    """

    _FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")

    def __init__(
        self,
        dataset: Dataset | Iterable,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler | Iterable | None = None,
        batch_sampler: Sampler | Iterable | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context=None,
        generator: Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
    ) -> None:
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing. Let num_workers > 0 to enable "
                "multiprocessing, otherwise set prefetch_factor to None."
            )
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")

        if isinstance(dataset, IterableDataset):
            self._dataset_kind = "iterable"
            for name, value in (("shuffle", shuffle), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value not in (None, False):
                    raise ValueError(
                        f"DataLoader with IterableDataset: expected unspecified {name} option, but got {name}={value}"
                    )
        else:
            self._dataset_kind = "map"
            shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")

        if sampler is None:
            if self._dataset_kind == "iterable":
                sampler = _InfiniteConstantSampler()
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.collate_fn = collate_fn or (default_collate if batch_sampler is not None else default_convert)
        self.persistent_workers = persistent_workers
        self._iterator = None
        self.__initialized = True

    def __setattr__(self, name: str, value) -> None:
        if self.__dict__.get("_DataLoader__initialized") and name in self._FROZEN:
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def _mp_context(self):
        ctx = self.multiprocessing_context
        if ctx is None:
            methods = multiprocessing.get_all_start_methods()
            return multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        return multiprocessing.get_context(ctx) if isinstance(ctx, str) else ctx

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if not self.persistent_workers:
            return _MultiProcessIter(self)
        if self._iterator is None or self._iterator._shutdown:
            self._iterator = _MultiProcessIter(self)
        else:
            self._iterator._reset(self)
        return self._iterator

    def __len__(self) -> int:
        if self._dataset_kind == "iterable":
            length = len(self.dataset)  # TypeError when the stream has no length, as in PyTorch
            if self.batch_size is not None:
                length = length // self.batch_size if self.drop_last else -(-length // self.batch_size)
            return length
        return len(self._index_sampler)


class _BaseIter:
    """What both iterators share: the sampler, the fetch settings and the per-iterator base seed."""

    def __init__(self, loader: DataLoader) -> None:
        self._dataset = loader.dataset
        self._dataset_kind = loader._dataset_kind
        self._auto_collation = loader._auto_collation
        self._drop_last = loader.drop_last
        self._index_sampler = loader._index_sampler
        self._collate_fn = loader.collate_fn
        self._sampler_iter = iter(self._index_sampler)
        # One draw per iterator, before the sampler's own (its body runs at the first next()).
        self._base_seed = int(numpy_generator(loader.generator).integers(0, 2**62))
        self._num_yielded = 0

    def _reset(self, loader: DataLoader) -> None:
        self._sampler_iter = iter(self._index_sampler)
        self._num_yielded = 0

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._index_sampler)

    def __next__(self):
        data = self._next_data()
        self._num_yielded += 1
        return data

    def _batch_size_of(self, index) -> int | None:
        return len(index) if self._auto_collation else None


class _SingleProcessIter(_BaseIter):
    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._stream = None
        self._ended = False

    def _next_data(self):
        if self._ended:
            raise StopIteration
        index = next(self._sampler_iter)
        if self._dataset_kind == "map":
            return _fetch_map(self._dataset, self._auto_collation, self._collate_fn, index)
        if self._stream is None:
            self._stream = iter(self._dataset)
        result = _fetch_iterable(
            self._stream, self._auto_collation, self._collate_fn, self._drop_last, self._batch_size_of(index)
        )
        if isinstance(result, _IterableEnd):
            self._ended = True
            raise StopIteration
        return _worker.from_transport(result)


class _MultiProcessIter(_BaseIter):
    """Workers fetch batches ahead; results are put back in the order the batches were sent."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__(loader)
        self._num_workers = loader.num_workers
        self._prefetch = loader.prefetch_factor * loader.num_workers
        self._timeout = loader.timeout
        self._persistent = loader.persistent_workers
        self._shutdown = True  # until the workers exist, so a failed start cleans up what it made
        self._epoch = 0
        ctx = loader._mp_context()
        self._result_queue = _worker.ResultQueue(ctx)
        self._index_queues = []
        self._workers = []
        self._alive_expected = []
        self._shutdown = False
        for worker_id in range(self._num_workers):
            index_queue = ctx.Queue()
            index_queue.cancel_join_thread()
            w = ctx.Process(
                target=_worker.worker_loop,
                args=(
                    self._dataset_kind,
                    self._dataset,
                    index_queue,
                    self._result_queue,
                    self._auto_collation,
                    self._collate_fn,
                    self._drop_last,
                    self._base_seed,
                    loader.worker_init_fn,
                    worker_id,
                    self._num_workers,
                    os.getpid(),
                ),
                daemon=True,  # never outlive the main process
            )
            w.start()
            self._index_queues.append(index_queue)
            self._workers.append(w)
            self._alive_expected.append(True)
        self._start_epoch()

    def _reset(self, loader: DataLoader) -> None:
        super()._reset(loader)
        self._epoch += 1  # results still in flight from the previous epoch are dropped
        self._start_epoch()

    def _start_epoch(self) -> None:
        self._send_idx = 0
        self._rcvd_idx = 0
        self._task_info: dict[int, tuple] = {}  # send_idx -> (worker_id,) or (worker_id, result)
        self._tasks_outstanding = 0
        self._workers_active = [True] * self._num_workers
        self._worker_cycle = itertools.cycle(range(self._num_workers))
        for _ in range(self._prefetch):
            self._try_put_index()

    def _try_put_index(self) -> None:
        try:
            index = next(self._sampler_iter)
        except StopIteration:
            return
        for _ in range(self._num_workers):
            worker_id = next(self._worker_cycle)
            if self._workers_active[worker_id]:
                break
        else:
            return  # every worker's stream has ended
        payload = index if self._dataset_kind == "map" else self._batch_size_of(index)
        self._index_queues[worker_id].put((self._epoch, self._send_idx, payload))
        self._task_info[self._send_idx] = (worker_id,)
        self._tasks_outstanding += 1
        self._send_idx += 1

    def _next_data(self):
        if self._shutdown:  # exhausted, failed or timed out: this iterator is over
            raise StopIteration
        while True:
            # Skip batches that were sent to workers whose iterable stream has since ended.
            while self._rcvd_idx < self._send_idx:
                info = self._task_info[self._rcvd_idx]
                if len(info) == 2 or self._workers_active[info[0]]:
                    break
                del self._task_info[self._rcvd_idx]
                self._rcvd_idx += 1
            else:
                if not self._persistent:
                    self._shutdown_workers()
                raise StopIteration
            info = self._task_info[self._rcvd_idx]
            if len(info) == 2:
                del self._task_info[self._rcvd_idx]
                self._rcvd_idx += 1
                return self._process(info[1])
            send_idx, worker_id, result = self._get_result()
            self._tasks_outstanding -= 1
            if isinstance(result, _IterableEnd):
                self._workers_active[worker_id] = False
                self._try_put_index()
                continue
            if send_idx != self._rcvd_idx:
                self._task_info[send_idx] += (result,)  # early: keep it until its turn
                continue
            del self._task_info[send_idx]
            self._rcvd_idx += 1
            return self._process(result)

    def _process(self, result):
        self._try_put_index()
        if isinstance(result, ExceptionWrapper):
            # The epoch cannot go on without this batch: stop the workers (without waiting), then raise.
            self._shutdown_workers(wait=False)
            result.reraise()
        return _worker.from_transport(result)

    def _get_result(self):
        """The next result of this epoch, checking the workers' health while waiting."""
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            try:
                epoch, send_idx, worker_id, result = self._result_queue.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_workers()
                if deadline is not None and time.monotonic() > deadline:
                    # Raise at the timeout: the stuck worker is terminated, not waited for.
                    self._shutdown_workers(wait=False)
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds") from None
                continue
            except Exception as exc:  # a result that pickled in the worker but cannot be rebuilt here
                self._shutdown_workers(wait=False)
                raise RuntimeError(
                    f"DataLoader: a worker's batch could not be unpickled in the main process ({type(exc).__name__}: {exc})"
                ) from exc
            if epoch == self._epoch:
                return send_idx, worker_id, result

    def _check_workers(self) -> None:
        dead = [w for w, expected in zip(self._workers, self._alive_expected) if expected and not w.is_alive()]
        if dead:
            self._shutdown_workers(wait=False)
            described = "; ".join(
                f"DataLoader worker (pid {w.pid}) exited unexpectedly with exit code {w.exitcode}" for w in dead
            )
            raise RuntimeError(
                f"{described}. A negative exit code is the signal that killed it "
                "(-9: killed, often for lack of memory; -11: segmentation fault)."
            )

    def _shutdown_workers(self, wait: bool = True) -> None:
        """Ask every worker to exit, wait a little (``wait``), then terminate the stragglers; idempotent.

        On errors (a timeout, a dead worker, a batch that cannot be unpickled) there is no waiting:
        the error is raised at once, not after the workers' join time.
        """
        if self._shutdown:
            return
        self._shutdown = True
        self._alive_expected = [False] * len(self._workers)
        for q in self._index_queues:
            try:
                q.put(None)
            except (OSError, ValueError):  # the queue is already closed
                pass
        deadline = time.monotonic() + (_JOIN_S if wait else 0.0)
        for w in self._workers:  # one join time for all workers together, not each
            w.join(timeout=max(0.0, deadline - time.monotonic()))
        for w in self._workers:
            if w.is_alive():
                w.terminate()
        for w in self._workers:
            w.join(timeout=1.0)
            if w.is_alive():
                w.kill()
                w.join()
        for q in (*self._index_queues, self._result_queue):
            q.cancel_join_thread()
            q.close()

    def __del__(self) -> None:
        try:
            self._shutdown_workers()
        except Exception:  # at interpreter exit, modules may already be gone
            pass
