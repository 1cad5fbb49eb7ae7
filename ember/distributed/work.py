"""``Work``: a collective in flight, driven to completion by polling MPI requests with a deadline.

A collective is written as a generator that yields lists of nonblocking MPI requests (first the
small metadata exchange that catches mismatched shapes, then the data transfer) and finishes by
returning. ``Work`` resumes it as each list of requests completes. Polling with ``Test`` instead
of blocking in ``Wait`` is what lets every collective honour the process group's timeout: MPI's
blocking calls cannot be interrupted, a poll loop can give up and raise.
"""

from __future__ import annotations

import time
from collections import deque

from ember.distributed._mpi import mpi

__all__ = ["Work", "Op"]

_SPIN_SECONDS = 0.002  # poll without yielding this long: MPI's own blocking calls spin too


class Op:
    """A data-moving MPI call a collective's body yields: ``Op(comm, "allreduce", *args)``.

    An async Work posts the nonblocking form (``comm.Iallreduce``) and polls it; a synchronous one
    calls the blocking form (``comm.Allreduce``), which is MPI's fastest path. Blocking is safe
    there: the metadata exchange before it has already shown that every peer reached this
    collective, so only a peer dying mid-transfer could stall it, and the launcher ends the job then.
    The choice follows ``async_op`` alone, never timing: MPI does not match a blocking collective
    on one rank with a nonblocking one on another, so every rank must choose the same form.
    """

    __slots__ = ("comm", "name", "args", "kwargs")

    def __init__(self, comm, name: str, *args, **kwargs):
        self.comm, self.name, self.args, self.kwargs = comm, name, args, kwargs

    def start(self):
        return getattr(self.comm, "I" + self.name)(*self.args, **self.kwargs)

    def run(self) -> None:
        getattr(self.comm, self.name[0].upper() + self.name[1:])(*self.args, **self.kwargs)


class Work:
    """Handle of an asynchronous collective (``async_op=True``), as ``torch.distributed.Work``.

    Example:
        >>> w = dist.all_reduce(t, async_op=True)  # doctest: +SKIP
        >>> w.wait()                               # doctest: +SKIP
        True
    """

    def __init__(self, body, name: str, group, ordered: bool = True, blocking: bool = False, deferred: bool = False):
        self._body = body
        self._name = name
        self._group = group
        self._reqs: list = []
        self._statuses: list = []
        self._ready = False  # current requests done, waiting for this work's turn to post more
        self._done = False
        self._exc: BaseException | None = None
        self._result = None
        self._blocking = blocking
        self._stage = 0  # data stages posted so far (0: still exchanging metadata)
        self._start_ns = time.perf_counter_ns()
        self._deadline = time.monotonic() + group.timeout
        self._MPI = mpi()
        # The first stage (the metadata exchange, on the group's side communicator) is posted now,
        # in program order. Later stages post on the data communicator only when every earlier
        # collective of the group has finished, so all ranks post them in one order, as MPI needs.
        self._queue = group.__dict__.setdefault("_queue", deque()) if ordered else None
        if deferred and self._queue:
            # A body that starts with data (no metadata stage) waits for its turn to post it.
            self._reqs, self._statuses, self._ready, self._started = [], [], True, False
        else:
            self._started = True
            self._resume(None)
        if self._queue is not None and not self._done:
            self._queue.append(self)

    def _resume(self, value) -> None:
        try:
            reqs = self._body.send(value)
            while isinstance(reqs, Op):
                self._stage += 1
                if self._blocking:
                    reqs.run()
                    reqs = self._body.send(None)
                else:
                    reqs = [reqs.start()]
        except StopIteration as stop:
            self._result = stop.value
            self._finish()
            return
        except Exception as e:  # raised again by wait(), on the caller's line
            self._exc = e
            self._finish()
            return
        self._reqs = reqs
        self._statuses = [self._MPI.Status() for _ in reqs]
        self._ready = False

    def _finish(self) -> None:
        self._done = True
        self._reqs = []
        from ember.profiler import _record_span

        _record_span(self._name, self._start_ns, time.perf_counter_ns() - self._start_ns)

    def _advance(self, may_post: bool) -> bool:
        """Test the current requests; resume the body (posting its next stage) when allowed."""
        while not self._done:
            if not self._ready:
                try:
                    if not self._MPI.Request.Testall(self._reqs, self._statuses):
                        return False
                except self._MPI.Exception as e:
                    self._body.close()
                    self._exc = _translate(e, self._name)
                    self._finish()
                    return True
                self._ready = True
            if not may_post:
                return False
            if not self._started:
                self._started = True
                self._resume(None)
                continue
            self._resume(self._statuses)
        return True

    def is_completed(self) -> bool:
        """Make progress without blocking; True once the collective has finished (or failed)."""
        q = self._queue
        if q is None:
            return self._advance(True)
        while q and q[0]._advance(True):
            q.popleft()
        if not self._done:
            self._advance(False)
        return self._done

    def wait(self, timeout=None) -> bool:
        """Block until done; raise the collective's error, or ``DistBackendError`` at the deadline."""
        if not self._done:
            deadline = self._deadline
            if timeout is not None:
                secs = timeout.total_seconds() if hasattr(timeout, "total_seconds") else float(timeout)
                deadline = min(deadline, time.monotonic() + secs)
            spins = 0
            started = time.monotonic()
            while not self.is_completed():
                spins += 1
                if spins & 255:
                    continue  # peers usually arrive within microseconds: spin first
                now = time.monotonic()
                if now > deadline:
                    self._raise_timeout()
                if now - started > _SPIN_SECONDS:
                    # A peer this late is often waiting for a core (more ranks than cores): let it
                    # run. sleep(0) keeps this process runnable, so it is back at once.
                    time.sleep(0)
        if self._exc is not None:
            raise self._exc
        return True

    def result(self):
        self.wait()
        return self._result

    def exception(self):
        return self._exc

    def _raise_timeout(self):
        from ember.distributed.process_group import DistBackendError

        g = self._group
        raise DistBackendError(
            f"ember.distributed: {self._name} timed out after {g.timeout:g} s on rank {g.ranks[g.rank()]} "
            f"(group ranks {g.ranks}): a peer rank did not join this collective (it may have stopped, hung, "
            "or called a different one)"
        )


def _translate(e, name: str) -> Exception:
    from ember.distributed.process_group import DistBackendError

    return DistBackendError(f"ember.distributed: {name} failed in MPI: {e.Get_error_string()}")


def completed(name: str, group) -> Work:
    """A finished Work (for calls that had nothing to do, e.g. on non-member ranks)."""

    def nothing():
        return None
        yield  # a generator that yields nothing

    return Work(nothing(), name, group, ordered=False)
