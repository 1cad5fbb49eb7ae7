"""``ember.profiler``: where eager time goes, op by op, forward and backward.

Profiling is a mode of ``ember.ops.dispatch.apply``, the one place every op runs: inside
``with profile() as prof:`` apply times each primitive under its name (``matmul``, ``add``),
composites marked with ``@composite`` (``mean``) are timed around the primitives they call, and
the backward engine times each node's gradient rule (``MulBackward0``, ...). Self time excludes
the ops an op called, so a composite and the primitives it is made of each show their own share.
Nothing is patched: outside the ``with`` block the mode is off and costs one attribute test.

Example:
    >>> import ember
    >>> from ember.profiler import profile
    >>> x = ember.randn(64, 64, requires_grad=True)
    >>> with profile() as prof:
    ...     (x @ x).relu().sum().backward()
    >>> "matmul" in prof.key_averages().table()
    True
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from ember._mode import mode
from ember.ops.dispatch import run

__all__ = ["profile", "record_function", "FunctionEventAvg"]

_active: list = []  # the running profile (at most one)


@dataclass
class FunctionEventAvg:
    """Totals for one op name (times in microseconds), as torch.profiler's key averages."""

    key: str
    count: int = 0
    cpu_time_total: float = 0.0
    self_cpu_time_total: float = 0.0
    phase: str = "forward"

    @property
    def cpu_time(self) -> float:
        return self.cpu_time_total / self.count if self.count else 0.0


class EventList(list):
    """A list of ``FunctionEventAvg`` that prints as a table."""

    def table(self, sort_by: str = "self_cpu_time_total", row_limit: int = 100) -> str:
        """Rows sorted by ``sort_by``: ``self_cpu_time_total``, ``cpu_time_total`` or ``count``."""
        field = (
            sort_by
            if sort_by in ("self_cpu_time_total", "cpu_time_total", "count", "cpu_time")
            else "self_cpu_time_total"
        )
        rows = sorted(self, key=lambda e: getattr(e, field), reverse=True)
        total_self = sum(e.self_cpu_time_total for e in self) or 1.0
        headers = ["Name", "Phase", "Self CPU %", "Self CPU", "CPU total %", "CPU total", "CPU time avg", "# of Calls"]
        body = []
        for e in rows[:row_limit]:
            body.append(
                [
                    e.key,
                    e.phase,
                    f"{100 * e.self_cpu_time_total / total_self:.2f}%",
                    _fmt(e.self_cpu_time_total),
                    f"{100 * e.cpu_time_total / total_self:.2f}%",
                    _fmt(e.cpu_time_total),
                    _fmt(e.cpu_time),
                    str(e.count),
                ]
            )
        widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
        line = "-" * (sum(widths) + 2 * (len(widths) - 1))

        def fmt_row(r):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

        out = [line, fmt_row(headers), line] + [fmt_row(r) for r in body] + [line]
        out.append(f"Self CPU time total: {_fmt(total_self)}")
        return "\n".join(out)


def _fmt(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:.3f}s"
    if us >= 1e3:
        return f"{us / 1e3:.3f}ms"
    return f"{us:.3f}us"


class profile:
    """Record every op's count, total and self time while active.

    Args:
        record_shapes: accepted for PyTorch compatibility (shapes are not recorded).
        with_trace: keep every call as an event for ``export_chrome_trace``.
    """

    def __init__(self, *, record_shapes: bool = False, with_trace: bool = True, **_ignored):
        self.with_trace = with_trace
        self._stats: dict = {}
        self._events: list = []
        self._stack: list = []
        self._backward_depth = 0  # > 0 while a gradient rule runs
        self._t0 = 0

    # ----- recording (called by the wrappers) -----
    def _enter_op(self) -> int:
        self._stack.append(0)
        return time.perf_counter_ns()

    def _exit_op(self, name: str, start: int, phase: str) -> None:
        dt = time.perf_counter_ns() - start
        child = self._stack.pop()
        key = (name, phase)
        ev = self._stats.get(key)
        if ev is None:
            ev = self._stats[key] = FunctionEventAvg(name, phase=phase)
        ev.count += 1
        ev.cpu_time_total += dt / 1e3
        ev.self_cpu_time_total += (dt - child) / 1e3
        if self._stack:
            self._stack[-1] += dt
        if self.with_trace:
            self._events.append((name, phase, start, dt))

    # ----- the mode's hooks (called by apply, composites and the backward engine) -----
    def _phase(self) -> str:
        # Ops called by a gradient rule belong to the backward pass.
        return "backward" if self._backward_depth else "forward"

    def _on_apply(self, prim, inputs, params):
        if threading.current_thread() is not self._thread:
            return run(prim, inputs, params)
        start = self._enter_op()
        try:
            return run(prim, inputs, params)
        finally:
            self._exit_op(prim.name, start, self._phase())

    def _on_composite(self, name, fn, args, kwargs):
        if threading.current_thread() is not self._thread:
            return fn(*args, **kwargs)
        start = self._enter_op()
        try:
            return fn(*args, **kwargs)
        finally:
            self._exit_op(name, start, self._phase())

    def _on_backward(self, node, grad):
        if threading.current_thread() is not self._thread:
            return node.backward(grad)
        start = self._enter_op()
        self._backward_depth += 1
        try:
            return node.backward(grad)
        finally:
            self._backward_depth -= 1
            self._exit_op(node.name(), start, "backward")

    # ----- context manager -----
    def __enter__(self) -> profile:
        if _active or mode.handler is not None:
            raise RuntimeError("ember.profiler.profile: another profile (or a capture) is already active")
        self._thread = threading.current_thread()
        self._t0 = time.perf_counter_ns()
        _active.append(self)
        mode.handler, mode.composite, mode.backward_hook = self._on_apply, self._on_composite, self._on_backward
        return self

    def __exit__(self, *exc) -> bool:
        mode.handler = mode.composite = mode.backward_hook = None
        _active.clear()
        return False

    # ----- results -----
    def key_averages(self) -> EventList:
        return EventList(self._stats.values())

    def export_chrome_trace(self, path) -> None:
        """Write the recorded calls as a Chrome trace (open in chrome://tracing or Perfetto)."""
        events = [
            {
                "name": name,
                "cat": phase,
                "ph": "X",
                "ts": (start - self._t0) / 1e3,
                "dur": dt / 1e3,
                "pid": 0,
                "tid": 1 if phase == "communication" else 0,
            }
            for name, phase, start, dt in self._events
        ]
        with open(path, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)


def _record_span(name: str, start_ns: int, dur_ns: int, phase: str = "communication") -> None:
    """Add a span measured elsewhere (a collective from issue to completion); its own trace row."""
    prof = _active[0] if _active else None
    if prof is None:
        return
    ev = prof._stats.get((name, phase))
    if ev is None:
        ev = prof._stats[(name, phase)] = FunctionEventAvg(name, phase=phase)
    ev.count += 1
    ev.cpu_time_total += dur_ns / 1e3
    if prof.with_trace:
        prof._events.append((name, phase, start_ns, dur_ns))


@contextmanager
def record_function(name: str):
    """Time a user-named region as one row of the table (no-op when not profiling)."""
    prof = _active[0] if _active else None
    if prof is None:
        yield
        return
    start = prof._enter_op()
    try:
        yield
    finally:
        prof._exit_op(name, start, "user")
