"""Peak memory of one workload on one framework, measured in a fresh process.

``python -m bench.memory --fw ember --workload gpt [--steps 3] [--threads 1] [--tiny]`` imports
only that framework, runs one step of the workload's tiny version (so one-time lazy costs of the
framework are paid before the baseline), builds the workload (model, optimizer, batch), then runs
``--steps`` steps and prints one JSON line::

    {"fw": "ember", "workload": "gpt", "import_kib": ..., "setup_kib": ..., "peak_kib": ...,
     "step_peak_kib": ..., "method": "clear_refs"}

``step_peak_kib`` (what the benchmark compares) is the peak resident set size during the steps
minus the resident size after import, warm-up and setup: activations, gradients, optimizer state and
whatever else the framework allocates on the first full-size step. ``setup_kib`` is what the
setup added over the post-warm-up size (parameters and the batch).

The peak is the kernel's high-water mark ``VmHWM``, reset after setup by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0), so that import and setup peaks do not hide the steps'.
Where that file cannot be written, a thread samples ``VmRSS`` every millisecond instead (it can
miss a peak shorter than that; ``method`` says which was used). A fresh process per
(framework, workload) keeps one measurement's freed-but-cached memory out of the next.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading


def _status_kib(field: str) -> int:
    """``VmRSS``/``VmHWM`` of this process, in KiB, from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"bench.memory: no {field} in /proc/self/status (Linux only)")


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Sampler:
    """Fallback peak tracker: polls ``VmRSS`` from a thread (NumPy releases the GIL in kernels)."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak = interval, _status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _status_kib("VmRSS"))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib("VmRSS"))


def find_case(name: str):
    """The registered benchmark case called ``name`` (training workloads first)."""
    import importlib

    from bench import harness, run

    for module in run.WORKLOAD_MODULES:
        importlib.import_module(module)
    for cases in harness.REGISTRY.values():
        for case in cases:
            if case.name == name:
                return case
    known = [c.name for cases in harness.REGISTRY.values() for c in cases]
    raise SystemExit(f"bench.memory: unknown workload {name!r}; known: {', '.join(known)}")


def measure_peak(step, steps: int) -> tuple[int, int, str]:
    """Run ``step`` ``steps`` times; return (RSS before, peak RSS during, method), in KiB."""
    gc.collect()
    base = _status_kib("VmRSS")
    if _reset_peak():
        for _ in range(steps):
            step()
        return base, _status_kib("VmHWM"), "clear_refs"
    with _Sampler() as sampler:
        for _ in range(steps):
            step()
    return base, sampler.peak, "sampling"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    p.add_argument("--fw", choices=("ember", "torch"), required=True)
    p.add_argument("--workload", required=True, help="case name, e.g. mlp, resnet, gpt, moe-gpt, lstm")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tiny", action="store_true", help="the workload's tiny sizes (tests)")
    p.add_argument("--no-warmup", action="store_true", help="skip the tiny warm-up step before the baseline")
    args = p.parse_args(argv)

    from bench import run

    run.limit_threads(args.threads)
    module = run.load_modules(args.fw, args.threads)[args.fw]  # imports only this framework
    case = find_case(args.workload)
    setup = case.impls[args.fw]
    if not args.no_warmup:
        # One step of the tiny version first, thrown away: each framework's one-time lazy costs
        # (autograd engine, kernel caches, code paths of the optimizer) then stay out of the peak.
        warm = setup(module, tiny=True)
        warm()
        del warm
    gc.collect()
    import_kib = _status_kib("VmRSS")
    step = setup(module, tiny=True) if args.tiny else setup(module)
    base, peak, method = measure_peak(step, args.steps)
    out = {
        "fw": args.fw,
        "workload": args.workload,
        "steps": args.steps,
        "import_kib": import_kib,
        "setup_kib": base - import_kib,
        "peak_kib": peak,
        "step_peak_kib": peak - base,
        "method": method,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
