"""Benchmark harness: workloads written once against a torch-like module, timed side by side.

A *workload* is a setup function ``setup(torch) -> step`` written in the PyTorch API; it gets
the module to run on (``ember`` or ``torch``) and returns a zero-argument callable that does
one step (an op, a training step, ...). Extra implementations for other baselines (NumPy) are
attached with :meth:`Case.impl`. The harness times every implementation of a case in the same
process, alternating between them round by round (so drift in machine load hits all of them
alike), and reports per-call medians and ratios.

Example:
    >>> from bench.harness import workload, measure
    >>> @workload("demo", "add", baseline="torch", target=2.0)
    ... def add(torch):
    ...     a, b = torch.ones(16), torch.ones(16)
    ...     return lambda: a + b
    >>> import ember
    >>> result = measure(add, {"ember": ember}, rounds=3, min_batch_s=0.001)
    >>> sorted(result.medians)
    ['ember']

This module imports no numerical library itself, so a runner can set thread-count environment
variables before NumPy is first imported.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: The frameworks a torch-API workload runs on, by name. The runner fills in the modules.
TORCH_LIKE = ("ember", "torch")

#: The clock of every timed batch: wall time by default; ``bench.run --cpu-time`` sets the calling
#: thread's CPU time (``time.thread_time``), which a machine shared with other work inflates far less.
TIMER = time.perf_counter

#: Every registered case, in registration order: ``REGISTRY[group]`` is a list of cases.
REGISTRY: dict[str, list[Case]] = {}


@dataclass
class Case:
    """One benchmark: a torch-API ``setup`` plus optional extra implementations.

    ``impls`` maps an implementation name to ``setup(module) -> step``; the torch-API setup is
    registered under each name in :data:`TORCH_LIKE`, extra ones under their own name (their
    ``module`` argument is whatever the runner passes for that name, e.g. ``numpy``).
    ``baseline`` names the implementation ember is compared against and ``target`` the ratio
    ember/baseline that counts as met (``None``: report only).
    """

    group: str
    name: str
    impls: dict[str, Callable] = field(default_factory=dict)
    module_of: dict[str, str] = field(default_factory=dict)  # impl name -> module name
    baseline: str = "torch"
    target: float | None = None
    note: str = ""

    def impl(self, name: str, module: str | None = None):
        """Decorator: add an implementation ``name`` (run with the runner's ``module`` for it)."""

        def deco(setup: Callable) -> Callable:
            self.impls[name] = setup
            self.module_of[name] = module or name
            return setup

        return deco


def workload(group: str, name: str, baseline: str = "torch", target: float | None = None, note: str = ""):
    """Decorator registering a torch-API setup function as a benchmark case (returns the Case)."""

    def deco(setup: Callable) -> Case:
        impls = {fw: setup for fw in TORCH_LIKE}
        case = Case(group, name, impls, {fw: fw for fw in TORCH_LIKE}, baseline, target, note)
        REGISTRY.setdefault(group, []).append(case)
        return case

    return deco


@dataclass
class Result:
    """Per-call times (seconds) of each implementation: every round's value and the median."""

    case: Case
    samples: dict[str, list[float]]
    number: dict[str, int]  # calls per timed batch
    faults: dict[str, float] = field(default_factory=dict)  # minor page faults per call (median)

    @property
    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.samples.items()}

    def ratio(self, a: str = "ember", b: str | None = None) -> float | None:
        """median(a) / median(b); ``b`` defaults to the case's baseline; None if either did not run."""
        m = self.medians
        b = b or self.case.baseline
        if a not in m or b not in m or m[b] == 0:
            return None
        return m[a] / m[b]

    def round_ratios(self, a: str = "ember", b: str | None = None) -> list[float]:
        """a / b within each round, sorted: neighbours in time share the machine's load of the moment."""
        b = b or self.case.baseline
        if a not in self.samples or b not in self.samples:
            return []
        return sorted(x / y for x, y in zip(self.samples[a], self.samples[b]) if y > 0)

    def met(self) -> bool | None:
        r = self.ratio()
        if r is None or self.case.target is None:
            return None
        return r <= self.case.target


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _batch(step: Callable, number: int, faults: list | None = None) -> float:
    """Seconds per call over ``number`` back-to-back calls, with the garbage collector off (as timeit).

    With ``faults``, also appends the minor page faults per call (fresh memory being mapped in:
    the cost of allocating new large outputs).
    """
    gc_was = gc.isenabled()
    gc.disable()
    try:
        f0 = _minor_faults()
        timer = TIMER
        t0 = timer()
        for _ in range(number):
            step()
        t = (timer() - t0) / number
        if faults is not None:
            faults.append((_minor_faults() - f0) / number)
        return t
    finally:
        if gc_was:
            gc.enable()


def calibrate(step: Callable, min_batch_s: float) -> int:
    """How many calls make a batch last at least ``min_batch_s`` (at least one)."""
    number = 1
    while True:
        t = _batch(step, number) * number
        if t >= min_batch_s or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * min_batch_s / max(t, 1e-9) * 1.2))


def measure(case: Case, modules: dict, rounds: int = 11, min_batch_s: float = 0.05) -> Result:
    """Time each implementation of ``case`` whose module is in ``modules``, alternating per round.

    ``modules`` maps a module name (``"ember"``, ``"torch"``, ``"numpy"``) to the module. Each
    round times one batch of every implementation, in an order that reverses every round so
    none always runs first (after another's cache/allocator activity).
    """
    steps, numbers = {}, {}
    for name, setup in case.impls.items():
        mod = modules.get(case.module_of[name])
        if mod is None:  # that framework is not part of this run
            continue
        step = setup(mod)
        step()  # warm-up: first-call costs (imports, caches, page faults of the inputs)
        steps[name] = step
        numbers[name] = calibrate(step, min_batch_s)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    faults: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            samples[name].append(_batch(steps[name], numbers[name], faults[name]))
        gc.collect()
    return Result(case, samples, numbers, {k: statistics.median(v) for k, v in faults.items()})


def fmt_time(seconds: float) -> str:
    """``1.23 us`` / ``4.56 ms`` / ``7.89 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
