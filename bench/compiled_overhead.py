"""Where the Python time of a compiled whole-step program goes: thread CPU time per call of the
guard check, the output reuse check and the rest (key, pointer table, writebacks, return), less
the time inside the native segment; once with the real step (its native code evicts the caches,
so Python's objects and the interpreter's own code come back from memory) and once with the
segment replaced by a no-op (warm caches). ``bare`` is the Python time of the same calls timed
without the section timers (each timer is a system call, several microseconds with cold caches).

Run: ``PYTHONPATH=. python bench/compiled_overhead.py [--only mlp gpt] [--calls 300]``
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import warnings

from bench.run import limit_threads

__all__ = ["breakdown", "main"]


def breakdown(ember, name: str, calls: int = 300, native: bool = True) -> dict | None:
    """Median microseconds per call by section, or None where the step is not one program."""
    from bench import compiled_train

    step, _label = compiled_train.compiled_step(ember, name)
    step()
    step()
    entry = list(step.cache.values())[-1]
    prog = getattr(entry, "program", None)
    if prog is None or any(fn is None for fn, _ in prog.plan):
        return None
    acc = collections.defaultdict(list)

    def timed(obj, attr, label):
        fn = getattr(obj, attr)

        def wrapper(*a, **k):
            t0 = time.thread_time_ns()
            out = fn(*a, **k)
            acc[label].append(time.thread_time_ns() - t0)
            return out

        setattr(obj, attr, wrapper)

    timed(entry, "consts_ok", "guards")
    fast = getattr(entry, "fast_step", None)
    if fast is not None:
        timed(fast, "_outputs", "outputs")
    segments = [fn for fn, _ in prog.plan]

    def segment(P):
        t0 = time.thread_time_ns()
        rc = 0
        for fn in segments if native else ():
            rc = rc or fn(P)
        acc["native"].append(time.thread_time_ns() - t0)
        return rc

    saved = prog.plan
    prog.plan = [(segment, None)]
    try:
        total = []
        for _ in range(calls):
            t0 = time.thread_time_ns()
            step()
            total.append(time.thread_time_ns() - t0)
        py = [t - n for t, n in zip(total, acc.pop("native"))]
        for obj, attr in ((entry, "consts_ok"), (fast, "_outputs")):  # the section timers off
            if obj is not None:
                vars(obj).pop(attr, None)
        total = []
        for _ in range(calls):
            t0 = time.thread_time_ns()
            step()
            total.append(time.thread_time_ns() - t0)
        bare = [t - n for t, n in zip(total, acc.pop("native"))]
    finally:
        prog.plan = saved
    out = {k: statistics.median(v) / 1e3 for k, v in acc.items()}
    out["python"] = statistics.median(py) / 1e3
    out["rest"] = out["python"] - sum(v for k, v in out.items() if k != "python")
    out["bare"] = statistics.median(bare) / 1e3
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=["mlp", "gpt"])
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args(argv)
    limit_threads(1)
    warnings.simplefilter("ignore")
    import ember

    ember.set_num_threads(1)
    for name in args.only:
        for native in (True, False):
            r = breakdown(ember, name, args.calls, native)
            what = "real step" if native else "no-op segment (warm caches)"
            shown = "not one program" if r is None else ", ".join(f"{k} {v:.0f}" for k, v in r.items())
            print(f"{name} ({what}): {shown} us")


if __name__ == "__main__":
    main()
